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

// flows are the probes' flows for the question asked, as a namespace of the
// given scope sees them: the destination (TCP to its port, and ICMP), DNS to
// each nameserver, and the extra flows meant for that scope (all of them
// for the empty scope).
func (p *Params) flows(src netip.Addr, scope Scope) []Flow {
	var out []Flow
	if p.To != nil && p.To.Addr.IsValid() {
		if p.To.Port != 0 {
			out = append(out, Flow{Proto: "tcp", Src: src, Dst: p.To.Addr, DPort: p.To.Port})
		}
		out = append(out, Flow{Proto: "icmp", Src: src, Dst: p.To.Addr})
	}
	seen := map[string]bool{}
	for _, ns := range append(append([]string{}, p.DNSServers...), p.DNSEndpoints...) {
		if a, err := netip.ParseAddr(ns); err == nil && !seen[ns] {
			seen[ns] = true
			out = append(out, Flow{Proto: "udp", Src: src, Dst: a, DPort: 53})
		}
	}
	for _, f := range p.ExtraFlows {
		if f.Scope == "" || scope == "" || f.Scope == scope {
			if !f.Dst.IsValid() {
				f.Dst = src
			}
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
