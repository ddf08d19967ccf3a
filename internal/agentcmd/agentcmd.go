// Package agentcmd is the node agent's command line, shared by `netdiag
// agent` and the slim `netdiag-agent` binary that the DaemonSet runs: the
// same flags, the same behaviour, without the bot's and the CLI's code.
package agentcmd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/internal/kubeapi"
)

const Usage = `Usage: netdiag agent [--node NAME] [--listen ADDR:PORT]
                     [--token-file FILE | --kubeconfig FILE [--context NAME]]
                     [--tls-cert FILE --tls-key FILE] [--cri-socket PATH]...
                     [--cgroup-root DIR] [--max-captures N] [--scan-netns-prefix P]
                     [--client-ca-file FILE] [--token-audience AUD]...

The node agent: one per node (a DaemonSet with hostNetwork and hostPID). It
takes the part of a diagnosis that lives on its node, finds the pod's network
namespace there (container runtime, then the pod's cgroup, then a scan for
its IP), runs the collectors and streams the evidence and the pcap back over
HTTPS. It does nothing while no one asks: no polling.

Who may call it:
  in a cluster  a bearer token with audience netdiag-agent, checked with the
                TokenReview API, then a SubjectAccessReview: the caller needs
                'create' on 'diagnoses' in group netdiag.io in the pod's
                namespace (cluster-wide for a node; the subresource 'payload'
                for captures with packet contents). Kubernetes RBAC decides.
  no cluster    --token-file: one shared token; its holder may diagnose
                anything on the node.

Without --tls-cert the agent makes a self-signed certificate and logs its
SHA-256 fingerprint. The node name comes from --node or NODE_NAME (the
downward API's spec.nodeName).

Examples:
  netdiag agent                                   # in a pod: in-cluster config, NODE_NAME
  netdiag agent --node node-a --token-file /etc/netdiag/token --listen 198.18.0.11:9443
`

// Run is the agent command: `netdiag agent ARGS` and `netdiag-agent ARGS`.
// It returns the exit code: 0 when stopped by a signal or for --help, 2 for
// bad input, 1 for a failure.
func Run(args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	c := &cli{stdout: stdout, stderr: stderr, log: log}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	node := fs.String("node", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	listen := fs.String("listen", ":"+strconv.Itoa(agent.DefaultPort), "address to listen on (HTTPS)")
	tokenFile := fs.String("token-file", "", "a file holding the one token callers must present (no cluster)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster, else $KUBECONFIG, else ~/.kube/config)")
	kubeContext := fs.String("context", "", "kubeconfig context")
	certFile := fs.String("tls-cert", "", "serving certificate (PEM)")
	keyFile := fs.String("tls-key", "", "its key (PEM)")
	var sockets list
	fs.Var(&sockets, "cri-socket", "container runtime socket (repeatable; default: containerd's and CRI-O's usual paths)")
	cgroupRoot := fs.String("cgroup-root", "/sys/fs/cgroup", "where the cgroup hierarchy is mounted")
	maxCaptures := fs.Int("max-captures", 2, "captures that may run at once on this node")
	clientCA := fs.String("client-ca-file", "", "CA of client certificates to accept (the cluster's client CA), so kubectl users with certificates may call")
	var audiences list
	fs.Var(&audiences, "token-audience", "audience a caller's token may have (repeatable; default netdiag-agent; add the API server's to accept kubectl users' tokens)")
	scanPrefix := fs.String("scan-netns-prefix", "", "search pods by IP only in /run/netns names with this prefix (for nodes that share a kernel, as the lab's do)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, strings.TrimLeft(Usage, "\n"))
			fmt.Fprintln(stdout, "\nFlags:")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "netdiag agent: %v (see 'netdiag agent --help')\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		return c.usageError("agent", "unexpected argument %q: the agent takes flags only", fs.Arg(0))
	}
	if *node == "" {
		return c.usageError("agent", "no node name: give --node NAME, or set NODE_NAME (in a DaemonSet: env from fieldRef spec.nodeName)")
	}
	if (*certFile == "") != (*keyFile == "") {
		return c.usageError("agent", "--tls-cert and --tls-key go together")
	}
	if *maxCaptures < 1 || *maxCaptures > 16 {
		return c.usageError("agent", "--max-captures %d: give 1 to 16", *maxCaptures)
	}
	if *tokenFile != "" && (*kubeconfig != "" || *kubeContext != "") {
		return c.usageError("agent", "--token-file (no cluster) and --kubeconfig/--context (a cluster) exclude each other")
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "netdiag agent: needs root (network namespaces, the container runtime's socket, captures); in a cluster its DaemonSet runs it as root with the capabilities it needs (deploy/helm/netdiag, agent.capabilities)")
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	cfg := agent.Config{Node: *node, CRISockets: sockets, CgroupRoot: *cgroupRoot, MaxCaptures: *maxCaptures, ScanPrefix: *scanPrefix, Log: c.log}
	mode := "token-file"
	if *tokenFile != "" {
		tok, err := readToken(*tokenFile)
		if err != nil {
			return c.usageError("agent", "--token-file: %v", err)
		}
		cfg.Auth = agent.StaticToken{Token: tok}
	} else {
		kc, err := kubeapi.Load(*kubeconfig, *kubeContext)
		if err != nil {
			return c.usageError("agent", "%v (or give --token-file where there is no cluster)", err)
		}
		client, err := kubeapi.New(kc)
		if err != nil {
			return c.usageError("agent", "%v", err)
		}
		cfg.Auth = &agent.KubeAuth{Client: client, Audiences: audiences, X509: *clientCA != ""}
		cfg.Pods = agent.APIPods{Client: client}
		mode = "kubernetes (TokenReview + SubjectAccessReview)"
	}
	srv, err := agent.New(cfg)
	if err != nil {
		return c.usageError("agent", "%v", err)
	}
	defer srv.Close()
	var cert tls.Certificate
	if *certFile != "" {
		if cert, err = tls.LoadX509KeyPair(*certFile, *keyFile); err != nil {
			return c.usageError("agent", "--tls-cert/--tls-key: %v", err)
		}
	} else {
		host, _, _ := net.SplitHostPort(*listen)
		if cert, err = agent.SelfSigned(*node, []string{host, *node}); err != nil {
			return c.failure("agent", err)
		}
	}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if *clientCA != "" {
		if *tokenFile != "" {
			return c.usageError("agent", "--client-ca-file needs a cluster to authorise the certificate's user; it does not go with --token-file")
		}
		pem, err := os.ReadFile(*clientCA)
		if err != nil {
			return c.usageError("agent", "--client-ca-file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return c.usageError("agent", "--client-ca-file %s holds no PEM certificate", *clientCA)
		}
		tlsConfig.ClientCAs, tlsConfig.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return c.usageError("agent", "--listen %s: %v", *listen, err)
	}
	hs := &http.Server{
		Handler:           srv,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          nil,
	}
	c.log.Info("agent listening", "node", *node, "addr", ln.Addr().String(), "auth", mode, "tls_sha256", agent.Fingerprint(cert))
	done := make(chan error, 1)
	go func() { done <- hs.ServeTLS(ln, "", "") }()
	select {
	case err := <-done:
		if !errors.Is(err, http.ErrServerClosed) {
			return c.failure("agent", err)
		}
	case <-ctx.Done():
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		hs.Shutdown(sctx)
		c.log.Info("agent stopped", "node", *node)
	}
	return 0
}

// readToken reads a token file: one line, bounded.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if len(b) > 16<<10 {
		return "", fmt.Errorf("%s is %d bytes; a token is at most 16 KiB", path, len(b))
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \n\t") {
		return "", fmt.Errorf("%s must hold one token on one line", path)
	}
	return tok, nil
}

type cli struct {
	stdout, stderr io.Writer
	log            *slog.Logger
}

func (c *cli) usageError(cmd, format string, a ...any) int {
	fmt.Fprintf(c.stderr, "netdiag %s: %s\n", cmd, fmt.Sprintf(format, a...))
	return 2
}

func (c *cli) failure(cmd string, err error) int {
	fmt.Fprintf(c.stderr, "netdiag %s: %v\n", cmd, err)
	return 1
}

// list is a repeatable flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }
