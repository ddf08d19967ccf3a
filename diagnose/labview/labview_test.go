package labview_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// TestAccuracyMatrix diagnoses every lab fault from the pod the fault hurts,
// and the healthy lab (also under background traffic), and requires the
// expected verdict every time.
func TestAccuracyMatrix(t *testing.T) {
	l := labtest.Up(t, "tdiag")
	rows, err := labview.RunMatrix(context.Background(), l.Instance, labview.Cases(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	correct := labview.WriteMatrix(&b, rows)
	t.Log("\n" + b.String())
	if correct != len(rows) {
		for _, r := range rows {
			if !r.OK() {
				t.Errorf("%s (%s): got %s (%.2f) %s%s, want %s", r.Name, strings.Join(r.Question, " "), r.Got, r.Confidence, r.Summary, r.Err, r.Want)
			}
		}
	}
}

func TestParseArgs(t *testing.T) {
	kind, name, to, dns, err := labview.ParseArgs([]string{"pod", "default/client", "--to", "svc/default/web:80", "--dns", "a", "--dns", "b"})
	if err != nil || kind != "pod" || name != "default/client" || to != "svc/default/web:80" || len(dns) != 2 {
		t.Errorf("got %s %s %s %v %v", kind, name, to, dns, err)
	}
	if _, _, _, _, err := labview.ParseArgs([]string{"pod"}); err == nil {
		t.Error("missing name accepted")
	}
}

// TestResetWithoutPeerView: a REJECT --reject-with tcp-reset looks like a
// closed port from the source. With the kernel's drop reasons the diagnosis
// tells them apart even without the destination's view (NETFILTER_DROP
// against NO_SOCKET); without them and without that view the finding says it
// cannot (lower confidence, the firewall as the alternative, and what tells
// them apart); with the destination's view it decides.
func TestResetWithoutPeerView(t *testing.T) {
	l := labtest.Up(t, "tamb")
	ctx := context.Background()
	st, err := lab.GetStatus(l.Instance)
	if err != nil {
		t.Fatal(err)
	}
	eng := &diagnose.Engine{Runner: diagnose.LocalRunner{}}
	ask := func(t *testing.T, fault, drops string, peer bool) *diagnose.Finding {
		t.Helper()
		req, err := labview.Request(st, "pod", "default/client", "pod/default/web:8080", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Drops = drops
		if !peer {
			req.Peer = diagnose.Place{}
		}
		f, err := eng.Diagnose(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	considered := func(f *diagnose.Finding, v diagnose.Verdict, why string) bool {
		for _, c := range f.AlsoConsidered {
			if c.Class == v.Class && c.Cause == v.Cause && strings.Contains(c.RuledOutBy, why) {
				return true
			}
		}
		return false
	}
	evidence := func(f *diagnose.Finding) string {
		var s []string
		for _, o := range f.Evidence {
			s = append(s, o.Collector+": "+o.Observation)
		}
		return strings.Join(s, "\n")
	}
	inject := func(t *testing.T, fault string) {
		quiet := slog.New(slog.DiscardHandler)
		if _, err := lab.InjectFault(ctx, l.Instance, fault, quiet); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lab.Clear(ctx, l.Instance, quiet) })
	}
	web, _ := l.Pod("default/web")
	webNS := filepath.Base(web.NetnsPath)

	t.Run("reject", func(t *testing.T) {
		inject(t, "port-reject")
		with := ask(t, "port-reject", "off", true)
		if with.Verdict() != diagnose.PortFirewall || with.Confidence < 0.85 {
			t.Errorf("with the peer's view: %s %.2f", with.Verdict(), with.Confidence)
		}
		// With a capture, the drop is lined up with the packet leaving.
		req, err := labview.Request(st, "pod", "default/client", "pod/default/web:8080", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Capture, req.Pcap = time.Second, filepath.Join(t.TempDir(), "reject.pcap")
		captured, err := eng.Diagnose(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if ev := evidence(captured); !regexp.MustCompile(`drops: SYN to [0-9.]+:8080 sent at [0-9:.]+, dropped [0-9.]+.?s later in pod default/web on eth0 by nf\w+: NETFILTER_DROP`).MatchString(ev) ||
			!strings.Contains(ev, "-j REJECT --reject-with tcp-reset") {
			t.Errorf("capture and drops do not line up, or the rule is not named:\n%s", ev)
		}
		kernel := ask(t, "port-reject", "ebpf", false)
		ev := evidence(kernel)
		if kernel.Verdict() != diagnose.PortFirewall || kernel.Confidence < 0.8 || !strings.Contains(ev, "NETFILTER_DROP") || !strings.Contains(ev, webNS) ||
			!considered(kernel, diagnose.PortNotListen, "ruled out by the kernel") {
			t.Errorf("with the kernel's drop reasons, without the peer's view: %s %.2f %s\n%s\n%+v", kernel.Verdict(), kernel.Confidence, kernel.Summary, ev, kernel.AlsoConsidered)
		}
		without := ask(t, "port-reject", "off", false)
		if without.Verdict() != diagnose.PortNotListen || without.Confidence > 0.7 {
			t.Errorf("without the peer's view and the drops: %s %.2f", without.Verdict(), without.Confidence)
		}
		if !considered(without, diagnose.PortFirewall, "not ruled out") || !strings.Contains(strings.Join(without.NextSteps, " "), "--peer-netns") {
			t.Errorf("the alternative and how to tell them apart are missing: %+v %v", without.AlsoConsidered, without.NextSteps)
		}
		approx := ask(t, "port-reject", "tracefs", false)
		if !strings.Contains(evidence(approx), "approximate") {
			t.Errorf("forced tracefs: the evidence does not say the attribution is approximate:\n%s", evidence(approx))
		}
	})

	t.Run("closed", func(t *testing.T) {
		inject(t, "not-listening")
		kernel := ask(t, "not-listening", "ebpf", false)
		ev := evidence(kernel)
		if kernel.Verdict() != diagnose.PortNotListen || kernel.Confidence < 0.8 || !strings.Contains(ev, "NO_SOCKET") ||
			!considered(kernel, diagnose.PortFirewall, "ruled out by the kernel") {
			t.Errorf("closed port with the kernel's drop reasons, without the peer's view: %s %.2f %s\n%s", kernel.Verdict(), kernel.Confidence, kernel.Summary, ev)
		}
	})
}

// TestBadQuestions: questions the lab cannot answer are refused with what is
// accepted (no root needed: the lab's description is a pure function).
func TestBadQuestions(t *testing.T) {
	l, err := lab.New("unit")
	if err != nil {
		t.Fatal(err)
	}
	st := &lab.Status{Lab: l, Phase: "up"}
	for _, tc := range []struct {
		kind, name, to string
		want           string
	}{
		{"pod", "default/nosuch", "", "accepted: pod NAMESPACE/NAME or node NAME"},
		{"svc", "default/web", "", "unknown target"},
		{"pod", "default/client", "svc/default/web", "needs its port (ports: 80)"},
		{"pod", "default/client", "svc/default/web:81", "has no port 81"},
		{"pod", "default/client", "pod/default/web:http", "bad port"},
		{"pod", "default/client", "vm/x:1", "accepted: pod/NAMESPACE/NAME:PORT"},
	} {
		_, err := labview.Request(st, tc.kind, tc.name, tc.to, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s --to %s: %v, want %q", tc.kind, tc.name, tc.to, err, tc.want)
		}
	}
	st.Phase = "down"
	if _, err := labview.Request(st, "pod", "default/client", "", nil); err == nil || !strings.Contains(err.Error(), "netdiag lab up") {
		t.Errorf("lab down: %v", err)
	}
}
