package diagnose

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/drops"
)

// FuzzClassify builds a request and evidence from the fuzzer's bytes, of
// every kind the collectors produce with any field values, and classifies
// them: whatever the evidence, Classify returns one finding of the taxonomy
// and never panics. `make test` fuzzes it for a short time.
func FuzzClassify(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"))
	f.Add([]byte("refused tcp with a peer, its sockets and a reject rule; then pmtu, dns and drops"))
	f.Add(binary.BigEndian.AppendUint64(nil, 0xfeedfacecafebeef))
	slog.SetDefault(slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &gen{b: data}
		r, evs := g.request(), g.evidence()
		fd := Classify(r, evs)
		if _, err := ParseVerdict(fd.Class + "/" + fd.Cause); err != nil {
			t.Fatalf("verdict outside the taxonomy: %v", err)
		}
		if fd.Confidence < 0 || fd.Confidence > 1 || fd.Evidence == nil || fd.NextSteps == nil || fd.AlsoConsidered == nil {
			t.Fatalf("malformed finding: %+v", fd)
		}
		// A rule that panics is survived, but it is a bug all the same.
		for _, o := range fd.Evidence {
			if o.Collector == "classify" {
				t.Fatalf("%s", o.Observation)
			}
		}
	})
}

// gen draws values from the fuzzer's bytes; past their end it draws zeros.
type gen struct {
	b []byte
	i int
}

func (g *gen) byte() byte {
	if g.i >= len(g.b) {
		return 0
	}
	g.i++
	return g.b[g.i-1]
}

func (g *gen) n(max int) int { return int(g.byte()) % max }
func (g *gen) yes() bool     { return g.byte()&1 == 1 }

func (g *gen) pick(s ...string) string { return s[g.n(len(s))] }

var fuzzAddrs = []netip.Addr{
	netip.MustParseAddr("198.19.1.10"), netip.MustParseAddr("198.19.2.10"), netip.MustParseAddr("198.18.96.20"),
	netip.MustParseAddr("198.18.96.10"), netip.MustParseAddr("2001:2:0:101::10"), netip.MustParseAddr("2001:2:0:102::10"),
	{},
}

func (g *gen) addr() netip.Addr { return fuzzAddrs[g.n(len(fuzzAddrs))] }

func (g *gen) request() *Request {
	r := &Request{Source: NetnsPlace("/run/netns/a"), Question: "fuzz"}
	if g.yes() {
		r.Peer = NetnsPlace("/run/netns/b")
	}
	if g.yes() {
		r.Node = NetnsPlace("/run/netns/n")
	}
	if g.yes() {
		r.Node = r.Source
	}
	if g.yes() {
		r.To = &collectors.Dest{Addr: g.addr(), Port: uint16(g.n(3)) * 4040}
		if g.yes() {
			r.AltTo = &collectors.Dest{Addr: g.addr(), Port: r.To.Port}
		}
	}
	if g.yes() {
		r.DNS = []string{g.pick("web", "example.com", "kubernetes.default.svc.cluster.local")}
	}
	if g.yes() {
		c := &Cluster{ClusterDomain: g.pick("", "cluster.local"), APIName: g.pick("", "kubernetes.default.svc.cluster.local")}
		if g.yes() {
			c.Service = &Service{Name: "default/web", ClusterIP: g.addr().String(), Port: 80, TargetPort: 8080, Protocol: g.pick("TCP", "UDP")}
			for range g.n(3) {
				c.Service.Endpoints = append(c.Service.Endpoints, Endpoint{IP: g.addr().String(), Ready: g.yes()})
			}
		}
		if g.yes() {
			c.DNS = &Service{Name: "kube-system/kube-dns", ClusterIP: g.addr().String(), Endpoints: []Endpoint{{IP: g.addr().String(), Ready: g.yes()}}}
		}
		for _, n := range []**Node{&c.SourceNode, &c.PeerNode} {
			if g.yes() {
				*n = &Node{Name: g.pick("node-a", "node-b"), InternalIP: g.pick("198.18.0.11", "198.18.0.12", "x"), PodCIDR: g.pick("198.19.1.0/24", "bad"),
					KubeProxy: g.pick("", "Running", "Pending"), OverlayDevice: g.pick("", "flannel.1"), OverlayPort: g.n(2) * 8472}
			}
		}
		r.Cluster = c
	}
	return r
}

func (g *gen) scope() collectors.Scope { return collectors.Scopes[g.n(len(collectors.Scopes))] }

func (g *gen) trace() collectors.FlowTrace {
	tr := collectors.FlowTrace{
		Flow:    collectors.Flow{Proto: g.pick("tcp", "udp", "icmp", "icmp6"), Src: g.addr(), Dst: g.addr(), DPort: uint16(g.n(3)) * 4040},
		Path:    g.pick("output", "forward", "input"),
		Verdict: g.pick("ACCEPT", "DROP", "REJECT"), VerdictBy: g.pick("", "filter/INPUT: -A INPUT -j DROP", "x"),
		RejectWith: g.pick("", "tcp-reset", "icmp-host-prohibited"), NATTo: g.pick("", "198.19.1.10:8080", ":"),
		Certain: g.yes(),
	}
	if !tr.Certain {
		tr.Assumes = []string{"a match"}
		if g.yes() {
			tr.Otherwise = []collectors.TraceBranch{{Verdict: "ACCEPT"}}
		}
	}
	return tr
}

func (g *gen) evidence() []collectors.Evidence {
	var evs []collectors.Evidence
	for range g.n(24) {
		e := collectors.Evidence{Scope: g.scope(), Label: g.pick("", "", "endpoint", "ipv4", "ipv6")}
		switch g.n(17) {
		case 0:
			l := &collectors.Links{}
			for range g.n(4) {
				lk := collectors.Link{Name: g.pick("eth0", "cni0", "flannel.1", "lo"), Type: g.pick("veth", "bridge", "vxlan"), AdminUp: g.yes(), Carrier: g.yes(),
					MTU: g.n(3) * 700, Master: g.pick("", "cni0"), Addrs: []string{g.pick("198.18.0.12/24", "198.18.2.12/24", "bad")}}
				if g.yes() {
					lk.VXLAN = &collectors.VXLANInfo{Local: g.pick("198.18.0.12", "198.18.2.12", ""), Port: 8472}
				}
				if g.yes() {
					lk.Qdisc = &collectors.QdiscStats{Drops: uint32(g.byte()), Backlog: uint32(g.byte())}
				}
				l.Links = append(l.Links, lk)
			}
			e.Collector, e.Data = "links", l
		case 1:
			r := &collectors.Routes{}
			for range g.n(3) {
				r.Routes = append(r.Routes, collectors.Route{Table: 254, Family: g.pick("ipv4", "ipv6"), Dst: "default", Type: "unicast", Dev: g.pick("eth0", "eth1"),
					Nexthops: []collectors.Nexthop{{Dev: g.pick("eth0", "eth1")}}[:g.n(2)]})
			}
			if g.yes() {
				r.Chosen = &collectors.ChosenRoute{Dst: g.addr().String(), Dev: g.pick("", "eth0", "flannel.1"), Error: g.pick("", "network is unreachable")}
			}
			e.Collector, e.Data = "routes", r
		case 2:
			e.Collector, e.Data = "neighbours", &collectors.Neighbours{FDB: []collectors.FDBEntry{{Dev: "flannel.1", Dst: g.pick("198.18.0.11", "")}}[:g.n(2)]}
		case 3:
			e.Collector, e.Data = "sysctls", &collectors.Sysctls{RPFilter: map[string]int{"all": g.n(3), "eth0": g.n(3)}, ConntrackCount: g.n(200), ConntrackMax: g.n(200),
				PortRangeLow: g.n(3), PortRangeHigh: g.n(3)}
		case 4:
			s := &collectors.Sockets{}
			for range g.n(3) {
				s.Listeners = append(s.Listeners, collectors.Listener{Proto: g.pick("tcp", "udp"), Addr: g.pick("0.0.0.0", "::", "127.0.0.1", "::1", "bad", ""), Port: g.n(3) * 4040})
			}
			if g.yes() {
				s.TopRemotes = []collectors.RemoteCount{{Remote: "198.19.1.10:8080", Sockets: g.n(9)}}
			}
			e.Collector, e.Data = "sockets", s
		case 5:
			ipt := &collectors.Iptables{Tables: map[string]*collectors.IptTable{}}
			if g.yes() {
				ipt.Tables["nat"] = &collectors.IptTable{Chains: map[string]*collectors.IptChain{"KUBE-SERVICES": {}}}
			}
			for range g.n(4) {
				ipt.Traces = append(ipt.Traces, g.trace())
			}
			e.Collector, e.Data = "iptables", ipt
		case 6:
			n := &collectors.Nftables{Tables: []string{g.pick("ip kube-proxy", "inet fw")}}
			for range g.n(3) {
				n.Traces = append(n.Traces, g.trace())
			}
			e.Collector, e.Data = "nftables", n
		case 7:
			e.Collector, e.Data = "resolv", &collectors.ResolvConf{Path: "/etc/resolv.conf", Nameservers: []string{g.addr().String()}[:g.n(2)], Search: []string{g.pick("svc.cluster.local", "x")}}
		case 8:
			p := &collectors.Ping{Dst: g.addr().String(), Sent: g.n(6)}
			p.Received = g.n(p.Sent + 1)
			if g.yes() {
				p.Errors = []collectors.ProbeError{{Kind: g.pick("timeout", "unreachable", "frag-needed"), Count: 1}}
			}
			e.Collector, e.Data = "ping", p
		case 9:
			tc := &collectors.TCP{Dst: g.addr().String()}
			for range g.n(4) {
				res := g.pick("connected", "refused", "timeout", "unreachable", "addr-not-avail", "error")
				tc.Attempts = append(tc.Attempts, collectors.TCPAttempt{Result: res})
				if res == "connected" {
					tc.Connected++
				}
				if res == "addr-not-avail" {
					tc.AddrNotAvail++
				}
			}
			e.Collector, e.Data = "tcp", tc
		case 10:
			d := &collectors.DNS{}
			for range g.n(3) {
				l := collectors.DNSLookup{Name: g.pick("web", "example.com"), Server: g.addr().String(), Role: g.pick(collectors.RoleResolvConf, collectors.RoleEndpoint, collectors.RoleFallback), Resolved: g.yes()}
				for range g.n(3) {
					l.Queries = append(l.Queries, collectors.DNSQuery{FQDN: "x.", Type: g.pick("A", "AAAA"), Rcode: g.pick("", "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED"), Error: g.pick("", "timeout", "refused")})
				}
				d.Lookups = append(d.Lookups, l)
			}
			e.Collector, e.Data = "dns", d
		case 11:
			m := &collectors.PathMTU{Dst: g.addr().String(), Family: g.pick("ipv4", "ipv6"), Dev: "eth0", IfaceMTU: 1400 + g.n(3)*50, PathMTU: 1300 + g.n(4)*50, Reachable: g.yes()}
			if g.yes() {
				m.FragNeeded = []collectors.FragNeeded{{From: "198.19.2.1", MTU: 1450}}
			}
			e.Collector, e.Data = "pmtu", m
		case 12:
			e.Collector, e.Data = "hops", &collectors.Hops{Dst: g.addr().String(), Hops: []collectors.Hop{{TTL: 1}}}
		case 13:
			c := &collectors.CaptureResult{File: "/tmp/x.pcap", Summary: &collectors.PcapSummary{}}
			for range g.n(3) {
				c.Summary.Flows = append(c.Summary.Flows, collectors.FlowNote{Server: netip.AddrPortFrom(g.addr(), uint16(g.n(3))*4040), SYNs: g.n(3), FullSizeRetx: g.n(3),
					First: time.Unix(int64(g.n(3)), 0)})
			}
			e.Collector, e.Data = "capture", c
		case 14:
			d := &collectors.DropsResult{Method: g.pick("ebpf", "tracefs", "unavailable"), Approximate: g.yes(), ByReason: map[string]int{"X": 1}}
			for range g.n(4) {
				d.Drops = append(d.Drops, drops.Drop{Reason: g.pick("NETFILTER_DROP", "NO_SOCKET", "IP_RPFILTER", "PKT_TOO_BIG", "NEIGH_FAILED", "NOT_SPECIFIED"),
					Where: string(g.scope()), Proto: g.pick("tcp", "icmp", "icmp6", "udp"), Src: g.addr().String(), Dst: g.addr().String(),
					DPort: uint16(g.n(3)) * 4040, Answer: g.yes(), Packet: g.pick("SYN", "FIN", ""), TTL: uint8(g.n(3)), At: time.Unix(int64(g.n(3)), 0)})
			}
			e.Collector, e.Data = "drops", d
		case 15:
			e.Collector, e.Data = "ipvs", &collectors.IPVS{Services: []collectors.IPVSService{{Addr: "1.2.3.4:5"}}[:g.n(2)]}
		case 16:
			e.Collector, e.Error = g.pick("tcp", "iptables", "links"), g.pick("failed", "")
			e.Status = collectors.Status(g.pick("failed", "partial", "not-applicable", "ok", ""))
		}
		evs = append(evs, e)
	}
	return evs
}
