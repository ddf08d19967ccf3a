package collectors_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/netns"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }

type env struct {
	l                  *lab.Lab
	client, web, nodeB *netns.NS
	nodeA              *netns.NS
}

func run(t *testing.T, src *netns.NS, scope collectors.Scope, name string, p *collectors.Params) collectors.Evidence {
	t.Helper()
	ev := collectors.RunOne(context.Background(), src, scope, name, p)
	if ev.Error != "" {
		t.Fatalf("%s in %s: %s", name, src.Path(), ev.Error)
	}
	return ev
}

func dest(t *testing.T, s string) *collectors.Dest {
	d, err := collectors.ParseDest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func withFault(t *testing.T, l *lab.Lab, name string) {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	if _, err := lab.InjectFault(ctx, l.Instance, name, log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := lab.Clear(ctx, l.Instance, log); err != nil {
			t.Errorf("clear: %v", err)
		}
	})
}

// TestCollectorsOnLab runs each collector against the lab and checks real
// values of the lab's network.
func TestCollectorsOnLab(t *testing.T) {
	l := labtest.Up(t, "tcol")
	pod := func(k string) *netns.NS {
		p, err := l.Pod(k)
		if err != nil {
			t.Fatal(err)
		}
		return labtest.OpenNS(t, p.NetnsPath)
	}
	node := func(n string) *netns.NS {
		nd, err := l.Node(n)
		if err != nil {
			t.Fatal(err)
		}
		return labtest.OpenNS(t, nd.NetnsPath)
	}
	e := env{l: l, client: pod("default/client"), web: pod("default/web"), nodeA: node("node-a"), nodeB: node("node-b")}
	nodeA, _ := l.Node("node-a")

	t.Run("links", func(t *testing.T) {
		links := run(t, e.client, collectors.ScopeSource, "links", nil).Data.(*collectors.Links)
		eth0 := links.ByName("eth0")
		if eth0 == nil || eth0.MTU != 1450 || eth0.Type != "veth" || !eth0.Carrier || eth0.PeerIndex == 0 {
			t.Fatalf("client eth0: %+v", eth0)
		}
		if !slices.Contains(eth0.Addrs, "198.19.2.10/24") {
			t.Errorf("client eth0 addrs %v", eth0.Addrs)
		}
		nl := run(t, e.nodeA, collectors.ScopeNode, "links", nil).Data.(*collectors.Links)
		fl := nl.ByName("flannel.1")
		if fl == nil || fl.VXLAN == nil {
			t.Fatalf("node-a flannel.1: %+v", fl)
		}
		if fl.VXLAN.Local != nodeA.InternalIP || fl.VXLAN.VNI != 1 || fl.VXLAN.Port != 8472 || fl.VXLAN.Parent != "eth0" || fl.MTU != 1450 {
			t.Errorf("flannel.1 vxlan %+v mtu %d; want local %s vni 1 port 8472 parent eth0 mtu 1450", fl.VXLAN, fl.MTU, nodeA.InternalIP)
		}
		if cni := nl.ByName("cni0"); cni == nil || cni.Type != "bridge" {
			t.Errorf("cni0: %+v", cni)
		}
	})

	t.Run("routes", func(t *testing.T) {
		r := run(t, e.client, collectors.ScopeSource, "routes", &collectors.Params{To: dest(t, "198.19.1.10")}).Data.(*collectors.Routes)
		if d := r.Defaults("ipv4"); len(d) != 1 || d[0].Gateway != "198.19.2.1" || d[0].Dev != "eth0" {
			t.Errorf("client default routes: %+v", d)
		}
		if r.Chosen == nil || r.Chosen.Dev != "eth0" || r.Chosen.Gateway != "198.19.2.1" || r.Chosen.Src != "198.19.2.10" {
			t.Errorf("chosen route: %+v", r.Chosen)
		}
		nb := run(t, e.nodeB, collectors.ScopeNode, "routes", &collectors.Params{To: dest(t, "198.19.1.10")}).Data.(*collectors.Routes)
		if nb.Chosen == nil || nb.Chosen.Dev != "flannel.1" {
			t.Errorf("node-b route to web: %+v", nb.Chosen)
		}
	})

	t.Run("multipath", func(t *testing.T) {
		withFault(t, l, "dual-default-route")
		r := run(t, e.nodeA, collectors.ScopeNode, "routes", nil).Data.(*collectors.Routes)
		d := r.Defaults("ipv4")
		if len(d) != 1 || len(d[0].Nexthops) != 2 || d[0].Nexthops[0].Dev == d[0].Nexthops[1].Dev {
			t.Errorf("node-a default routes under dual-default-route: %+v", d)
		}
	})

	t.Run("neighbours", func(t *testing.T) {
		n := run(t, e.nodeB, collectors.ScopeNode, "neighbours", nil).Data.(*collectors.Neighbours)
		found := false
		for _, f := range n.FDB {
			if f.Dev == "flannel.1" && f.MAC == nodeA.Overlay.MAC && f.Dst == nodeA.InternalIP {
				found = true
			}
		}
		if !found {
			t.Errorf("node-b FDB lacks %s -> %s on flannel.1: %+v", nodeA.Overlay.MAC, nodeA.InternalIP, n.FDB)
		}
	})

	t.Run("sysctls", func(t *testing.T) {
		s := run(t, e.nodeB, collectors.ScopeNode, "sysctls", nil).Data.(*collectors.Sysctls)
		if !s.IPForward || s.PortRange() < 1000 || s.ConntrackMax == 0 {
			t.Errorf("node-b sysctls: %+v", s)
		}
		if _, ok := s.RPFilter["flannel.1"]; !ok {
			t.Errorf("rp_filter lacks flannel.1: %v", s.RPFilter)
		}
		withFault(t, l, "port-exhaustion")
		c := run(t, e.client, collectors.ScopeSource, "sysctls", nil).Data.(*collectors.Sysctls)
		if c.PortRange() != 8 {
			t.Errorf("client port range under port-exhaustion: %d-%d", c.PortRangeLow, c.PortRangeHigh)
		}
	})

	t.Run("iptables-dnat", func(t *testing.T) {
		p := prepared(t, e.client, &collectors.Params{To: dest(t, "198.18.96.20:80")})
		ipt := run(t, e.nodeB, collectors.ScopeNode, "iptables", p).Data.(*collectors.Iptables)
		if len(ipt.Traces) != 2 {
			t.Fatalf("traces: %+v", ipt.Traces)
		}
		tr := ipt.Traces[0]
		if tr.NATTo != "198.19.1.10:8080" || tr.Verdict != "ACCEPT" {
			t.Errorf("trace of web's ClusterIP: nat to %q verdict %s", tr.NATTo, tr.Verdict)
		}
		sawSEP := false
		for _, s := range tr.Steps {
			if strings.HasPrefix(s.Chain, "KUBE-SEP-") && s.Target == "DNAT" && strings.Contains(s.Rule, "198.19.1.10:8080") {
				sawSEP = true
			}
		}
		if !sawSEP {
			t.Errorf("no KUBE-SEP DNAT step: %+v", tr.Steps)
		}
	})

	t.Run("tcp-refused", func(t *testing.T) {
		r := run(t, e.client, collectors.ScopeSource, "tcp", &collectors.Params{To: dest(t, "198.19.1.10:9999")}).Data.(*collectors.TCP)
		if r.Refused != 3 || r.Connected != 0 {
			t.Errorf("closed port: %+v", r)
		}
		ok := run(t, e.client, collectors.ScopeSource, "tcp", &collectors.Params{To: dest(t, "198.19.1.10:8080")}).Data.(*collectors.TCP)
		if ok.Connected != 3 {
			t.Errorf("open port: %+v", ok)
		}
	})

	t.Run("drop-rule-timeout-and-counter", func(t *testing.T) {
		withFault(t, l, "port-firewall")
		p := prepared(t, e.client, &collectors.Params{To: dest(t, "198.19.1.10:8080"), ProbeTimeout: 300 * time.Millisecond})
		before := run(t, e.web, collectors.ScopePeer, "iptables", p).Data.(*collectors.Iptables)
		r := run(t, e.client, collectors.ScopeSource, "tcp", p).Data.(*collectors.TCP)
		if r.Timeout != 3 {
			t.Errorf("DROP rule: %+v, want 3 timeouts", r)
		}
		after := run(t, e.web, collectors.ScopePeer, "iptables", p).Data.(*collectors.Iptables)
		tb, ta := before.Traces[0], after.Traces[0]
		if ta.Verdict != "DROP" || !strings.Contains(ta.VerdictBy, "--dport 8080") {
			t.Fatalf("trace in web: verdict %s by %q", ta.Verdict, ta.VerdictBy)
		}
		cb, ca := dropCount(tb), dropCount(ta)
		if ca < cb+3 {
			t.Errorf("DROP counter went from %d to %d, want at least 3 more", cb, ca)
		}
	})

	t.Run("nftables-drop", func(t *testing.T) {
		withFault(t, l, "firewall-node")
		p := prepared(t, e.client, &collectors.Params{To: dest(t, "198.19.1.10:8080")})
		n := run(t, e.nodeB, collectors.ScopeNode, "nftables", p).Data.(*collectors.Nftables)
		if len(n.Traces) != 2 || n.Traces[0].Verdict != "DROP" || !strings.Contains(n.Traces[0].VerdictBy, "netdiag_policy") {
			t.Errorf("nft trace: %+v", n.Traces)
		}
	})

	t.Run("sockets", func(t *testing.T) {
		s := run(t, e.web, collectors.ScopePeer, "sockets", nil).Data.(*collectors.Sockets)
		ls := s.On("tcp", 8080)
		if len(ls) != 1 || (ls[0].Addr != "0.0.0.0" && ls[0].Addr != "::") || ls[0].Loopback() {
			t.Errorf("web listeners on 8080: %+v", ls)
		}
		// The client pod listens on nothing: nothing of the host may leak in.
		c := run(t, e.client, collectors.ScopeSource, "sockets", nil).Data.(*collectors.Sockets)
		if len(c.Listeners) != 0 {
			t.Errorf("client pod shows listeners %+v", c.Listeners)
		}
		withFault(t, l, "loopback-only")
		s = run(t, e.web, collectors.ScopePeer, "sockets", nil).Data.(*collectors.Sockets)
		if ls := s.On("tcp", 8080); len(ls) != 1 || !ls[0].Loopback() {
			t.Errorf("loopback-only listeners: %+v", ls)
		}
	})

	t.Run("resolv-and-dns", func(t *testing.T) {
		rc := run(t, e.client, collectors.ScopeSource, "resolv", nil).Data.(*collectors.ResolvConf)
		if len(rc.Nameservers) != 1 || rc.Nameservers[0] != "198.18.96.10" || rc.Ndots != 5 || rc.Search[0] != "default.svc.cluster.local" {
			t.Errorf("resolv.conf: %+v", rc)
		}
		d := run(t, e.client, collectors.ScopeSource, "dns", &collectors.Params{DNS: []string{"web", "example.com", "nosuch.invalid"}}).Data.(*collectors.DNS)
		want := map[string]string{"web": "198.18.96.20", "example.com": "198.18.10.10"}
		for _, lk := range d.Lookups {
			if w, ok := want[lk.Name]; ok {
				if !lk.Resolved || lk.Answers[0] != w {
					t.Errorf("lookup %s: %+v", lk.Name, lk)
				}
			} else if rc := lk.Queries[len(lk.Queries)-1].Rcode; lk.Resolved || (rc != "NXDOMAIN" && rc != "REFUSED") {
				t.Errorf("lookup %s should fail with NXDOMAIN or REFUSED (the upstream serves only its zone): %+v", lk.Name, lk)
			}
		}
		withFault(t, l, "dns-down")
		d = run(t, e.client, collectors.ScopeSource, "dns", &collectors.Params{DNS: []string{"web"}, ProbeTimeout: 500 * time.Millisecond}).Data.(*collectors.DNS)
		if d.Lookups[0].Resolved || d.Lookups[0].Queries[0].Error != "refused" {
			t.Errorf("DNS down: %+v", d.Lookups[0])
		}
	})

	t.Run("dns-truncated-retries-tcp", func(t *testing.T) {
		d := run(t, e.client, collectors.ScopeSource, "dns", &collectors.Params{DNS: []string{"many.example.com."}}).Data.(*collectors.DNS)
		lk := d.Lookups[0]
		a, _ := lk.Last()
		if !lk.Resolved || len(lk.Answers) != 40 || a.Type != "A" || !a.Truncated || a.Proto != "tcp" {
			t.Errorf("truncated answer: %+v", lk)
		}
	})

	t.Run("tcp-unreachable-and-no-port", func(t *testing.T) {
		withFault(t, l, "port-exhaustion")
		r := run(t, e.client, collectors.ScopeSource, "tcp", &collectors.Params{To: dest(t, "198.19.1.10:8080")}).Data.(*collectors.TCP)
		if r.AddrNotAvail != 3 {
			t.Errorf("port exhaustion: %+v", r)
		}
		lab.Clear(context.Background(), l.Instance, slog.New(slog.DiscardHandler))
		withFault(t, l, "route-missing")
		r = run(t, e.client, collectors.ScopeSource, "tcp", &collectors.Params{To: dest(t, "198.19.1.10:8080")}).Data.(*collectors.TCP)
		if r.Unreachable != 3 {
			t.Errorf("no route: %+v", r)
		}
	})

	t.Run("capture-summary", func(t *testing.T) {
		target := &collectors.Target{Source: e.client}
		capture := func(t *testing.T, p *collectors.Params, names ...string) *collectors.PcapSummary {
			t.Helper()
			p.Capture = collectors.CaptureOptions{Duration: 2500 * time.Millisecond, File: t.TempDir() + "/s.pcap"}
			evs := collectors.Run(context.Background(), target, target.Jobs(append(names, "capture")...), p)
			c, ev := collectors.Find[collectors.CaptureResult](evs, "capture", collectors.ScopeSource)
			if c == nil {
				t.Fatalf("capture: %+v", ev)
			}
			return c.Summary
		}
		t.Run("syn-without-synack", func(t *testing.T) {
			withFault(t, l, "port-firewall")
			s := capture(t, &collectors.Params{To: dest(t, "198.19.1.10:8080"), TCPAttempts: 1, ProbeTimeout: 1500 * time.Millisecond}, "tcp")
			u := s.Unanswered()
			if len(u) != 1 || u[0].SYNs < 2 {
				t.Errorf("want one flow with a retransmitted SYN and no SYN-ACK: %+v", s.Flows)
			}
		})
		t.Run("rst", func(t *testing.T) {
			s := capture(t, &collectors.Params{To: dest(t, "198.19.1.10:9999"), TCPAttempts: 1}, "tcp")
			if len(s.Flows) != 1 || s.Flows[0].RSTFrom != "198.19.1.10" {
				t.Errorf("want a RST from web: %+v", s.Flows)
			}
		})
		t.Run("frag-needed", func(t *testing.T) {
			withFault(t, l, "mtu-mismatch")
			s := capture(t, &collectors.Params{To: dest(t, "198.19.1.10")}, "pmtu")
			found := false
			for _, n := range s.ICMP {
				if n.Type == 3 && n.Code == 4 && n.MTU == 1450 {
					found = true
				}
			}
			if !found {
				t.Errorf("want fragmentation-needed with MTU 1450: %+v", s.ICMP)
			}
		})
		t.Run("dns-unanswered", func(t *testing.T) {
			withFault(t, l, "dns-path-broken")
			s := capture(t, &collectors.Params{DNS: []string{"web"}, ProbeTimeout: 300 * time.Millisecond}, "dns")
			if len(s.DNS) == 0 || s.DNS[0].Server != "198.18.96.10" {
				t.Errorf("want unanswered queries to the DNS Service: %+v", s.DNS)
			}
		})
		t.Run("full-size-retransmits", func(t *testing.T) {
			withFault(t, l, "mtu-blackhole")
			pcap := t.TempDir() + "/r.pcap"
			c, err := collectors.StartCapture(context.Background(), e.client, collectors.CaptureOptions{Duration: 4 * time.Second, File: pcap, Filter: "tcp port 8080"})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
			conn, err := e.client.Dial(ctx, "tcp", "198.19.1.10:8080")
			if err == nil {
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				conn.Write([]byte("POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 65536\r\n\r\n"))
				conn.Write(make([]byte, 65536))
				// The kernel retransmits the lost segments over the
				// next second (RTO 200 ms, doubling).
				time.Sleep(1500 * time.Millisecond)
				conn.Close()
			}
			cancel()
			c.Stop()
			res, err := c.Wait()
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Summary.Flows) == 0 || res.Summary.Flows[0].FullSizeRetx == 0 || res.Summary.Flows[0].MSS != 1460 {
				t.Errorf("want retransmitted full-size segments under an MSS of 1460: %+v", res.Summary.Flows)
			}
		})
	})

	t.Run("ping-and-hops", func(t *testing.T) {
		p := run(t, e.client, collectors.ScopeSource, "ping", &collectors.Params{To: dest(t, "198.19.1.10")}).Data.(*collectors.Ping)
		if p.Sent != 5 || p.Received != 5 || p.LossPct != 0 || p.AvgMS <= 0 {
			t.Errorf("ping: %+v", p)
		}
		h := run(t, e.client, collectors.ScopeSource, "hops", &collectors.Params{To: dest(t, "198.19.1.10")}).Data.(*collectors.Hops)
		if !h.Reached || len(h.Hops) != 3 || h.Hops[0].Addrs[0] != "198.19.2.1" || h.Hops[2].Addrs[0] != "198.19.1.10" {
			t.Errorf("hops: %+v", h)
		}
	})

	t.Run("pmtu", func(t *testing.T) {
		p := &collectors.Params{To: dest(t, "198.19.1.10")}
		m := run(t, e.client, collectors.ScopeSource, "pmtu", p).Data.(*collectors.PathMTU)
		if m.PathMTU != 1450 || m.IfaceMTU != 1450 || len(m.Probes) != 1 {
			t.Errorf("healthy path MTU: %+v", m)
		}
		withFault(t, l, "mtu-mismatch")
		m = run(t, e.client, collectors.ScopeSource, "pmtu", p).Data.(*collectors.PathMTU)
		if m.IfaceMTU != 1500 || m.PathMTU != 1450 || len(m.FragNeeded) == 0 || m.FragNeeded[0].MTU != 1450 || m.Blackhole {
			t.Errorf("mtu-mismatch path MTU: %+v", m)
		}
	})

	t.Run("pmtu-blackhole", func(t *testing.T) {
		withFault(t, l, "mtu-blackhole")
		p := &collectors.Params{To: dest(t, "198.19.1.10"), ProbeTimeout: 300 * time.Millisecond}
		m := run(t, e.client, collectors.ScopeSource, "pmtu", p).Data.(*collectors.PathMTU)
		// Twelve probes at most for the search, and one that asks the full
		// size again before calling it a black hole.
		if m.PathMTU != 1450 || !m.Blackhole || len(m.FragNeeded) != 0 || len(m.Probes) > 13 {
			t.Errorf("black hole path MTU: %+v", m)
		}
	})

	t.Run("capture", func(t *testing.T) {
		pcap := t.TempDir() + "/probe.pcap"
		target := &collectors.Target{Source: e.client}
		p := &collectors.Params{To: dest(t, "198.19.1.10:8080"), Capture: collectors.CaptureOptions{
			Duration: 1500 * time.Millisecond, Filter: "tcp port 8080", File: pcap}}
		evs := collectors.Run(context.Background(), target, target.Jobs("capture", "tcp"), p)
		c, ev := collectors.Find[collectors.CaptureResult](evs, "capture", collectors.ScopeSource)
		if c == nil {
			t.Fatalf("no capture evidence: %+v", ev)
		}
		if c.Packets < 9 || c.KernelDrops != 0 || c.File != pcap {
			t.Errorf("capture: %+v", c)
		}
		if len(c.Summary.Flows) != 3 || !c.Summary.Flows[0].SYNACK {
			t.Errorf("summary: %+v", c.Summary)
		}
		out, err := exec.Command("tcpdump", "-nr", pcap).CombinedOutput()
		if err != nil {
			t.Fatalf("tcpdump -r: %v: %s", err, out)
		}
		if !strings.Contains(string(out), "198.19.1.10.8080: Flags [S]") {
			t.Errorf("pcap lacks the probe's SYNs:\n%s", out)
		}
	})

	t.Run("capture-bounded-by-packets", func(t *testing.T) {
		target := &collectors.Target{Source: e.client}
		p := &collectors.Params{To: dest(t, "198.19.1.10"), PingCount: 10, PingInterval: 10 * time.Millisecond,
			Capture: collectors.CaptureOptions{Duration: 5 * time.Second, MaxPackets: 4, File: t.TempDir() + "/x.pcap"}}
		start := time.Now()
		evs := collectors.Run(context.Background(), target, target.Jobs("capture", "ping"), p)
		c, _ := collectors.Find[collectors.CaptureResult](evs, "capture", collectors.ScopeSource)
		if c == nil || c.Packets != 4 || c.StoppedBy != "packets" || time.Since(start) > 4*time.Second {
			t.Errorf("capture bounded by 4 packets: %+v after %s", c, time.Since(start))
		}
	})

	t.Run("evidence-json-roundtrip", func(t *testing.T) {
		target := &collectors.Target{Source: e.client}
		back := roundTrip(t, collectors.Run(context.Background(), target, target.Jobs("links", "routes", "sockets"), &collectors.Params{}))
		links, _ := collectors.Find[collectors.Links](back, "links", collectors.ScopeSource)
		if links == nil || links.ByName("eth0").MTU != 1450 {
			t.Errorf("decoded links: %+v", links)
		}
	})

	t.Run("drops-wrap-probes", func(t *testing.T) {
		// The drops watch is attached before the probes start and sees
		// their packets; its evidence crosses JSON typed.
		target := &collectors.Target{Source: e.client, Peer: e.web}
		p := &collectors.Params{To: dest(t, "198.19.1.10:9999"), TCPAttempts: 1}
		if err := collectors.Prepare(target, p, nil); err != nil {
			t.Fatal(err)
		}
		back := roundTrip(t, collectors.Run(context.Background(), target, target.Jobs("drops", "tcp"), p))
		d, ev := collectors.Find[collectors.DropsResult](back, "drops", collectors.ScopeSource)
		if d == nil || d.Method != "ebpf" || d.ByReason["NO_SOCKET"] == 0 {
			t.Fatalf("drops of a connect to a closed port: %+v %+v", d, ev)
		}
		for _, x := range d.Drops {
			if x.Reason == "NO_SOCKET" && (x.Where != "peer" || x.DPort != 9999 || x.Packet != "SYN") {
				t.Errorf("drop: %+v", x)
			}
		}
	})

	t.Run("all-parallel", func(t *testing.T) {
		target := &collectors.Target{Source: e.client, Peer: e.web, Node: e.nodeB}
		p := &collectors.Params{To: dest(t, "198.19.1.10:8080"), DNS: []string{"web"}}
		if err := collectors.Prepare(target, p, nil); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range collectors.List() {
			if c.Name != "capture" {
				names = append(names, c.Name)
			}
		}
		evs := collectors.Run(context.Background(), target, target.Jobs(names...), p)
		for _, ev := range evs {
			if ev.Status != collectors.StatusOK && ev.Status != collectors.StatusNotApplicable {
				t.Errorf("%s %s: %s %s: %s", ev.Collector, ev.Scope, ev.Status, ev.ErrorKind, ev.Error)
			}
		}
	})

	t.Run("threads-stay-home", func(t *testing.T) {
		origin, err := netns.Origin()
		if err != nil {
			t.Fatal(err)
		}
		target := &collectors.Target{Source: e.client, Peer: e.web, Node: e.nodeB}
		p := &collectors.Params{To: dest(t, "198.19.1.10:8080"), PingCount: 2, PingInterval: time.Millisecond}
		for range 20 {
			collectors.Run(context.Background(), target, target.Jobs("links", "sockets", "sysctls", "tcp", "ping", "iptables"), p)
		}
		threads, err := netns.ThreadNamespaces()
		if err != nil {
			t.Fatal(err)
		}
		for tid, ino := range threads {
			if ino != origin.Inode() {
				t.Errorf("thread %d is in net:[%d], not the origin net:[%d]", tid, ino, origin.Inode())
			}
		}
	})
}

// prepared fills the question's flows from the client pod, as a run would
// before tracing them in other namespaces.
func prepared(t *testing.T, src *netns.NS, p *collectors.Params) *collectors.Params {
	t.Helper()
	if err := collectors.Prepare(&collectors.Target{Source: src}, p, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

func dropCount(tr collectors.FlowTrace) uint64 {
	for _, s := range tr.Steps {
		if s.Target == "DROP" {
			return s.Packets
		}
	}
	return 0
}

// TestBadInput: each bad input gives a clear error, never a panic.
func TestBadInput(t *testing.T) {
	labtest.RequireRoot(t)
	if _, err := netns.Open("/run/netns/ndl-nosuch-ns"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing namespace: %v", err)
	}
	if _, err := netns.OpenPID(1 << 22); err == nil {
		t.Error("gone PID: no error")
	}
	if _, err := netns.Open("/etc/hostname"); err == nil {
		t.Error("a regular file opened as a namespace")
	}
	self, err := netns.Origin()
	if err != nil {
		t.Fatal(err)
	}
	_, err = collectors.CompileFilter(context.Background(), "tcp port", 128)
	if err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("bad filter: %v", err)
	}
	_, err = collectors.StartCapture(context.Background(), self, collectors.CaptureOptions{Iface: "nosuch0"})
	if err == nil || !strings.Contains(err.Error(), `no interface "nosuch0"`) {
		t.Errorf("missing interface: %v", err)
	}
	ev := collectors.RunOne(context.Background(), self, collectors.ScopeSource, "dns",
		&collectors.Params{DNS: []string{"example.com"}, Nameservers: []string{"not-an-ip"}})
	if !strings.Contains(ev.Error, `"not-an-ip" is not an IP address`) {
		t.Errorf("bad nameserver: %q", ev.Error)
	}
	ev = collectors.RunOne(context.Background(), self, collectors.ScopeSource, "tcp", &collectors.Params{})
	if !strings.Contains(ev.Error, "--to") {
		t.Errorf("tcp without destination: %q", ev.Error)
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		t.Fatal(err)
	}
}

// roundTrip sends evidence through JSON as an agent's answer does.
func roundTrip(t *testing.T, evs []collectors.Evidence) []collectors.Evidence {
	t.Helper()
	b, err := json.Marshal(evs)
	if err != nil {
		t.Fatal(err)
	}
	var back []collectors.Evidence
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return back
}
