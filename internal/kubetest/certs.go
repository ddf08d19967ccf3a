package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is what the cluster's TLS and service accounts rest on, generated for
// each cluster: nothing is shared between clusters or left on the machine.
type pki struct {
	caPEM        []byte
	servingCert  []byte
	servingKey   []byte
	adminCert    []byte
	adminKey     []byte
	saSigningKey []byte
	saVerifyKey  []byte

	caCert              *x509.Certificate
	caKey               *ecdsa.PrivateKey
	notBefore, notAfter time.Time
}

// newPKI makes a CA, the apiserver's serving certificate for the given IPs
// and names, an admin client certificate and the service-account key pair.
// P-256 keys: generating one takes microseconds where RSA-2048 takes tens of
// milliseconds, and every consumer (Go, kube-apiserver, curl) accepts them.
func newPKI(ips []net.IP, names []string) (*pki, error) {
	now := time.Now()
	p := &pki{
		// Clocks of the processes are the machine's; the hour before covers
		// nothing but a coarse clock step.
		notBefore: now.Add(-time.Hour),
		notAfter:  now.Add(7 * 24 * time.Hour),
	}
	var err error
	p.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "kubetest-ca"},
		NotBefore:             p.notBefore,
		NotAfter:              p.notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := p.sign(caTmpl, &p.caKey.PublicKey, nil)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	if p.caCert, err = x509.ParseCertificate(caDER); err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	p.caPEM = pemEncode("CERTIFICATE", caDER)

	p.servingCert, p.servingKey, err = p.leaf(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: ips,
		DNSNames:    names,
	})
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	p.adminCert, p.adminKey, err = p.leaf(&x509.Certificate{
		// The apiserver takes the user from CN and the groups from O;
		// system:masters passes every authorization check, RBAC or not.
		Subject:     pkix.Name{CommonName: AdminUser, Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("admin client certificate: %w", err)
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate service-account signing key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return nil, fmt.Errorf("encode service-account signing key: %w", err)
	}
	p.saSigningKey = pemEncode("EC PRIVATE KEY", der)
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encode service-account public key: %w", err)
	}
	p.saVerifyKey = pemEncode("PUBLIC KEY", pub)
	return p, nil
}

// leaf signs a certificate for tmpl with the CA and a fresh key.
func (p *pki) leaf(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl.NotBefore, tmpl.NotAfter = p.notBefore, p.notAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	der, err := p.sign(tmpl, &key.PublicKey, p.caCert)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return pemEncode("CERTIFICATE", der), pemEncode("EC PRIVATE KEY", kder), nil
}

// sign signs tmpl with the CA key; a nil parent self-signs.
func (p *pki) sign(tmpl *x509.Certificate, pub *ecdsa.PublicKey, parent *x509.Certificate) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, p.caKey)
	if err != nil {
		return nil, fmt.Errorf("sign %q: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// write puts every file the apiserver reads into dir and returns their
// paths by role. Keys are readable by the owner only.
func (p *pki) write(dir string) (map[string]string, error) {
	files := []struct {
		role, name string
		data       []byte
		mode       os.FileMode
	}{
		{"ca", "ca.crt", p.caPEM, 0o644},
		{"serving-cert", "apiserver.crt", p.servingCert, 0o644},
		{"serving-key", "apiserver.key", p.servingKey, 0o600},
		{"admin-cert", "admin.crt", p.adminCert, 0o644},
		{"admin-key", "admin.key", p.adminKey, 0o600},
		{"sa-key", "sa.key", p.saSigningKey, 0o600},
		{"sa-pub", "sa.pub", p.saVerifyKey, 0o644},
	}
	paths := map[string]string{}
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.role, err)
		}
		paths[f.role] = path
	}
	return paths, nil
}
