// Package kubetest gives tests a real Kubernetes control plane to talk to: a
// real etcd and a real kube-apiserver, with their own CA, an admin client
// certificate and service-account token signing, started for a test (or a
// whole test package) and stopped when it ends. Tests of the code that reads
// pods, services and endpoint slices, validates callers with TokenReview and
// SubjectAccessReview, or takes a --kubeconfig run against the same API
// server a cluster runs, not against a fake.
//
// There is no controller-manager, scheduler or kubelet: nothing creates
// default service accounts, endpoint slices or pod status, and a deleted
// namespace stays Terminating. Tests create what a controller would.
// lab/cluster runs the controller-manager and the scheduler beside one
// (Run, with EndpointReconciler and ServiceAccountAdmission).
//
// The programs come from scripts/install-deps: etcd from Debian's
// etcd-server, kube-apiserver built from tools/kube into $(go env GOPATH)/bin.
// Without them a test skips, or fails when CI is set.
package kubetest

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/internal/daemon"
	"github.com/netdiag/netdiag/internal/tools"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// AdminUser is the user name of the admin client certificate; its
	// group is system:masters.
	AdminUser = "kubetest-admin"
	// ServiceCIDR is the lab's Service range, which the apiserver
	// allocates ClusterIPs from.
	ServiceCIDR = "198.18.96.0/20"
	// Issuer is the service-account token issuer ("iss"), also accepted
	// as an audience by the apiserver.
	Issuer = "https://kubernetes.default.svc.cluster.local"

	readyTimeout = 60 * time.Second
	stopGrace    = 10 * time.Second
	logTailLines = 40
)

// Options says where the control plane runs. The zero value runs it on
// 127.0.0.1 in the test's own network namespace.
type Options struct {
	// Netns is the path of a network namespace (/run/netns/NAME) to run
	// etcd and kube-apiserver in, so that processes in other lab
	// namespaces reach the apiserver by a lab address. Needs root. The
	// returned configs dial through the namespace from the test process.
	Netns string
	// Listen is the IP address the apiserver listens on. Inside Netns it
	// is an address of that namespace (198.18.x.y); without Netns it must
	// be a loopback address. Empty means 127.0.0.1.
	Listen string
	// Port is the apiserver's secure port; 0 picks a free one. A fixed
	// port (6443) suits a namespace of the caller's own, where nothing
	// else can hold it.
	Port int
	// EndpointReconciler keeps the apiserver's endpoint reconciler on:
	// it writes Listen and the port into the endpoints of the
	// "kubernetes" Service, as in a cluster, so that in-cluster clients
	// reach the apiserver through its ClusterIP. Listen must then be a
	// routable IPv4 address (validation refuses loopback, and the
	// Service range is IPv4), so this needs Netns. Off, the Service has
	// no endpoints.
	EndpointReconciler bool
	// ServiceAccountAdmission keeps the ServiceAccount admission plugin
	// on: pods get their service account's token volume
	// (kube-api-access-*), and a pod whose service account does not
	// exist is refused, so something must create each namespace's
	// "default" account (a controller-manager's serviceaccount
	// controller). Off, pods are admitted as they are.
	ServiceAccountAdmission bool
	// Env is added to the environment of etcd and the apiserver (a
	// marker by which their owner finds them after a crash).
	Env []string
}

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	// Admin authenticates with the admin client certificate
	// (CN=kubetest-admin, O=system:masters).
	Admin *rest.Config
	// URL is the apiserver's address, https://IP:PORT.
	URL string
	// CAFile and CAPEM are the CA that signed the serving certificate,
	// for clients that verify the server.
	CAFile string
	CAPEM  []byte
	// Dir holds the certificates, keys, etcd's data and both logs.
	Dir string
	// Ready is how long the apiserver took from its start to /readyz ok.
	Ready time.Duration
	// ServiceAccountKeyFile is the private key that signs service-account
	// tokens (PEM, EC), for a controller-manager's token controller
	// (--service-account-private-key-file); the apiserver verifies with
	// its public half.
	ServiceAccountKeyFile string

	clientset kubernetes.Interface
	env       []string // added to the processes' environment
	pki       *pki
	ns        *netns.NS
	etcd, api *proc
}

// Start runs a control plane for the test and stops it when the test ends.
// Without the programs it skips the test ("run ./scripts/install-deps"), or
// fails it when CI is set. When the test fails, the last lines of both logs
// are written to the test log.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Netns != "" && os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("kubetest: Options.Netns needs root and CI is set: run the tests as root")
		}
		t.Skip("kubetest: Options.Netns needs root (nsenter into a network namespace)")
	}
	bins, err := findPrograms()
	if err != nil {
		missing(t, err)
	}
	c := &Cluster{Dir: t.TempDir()}
	// Registered first, so it runs last: after both processes are gone and
	// their logs complete, before the temporary directory is removed.
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs(t.Logf)
		}
	})
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Errorf("kubetest: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout+30*time.Second)
	defer cancel()
	if err := c.start(ctx, bins, opts); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Logf("kubetest: kube-apiserver %s ready in %s (etcd %s)", c.URL, c.Ready.Round(time.Millisecond), c.etcd.url)
	return c
}

// Run starts a control plane outside a test, keeping its certificates,
// data and logs in dir, which must exist and which the caller removes after
// Stop. On error nothing is left running.
func Run(ctx context.Context, dir string, opts Options) (*Cluster, error) {
	bins, err := findPrograms()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir}
	if err := c.start(ctx, bins, opts); err != nil {
		return nil, errors.Join(err, c.stop())
	}
	return c, nil
}

// Stop ends the apiserver and then etcd (SIGTERM, SIGKILL after a grace
// period) and waits for both. It is for clusters from Run; Start and
// Shared stop theirs. Stopping twice is harmless.
func (c *Cluster) Stop() error { return c.stop() }

// PIDs are the process IDs of etcd and the apiserver, as started.
func (c *Cluster) PIDs() []int {
	var pids []int
	for _, p := range []*proc{c.etcd, c.api} {
		if p != nil && p.Cmd.Process != nil {
			pids = append(pids, p.PID())
		}
	}
	return pids
}

// DumpLogs writes the last lines of both logs through logf.
func (c *Cluster) DumpLogs(logf func(format string, args ...any)) { c.dumpLogs(logf) }

var shared struct {
	sync.Mutex
	inMain  bool
	started bool
	c       *Cluster
	err     error
}

// Main runs a test package whose tests share one control plane (Shared),
// and stops it after the last test. Call it from TestMain:
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
func Main(m *testing.M) {
	shared.Lock()
	shared.inMain = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	if c := shared.c; c != nil {
		if err := c.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
			code = 1
		}
		if code != 0 {
			c.dumpLogs(func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) })
		}
		os.RemoveAll(c.Dir)
	}
	shared.Unlock()
	os.Exit(code)
}

// Shared returns the package's control plane on 127.0.0.1, starting it for
// the first test that asks. It saves the few seconds of a start per test;
// tests sharing it should work in namespaces of their own. The package's
// TestMain must call Main, which stops it.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	bins, err := findPrograms()
	if err != nil {
		missing(t, err)
	}
	shared.Lock()
	defer shared.Unlock()
	if !shared.inMain {
		t.Fatal("kubetest: Shared needs the package's TestMain to call kubetest.Main(m), which stops the cluster")
	}
	if !shared.started {
		shared.started = true
		dir, err := os.MkdirTemp("", "kubetest-")
		if err != nil {
			shared.err = fmt.Errorf("temporary directory: %w", err)
		} else {
			c := &Cluster{Dir: dir}
			shared.c = c
			ctx, cancel := context.WithTimeout(context.Background(), readyTimeout+30*time.Second)
			shared.err = c.start(ctx, bins, Options{})
			cancel()
			if shared.err == nil {
				t.Logf("kubetest: shared kube-apiserver %s ready in %s", c.URL, c.Ready.Round(time.Millisecond))
			}
		}
	}
	if shared.err != nil {
		t.Fatalf("kubetest: shared cluster: %v", shared.err)
	}
	return shared.c
}

// Clientset is a client authenticated as the admin.
func (c *Cluster) Clientset() kubernetes.Interface { return c.clientset }

// ConfigFor is a client config that authenticates with a bearer token (a
// service-account token from ServiceAccountToken) instead of the admin
// certificate. It verifies the server with the cluster's CA.
func (c *Cluster) ConfigFor(token string) *rest.Config {
	cfg := rest.AnonymousClientConfig(c.Admin)
	cfg.BearerToken = token
	return cfg
}

// ServiceAccountToken mints a token for the service account namespace/name
// with the TokenRequest API, creating the namespace and the account when
// they do not exist. With no audiences the token is for the apiserver itself
// (ConfigFor); a token for another audience ("netdiag-agent") is what a
// caller presents to that service, which checks it with a TokenReview. A ttl
// of 0 takes the apiserver's default (an hour); the API refuses less than
// 10 minutes.
func (c *Cluster) ServiceAccountToken(ctx context.Context, namespace, name string, audiences []string, ttl time.Duration) (string, error) {
	cs := c.clientset
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	_, err = cs.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create service account %s/%s: %w", namespace, name, err)
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences}}
	if ttl > 0 {
		s := int64(ttl / time.Second)
		req.Spec.ExpirationSeconds = &s
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token request for %s/%s (audiences %q, ttl %s): %w", namespace, name, audiences, ttl, err)
	}
	return tr.Status.Token, nil
}

// User is an identity in a kubeconfig written by WriteKubeconfig.
type User struct {
	// Name names the user and its context in the file.
	Name string
	// Token is a bearer token; empty means a client certificate: the
	// admin's, or one for CommonName.
	Token string
	// CommonName, without Token, gets the user a client certificate of
	// its own, signed by the cluster's CA: the apiserver takes the user
	// name from it and the groups from Groups (the certificate's O), as
	// for system:kube-controller-manager or system:kube-scheduler, whose
	// RBAC roles the apiserver creates at start.
	CommonName string
	Groups     []string
}

// WriteKubeconfig writes a kubeconfig for programs that take --kubeconfig
// and --context: a context "admin" with the admin certificate, and one per
// user, named after it. The current context is the first user's, else
// admin. Certificates and keys are embedded, so the file stands alone. For a
// cluster in a network namespace (Options.Netns), only programs that reach
// Listen (run in a lab namespace) can use it.
func (c *Cluster) WriteKubeconfig(path string, users ...User) error {
	return c.WriteKubeconfigServer(path, c.URL, users...)
}

// WriteKubeconfigServer is WriteKubeconfig for the apiserver reached at
// server, such as a forwarder on this machine's loopback (127.0.0.1 is in
// the serving certificate).
func (c *Cluster) WriteKubeconfigServer(path, server string, users ...User) error {
	const cluster = "kubetest"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[cluster] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: c.CAPEM}
	add := func(u User) error {
		if u.Name == "" {
			return errors.New("a kubeconfig user needs a name")
		}
		if _, dup := cfg.AuthInfos[u.Name]; dup {
			return fmt.Errorf("kubeconfig user %q given twice (admin is always there)", u.Name)
		}
		a := &clientcmdapi.AuthInfo{Token: u.Token}
		switch {
		case u.Token != "":
		case u.CommonName != "":
			cert, key, err := c.pki.leaf(&x509.Certificate{
				Subject:     pkix.Name{CommonName: u.CommonName, Organization: u.Groups},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			if err != nil {
				return fmt.Errorf("client certificate for %s: %w", u.CommonName, err)
			}
			a.ClientCertificateData, a.ClientKeyData = cert, key
		default:
			a.ClientCertificateData, a.ClientKeyData = c.pki.adminCert, c.pki.adminKey
		}
		cfg.AuthInfos[u.Name] = a
		cfg.Contexts[u.Name] = &clientcmdapi.Context{Cluster: cluster, AuthInfo: u.Name, Namespace: metav1.NamespaceDefault}
		return nil
	}
	if err := add(User{Name: "admin"}); err != nil {
		return err
	}
	cfg.CurrentContext = "admin"
	for i, u := range users {
		if err := add(u); err != nil {
			return err
		}
		if i == 0 {
			cfg.CurrentContext = u.Name
		}
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// programs are the absolute paths of what a cluster runs.
type programs struct {
	etcd, apiserver, nsenter string
}

// errMissing says which programs are missing and that install-deps
// installs them.
type errMissing struct{ names []string }

func (e *errMissing) Error() string {
	return fmt.Sprintf("%s not found (looked in PATH, $GOBIN and $(go env GOPATH)/bin): run ./scripts/install-deps", strings.Join(e.names, " and "))
}

func missing(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("kubetest: %v (CI is set, so this is not skipped)", err)
	}
	t.Skipf("kubetest: %v", err)
}

func findPrograms() (programs, error) {
	var p programs
	var absent []string
	for _, x := range []struct {
		name string
		dst  *string
	}{{"etcd", &p.etcd}, {"kube-apiserver", &p.apiserver}, {"nsenter", &p.nsenter}} {
		path, err := findProgram(x.name)
		if err != nil {
			absent = append(absent, x.name)
			continue
		}
		*x.dst = path
	}
	if len(absent) > 0 {
		return p, &errMissing{names: absent}
	}
	return p, nil
}

// findProgram looks where tools.Find does, and then where `go env` says go
// install puts programs: GOBIN or GOPATH may be set with `go env -w`, which
// the environment does not show.
func findProgram(name string) (string, error) {
	return tools.FindGoInstalled(name)
}

// start brings etcd and then the apiserver up. On error, what was started
// is still recorded in c, for stop.
func (c *Cluster) start(ctx context.Context, bins programs, opts Options) error {
	listen, err := listenAddr(opts)
	if err != nil {
		return err
	}
	if opts.EndpointReconciler && (!listen.Is4() || listen.IsLoopback()) {
		return fmt.Errorf("Options.EndpointReconciler needs a routable IPv4 Listen address in Options.Netns (the kubernetes Service is IPv4 and refuses loopback endpoints), not %s", listen)
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return fmt.Errorf("Options.Port %d is not a TCP port", opts.Port)
	}
	c.env = opts.Env
	dial := (&net.Dialer{}).DialContext
	var launcher []string
	if opts.Netns != "" {
		if c.ns, err = netns.Open(opts.Netns); err != nil {
			return err
		}
		dial = c.ns.Dial
		// nsenter enters the namespace and execs the program: the PID
		// we hold is etcd's or the apiserver's own.
		launcher = []string{bins.nsenter, "--net=" + opts.Netns, "--"}
	}

	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, firstServiceIP()}
	if !listen.IsLoopback() {
		ips = append(ips, net.IP(listen.AsSlice()))
	}
	c.pki, err = newPKI(ips, []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		return err
	}
	files, err := c.pki.write(c.Dir)
	if err != nil {
		return err
	}
	c.CAFile, c.CAPEM = files["ca"], c.pki.caPEM
	c.ServiceAccountKeyFile = files["sa-key"]

	if err := c.startEtcd(ctx, bins.etcd, launcher, dial); err != nil {
		return err
	}
	return c.startAPIServer(ctx, bins.apiserver, launcher, dial, listen, files, opts)
}

func listenAddr(opts Options) (netip.Addr, error) {
	if opts.Listen == "" {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), nil
	}
	a, err := netip.ParseAddr(opts.Listen)
	a = a.Unmap()
	if err != nil || a.Zone() != "" || a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("listen address %q (Options.Listen) is not usable: give one IP address of the namespace, such as 198.18.x.y, not a wildcard (0.0.0.0, ::) and without a zone", opts.Listen)
	}
	if opts.Netns == "" && !a.IsLoopback() {
		return netip.Addr{}, fmt.Errorf("listen address %s (Options.Listen) without Options.Netns: in the test's own namespace only loopback addresses (127.0.0.1, ::1) are accepted; give Netns to listen on a lab address", a)
	}
	return a, nil
}

// firstServiceIP is the ClusterIP of the kubernetes Service, which clients
// inside a cluster dial: the serving certificate names it.
func firstServiceIP() net.IP {
	p := netip.MustParsePrefix(ServiceCIDR)
	return net.IP(p.Addr().Next().AsSlice())
}

// freePort asks the kernel for a free TCP port on addr, in the cluster's
// namespace. The port is released before the daemon binds it, so another
// process may take it in between; the callers retry on that.
func (c *Cluster) freePort(addr netip.Addr) (int, error) {
	hp := net.JoinHostPort(addr.String(), "0")
	var l net.Listener
	var err error
	if c.ns != nil {
		l, err = c.ns.Listen("tcp", hp)
	} else {
		l, err = net.Listen("tcp", hp)
	}
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startAttempts bounds the retries after losing a port race.
const startAttempts = 5

// startEtcd runs a single-member etcd on loopback (only the apiserver talks
// to it) and waits for its /health.
func (c *Cluster) startEtcd(ctx context.Context, bin string, launcher []string, dial dialFunc) error {
	lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	for attempt := 1; ; attempt++ {
		clientPort, err := c.freePort(lo)
		if err != nil {
			return err
		}
		peerPort, err := c.freePort(lo)
		if err != nil {
			return err
		}
		client := "http://" + net.JoinHostPort(lo.String(), strconv.Itoa(clientPort))
		peer := "http://" + net.JoinHostPort(lo.String(), strconv.Itoa(peerPort))
		args := []string{
			"--name=kubetest",
			"--data-dir=" + filepath.Join(c.Dir, "etcd"),
			"--listen-client-urls=" + client,
			"--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer,
			"--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=kubetest=" + peer,
			"--initial-cluster-state=new",
			// etcd 3.4 logs with capnslog by default and warns that it
			// goes away; zap to stderr lands in etcd.log.
			"--logger=zap",
			"--log-outputs=stderr",
		}
		// A failed attempt may leave a half-made member behind.
		os.RemoveAll(filepath.Join(c.Dir, "etcd"))
		p, err := startProc("etcd", append(append(launcher, bin), args...), filepath.Join(c.Dir, "etcd.log"), c.env)
		if err != nil {
			return err
		}
		p.url = client
		c.etcd = p
		hc := &http.Client{Transport: &http.Transport{DialContext: dial}, Timeout: 2 * time.Second}
		err = poll(ctx, p, func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, client+"/health", nil)
			if err != nil {
				return err
			}
			return expectOK(hc, req)
		})
		if err == nil {
			return nil
		}
		c.etcd = nil
		serr := p.Stop(stopGrace)
		if attempt < startAttempts && p.lostPortRace() {
			continue
		}
		return errors.Join(fmt.Errorf("etcd did not become healthy: %w\n%s", err, p.Tail(logTailLines)), serr)
	}
}

// startAPIServer runs kube-apiserver against etcd and waits for /readyz.
func (c *Cluster) startAPIServer(ctx context.Context, bin string, launcher []string, dial dialFunc, listen netip.Addr, files map[string]string, opts Options) error {
	// The Service range is IPv4, and the apiserver wants its advertised
	// address in the same family.
	advertise := listen
	if !advertise.Is4() {
		advertise = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	for attempt := 1; ; attempt++ {
		port := opts.Port
		if port == 0 {
			var err error
			if port, err = c.freePort(listen); err != nil {
				return err
			}
		}
		c.URL = "https://" + net.JoinHostPort(listen.String(), strconv.Itoa(port))
		args := []string{
			"--etcd-servers=" + c.etcd.url,
			"--bind-address=" + listen.String(),
			"--secure-port=" + strconv.Itoa(port),
			// Without it the apiserver advertises the address of the
			// interface holding the default route: the host's (not
			// ours to publish), or none in a bare namespace, where it
			// then refuses to start.
			"--advertise-address=" + advertise.String(),
			"--tls-cert-file=" + files["serving-cert"],
			"--tls-private-key-file=" + files["serving-key"],
			"--client-ca-file=" + files["ca"],
			"--authorization-mode=RBAC",
			"--service-account-issuer=" + Issuer,
			"--service-account-signing-key-file=" + files["sa-key"],
			"--service-account-key-file=" + files["sa-pub"],
			"--api-audiences=" + Issuer,
			"--service-cluster-ip-range=" + ServiceCIDR,
			// The lab's pods and the agent's own manifests ask for
			// privileged containers and host networking.
			"--allow-privileged=true",
			// Logs, exec and port-forward go through a node's kubelet;
			// the admin's certificate is the apiserver's client
			// certificate towards it, and the kubelet's InternalIP is
			// the address the lab routes.
			"--kubelet-client-certificate=" + files["admin-cert"],
			"--kubelet-client-key=" + files["admin-key"],
			"--kubelet-preferred-address-types=InternalIP",
			"--profiling=false",
		}
		if !opts.EndpointReconciler {
			// The endpoint reconciler would write the advertised
			// address into the kubernetes Endpoints, and validation
			// refuses loopback there; nothing here needs those
			// endpoints. (With it off, the apiserver logs "Found stale
			// data, removed previous endpoints" once at start: noise.)
			// On, it is the default "lease" reconciler.
			args = append(args, "--endpoint-reconciler-type=none")
		}
		if !opts.ServiceAccountAdmission {
			// The ServiceAccount admission plugin rejects a pod whose
			// service account does not exist, and without a
			// controller-manager no namespace gets its "default" one.
			args = append(args, "--disable-admission-plugins=ServiceAccount")
		}
		p, err := startProc("kube-apiserver", append(append(launcher, bin), args...), filepath.Join(c.Dir, "kube-apiserver.log"), c.env)
		if err != nil {
			return err
		}
		c.api = p
		c.Admin = &rest.Config{
			Host: c.URL,
			TLSClientConfig: rest.TLSClientConfig{
				CAData:   c.pki.caPEM,
				CertData: c.pki.adminCert,
				KeyData:  c.pki.adminKey,
			},
			// Tests create objects in bursts; client-side throttling
			// would only slow them down.
			QPS:   200,
			Burst: 400,
		}
		if c.ns != nil {
			c.Admin.Dial = dial
		}
		hc, err := rest.HTTPClientFor(c.Admin)
		if err != nil {
			return fmt.Errorf("client for %s: %w", c.URL, err)
		}
		hc.Timeout = 2 * time.Second
		rctx, cancel := context.WithTimeout(ctx, readyTimeout)
		var last string
		err = poll(rctx, p, func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/readyz?verbose", nil)
			if err != nil {
				return err
			}
			err = expectOK(hc, req)
			if err != nil {
				last = err.Error()
			}
			return err
		})
		cancel()
		if err == nil {
			c.Ready = time.Since(p.Started)
			c.clientset, err = kubernetes.NewForConfig(c.Admin)
			if err != nil {
				return fmt.Errorf("clientset for %s: %w", c.URL, err)
			}
			return nil
		}
		c.api = nil
		serr := p.Stop(stopGrace)
		if attempt < startAttempts && opts.Port == 0 && p.lostPortRace() {
			continue
		}
		if last != "" {
			err = fmt.Errorf("%w (last /readyz: %s)", err, last)
		}
		return errors.Join(fmt.Errorf("kube-apiserver %s not ready: %w\nlast lines of %s:\n%s", c.URL, err, p.Log, p.Tail(logTailLines)), serr)
	}
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// poll calls check every 100ms until it succeeds, the context ends or the
// process exits (then there is nothing to wait for).
func poll(ctx context.Context, p *proc, check func(context.Context) error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var err error
	for {
		if err = check(ctx); err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited: %v", p.Name, p.Err())
		case <-ctx.Done():
			return fmt.Errorf("gave up: %w (last check: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

func expectOK(hc *http.Client, req *http.Request) error {
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	body := make([]byte, 4096)
	n, _ := resp.Body.Read(body)
	return fmt.Errorf("%s: %s", resp.Status, failedChecks(string(body[:n])))
}

// failedChecks keeps the lines of a verbose /readyz that say what is not
// ready yet.
func failedChecks(body string) string {
	var bad []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "[-]") {
			bad = append(bad, strings.TrimSpace(l))
		}
	}
	if len(bad) == 0 {
		return strings.TrimSpace(body)
	}
	return strings.Join(bad, "; ")
}

// stop stops the apiserver, then etcd, and closes the namespace.
func (c *Cluster) stop() error {
	var errs []error
	for _, p := range []*proc{c.api, c.etcd} {
		if p != nil {
			errs = append(errs, p.Stop(stopGrace))
		}
	}
	if c.ns != nil {
		c.ns.Close()
	}
	return errors.Join(errs...)
}

func (c *Cluster) dumpLogs(logf func(format string, args ...any)) {
	for _, name := range []string{"kube-apiserver.log", "etcd.log"} {
		if t := daemon.TailFile(filepath.Join(c.Dir, name), logTailLines); t != "" {
			logf("kubetest: last lines of %s:\n%s", name, t)
		}
	}
}

// proc is etcd or kube-apiserver, with the URL it serves.
type proc struct {
	*daemon.Process
	url string
}

func startProc(name string, argv []string, logPath string, env []string) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(cleanEnv(), env...)
	d, err := daemon.Start(name, cmd, logPath)
	if err != nil {
		return nil, err
	}
	return &proc{Process: d}, nil
}

// cleanEnv is the test's environment without etcd's ETCD_* settings, which
// etcd would take over its flags.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

// lostPortRace says the process exited because its port was taken between
// freePort and its bind.
func (p *proc) lostPortRace() bool {
	select {
	case <-p.Done():
	default:
		return false
	}
	b, err := os.ReadFile(p.Log)
	return err == nil && strings.Contains(string(b), "address already in use")
}
