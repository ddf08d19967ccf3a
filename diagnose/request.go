package diagnose

import (
	"fmt"
	"strings"
	"time"

	"github.com/netdiag/netdiag/collectors"
)

// Request is one question: from which namespace, to what.
type Request struct {
	// Question restates it in the user's words ("pod default/client to
	// svc/default/web:80").
	Question string `json:"question"`
	// Where the question's namespaces are: the source (the pod), the
	// destination side, the source's node and the destination's node.
	// Only Source is required.
	Source   Place `json:"source"`
	Peer     Place `json:"peer,omitzero"`
	Node     Place `json:"node,omitzero"`
	PeerNode Place `json:"peer_node,omitzero"`

	To *collectors.Dest `json:"to,omitempty"`
	// AltTo is the same destination in the other address family (a name
	// with both A and AAAA records, a dual-stack pod): its probes run too,
	// and the finding says which family failed.
	AltTo      *collectors.Dest `json:"also_to,omitempty"`
	DNS        []string         `json:"dns,omitempty"`
	ResolvConf string           `json:"resolv_conf,omitempty"`

	Capture time.Duration `json:"capture,omitempty"`
	Filter  string        `json:"filter,omitempty"`
	Pcap    string        `json:"pcap,omitempty"`
	Iface   string        `json:"iface,omitempty"`
	Payload bool          `json:"payload,omitempty"`

	// Drops is how the kernel's drop reasons are read: "" or "auto" (eBPF,
	// else tracefs), "ebpf", "tracefs", or "off".
	Drops string `json:"drops,omitempty"`

	// Cluster is what the Kubernetes view knows; nil for a bare namespace.
	Cluster *Cluster `json:"cluster,omitempty"`
}

// Cluster is the Kubernetes view of the question: the facts the network
// cannot show (which pods are ready, where kube-proxy runs) and the names
// that give the network's facts a meaning (this IP is the DNS Service).
type Cluster struct {
	ClusterCIDR   string `json:"cluster_cidr,omitempty"`
	ServiceCIDR   string `json:"service_cidr,omitempty"`
	ClusterDomain string `json:"cluster_domain,omitempty"`
	// APIName is the cluster's API Service name for the self-check.
	APIName string `json:"api_name,omitempty"`
	// DNS is the cluster DNS Service.
	DNS *Service `json:"dns,omitempty"`
	// Service is the destination, when the question is about a Service.
	Service *Service `json:"service,omitempty"`
	// SourceNode and PeerNode are the nodes of the source and destination.
	SourceNode *Node `json:"source_node,omitempty"`
	PeerNode   *Node `json:"peer_node,omitempty"`
	// SourceName and PeerName name the two ends ("pod default/client").
	SourceName string `json:"source_name,omitempty"`
	PeerName   string `json:"peer_name,omitempty"`
	// Checks are the Kubernetes view's static checks (a Service without
	// ready endpoints, kube-proxy not Running on the node, a node
	// NotReady or without PodCIDR, NetworkPolicies selecting the pod).
	Checks []ClusterCheck `json:"checks,omitempty"`
}

// ClusterCheck is one static check of the Kubernetes view.
type ClusterCheck struct {
	Name    string `json:"name"`
	Result  string `json:"result"`  // ok, failed, note, skipped
	Subject string `json:"subject"` // "svc default/web:80", "node node-b"
	Message string `json:"message"`
	// Verdict is the class/cause a failed check points at.
	Verdict string `json:"verdict,omitempty"`
}

// Service is a ClusterIP Service.
type Service struct {
	Name       string     `json:"name"` // namespace/name
	ClusterIP  string     `json:"cluster_ip"`
	Port       int        `json:"port"`
	Protocol   string     `json:"protocol"`
	TargetPort int        `json:"target_port"`
	Endpoints  []Endpoint `json:"endpoints"`
}

// Endpoint is one backend of a Service.
type Endpoint struct {
	IP    string `json:"ip"`
	Pod   string `json:"pod,omitempty"`
	Ready bool   `json:"ready"`
}

// ReadyEndpoints returns the ready backends.
func (s *Service) ReadyEndpoints() []Endpoint {
	var out []Endpoint
	for _, e := range s.Endpoints {
		if e.Ready {
			out = append(out, e)
		}
	}
	return out
}

// Node is a node as the Kubernetes view knows it.
type Node struct {
	Name       string `json:"name"`
	InternalIP string `json:"internal_ip"`
	PodCIDR    string `json:"pod_cidr,omitempty"`
	// KubeProxy is "Running" or why not ("Pending: evicted ...").
	KubeProxy string `json:"kube_proxy,omitempty"`
	// Overlay is the overlay device name (flannel.1) and its UDP port.
	OverlayDevice string `json:"overlay_device,omitempty"`
	OverlayPort   int    `json:"overlay_port,omitempty"`
}

// Validate checks a request before anything runs; the errors say what is
// accepted.
func (r *Request) Validate() error {
	if r.Source.IsZero() {
		return fmt.Errorf("no source: give a pod (pod NS/NAME), a node (node NAME) or a namespace (--netns /run/netns/NAME, NAME or /proc/PID/ns/net)")
	}
	for _, x := range []struct {
		what string
		p    Place
	}{{"source", r.Source}, {"destination", r.Peer}, {"source node", r.Node}, {"destination node", r.PeerNode}} {
		if err := x.p.Validate(x.what); err != nil {
			return err
		}
	}
	if r.Capture < 0 || r.Capture > collectors.MaxCaptureDuration {
		return fmt.Errorf("capture %s: give a duration between 1s and %s, e.g. 3s", r.Capture, collectors.MaxCaptureDuration)
	}
	switch r.Drops {
	case "", "auto", "ebpf", "tracefs", "off":
	default:
		return fmt.Errorf("drops %q: accepted: auto (eBPF, else tracefs), ebpf, tracefs, off", r.Drops)
	}
	for _, n := range r.DNS {
		if err := collectors.ValidateName(n); err != nil {
			return err
		}
	}
	if r.AltTo != nil {
		if r.To == nil || !r.To.Addr.IsValid() || !r.AltTo.Addr.IsValid() {
			return fmt.Errorf("a second address family needs a destination: --to HOST:PORT")
		}
		if r.To.Addr.Is4() == r.AltTo.Addr.Is4() {
			return fmt.Errorf("the second destination %s must be of the other address family than %s", r.AltTo.Addr, r.To.Addr)
		}
	}
	if r.Cluster != nil && r.Cluster.Service != nil && r.To != nil && r.To.Port == 0 {
		return fmt.Errorf("--to %s is a Service: give its port (svc/NS/NAME:PORT)", r.Cluster.Service.Name)
	}
	return nil
}

// SourceIsNode reports whether the question is asked from a node, not a
// pod: a node's resolv.conf points at the site's resolvers, not the cluster
// DNS, and that is right.
func (r *Request) SourceIsNode() bool {
	return r.Cluster != nil && strings.HasPrefix(r.Cluster.SourceName, "node ")
}
