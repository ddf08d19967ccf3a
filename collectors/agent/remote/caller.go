// Package remote is the caller's side of the node agents for a Kubernetes
// user: their own credentials (a token, an exec plugin, a client
// certificate, from a kubeconfig) carried to each agent directly or through
// the API server, so that RBAC decides what they may diagnose. It is apart
// from package agent so that the agent itself links no client-go.
package remote

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/netdiag/netdiag/collectors/agent"
	"github.com/netdiag/netdiag/diagnose"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport"
	"k8s.io/client-go/transport/spdy"
)

// Caller reaches agents with a Kubernetes user's own credentials (a token,
// an exec plugin, a client certificate): the agent authenticates and
// authorises that user, so the user's RBAC decides what it may diagnose.
// Direct dials the agent pod's IP (the bot in the cluster, a machine on
// the node network); otherwise each agent is reached through the API
// server with a port-forward to its pod, which needs pods/portforward in
// the agent's namespace.
type Caller struct {
	Config *rest.Config
	// CA verifies the agents' serving certificates; nil accepts any (a
	// self-signed agent: the connection is private, not authenticated).
	CA     []byte // PEM
	Port   int
	Direct bool

	mu       sync.Mutex
	forwards map[string]*forward
}

type forward struct {
	stop  chan struct{}
	local int
}

// NewCaller reads the agents' CA file, when given.
func NewCaller(cfg *rest.Config, caFile string, port int, direct bool) (*Caller, error) {
	c := &Caller{Config: cfg, Port: port, Direct: direct, forwards: map[string]*forward{}}
	if c.Port == 0 {
		c.Port = agent.DefaultPort
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("agent CA: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("agent CA %s holds no PEM certificate", caFile)
		}
		c.CA = pem
	}
	return c, nil
}

// httpClient carries the user's credentials to an agent whose certificate
// names serverName.
func (c *Caller) httpClient(serverName string) (*http.Client, error) {
	tc, err := c.Config.TransportConfig()
	if err != nil {
		return nil, err
	}
	// The API server's CA and name are not the agent's.
	tc.TLS.CAData, tc.TLS.CAFile, tc.TLS.ServerName = c.CA, "", serverName
	tc.TLS.Insecure = c.CA == nil
	tc.Proxy = nil
	rt, err := transport.New(tc)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: rt}, nil
}

// Site is the agent pod on a node as a diagnose site.
func (c *Caller) Site(ctx context.Context, node, namespace, pod string, ip netip.Addr) (*agent.Client, error) {
	hc, err := c.httpClient(ip.String())
	if err != nil {
		return nil, err
	}
	base := "https://" + net.JoinHostPort(ip.String(), strconv.Itoa(c.Port))
	if !c.Direct {
		local, err := c.forward(ctx, namespace, pod)
		if err != nil {
			// The API server's refusal is the user's RBAC speaking, not a
			// node that does not answer.
			if strings.Contains(err.Error(), "is forbidden") {
				return nil, fmt.Errorf("port-forward to agent pod %s/%s: %w (%w)", namespace, pod, err, diagnose.ErrDenied)
			}
			return nil, fmt.Errorf("port-forward to agent pod %s/%s on node %s: %w (%w)", namespace, pod, node, err, agent.ErrUnreachableNode(node))
		}
		base = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(local))
	}
	return &agent.Client{Node: node, URL: base, HTTP: hc}, nil
}

// forward opens (once per pod) a port-forward through the API server.
func (c *Caller) forward(ctx context.Context, namespace, pod string) (int, error) {
	key := namespace + "/" + pod
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.forwards[key]; f != nil {
		return f.local, nil
	}
	rt, upgrader, err := spdy.RoundTripperFor(c.Config)
	if err != nil {
		return 0, err
	}
	u, err := url.Parse(strings.TrimSuffix(c.Config.Host, "/") + c.Config.APIPath)
	if err != nil {
		return 0, err
	}
	u.Path = strings.TrimSuffix(c.Config.APIPath, "/") + fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/portforward", namespace, pod)
	if c.Config.APIPath == "" {
		u.Path = fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/portforward", namespace, pod)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	stop, ready := make(chan struct{}), make(chan struct{})
	var errOut strings.Builder
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(c.Port)}, stop, ready, io.Discard, &errOut)
	if err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		return 0, fmt.Errorf("%v %s", err, strings.TrimSpace(errOut.String()))
	case <-ctx.Done():
		close(stop)
		return 0, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		close(stop)
		return 0, fmt.Errorf("port-forward gave no local port: %v", err)
	}
	c.forwards[key] = &forward{stop: stop, local: int(ports[0].Local)}
	return int(ports[0].Local), nil
}

// Close ends the port-forwards.
func (c *Caller) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, f := range c.forwards {
		close(f.stop)
		delete(c.forwards, k)
	}
}
