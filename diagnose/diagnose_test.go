package diagnose

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/collectors/drops"
)

func TestTaxonomyIdentifiers(t *testing.T) {
	want := []string{
		"network-unreachable/firewall", "network-unreachable/route", "network-unreachable/overload", "network-unreachable/link-down",
		"port-unreachable/firewall", "port-unreachable/not-listening", "port-unreachable/loopback-only", "port-unreachable/port-exhaustion", "port-unreachable/no-endpoints",
		"dns-failure/pod-dns-config", "dns-failure/dns-service-down", "dns-failure/dns-path-broken", "dns-failure/upstream-failure",
		"large-packet-loss/mtu-mismatch",
		"cni-anomaly/kube-proxy-down", "cni-anomaly/service-rules-missing", "cni-anomaly/podcidr-exhausted", "cni-anomaly/overlay-misconfigured",
		"healthy/none",
		"inconclusive/target-not-found", "inconclusive/agent-unreachable", "inconclusive/insufficient-evidence",
	}
	if len(Taxonomy) != len(want) {
		t.Fatalf("%d verdicts, want %d", len(Taxonomy), len(want))
	}
	for i, v := range Taxonomy {
		if v.String() != want[i] {
			t.Errorf("verdict %d is %s, want %s", i, v, want[i])
		}
		if _, err := ParseVerdict(want[i]); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseVerdict("dns-failure/other"); err == nil {
		t.Error("unknown verdict accepted")
	}
}

// refused builds the evidence of three refused connects, with the
// destination's listeners when given.
func refused(listeners []collectors.Listener) []collectors.Evidence {
	tcp := &collectors.TCP{Dst: "10.0.0.5:8080", Refused: 3}
	for range 3 {
		tcp.Attempts = append(tcp.Attempts, collectors.TCPAttempt{Result: "refused"})
	}
	evs := []collectors.Evidence{
		{Collector: "tcp", Scope: collectors.ScopeSource, Data: tcp},
		{Collector: "ping", Scope: collectors.ScopeSource, Data: &collectors.Ping{Dst: "10.0.0.5", Sent: 5, Received: 5}},
	}
	if listeners != nil {
		evs = append(evs, collectors.Evidence{Collector: "sockets", Scope: collectors.ScopePeer, Data: &collectors.Sockets{Listeners: listeners}})
	}
	return evs
}

func TestRefusedConnections(t *testing.T) {
	req := &Request{Source: NetnsPlace("/run/netns/a"), Peer: NetnsPlace("/run/netns/b"), To: &collectors.Dest{Addr: netip.MustParseAddr("10.0.0.5"), Port: 8080}}
	for _, tc := range []struct {
		name string
		evs  []collectors.Evidence
		want Verdict
		conf float64
	}{
		{"loopback", refused([]collectors.Listener{{Proto: "tcp", Addr: "127.0.0.1", Port: 8080}}), PortLoopback, 0.95},
		{"nothing", refused([]collectors.Listener{{Proto: "tcp", Addr: "0.0.0.0", Port: 9090}}), PortNotListen, 0.95},
		{"no peer view", refused(nil), PortNotListen, 0.6},
	} {
		f := Classify(req, tc.evs)
		if f.Verdict() != tc.want || f.Confidence != tc.conf {
			t.Errorf("%s: %s %.2f, want %s %.2f (%s)", tc.name, f.Verdict(), f.Confidence, tc.want, tc.conf, f.Summary)
		}
	}
}

// TestJSONContract: the fields scripts rely on are always there, pcap is
// null without a capture, lists are [] not null.
func TestJSONContract(t *testing.T) {
	req := &Request{Source: NetnsPlace("/run/netns/a"), To: &collectors.Dest{Addr: netip.MustParseAddr("10.0.0.5"), Port: 8080}}
	f := Classify(req, refused(nil))
	var b bytes.Buffer
	if err := f.WriteJSON(&b, false); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"class", "cause", "confidence", "summary", "evidence", "also_considered", "next_steps", "timings", "pcap"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if m["pcap"] != nil {
		t.Errorf("pcap = %v, want null", m["pcap"])
	}
	if _, ok := m["timings"].(map[string]any)["total_ms"]; !ok {
		t.Error("timings lacks total_ms")
	}
	ev := m["evidence"].([]any)[0].(map[string]any)
	if ev["collector"] == nil || ev["observation"] == nil {
		t.Errorf("evidence item %v", ev)
	}
	var md bytes.Buffer
	f.WriteMarkdown(&md)
	if !strings.HasPrefix(md.String(), "**port-unreachable/not-listening**") {
		t.Errorf("markdown: %s", md.String())
	}
}

func TestInsufficientEvidence(t *testing.T) {
	req := &Request{Source: NetnsPlace("/run/netns/a"), To: &collectors.Dest{Addr: netip.MustParseAddr("10.0.0.5"), Port: 8080}}
	tcp := &collectors.TCP{Dst: "10.0.0.5:8080", Timeout: 3, Attempts: []collectors.TCPAttempt{{Result: "timeout"}, {Result: "timeout"}, {Result: "timeout"}}}
	f := Classify(req, []collectors.Evidence{{Collector: "tcp", Scope: collectors.ScopeSource, Data: tcp}})
	if f.Verdict() != Insufficient || len(f.NextSteps) == 0 || len(f.Evidence) == 0 {
		t.Errorf("timeouts with nothing else: %s %+v", f.Verdict(), f)
	}
}

// TestKernelDropReasons: the kernel's reason decides between causes that
// look alike from the source; approximate (tracefs) drops never decide, and
// drops the probes cause by design are not reported as problems.
func TestKernelDropReasons(t *testing.T) {
	req := &Request{Source: NetnsPlace("/run/netns/a"), To: &collectors.Dest{Addr: netip.MustParseAddr("10.0.0.5"), Port: 8080}}
	syn := func(reason, where, netnsName string) drops.Drop {
		return drops.Drop{Reason: reason, Location: "nft_do_chain+0x1", Dev: "eth0", Where: where, NetnsName: netnsName, Proto: "tcp",
			Src: "10.0.0.9", Dst: "10.0.0.5", SPort: 40000, DPort: 8080, Packet: "SYN", TTL: 64}
	}
	echo := func(reason string) drops.Drop {
		return drops.Drop{Reason: reason, Location: "ip_forward+0x2", Dev: "cni0", Where: "node", Proto: "icmp", Src: "10.0.0.9", Dst: "10.0.0.5", Packet: "echo request", TTL: 64}
	}
	with := func(evs []collectors.Evidence, approximate bool, ds ...drops.Drop) []collectors.Evidence {
		res := &collectors.DropsResult{Method: "ebpf", Approximate: approximate, Drops: ds, ByReason: map[string]int{}}
		if approximate {
			res.Method = "tracefs"
		}
		for _, d := range ds {
			res.ByReason[d.Reason]++
		}
		return append(evs, collectors.Evidence{Collector: "drops", Scope: collectors.ScopeSource, Data: res})
	}
	dead := func() []collectors.Evidence {
		tcp := &collectors.TCP{Dst: "10.0.0.5:8080", Timeout: 3, Attempts: []collectors.TCPAttempt{{Result: "timeout"}, {Result: "timeout"}, {Result: "timeout"}}}
		return []collectors.Evidence{
			{Collector: "tcp", Scope: collectors.ScopeSource, Data: tcp},
			{Collector: "ping", Scope: collectors.ScopeSource, Data: &collectors.Ping{Dst: "10.0.0.5", Sent: 5, Received: 0}},
		}
	}
	hop := drops.Drop{Reason: "IP_INHDR", Where: "node", Proto: "icmp", Src: "10.0.0.9", Dst: "10.0.0.5", Packet: "echo request", TTL: 1}
	for _, tc := range []struct {
		name    string
		evs     []collectors.Evidence
		want    Verdict
		minConf float64
		says    string
	}{
		{"reset by netfilter", with(refused(nil), false, syn("NETFILTER_DROP", "", "cni-1234")), PortFirewall, 0.85, "in namespace cni-1234 on eth0 by nft_do_chain: NETFILTER_DROP"},
		{"reset for no socket", with(refused(nil), false, syn("NO_SOCKET", "", "cni-1234")), PortNotListen, 0.85, "NO_SOCKET"},
		{"approximate does not decide", with(refused(nil), true, syn("NETFILTER_DROP", "", "")), PortNotListen, 0.6, "approximate"},
		{"silent drop by netfilter", with(dead(), false, syn("NETFILTER_DROP", "peer-node", "")), NetFirewall, 0.85, "the destination's node"},
		{"reverse-path filter", with(dead(), false, syn("IP_RPFILTER", "peer-node", "")), NetRoute, 0.8, "IP_RPFILTER"},
		{"neighbour", with(dead(), false, echo("NEIGH_FAILED")), NetLinkDown, 0.75, "does not answer ARP"},
		{"too big", with(dead(), false, echo("PKT_TOO_BIG")), MTUMismatch, 0.9, "PKT_TOO_BIG"},
		{"hop probes are not a problem", with(dead(), false, hop), Insufficient, 0.3, ""},
	} {
		f := Classify(req, tc.evs)
		var text []string
		for _, o := range f.Evidence {
			text = append(text, o.Observation)
		}
		all := f.Summary + "\n" + strings.Join(text, "\n")
		if f.Verdict() != tc.want || f.Confidence < tc.minConf || !strings.Contains(all, tc.says) {
			t.Errorf("%s: %s %.2f, want %s >= %.2f saying %q:\n%s", tc.name, f.Verdict(), f.Confidence, tc.want, tc.minConf, tc.says, all)
		}
		if tc.name == "hop probes are not a problem" && strings.Contains(all, "IP_INHDR") {
			t.Errorf("an expired hop probe was reported: %s", all)
		}
	}
}

// TestDropsUnavailable: without the kernel's drop reasons the diagnosis goes
// on and says what it could not see.
func TestDropsUnavailable(t *testing.T) {
	req := &Request{Source: NetnsPlace("/run/netns/a"), Peer: NetnsPlace("/run/netns/b"), To: &collectors.Dest{Addr: netip.MustParseAddr("10.0.0.5"), Port: 8080}}
	evs := append(refused([]collectors.Listener{{Proto: "tcp", Addr: "0.0.0.0", Port: 9090}}),
		collectors.Evidence{Collector: "drops", Scope: collectors.ScopeSource, Data: &collectors.DropsResult{Method: "unavailable", Note: "the kernel's drop reasons could not be read: no BTF"}})
	f := Classify(req, evs)
	last := f.Evidence[len(f.Evidence)-1]
	if f.Verdict() != PortNotListen || last.Collector != "drops" || !strings.Contains(last.Observation, "no BTF") {
		t.Errorf("%s: %+v", f.Verdict(), f.Evidence)
	}
}

// TestClassifyNeverPanics: a rule that panics is skipped and named; a
// failure outside the rules
// gives an inconclusive finding that says why, with the raw evidence.
func TestClassifyNeverPanics(t *testing.T) {
	var logged bytes.Buffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	saved := rules
	defer func() { rules = saved }()
	rules = append([]rule{{NetFirewall, func(f *facts) outcome { var m *match; return concluded(&match{summary: m.summary}) }}}, saved...)
	req := &Request{Source: NetnsPlace("/run/netns/a"), Peer: NetnsPlace("/run/netns/b"), To: &collectors.Dest{Addr: netip.MustParseAddr("10.0.0.5"), Port: 8080}}
	f := Classify(req, refused([]collectors.Listener{{Proto: "tcp", Addr: "127.0.0.1", Port: 8080}}))
	if f.Verdict() != PortLoopback {
		t.Errorf("with a broken rule: %s, want the next rule's %s", f.Verdict(), PortLoopback)
	}
	rules = saved
	beforeRules = func() { panic("a bug outside the rules") }
	defer func() { beforeRules = nil }()
	f = Classify(req, refused(nil))
	if f.Verdict() != Insufficient || !strings.Contains(f.Summary, "could not classify") || len(f.Raw) == 0 {
		t.Errorf("a failing classification: %s %q", f.Verdict(), f.Summary)
	}
	// Both are logged with the stack that tells where.
	if n := strings.Count(logged.String(), "stack="); n != 2 || !strings.Contains(logged.String(), "diagnose.runRule") {
		t.Errorf("want two panics logged with their stacks, got:\n%s", logged.String())
	}
}
