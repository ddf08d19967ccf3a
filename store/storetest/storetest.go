// Package storetest makes findings shaped like real ones (a verdict, the
// evidence, what was ruled out, timings and a few KB of raw collector
// evidence) to fill a store in tests and benchmarks.
package storetest

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/diagnose"
)

// Target is the i-th target: pods of a few namespaces on a few nodes, with
// a Service and a node now and then; i and i+1000 are the same target.
func Target(i int) (target, namespace, node string) {
	i %= 1000
	ns := []string{"default", "shop", "payments", "kube-system", "search", "media"}[i%6]
	node = fmt.Sprintf("node-%02d", i%17)
	switch i % 10 {
	case 7:
		return fmt.Sprintf("svc %s/api-%d", ns, i), ns, ""
	case 9:
		node = fmt.Sprintf("node-%03d", i)
		return "node " + node, "", node
	}
	return fmt.Sprintf("pod %s/web-%d-7f9c4b%03d", ns, i, i), ns, node
}

var verdicts = [][3]string{
	{"firewall", "drop", "A DROP rule in KUBE-FIREWALL on the node drops TCP to 198.19.1.10:8080."},
	{"mtu", "blackhole", "Packets over 1450 bytes are lost and no fragmentation-needed comes back: a path-MTU black hole."},
	{"dns", "upstream-timeout", "The cluster DNS answers for cluster names but times out for outside names."},
	{"kube-proxy", "no-endpoints", "Service shop/db has no ready endpoints."},
	{"route", "missing", "The node has no route to 198.19.1.0/24 (flannel.1)."},
	{"healthy", "ok", "Every probe passed: ping, TCP, DNS and the path MTU."},
}

// Finding is the i-th finding, made at at; the same i gives the same
// finding. Its raw evidence is some 6 KB of JSON (about 1.5 KB deflated).
func Finding(i int, at time.Time) *diagnose.Finding {
	r := rand.New(rand.NewPCG(uint64(i), 0x6e6574646961))
	v := verdicts[i%len(verdicts)]
	src := fmt.Sprintf("198.19.%d.%d", 2+i%2, 10+r.IntN(200))
	dst := fmt.Sprintf("198.19.1.%d", 10+r.IntN(200))
	pcap := fmt.Sprintf("/var/lib/netdiag/pcaps/%d.pcap", i)
	f := &diagnose.Finding{
		Class:      v[0],
		Cause:      v[1],
		Confidence: 0.5 + r.Float64()/2,
		Summary:    v[2],
		Question:   fmt.Sprintf("pod default/client-%d to %s:8080", i, dst),
		Evidence: []diagnose.Observation{
			{Collector: "tcp", Observation: fmt.Sprintf("5 connects to %s:8080: %d timed out, no reset", dst, 3+r.IntN(3))},
			{Collector: "ping", Observation: fmt.Sprintf("%d%% loss to %s", r.IntN(101), dst)},
			{Collector: "iptables", Observation: "the probe's flow meets -A KUBE-FIREWALL -p tcp --dport 8080 -j DROP (counter 412 packets)"},
			{Collector: "drops", Observation: "the kernel dropped 5 packets of the flow: NETFILTER_DROP in nf_hook_slow on cni0"},
		},
		AlsoConsidered: []diagnose.Considered{
			{Class: "route", Cause: "missing", RuledOutBy: "routes: the kernel picks flannel.1 via 198.19.1.0 for the destination"},
			{Class: "mtu", Cause: "blackhole", RuledOutBy: "pmtu: 1450-byte probes answered"},
			{Class: "dns", Cause: "nxdomain", RuledOutBy: "dns: web.default.svc.cluster.local resolved in 2 ms"},
		},
		NextSteps: []string{
			"Find who added the rule: iptables-save -c on node-b and the DaemonSets that manage iptables there.",
			"Remove it or add an ACCEPT for the pod CIDR 198.19.0.0/16 before it.",
			"Re-run: netdiag diagnose pod default/client --to svc/default/web:80",
		},
		Timings: diagnose.Timings{TotalMS: int64(800 + r.IntN(900)), PlanMS: 2, CollectMS: int64(700 + r.IntN(800)), ClassifyMS: 1,
			CollectorsMS: map[string]float64{"ping": 1000 * r.Float64(), "tcp": 3000 * r.Float64(), "routes": 3 * r.Float64(), "iptables": 40 * r.Float64()}},
		Pcap: &pcap,
		At:   at.UTC(),
	}
	f.Raw = raw(r, src, dst, at)
	return f
}

func raw(r *rand.Rand, src, dst string, at time.Time) []collectors.Evidence {
	ev := func(name string, scope collectors.Scope, data any) collectors.Evidence {
		return collectors.Evidence{Collector: name, Scope: scope, Netns: fmt.Sprintf("/proc/%d/ns/net", 1000+r.IntN(60000)),
			Started: at.Add(-time.Duration(r.IntN(2000)) * time.Millisecond).UTC(), DurationMS: 50 * r.Float64(), Status: collectors.StatusOK, Data: data}
	}
	sent := 5
	got := r.IntN(sent + 1)
	ping := &collectors.Ping{Dst: dst, Sent: sent, Received: got, LossPct: float64(sent-got) * 100 / float64(sent),
		MinMS: r.Float64(), AvgMS: 1 + r.Float64(), MaxMS: 2 + r.Float64(), StddevMS: r.Float64() / 3}
	tcp := &collectors.TCP{Dst: dst + ":8080"}
	for range 5 {
		a := collectors.TCPAttempt{Result: "timeout", MS: 1000, Local: fmt.Sprintf("%s:%d", src, 32768+r.IntN(28000))}
		if r.IntN(3) == 0 {
			a.Result, a.MS = "connected", r.Float64()*3
			tcp.Connected++
		} else {
			tcp.Timeout++
		}
		tcp.Attempts = append(tcp.Attempts, a)
	}
	routes := &collectors.Routes{Chosen: &collectors.ChosenRoute{Dst: dst, Dev: "eth0", Gateway: "198.19.2.1", Src: src}}
	for j := range 12 {
		routes.Routes = append(routes.Routes, collectors.Route{Table: 254, Family: "ipv4", Dst: fmt.Sprintf("198.19.%d.0/24", j),
			Type: "unicast", Gateway: fmt.Sprintf("198.18.0.%d", 10+j), Dev: "flannel.1", Protocol: "boot", Scope: "universe", Onlink: true})
	}
	routes.Rules = []collectors.Rule{{Priority: 0, Family: "ipv4", Table: 255}, {Priority: 32766, Family: "ipv4", Table: 254}, {Priority: 32767, Family: "ipv4", Table: 253}}
	links := &collectors.Links{}
	for j, name := range []string{"lo", "eth0", "cni0", "flannel.1", fmt.Sprintf("veth%08x", r.Uint32())} {
		links.Links = append(links.Links, collectors.Link{Index: j + 1, Name: name, Type: []string{"device", "veth", "bridge", "vxlan", "veth"}[j],
			AdminUp: true, OperState: "up", Carrier: true, MTU: []int{65536, 1500, 1450, 1450, 1450}[j],
			MAC:   fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256)),
			Addrs: []string{fmt.Sprintf("198.19.%d.%d/24", j, 1+r.IntN(250))},
			Stats: &collectors.LinkStats{RxPackets: r.Uint64N(1e9), TxPackets: r.Uint64N(1e9), RxDropped: r.Uint64N(1000)},
			Qdisc: &collectors.QdiscStats{Kind: "noqueue"}})
	}
	resolv := &collectors.ResolvConf{Path: "/etc/resolv.conf", Nameservers: []string{"198.18.96.10"},
		Search: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}, Ndots: 5, TimeoutSec: 5, Attempts: 2}
	sysctls := &collectors.Sysctls{IPForward: true, RPFilter: map[string]int{"all": 0, "default": 1, "eth0": 1, "cni0": 2},
		ConntrackCount: r.IntN(50000), ConntrackMax: 262144, PortRangeLow: 32768, PortRangeHigh: 60999,
		ListenOverflows: r.Uint64N(100), TCPRetransSegs: r.Uint64N(100000)}
	dns := &collectors.DNS{ResolvConf: "/etc/resolv.conf", Nameservers: []string{"198.18.96.10"}, Search: resolv.Search, Ndots: 5}
	for _, name := range []string{"web.default.svc.cluster.local", "example.com"} {
		l := collectors.DNSLookup{Name: name, Server: "198.18.96.10:53", Role: "resolv.conf", Resolved: true, FQDN: name + ".",
			Answers: []string{fmt.Sprintf("198.18.96.%d", r.IntN(250))}}
		for _, t := range []string{"A", "AAAA"} {
			l.Queries = append(l.Queries, collectors.DNSQuery{FQDN: name + ".", Type: t, Proto: "udp", Rcode: "NOERROR", MS: 5 * r.Float64()})
		}
		dns.Lookups = append(dns.Lookups, l)
	}
	return []collectors.Evidence{
		ev("ping", collectors.ScopeSource, ping),
		ev("tcp", collectors.ScopeSource, tcp),
		ev("routes", collectors.ScopeSource, routes),
		ev("routes", collectors.ScopeNode, routes),
		ev("links", collectors.ScopeNode, links),
		ev("resolv", collectors.ScopeSource, resolv),
		ev("sysctls", collectors.ScopeNode, sysctls),
		ev("dns", collectors.ScopeSource, dns),
	}
}
