package diagnose

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/netdiag/netdiag/collectors"
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
	req := &Request{Source: "/run/netns/a", Peer: "/run/netns/b", To: &collectors.Dest{Addr: netip.MustParseAddr("10.0.0.5"), Port: 8080}}
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
	req := &Request{Source: "/run/netns/a", To: &collectors.Dest{Addr: netip.MustParseAddr("10.0.0.5"), Port: 8080}}
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
	req := &Request{Source: "/run/netns/a", To: &collectors.Dest{Addr: netip.MustParseAddr("10.0.0.5"), Port: 8080}}
	tcp := &collectors.TCP{Dst: "10.0.0.5:8080", Timeout: 3, Attempts: []collectors.TCPAttempt{{Result: "timeout"}, {Result: "timeout"}, {Result: "timeout"}}}
	f := Classify(req, []collectors.Evidence{{Collector: "tcp", Scope: collectors.ScopeSource, Data: tcp}})
	if f.Verdict() != Insufficient || len(f.NextSteps) == 0 || len(f.Evidence) == 0 {
		t.Errorf("timeouts with nothing else: %s %+v", f.Verdict(), f)
	}
}
