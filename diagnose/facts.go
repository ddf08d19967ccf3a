package diagnose

import (
	"net/netip"
	"slices"

	"github.com/netdiag/netdiag/collectors"
)

// facts are the evidence read once, in the terms the rules reason in. This
// is the only place that looks at collectors.Evidence: the rules read facts.
type facts struct {
	req *Request

	// Per scope dumps (nil when not collected or not usable).
	links   map[collectors.Scope]*collectors.Links
	routes  map[collectors.Scope]*collectors.Routes
	neigh   map[collectors.Scope]*collectors.Neighbours
	sysctls map[collectors.Scope]*collectors.Sysctls
	sockets map[collectors.Scope]*collectors.Sockets
	ipt     map[collectors.Scope]*collectors.Iptables
	nft     map[collectors.Scope]*collectors.Nftables
	ipvs    *collectors.IPVS
	resolv  *collectors.ResolvConf
	// The probes of the family being classified.
	ping    *collectors.Ping
	tcp     *collectors.TCP
	tcpEP   *collectors.TCP // straight to a Service's backend
	dns     *collectors.DNS
	pmtu    *collectors.PathMTU
	hops    *collectors.Hops
	capture *collectors.CaptureResult
	drops   *collectors.DropsResult
	// failures are collectors that could not run, as evidence.
	failures []Observation
	// unreached are the scopes whose node's agent did not answer, and
	// missing those whose pod is not on its node: why, per scope.
	unreached, missing map[collectors.Scope]string
}

// readFacts reads the evidence of one family's question: the probes with
// the given label ("" for the question's own destination) and everything
// that is not a probe.
func readFacts(r *Request, ev []collectors.Evidence, label string) *facts {
	f := &facts{req: r,
		links: map[collectors.Scope]*collectors.Links{}, routes: map[collectors.Scope]*collectors.Routes{},
		neigh: map[collectors.Scope]*collectors.Neighbours{}, sysctls: map[collectors.Scope]*collectors.Sysctls{},
		sockets: map[collectors.Scope]*collectors.Sockets{}, ipt: map[collectors.Scope]*collectors.Iptables{},
		nft:       map[collectors.Scope]*collectors.Nftables{},
		unreached: map[collectors.Scope]string{}, missing: map[collectors.Scope]string{}}
	for i := range ev {
		e := &ev[i]
		if collectors.IsProbe(e.Collector) && e.Label != label && e.Label != "endpoint" {
			continue // another family's probe
		}
		switch e.ErrorKind {
		case collectors.KindUnreachable:
			f.unreached[e.Scope] = e.Error
		case collectors.KindNotFound:
			f.missing[e.Scope] = e.Error
		}
		if e.State() == collectors.StatusFailed {
			f.failures = append(f.failures, obs(e.Collector, "could not run in the %s namespace (%s): %s", e.Scope, orWord(string(e.ErrorKind), "failed"), e.Error))
			continue
		}
		if !e.Usable() {
			continue
		}
		switch d := e.Data.(type) {
		case *collectors.Links:
			f.links[e.Scope] = d
		case *collectors.Routes:
			f.routes[e.Scope] = d
		case *collectors.Neighbours:
			f.neigh[e.Scope] = d
		case *collectors.Sysctls:
			f.sysctls[e.Scope] = d
		case *collectors.Sockets:
			f.sockets[e.Scope] = d
		case *collectors.Iptables:
			f.ipt[e.Scope] = d
		case *collectors.Nftables:
			f.nft[e.Scope] = d
		case *collectors.IPVS:
			f.ipvs = d
		case *collectors.ResolvConf:
			f.resolv = d
		case *collectors.Ping:
			f.ping = d
		case *collectors.TCP:
			if e.Label == "endpoint" {
				f.tcpEP = d
			} else {
				f.tcp = d
			}
		case *collectors.DNS:
			f.dns = d
		case *collectors.PathMTU:
			f.pmtu = d
		case *collectors.Hops:
			f.hops = d
		case *collectors.DropsResult:
			f.drops = d
		case *collectors.CaptureResult:
			if e.Scope == collectors.ScopeSource {
				f.capture = d
			}
		}
	}
	// When the source is a node, the node's view is the source's.
	if r.Node.Same(r.Source) {
		alias(f.links)
		alias(f.routes)
		alias(f.neigh)
		alias(f.sysctls)
		alias(f.sockets)
		alias(f.ipt)
		alias(f.nft)
	}
	return f
}

func alias[T any](m map[collectors.Scope]*T) {
	if m[collectors.ScopeNode] == nil && m[collectors.ScopeSource] != nil {
		m[collectors.ScopeNode] = m[collectors.ScopeSource]
	}
}

// Probe outcomes.

func (f *facts) pingOK() bool {
	return f.ping != nil && f.ping.Received == f.ping.Sent && f.ping.Sent > 0
}
func (f *facts) pingDead() bool { return f.ping != nil && f.ping.Sent > 0 && f.ping.Received == 0 }
func (f *facts) tcpOK() bool {
	return f.tcp != nil && f.tcp.Connected == len(f.tcp.Attempts) && f.tcp.Connected > 0
}
func (f *facts) tcpPartial() bool {
	return f.tcp != nil && f.tcp.Connected > 0 && f.tcp.Connected < len(f.tcp.Attempts)
}
func (f *facts) tcpFailed() bool {
	return f.tcp != nil && f.tcp.Connected == 0 && len(f.tcp.Attempts) > 0
}
func (f *facts) tcpAll(result string) bool {
	if f.tcp == nil || len(f.tcp.Attempts) == 0 {
		return false
	}
	for _, a := range f.tcp.Attempts {
		if a.Result != result {
			return false
		}
	}
	return true
}
func (f *facts) tcpAny(result string) bool {
	if f.tcp == nil {
		return false
	}
	for _, a := range f.tcp.Attempts {
		if a.Result == result {
			return true
		}
	}
	return false
}

// failing reports whether any probe failed, and describes the failures.
func (f *facts) failing() (bool, []Observation) {
	var out []Observation
	if f.ping != nil && f.ping.Received < f.ping.Sent {
		out = append(out, obs("ping", "%d of %d echoes to %s got no reply%s", f.ping.Sent-f.ping.Received, f.ping.Sent, f.ping.Dst, icmpErrs(f.ping.Errors)))
	}
	if f.tcp != nil && f.tcp.Connected < len(f.tcp.Attempts) {
		out = append(out, obs("tcp", "%d of %d TCP connects to %s failed: %s", len(f.tcp.Attempts)-f.tcp.Connected, len(f.tcp.Attempts), f.tcp.Dst, tcpResults(f.tcp)))
	}
	if f.dns != nil {
		for _, l := range f.dns.Failed() {
			out = append(out, obs("dns", "%s did not resolve via %s (%s): %s", l.Name, l.Server, l.Role, lastQuery(l)))
		}
	}
	if m := f.pmtu; m != nil && m.Reachable && m.PathMTU > 0 && m.PathMTU < m.IfaceMTU {
		out = append(out, obs("pmtu", "%d-byte packets to %s do not get through (%d do)", m.IfaceMTU, m.Dst, m.PathMTU))
	}
	return len(out) > 0, out
}

// dest is the probe destination, and whether it is a Service ClusterIP.
func (f *facts) dest() (netip.Addr, bool) {
	if f.req.To == nil {
		return netip.Addr{}, false
	}
	c := f.req.Cluster
	isSvc := c != nil && c.Service != nil && c.Service.ClusterIP == f.req.To.Addr.String()
	return f.req.To.Addr, isSvc
}

func (f *facts) to() string {
	if f.req.To == nil {
		return ""
	}
	return f.req.To.String()
}

// family is the address family of the question's destination.
func (f *facts) family() string {
	if f.req.To == nil {
		return "ipv4"
	}
	return collectors.Family(f.req.To.Addr)
}

// block is a firewall verdict that stops a flow: where, which trace, read
// by which tool.
type block struct {
	scope collectors.Scope
	tr    *collectors.FlowTrace
	tool  string
}

// blocked returns the firewall verdicts that stop a flow, in the order a
// packet crosses the namespaces: certain ones before those that rest on a
// match the tracer could not evaluate.
func (f *facts) blocked(match func(collectors.Flow) bool) []block {
	var certain, unsure []block
	for _, s := range collectors.Scopes {
		for _, x := range []struct {
			tool   string
			traces []collectors.FlowTrace
		}{{"iptables", tracesOf(f.ipt[s])}, {"nftables", nftTraces(f.nft[s])}} {
			for i := range x.traces {
				t := &x.traces[i]
				if !match(t.Flow) || !t.Blocks() {
					continue
				}
				if t.Certain {
					certain = append(certain, block{s, t, x.tool})
				} else {
					unsure = append(unsure, block{s, t, x.tool})
				}
			}
		}
	}
	return append(certain, unsure...)
}

// firstBlock is the first of blocked's verdicts, if any.
func (f *facts) firstBlock(match func(collectors.Flow) bool) (block, bool) {
	bs := f.blocked(match)
	if len(bs) == 0 {
		return block{}, false
	}
	return bs[0], true
}

// rulesRead names the namespaces whose firewall rules were read, for a
// "no rule matches" that says where it looked.
func (f *facts) rulesRead() []string {
	var out []string
	for _, s := range collectors.Scopes {
		if f.ipt[s] != nil || f.nft[s] != nil {
			out = append(out, f.scopeName(s))
		}
	}
	return out
}

func tracesOf(i *collectors.Iptables) []collectors.FlowTrace {
	if i == nil {
		return nil
	}
	return i.Traces
}

func nftTraces(n *collectors.Nftables) []collectors.FlowTrace {
	if n == nil {
		return nil
	}
	return n.Traces
}

// scopeName says which namespace a scope is, in the user's words.
func (f *facts) scopeName(s collectors.Scope) string {
	c := f.req.Cluster
	switch s {
	case collectors.ScopeSource:
		if c != nil && c.SourceName != "" {
			return c.SourceName
		}
		return "the source namespace " + f.req.Source.String()
	case collectors.ScopePeer:
		if c != nil && c.PeerName != "" {
			return c.PeerName
		}
		return "the destination namespace " + f.req.Peer.String()
	case collectors.ScopeNode:
		if c != nil && c.SourceNode != nil {
			return "node " + c.SourceNode.Name
		}
		return "the node"
	case collectors.ScopePeerNode:
		if c != nil && c.PeerNode != nil {
			return "node " + c.PeerNode.Name
		}
		return "the destination's node"
	}
	return string(s)
}

// probeDests are the addresses the probes of the question went to: the
// destination and, for a Service, its backends.
func (f *facts) probeDests() []netip.AddrPort {
	if f.req.To == nil {
		return nil
	}
	out := []netip.AddrPort{netip.AddrPortFrom(f.req.To.Addr, f.req.To.Port)}
	if c := f.req.Cluster; c != nil && c.Service != nil {
		for _, e := range c.Service.Endpoints {
			if a, err := netip.ParseAddr(e.IP); err == nil {
				out = append(out, netip.AddrPortFrom(a, uint16(c.Service.TargetPort)))
			}
		}
	}
	return out
}

// isProbeDest reports whether a server address is one the probes went to
// (port 0 in the question matches any port).
func (f *facts) isProbeDest(server netip.AddrPort) bool {
	return slices.ContainsFunc(f.probeDests(), func(d netip.AddrPort) bool {
		return d.Addr() == server.Addr() && (d.Port() == 0 || d.Port() == server.Port())
	})
}
