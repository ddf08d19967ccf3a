// Package kubeapi is the node agent's own small client of the Kubernetes
// API: the three calls an agent makes (TokenReview, SubjectAccessReview,
// get a pod), with the pod's ServiceAccount or a kubeconfig. The agent runs
// on every node and idles; client-go's scheme of every API group, loaded at
// start, would more than double its resident memory, so it speaks JSON to
// these three endpoints itself.
package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Config says how to reach and authenticate to the API server.
type Config struct {
	Host  string // https://HOST:PORT
	CAPEM []byte
	// Token, or TokenFile re-read at every call (a projected token
	// rotates).
	Token, TokenFile string
	// CertPEM and KeyPEM: a client certificate.
	CertPEM, KeyPEM []byte
}

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// ErrNoCluster is returned by Load when there is neither a kubeconfig nor
// an in-cluster account.
var ErrNoCluster = errors.New("no cluster: no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not in a pod")

// Load finds credentials as kubectl does: the given kubeconfig, else
// $KUBECONFIG (its first file), else the pod's ServiceAccount, else
// ~/.kube/config.
func Load(path, context string) (*Config, error) {
	if path == "" {
		if env := os.Getenv("KUBECONFIG"); env != "" {
			path = filepath.SplitList(env)[0]
		}
	}
	if path == "" && context == "" {
		if c, err := InCluster(); err == nil {
			return c, nil
		}
		if home, err := os.UserHomeDir(); err == nil {
			if _, err := os.Stat(filepath.Join(home, ".kube", "config")); err == nil {
				path = filepath.Join(home, ".kube", "config")
			}
		}
	}
	if path == "" {
		return nil, ErrNoCluster
	}
	return FromKubeconfig(path, context)
}

// InCluster is the pod's ServiceAccount.
func InCluster() (*Config, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, ErrNoCluster
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("in-cluster CA: %w", err)
	}
	return &Config{Host: "https://" + net.JoinHostPort(host, port), CAPEM: ca, TokenFile: filepath.Join(saDir, "token")}, nil
}

// kubeconfig is the part of a kubeconfig file the agent reads.
type kubeconfig struct {
	CurrentContext string `json:"current-context"`
	Clusters       []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server     string `json:"server"`
			CAData     []byte `json:"certificate-authority-data"`
			CAFile     string `json:"certificate-authority"`
			SkipVerify bool   `json:"insecure-skip-tls-verify"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			Token     string          `json:"token"`
			TokenFile string          `json:"tokenFile"`
			CertData  []byte          `json:"client-certificate-data"`
			CertFile  string          `json:"client-certificate"`
			KeyData   []byte          `json:"client-key-data"`
			KeyFile   string          `json:"client-key"`
			Exec      json.RawMessage `json:"exec"`
			Auth      json.RawMessage `json:"auth-provider"`
		} `json:"user"`
	} `json:"users"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
}

// FromKubeconfig reads a context of a kubeconfig file (the current one
// when context is empty). Exec plugins and auth providers are not for an
// agent: it runs with a ServiceAccount.
func FromKubeconfig(path, context string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	if context == "" {
		context = kc.CurrentContext
	}
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(filepath.Dir(path), p)
	}
	for _, cx := range kc.Contexts {
		if cx.Name != context {
			continue
		}
		c := &Config{}
		found := 0
		for _, cl := range kc.Clusters {
			if cl.Name == cx.Context.Cluster {
				found++
				c.Host, c.CAPEM = cl.Cluster.Server, cl.Cluster.CAData
				if cl.Cluster.CAFile != "" {
					if c.CAPEM, err = os.ReadFile(rel(cl.Cluster.CAFile)); err != nil {
						return nil, fmt.Errorf("kubeconfig CA: %w", err)
					}
				}
				if cl.Cluster.SkipVerify {
					return nil, fmt.Errorf("kubeconfig %s: cluster %s skips TLS verification; the agent does not", path, cl.Name)
				}
			}
		}
		for _, u := range kc.Users {
			if u.Name != cx.Context.User {
				continue
			}
			found++
			if len(u.User.Exec) > 0 && string(u.User.Exec) != "null" || len(u.User.Auth) > 0 && string(u.User.Auth) != "null" {
				return nil, fmt.Errorf("kubeconfig %s: user %s authenticates with a plugin, which the agent does not run: give it a token, a token file or a client certificate", path, u.Name)
			}
			c.Token, c.TokenFile, c.CertPEM, c.KeyPEM = u.User.Token, rel(u.User.TokenFile), u.User.CertData, u.User.KeyData
			if u.User.CertFile != "" {
				if c.CertPEM, err = os.ReadFile(rel(u.User.CertFile)); err != nil {
					return nil, fmt.Errorf("kubeconfig client certificate: %w", err)
				}
			}
			if u.User.KeyFile != "" {
				if c.KeyPEM, err = os.ReadFile(rel(u.User.KeyFile)); err != nil {
					return nil, fmt.Errorf("kubeconfig client key: %w", err)
				}
			}
		}
		if found != 2 || c.Host == "" {
			return nil, fmt.Errorf("kubeconfig %s: context %q names a cluster or user that is not in the file", path, context)
		}
		return c, nil
	}
	var names []string
	for _, cx := range kc.Contexts {
		names = append(names, cx.Name)
	}
	return nil, fmt.Errorf("kubeconfig %s: no context %q (contexts: %s)", path, context, strings.Join(names, ", "))
}

// Client calls the API server.
type Client struct {
	cfg Config
	hc  *http.Client
}

// New makes a client; every call is bounded by its context and 10 s.
func New(cfg *Config) (*Client, error) {
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("API server %q: give https://HOST:PORT", cfg.Host)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(cfg.CAPEM) > 0 {
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, errors.New("the API server's CA holds no PEM certificate")
		}
	}
	if len(cfg.CertPEM) > 0 {
		cert, err := tls.X509KeyPair(cfg.CertPEM, cfg.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext, TLSHandshakeTimeout: 5 * time.Second}
	return &Client{cfg: *cfg, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}, nil
}

// StatusError is an answer of the API server that is not a success.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return fmt.Sprintf("API server: %d %s", e.Code, e.Message) }

// IsNotFound reports a 404.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.cfg.Host, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "netdiag-agent")
	tok := c.cfg.Token
	if c.cfg.TokenFile != "" {
		b, err := os.ReadFile(c.cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var st struct {
			Message string `json:"message"`
		}
		json.Unmarshal(b, &st)
		if st.Message == "" {
			st.Message = strings.TrimSpace(string(b))
		}
		return &StatusError{resp.StatusCode, st.Message}
	}
	return json.Unmarshal(b, out)
}

// UserInfo is an authenticated user, as TokenReview tells it.
type UserInfo struct {
	Username string              `json:"username"`
	UID      string              `json:"uid"`
	Groups   []string            `json:"groups"`
	Extra    map[string][]string `json:"extra,omitempty"`
}

// TokenReview asks who holds a token minted for one of the audiences;
// authenticated false with the API server's reason when no one.
func (c *Client) TokenReview(ctx context.Context, token string, audiences []string) (user *UserInfo, reason string, err error) {
	in := map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
		"spec": map[string]any{"token": token, "audiences": audiences}}
	var out struct {
		Status struct {
			Authenticated bool     `json:"authenticated"`
			User          UserInfo `json:"user"`
			Error         string   `json:"error"`
		} `json:"status"`
	}
	if err := c.do(ctx, http.MethodPost, "/apis/authentication.k8s.io/v1/tokenreviews", in, &out); err != nil {
		return nil, "", err
	}
	if !out.Status.Authenticated {
		return nil, out.Status.Error, nil
	}
	return &out.Status.User, "", nil
}

// ResourceAttributes is what a SubjectAccessReview asks about.
type ResourceAttributes struct {
	Namespace   string `json:"namespace,omitempty"`
	Verb        string `json:"verb"`
	Group       string `json:"group"`
	Resource    string `json:"resource"`
	Subresource string `json:"subresource,omitempty"`
	Name        string `json:"name,omitempty"`
}

// SubjectAccessReview asks whether a user may do something.
func (c *Client) SubjectAccessReview(ctx context.Context, u UserInfo, attrs ResourceAttributes) (allowed bool, reason string, err error) {
	in := map[string]any{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
		"spec": map[string]any{"resourceAttributes": attrs, "user": u.Username, "uid": u.UID, "groups": u.Groups, "extra": u.Extra}}
	var out struct {
		Status struct {
			Allowed bool   `json:"allowed"`
			Reason  string `json:"reason"`
		} `json:"status"`
	}
	if err := c.do(ctx, http.MethodPost, "/apis/authorization.k8s.io/v1/subjectaccessreviews", in, &out); err != nil {
		return false, "", err
	}
	return out.Status.Allowed, out.Status.Reason, nil
}

// PodNode says on which node a pod runs, and its UID.
func (c *Client) PodNode(ctx context.Context, namespace, name string) (node, uid string, err error) {
	var out struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
		Spec struct {
			NodeName string `json:"nodeName"`
		} `json:"spec"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/namespaces/"+url.PathEscape(namespace)+"/pods/"+url.PathEscape(name), nil, &out); err != nil {
		return "", "", err
	}
	return out.Spec.NodeName, out.Metadata.UID, nil
}
