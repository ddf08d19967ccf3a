package collectors

import (
	"fmt"
	"net/netip"
)

// Flow is the 5-tuple of a probe, as the firewall sees it.
type Flow struct {
	Proto string     `json:"proto"` // tcp, udp, icmp
	Src   netip.Addr `json:"src"`
	Dst   netip.Addr `json:"dst"`
	SPort uint16     `json:"sport,omitempty"`
	DPort uint16     `json:"dport,omitempty"`
	// InIface/OutIface are the interfaces as this namespace sees them,
	// empty when unknown (then interface matches are reported as unknown).
	InIface  string `json:"in_iface,omitempty"`
	OutIface string `json:"out_iface,omitempty"`
	// Path overrides the scope's usual path through the firewall:
	// "output", "forward" or "input".
	Path string `json:"path,omitempty"`
	// Scope, when set, limits the flow to the namespace it crosses (the
	// overlay's UDP leaves one node and arrives at the other).
	Scope Scope `json:"scope,omitempty"`
}

func (f Flow) String() string {
	if f.DPort == 0 {
		return fmt.Sprintf("%s %s -> %s", f.Proto, f.Src, f.Dst)
	}
	return fmt.Sprintf("%s %s -> %s:%d", f.Proto, f.Src, f.Dst, f.DPort)
}

// probeFlows are the flows the parameters' probes send: the destination (TCP
// to its port, and ICMP), DNS to each nameserver and DNS endpoint, and the
// extra flows. Sources are left for Prepare to fill.
func (p *Params) probeFlows() []Flow {
	var out []Flow
	if p.To != nil && p.To.Addr.IsValid() {
		if p.To.Port != 0 {
			out = append(out, Flow{Proto: "tcp", Dst: p.To.Addr, DPort: p.To.Port})
		}
		out = append(out, Flow{Proto: ICMPProto(p.To.Addr), Dst: p.To.Addr})
	}
	for _, ns := range append(append([]string{}, p.DNSServers...), p.DNSEndpoints...) {
		if a, err := netip.ParseAddr(ns); err == nil {
			out = append(out, Flow{Proto: "udp", Dst: a.Unmap(), DPort: 53})
		}
	}
	return append(out, p.ExtraFlows...)
}

// ICMPProto names ICMP of an address's family as flows do: "icmp" or
// "icmp6".
func ICMPProto(a netip.Addr) string {
	if Family(a) == "ipv6" {
		return "icmp6"
	}
	return "icmp"
}

// IsICMP reports whether a flow is ICMP of either family.
func (f Flow) IsICMP() bool { return f.Proto == "icmp" || f.Proto == "icmp6" }

// flowsIn are the run's flows as a namespace of the given scope sees them:
// every flow, less the extra flows meant for another scope.
func (in Input) flowsIn() []Flow {
	var out []Flow
	for _, f := range in.Flows {
		if f.Scope == "" || f.Scope == in.Scope {
			out = append(out, f)
		}
	}
	return out
}

// pathIn is the way the flow crosses a namespace of the given scope: out of
// the source, through the nodes, into the peer.
func (f Flow) pathIn(s Scope) string {
	if f.Path != "" {
		return f.Path
	}
	switch s {
	case ScopeSource:
		return "output"
	case ScopePeer:
		return "input"
	}
	return "forward"
}
