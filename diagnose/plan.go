package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/netdiag/netdiag/collectors"
)

// Plan is what to run for a request: collector jobs per namespace and the
// shared parameters. It crosses to a node's agent as JSON.
type Plan struct {
	Source   string             `json:"source"`
	Peer     string             `json:"peer,omitempty"`
	Node     string             `json:"node,omitempty"`
	PeerNode string             `json:"peer_node,omitempty"`
	Jobs     []collectors.Job   `json:"jobs"`
	Params   *collectors.Params `json:"params"`
}

// Dumps per namespace: what an engineer reads on each side before probing.
var (
	sourceDumps   = []string{"links", "routes", "neighbours", "sysctls", "sockets", "iptables", "nftables", "resolv"}
	nodeDumps     = []string{"links", "routes", "neighbours", "sysctls", "sockets", "iptables", "nftables", "ipvs"}
	peerDumps     = []string{"links", "routes", "sysctls", "sockets", "iptables", "nftables"}
	peerNodeDumps = []string{"links", "routes", "neighbours", "sysctls", "iptables", "nftables"}
)

// NewPlan picks the collectors for the question. The probes follow the
// symptom the question implies: a port means TCP, a destination means ping,
// path MTU and hops, names mean DNS; no question means the pod checks itself.
func NewPlan(r *Request) (*Plan, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{Source: r.Source, Peer: r.Peer, Node: r.Node, PeerNode: r.PeerNode}
	params := &collectors.Params{To: r.To, DNS: append([]string(nil), r.DNS...), ResolvConf: r.ResolvConf}
	p.Params = params
	add := func(scope collectors.Scope, names ...string) {
		for _, n := range names {
			p.Jobs = append(p.Jobs, collectors.Job{Collector: n, Scope: scope})
		}
	}
	add(collectors.ScopeSource, sourceDumps...)
	if r.Node != "" && r.Node != r.Source {
		add(collectors.ScopeNode, nodeDumps...)
	}
	if r.Peer != "" {
		add(collectors.ScopePeer, peerDumps...)
	}
	if r.PeerNode != "" && r.PeerNode != r.Node {
		add(collectors.ScopePeerNode, peerNodeDumps...)
	}
	c := r.Cluster
	switch {
	case r.To != nil && c != nil && c.Service != nil:
		// A ClusterIP answers no ICMP (it exists only as NAT rules), so
		// ping, path MTU and hops go to a ready backend; TCP goes to the
		// Service and, to tell the node's rules from the pod, also straight
		// to that backend.
		if r.To.Port != 0 {
			add(collectors.ScopeSource, "tcp")
		}
		if eps := c.Service.ReadyEndpoints(); len(eps) > 0 {
			ep := *params
			ep.To = &collectors.Dest{Addr: netip.MustParseAddr(eps[0].IP), Port: uint16(c.Service.TargetPort)}
			for _, n := range []string{"ping", "pmtu", "hops"} {
				p.Jobs = append(p.Jobs, collectors.Job{Collector: n, Scope: collectors.ScopeSource, Params: &ep})
			}
			if c.Service.Protocol != "UDP" {
				p.Jobs = append(p.Jobs, collectors.Job{Collector: "tcp", Scope: collectors.ScopeSource, Label: "endpoint", Params: &ep})
			}
		}
	case r.To != nil:
		add(collectors.ScopeSource, "ping", "pmtu", "hops")
		if r.To.Port != 0 {
			add(collectors.ScopeSource, "tcp")
		}
	case len(r.DNS) == 0:
		// The pod checks itself: its gateway, and a cluster and an outside
		// name through its own resolv.conf.
		params.PingGateway = true
		add(collectors.ScopeSource, "ping")
		api := "kubernetes.default.svc.cluster.local"
		if c != nil && c.APIName != "" {
			api = c.APIName
		}
		params.DNS = append(params.DNS, api, "example.com")
	}
	if len(params.DNS) > 0 {
		// A cluster name is the control: if it resolves while the asked
		// name does not, the cluster DNS works and its upstream does not.
		if c != nil && c.APIName != "" && !slices.Contains(params.DNS, c.APIName) {
			params.DNS = append(params.DNS, c.APIName)
		}
		add(collectors.ScopeSource, "dns")
		if c != nil && c.DNS != nil {
			for _, e := range c.DNS.ReadyEndpoints() {
				params.DNSEndpoints = append(params.DNSEndpoints, e.IP)
			}
		}
	}
	// ICMP answers coming back into the source: a host firewall that rejects
	// ICMP on the way in breaks ping and path-MTU discovery (the seed's
	// master). Dst left empty is the source's own address.
	if r.To != nil && r.To.Addr.IsValid() {
		params.ExtraFlows = append(params.ExtraFlows, collectors.Flow{Proto: "icmp", Src: r.To.Addr, Path: "input", Scope: collectors.ScopeSource})
	}
	// The overlay's own traffic between the two nodes, both ways, traced
	// through both nodes' firewalls where it leaves and where it arrives.
	if c != nil && c.SourceNode != nil && c.PeerNode != nil && c.SourceNode.Name != c.PeerNode.Name && c.SourceNode.OverlayPort != 0 {
		a, err1 := netip.ParseAddr(c.SourceNode.InternalIP)
		b, err2 := netip.ParseAddr(c.PeerNode.InternalIP)
		if err1 == nil && err2 == nil {
			// When the source is the node itself, its namespace is the
			// source scope.
			here := collectors.ScopeNode
			if r.Node == r.Source {
				here = collectors.ScopeSource
			}
			port := uint16(c.SourceNode.OverlayPort)
			params.ExtraFlows = append(params.ExtraFlows,
				collectors.Flow{Proto: "udp", Src: a, Dst: b, DPort: port, Path: "output", Scope: here},
				collectors.Flow{Proto: "udp", Src: a, Dst: b, DPort: port, Path: "input", Scope: collectors.ScopePeerNode},
				collectors.Flow{Proto: "udp", Src: b, Dst: a, DPort: port, Path: "output", Scope: collectors.ScopePeerNode},
				collectors.Flow{Proto: "udp", Src: b, Dst: a, DPort: port, Path: "input", Scope: here},
			)
		}
	}
	// The kernel's drop reasons for the probes' packets, watched while the
	// probes run (the dumps do not send anything).
	if r.Drops != "off" && slices.ContainsFunc(p.Jobs, func(j collectors.Job) bool { return collectors.IsProbe(j.Collector) }) {
		if r.Drops != "auto" {
			params.DropsMethod = r.Drops
		}
		add(collectors.ScopeSource, "drops")
	}
	if r.Capture > 0 {
		params.Capture = collectors.CaptureOptions{Duration: r.Capture, Filter: r.Filter, File: r.Pcap, Iface: r.Iface, Payload: r.Payload}
		add(collectors.ScopeSource, "capture")
		if r.Peer != "" {
			add(collectors.ScopePeer, "capture")
		}
	}
	return p, nil
}

// String lists the plan's jobs, for logs.
func (p *Plan) String() string {
	var parts []string
	for _, j := range p.Jobs {
		s := fmt.Sprintf("%s@%s", j.Collector, j.Scope)
		if j.Label != "" {
			s += "(" + j.Label + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}
