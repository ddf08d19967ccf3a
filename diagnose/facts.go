package diagnose

import (
	"fmt"
	"net/netip"

	"github.com/netdiag/netdiag/collectors"
)

// facts are the evidence read once, in the terms the rules reason in.
type facts struct {
	req *Request
	ev  []collectors.Evidence

	// Per scope dumps (nil when not collected).
	links    map[collectors.Scope]*collectors.Links
	routes   map[collectors.Scope]*collectors.Routes
	neigh    map[collectors.Scope]*collectors.Neighbours
	sysctls  map[collectors.Scope]*collectors.Sysctls
	sockets  map[collectors.Scope]*collectors.Sockets
	ipt      map[collectors.Scope]*collectors.Iptables
	nft      map[collectors.Scope]*collectors.Nftables
	ipvs     *collectors.IPVS
	resolv   *collectors.ResolvConf
	ping     *collectors.Ping
	tcp      *collectors.TCP
	tcpEP    *collectors.TCP // straight to a Service's backend
	dns      *collectors.DNS
	pmtu     *collectors.PathMTU
	hops     *collectors.Hops
	capture  *collectors.CaptureResult
	drops    *collectors.DropsResult
	failures []Observation // collectors that failed
}

func readFacts(r *Request, ev []collectors.Evidence) *facts {
	f := &facts{req: r, ev: ev,
		links: map[collectors.Scope]*collectors.Links{}, routes: map[collectors.Scope]*collectors.Routes{},
		neigh: map[collectors.Scope]*collectors.Neighbours{}, sysctls: map[collectors.Scope]*collectors.Sysctls{},
		sockets: map[collectors.Scope]*collectors.Sockets{}, ipt: map[collectors.Scope]*collectors.Iptables{},
		nft: map[collectors.Scope]*collectors.Nftables{}}
	for _, e := range ev {
		if e.Error != "" && e.Data == nil {
			if e.Collector != "ipvs" {
				f.failures = append(f.failures, Observation{e.Collector, fmt.Sprintf("could not run in the %s namespace: %s", e.Scope, e.Error)})
			}
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
	if r.Node != "" && r.Node == r.Source {
		for _, m := range []func(){
			func() { alias(f.links) }, func() { alias(f.routes) }, func() { alias(f.neigh) }, func() { alias(f.sysctls) },
			func() { alias(f.sockets) }, func() { alias(f.ipt) }, func() { alias(f.nft) },
		} {
			m()
		}
	}
	return f
}

func alias[T any](m map[collectors.Scope]*T) {
	if m[collectors.ScopeNode] == nil {
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

// blocked returns the first firewall verdict that stops a flow, scanning
// the namespaces in the order a packet crosses them.
func (f *facts) blocked(match func(collectors.Flow) bool) (scope collectors.Scope, tr *collectors.FlowTrace, tool string) {
	for _, s := range []collectors.Scope{collectors.ScopeSource, collectors.ScopeNode, collectors.ScopePeerNode, collectors.ScopePeer} {
		for _, x := range []struct {
			tool   string
			traces []collectors.FlowTrace
		}{{"iptables", tracesOf(f.ipt[s])}, {"nftables", nftTraces(f.nft[s])}} {
			for i := range x.traces {
				t := &x.traces[i]
				if match(t.Flow) && (t.Verdict == "DROP" || t.Verdict == "REJECT") {
					return s, t, x.tool
				}
			}
		}
	}
	return "", nil, ""
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
		return "the source namespace " + f.req.Source
	case collectors.ScopePeer:
		if c != nil && c.PeerName != "" {
			return c.PeerName
		}
		return "the destination namespace " + f.req.Peer
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
