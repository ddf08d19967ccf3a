package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/netdiag/netdiag/collectors"
)

// Plan is what to run for a request: where each scope lives, the collector
// jobs per scope, and the shared parameters. Split cuts it into the parts
// that run on each node.
type Plan struct {
	Places map[collectors.Scope]Place `json:"places"`
	Jobs   []collectors.Job           `json:"jobs"`
	Params *collectors.Params         `json:"params"`
}

// NewPlan picks the collectors for the question. It starts from the
// collectors' own defaults (the dumps in every namespace given, each probe
// when the question gives it something to probe, the capture when asked,
// the drops watch around the probes), then shapes the probes to the
// question: a Service's backend for what a ClusterIP cannot answer, the
// other address family of a dual-stack destination, the pod's self-check
// when nothing is asked.
func NewPlan(r *Request) (*Plan, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{Places: map[collectors.Scope]Place{}}
	for _, sc := range r.scopes() {
		p.Places[sc] = r.place(sc)
	}
	params := &collectors.Params{To: r.To, DNS: append([]string(nil), r.DNS...), ResolvConf: r.ResolvConf}
	p.Params = params
	c := r.Cluster
	if r.To == nil && len(r.DNS) == 0 {
		// The pod checks itself: its gateway, and a cluster and an outside
		// name through its own resolv.conf.
		params.PingGateway = true
		api := "kubernetes.default.svc.cluster.local"
		if c != nil && c.APIName != "" {
			api = c.APIName
		}
		if r.SourceIsNode() {
			// A node resolves through its own resolver, not the cluster
			// DNS: cluster names failing there is how nodes are made.
			params.DNS = append(params.DNS, "example.com")
		} else {
			params.DNS = append(params.DNS, api, "example.com")
		}
	}
	if len(params.DNS) > 0 {
		// A cluster name is the control: if it resolves while the asked
		// name does not, the cluster DNS works and its upstream does not.
		// Not from a node, whose resolver does not know cluster names.
		if c != nil && c.APIName != "" && !r.SourceIsNode() && !slices.Contains(params.DNS, c.APIName) {
			params.DNS = append(params.DNS, c.APIName)
		}
		if c != nil && c.DNS != nil {
			for _, e := range c.DNS.ReadyEndpoints() {
				params.DNSEndpoints = append(params.DNSEndpoints, e.IP)
			}
		}
	}
	if r.Drops != "off" && r.Drops != "auto" {
		params.DropsMethod = r.Drops
	}
	if r.Capture > 0 {
		params.Capture = collectors.CaptureOptions{Duration: r.Capture, Filter: r.Filter, File: r.Pcap, Iface: r.Iface, Payload: r.Payload}
	}
	p.Jobs = collectors.DefaultJobs(r.scopes(), params, r.Drops != "off")

	if r.To != nil && c != nil && c.Service != nil {
		// A ClusterIP answers no ICMP (it exists only as NAT rules), so
		// ping, path MTU and hops go to a ready backend; TCP goes to the
		// Service and, to tell the node's rules from the pod, also straight
		// to that backend.
		p.Jobs = slices.DeleteFunc(p.Jobs, func(j collectors.Job) bool { return slices.Contains(icmpProbes, j.Collector) })
		if eps := c.Service.ReadyEndpoints(); len(eps) > 0 {
			ep := *params
			ep.To = &collectors.Dest{Addr: netip.MustParseAddr(eps[0].IP), Port: uint16(c.Service.TargetPort)}
			for _, n := range icmpProbes {
				p.Jobs = append(p.Jobs, collectors.Job{Collector: n, Scope: collectors.ScopeSource, Params: &ep})
			}
			if c.Service.Protocol != "UDP" {
				p.Jobs = append(p.Jobs, collectors.Job{Collector: "tcp", Scope: collectors.ScopeSource, Label: "endpoint", Params: &ep})
			}
		}
	}
	if r.AltTo != nil {
		// The same probes to the other family's address, labelled by it;
		// the finding compares the two.
		alt := *params
		alt.To = r.AltTo
		for _, j := range slices.Clone(p.Jobs) {
			if collectors.IsProbe(j.Collector) && j.Collector != "dns" && j.Params == nil && j.Label == "" {
				p.Jobs = append(p.Jobs, collectors.Job{Collector: j.Collector, Scope: j.Scope, Label: collectors.Family(r.AltTo.Addr), Params: &alt})
			}
		}
	}
	// ICMP answers coming back into the source: a host firewall that rejects
	// ICMP on the way in breaks ping and path-MTU discovery (the seed's
	// master). Dst left empty is the source's own address.
	for _, to := range []*collectors.Dest{r.To, r.AltTo} {
		if to != nil && to.Addr.IsValid() {
			params.ExtraFlows = append(params.ExtraFlows, collectors.Flow{Proto: collectors.ICMPProto(to.Addr), Src: to.Addr, Path: "input", Scope: collectors.ScopeSource})
		}
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
			if r.Node.Same(r.Source) {
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
	return p, nil
}

// icmpProbes are the probes that ask an address rather than a port.
var icmpProbes = []string{"ping", "pmtu", "hops"}

// scopes are the namespaces the request names: the source always, the
// node when it is another namespace, the peer, the peer's node when it is
// not the source's.
func (r *Request) scopes() []collectors.Scope {
	out := []collectors.Scope{collectors.ScopeSource}
	if !r.Node.IsZero() && !r.Node.Same(r.Source) {
		out = append(out, collectors.ScopeNode)
	}
	if !r.Peer.IsZero() {
		out = append(out, collectors.ScopePeer)
	}
	if !r.PeerNode.IsZero() && !r.PeerNode.Same(r.Node) {
		out = append(out, collectors.ScopePeerNode)
	}
	return out
}

// place is where a scope of the request lives.
func (r *Request) place(s collectors.Scope) Place {
	switch s {
	case collectors.ScopeSource:
		return r.Source
	case collectors.ScopePeer:
		return r.Peer
	case collectors.ScopeNode:
		return r.Node
	case collectors.ScopePeerNode:
		return r.PeerNode
	}
	return Place{}
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
