package diagnose_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/lab/labtest"
	"golang.org/x/net/dns/dnsmessage"
)

// These tests ask the questions of issue 9 on namespaces the lab did not
// build: bare hosts, Docker-style rule sets, IPv6 destinations, traffic
// beside the probes, a resolv.conf without nameserver.

func diagnoseReq(t *testing.T, r *diagnose.Request) *diagnose.Finding {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, err := (&diagnose.Engine{Runner: diagnose.LocalRunner{}}).Diagnose(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func dest(s string) *collectors.Dest {
	d, err := collectors.ParseDest(s)
	if err != nil {
		panic(err)
	}
	return d
}

func want(t *testing.T, f *diagnose.Finding, v diagnose.Verdict, minConf float64) {
	t.Helper()
	if f.Verdict() != v || f.Confidence < minConf {
		var b strings.Builder
		f.WriteText(&b)
		t.Errorf("got %s %.2f, want %s >= %.2f\n%s", f.Verdict(), f.Confidence, v, minConf, b.String())
	}
}

// twoHosts is a client and a server on one segment, both families.
func twoHosts(t *testing.T, prefix string) *labtest.Bare {
	b := labtest.NewBare(t, prefix, "a", "b")
	b.Link("a", "eth0", []string{"198.18.200.1/24", "2001:2:200::1/64"}, "b", "eth0", []string{"198.18.200.2/24", "2001:2:200::2/64"}, 1500)
	return b
}

func TestIPv6Destinations(t *testing.T) {
	b := twoHosts(t, "tv6")
	b.Serve("b", "tcp", "[::]:8080", false)
	b.Serve("b", "tcp", "[::]:8081", false)
	b.Rules("b", "ip6tables", `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 8081 -m comment --comment "block 8081 over IPv6" -j DROP
COMMIT
`)
	for _, tc := range []struct {
		name string
		to   string
		peer bool
		want diagnose.Verdict
		conf float64
	}{
		{"healthy", "[2001:2:200::2]:8080", true, diagnose.Healthy, 0.9},
		{"healthy without the peer's view", "[2001:2:200::2]:8080", false, diagnose.Healthy, 0.9},
		{"refused", "[2001:2:200::2]:9090", true, diagnose.PortNotListen, 0.9},
		{"refused, the kernel's word", "[2001:2:200::2]:9090", false, diagnose.PortNotListen, 0.8},
		{"firewall", "[2001:2:200::2]:8081", true, diagnose.PortFirewall, 0.9},
		{"firewall, the kernel's word", "[2001:2:200::2]:8081", false, diagnose.PortFirewall, 0.8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &diagnose.Request{Source: diagnose.NetnsPlace(b.Path("a")), To: dest(tc.to)}
			if tc.peer {
				r.Peer = diagnose.NetnsPlace(b.Path("b"))
			}
			f := diagnoseReq(t, r)
			want(t, f, tc.want, tc.conf)
			if f.Family != "ipv6" {
				t.Errorf("family %q, want ipv6", f.Family)
			}
			// A finding claims only what was checked: two bare hosts have
			// no overlay.
			for _, c := range f.AlsoConsidered {
				if strings.Contains(c.RuledOutBy, "VXLAN") || strings.Contains(c.RuledOutBy, "8472") || strings.Contains(c.RuledOutBy, "overlay") {
					t.Errorf("ruled out by a check that did not run: %s/%s: %s", c.Class, c.Cause, c.RuledOutBy)
				}
			}
		})
	}
}

// TestIPv6Capture: a capture with an IPv6 filter records the probes' IPv6
// flows, and its summary reads them (the SYN-ACK and its MSS).
func TestIPv6Capture(t *testing.T) {
	b := twoHosts(t, "tcap6")
	b.Serve("b", "tcp", "[::]:8080", false)
	pcap := filepath.Join(t.TempDir(), "v6.pcap")
	f := diagnoseReq(t, &diagnose.Request{Source: diagnose.NetnsPlace(b.Path("a")), To: dest("[2001:2:200::2]:8080"), Capture: time.Second,
		Filter: "ip6 and tcp port 8080", Pcap: pcap})
	want(t, f, diagnose.Healthy, 0.9)
	if f.Pcap == nil || *f.Pcap != pcap {
		t.Fatalf("pcap %v, want %s", f.Pcap, pcap)
	}
	if st, err := os.Stat(pcap); err != nil || st.Size() <= 24 {
		t.Fatalf("pcap %s: %v", pcap, err)
	}
	seen := 0
	for _, ev := range f.Raw {
		if c, ok := ev.Data.(*collectors.CaptureResult); ok && c.Summary != nil {
			for _, fl := range c.Summary.Flows {
				if fl.Server == netip.MustParseAddrPort("[2001:2:200::2]:8080") && fl.SYNACK && fl.MSS > 0 {
					seen++
				}
			}
		}
	}
	if seen == 0 {
		t.Error("the capture summary holds no answered IPv6 connect")
	}
}

// TestInterfaceScopedRules: real nodes carry rules for other interfaces
// (Docker, kube-proxy, Calico); they must neither explain a closed port nor
// hide a real drop.
func TestInterfaceScopedRules(t *testing.T) {
	b := twoHosts(t, "tifr")
	b.Serve("b", "tcp", "0.0.0.0:8082", false)
	rules := `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
-A INPUT -j DOCKER-ISOLATION-STAGE-1
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 8082 -m comment --comment "app port closed to the network" -j DROP
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A DOCKER-USER -j RETURN
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
COMMIT
`
	b.Rules("b", "iptables", rules)
	b.Rules("b", "ip6tables", rules)
	for _, tc := range []struct {
		name string
		to   string
		want diagnose.Verdict
	}{
		{"closed port behind docker rules", "198.18.200.2:9091", diagnose.PortNotListen},
		{"closed port behind docker rules, IPv6", "[2001:2:200::2]:9091", diagnose.PortNotListen},
		{"lo accept does not hide the drop", "198.18.200.2:8082", diagnose.PortFirewall},
		{"lo accept does not hide the drop, IPv6", "[2001:2:200::2]:8082", diagnose.PortFirewall},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := diagnoseReq(t, &diagnose.Request{Source: diagnose.NetnsPlace(b.Path("a")), Peer: diagnose.NetnsPlace(b.Path("b")), To: dest(tc.to), Drops: "off"})
			want(t, f, tc.want, 0.9)
			if tc.want == diagnose.PortFirewall && !strings.Contains(strings.Join(evidence(f), "\n"), "app port closed") {
				t.Errorf("the rule is not named: %v", evidence(f))
			}
		})
	}
}

func evidence(f *diagnose.Finding) []string {
	var out []string
	for _, o := range f.Evidence {
		out = append(out, o.Collector+": "+o.Observation)
	}
	return out
}

// TestHealthyBesideLossyBulkFlow: a lossy bulk transfer to another port of
// the same host retransmits full-size segments in the capture; the port
// asked about is healthy, and so is the verdict.
func TestHealthyBesideLossyBulkFlow(t *testing.T) {
	b := twoHosts(t, "tbulk")
	b.Serve("b", "tcp", "0.0.0.0:8083", false)
	bulk := b.Serve("b", "tcp", "0.0.0.0:9000", true)
	// Only the bulk flow's full-size segments are lost: its connections
	// open at once, and what the capture sees sent again is full-size.
	b.Rules("b", "iptables", `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 9000 -m length --length 1000:65535 -m statistic --mode random --probability 0.2 -j DROP
COMMIT
`)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// New connections, each sending for a moment: the capture sees them
	// open (their SYN-ACK's MSS) and sees their full-size segments sent
	// again.
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for ctx.Err() == nil {
			c, err := b.NS("a").Dial(ctx, "tcp", netip.AddrPortFrom(netip.MustParseAddr("198.18.200.2"), bulk.Port()).String())
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			for ctx.Err() == nil {
				if _, err := c.Write(buf); err != nil {
					break
				}
			}
			c.Close()
		}
	})
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(300 * time.Millisecond)
	f := diagnoseReq(t, &diagnose.Request{Source: diagnose.NetnsPlace(b.Path("a")), To: dest("198.18.200.2:8083"), Capture: 2 * time.Second,
		Pcap: filepath.Join(t.TempDir(), "bulk.pcap")})
	want(t, f, diagnose.Healthy, 0.9)
	// The test means something only if the capture did see the bulk flow
	// sending full-size segments again.
	retx := 0
	for _, ev := range f.Raw {
		if c, ok := ev.Data.(*collectors.CaptureResult); ok && c.Summary != nil {
			for _, fl := range c.Summary.Flows {
				if fl.Server.Port() == bulk.Port() {
					retx += fl.FullSizeRetx
				}
			}
		}
	}
	if retx == 0 {
		t.Errorf("the capture saw no full-size retransmission of the bulk flow: the case was not exercised")
	}
}

func TestResolvConfWithoutNameserver(t *testing.T) {
	b := twoHosts(t, "tnons")
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("search example.internal\noptions ndots:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := diagnoseReq(t, &diagnose.Request{Source: diagnose.NetnsPlace(b.Path("a")), ResolvConf: rc, DNS: []string{"web.example.internal"}})
	want(t, f, diagnose.DNSConfig, 0.9)
	if !strings.Contains(f.Summary, "no nameserver") {
		t.Errorf("summary does not say what is wrong: %s", f.Summary)
	}
}

// TestPMTUBlackHole: a router in between with a smaller link that does not
// let its fragmentation-needed / packet-too-big out, for both families.
func TestPMTUBlackHole(t *testing.T) {
	b := labtest.NewBare(t, "tpmtu", "a", "r", "b")
	b.Link("a", "eth0", []string{"198.18.201.1/24", "2001:2:201::1/64"}, "r", "ra", []string{"198.18.201.254/24", "2001:2:201::fe/64"}, 1500)
	b.Link("r", "rb", []string{"198.18.202.254/24", "2001:2:202::fe/64"}, "b", "eth0", []string{"198.18.202.1/24", "2001:2:202::1/64"}, 1400)
	b.Sysctl("r", "ipv4.ip_forward", "1")
	b.Sysctl("r", "ipv6.conf.all.forwarding", "1")
	for _, x := range []struct{ ns, v4, v6 string }{{"a", "198.18.201.254", "2001:2:201::fe"}, {"b", "198.18.202.254", "2001:2:202::fe"}} {
		b.Route(x.ns, "default", x.v4)
		b.Route(x.ns, "default", x.v6)
	}
	b.Serve("b", "tcp", "[::]:8080", true)
	b.Rules("r", "iptables", `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p icmp -m icmp --icmp-type 3/4 -j DROP
COMMIT
`)
	b.Rules("r", "ip6tables", `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 2 -j DROP
COMMIT
`)
	for _, to := range []string{"198.18.202.1:8080", "[2001:2:202::1]:8080"} {
		t.Run(to, func(t *testing.T) {
			f := diagnoseReq(t, &diagnose.Request{Source: diagnose.NetnsPlace(b.Path("a")), To: dest(to)})
			want(t, f, diagnose.MTUMismatch, 0.9)
			if !strings.Contains(strings.Join(evidence(f), "\n"), "black hole") {
				t.Errorf("no black hole in the evidence: %v", evidence(f))
			}
		})
	}
}

// TestDualStackName: a destination with both families probes both and says
// which one failed.
func TestDualStackName(t *testing.T) {
	b := twoHosts(t, "tdual")
	b.Serve("b", "tcp4", "0.0.0.0:8084", false) // IPv4 only
	f := diagnoseReq(t, &diagnose.Request{Source: diagnose.NetnsPlace(b.Path("a")), Peer: diagnose.NetnsPlace(b.Path("b")),
		To: dest("198.18.200.2:8084"), AltTo: dest("[2001:2:200::2]:8084")})
	want(t, f, diagnose.PortNotListen, 0.9)
	if f.Family != "ipv6" || !strings.Contains(f.Summary, "IPv6 only") {
		t.Errorf("family %q, summary %q: want it to say IPv6 failed and IPv4 works", f.Family, f.Summary)
	}
}

// serveDNS answers A and AAAA queries for names under zone on a UDP socket
// opened in a namespace, until the test ends.
func serveDNS(t *testing.T, b *labtest.Bare, ns, addr, zone string, a, aaaa netip.Addr) {
	t.Helper()
	pc, err := b.NS(ns).ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			out := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RecursionAvailable: true})
			out.StartQuestions()
			out.Question(q)
			out.StartAnswers()
			rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}
			switch {
			case !strings.HasSuffix(q.Name.String(), zone):
			case q.Type == dnsmessage.TypeA:
				out.AResource(rh, dnsmessage.AResource{A: a.As4()})
			case q.Type == dnsmessage.TypeAAAA:
				out.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: aaaa.As16()})
			}
			msg, err := out.Finish()
			if err == nil {
				pc.WriteTo(msg, from)
			}
		}
	}()
}

// TestDNSOverIPv6Nameserver: a resolv.conf whose nameserver is an IPv6
// address is asked over IPv6, for A and AAAA; with nothing listening there,
// the server is down, not the pod's configuration.
func TestDNSOverIPv6Nameserver(t *testing.T) {
	b := twoHosts(t, "tdns6")
	serveDNS(t, b, "b", "[2001:2:200::2]:53", "example.internal.", netip.MustParseAddr("198.18.200.2"), netip.MustParseAddr("2001:2:200::2"))
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.conf"), filepath.Join(dir, "bad.conf")
	os.WriteFile(good, []byte("nameserver 2001:2:200::2\nsearch example.internal\n"), 0o644)
	os.WriteFile(bad, []byte("nameserver 2001:2:200::99\nsearch example.internal\n"), 0o644)
	f := diagnoseReq(t, &diagnose.Request{Source: diagnose.NetnsPlace(b.Path("a")), ResolvConf: good, DNS: []string{"web"}})
	want(t, f, diagnose.Healthy, 0.9)
	ev := strings.Join(evidence(f), "\n")
	if !strings.Contains(ev, "198.18.200.2") || !strings.Contains(ev, "2001:2:200::2") {
		t.Errorf("want both the A and the AAAA answer in the evidence:\n%s", ev)
	}
	f = diagnoseReq(t, &diagnose.Request{Source: diagnose.NetnsPlace(b.Path("a")), ResolvConf: bad, DNS: []string{"web"}})
	t.Logf("unreachable IPv6 nameserver: %s %.2f: %s", f.Verdict(), f.Confidence, strings.Join(evidence(f), "; "))
	if f.Verdict() == diagnose.Healthy || f.Verdict() == diagnose.DNSConfig {
		t.Errorf("an unreachable IPv6 nameserver: %s (%s)", f.Verdict(), f.Summary)
	}
}
