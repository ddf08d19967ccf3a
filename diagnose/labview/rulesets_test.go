package labview_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/collectors"
	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/internal/tools"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
	"github.com/netdiag/netdiag/lab/rulesets"
)

// TestRealRuleSets loads rule sets shaped like real nodes (kube-proxy with
// 1,000 Services, Calico, Docker, a NetworkPolicy controller, kube-proxy's
// nftables mode, and a 20,000-rule node) into node-b, the node that
// forwards default/client's traffic. A healthy lab stays healthy/none with
// every firewall verdict on node-b certain; then a DROP is added in the
// middle of the rules the probe's flow walks, and the diagnosis finds it and
// names it.
func TestRealRuleSets(t *testing.T) {
	l := labtest.Up(t, "trset")
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	nodeB, _ := l.Node("node-b")
	web, _ := l.Pod("default/web")
	client, _ := l.Pod("default/client")
	ns := labtest.OpenNS(t, nodeB.NetnsPath)
	ask := func(t *testing.T, to string) *diagnose.Finding {
		t.Helper()
		st, err := lab.GetStatus(l.Instance)
		if err != nil {
			t.Fatal(err)
		}
		req, err := labview.Request(st, "pod", "default/client", to, nil)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		f, err := (&diagnose.Engine{Runner: diagnose.LocalRunner{}}).Diagnose(cctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	webFlow := func(fl collectors.Flow) bool {
		return fl.Proto == "tcp" && fl.Dst == netip.MustParseAddr(web.IP) && fl.DPort == 8080
	}
	for _, p := range rulesets.Profiles() {
		t.Run(p.Name, func(t *testing.T) {
			t.Cleanup(func() {
				if _, err := lab.Clear(ctx, l.Instance, quiet); err != nil {
					t.Errorf("clear: %v", err)
				}
			})
			if err := rulesets.Load(ctx, ns, p.Name); err != nil {
				t.Fatal(err)
			}
			var trace *collectors.FlowTrace
			for _, to := range []string{"pod/default/web:8080", "svc/default/web:80"} {
				f := ask(t, to)
				if f.Verdict() != diagnose.Healthy {
					var b strings.Builder
					f.WriteText(&b)
					t.Fatalf("%s with %s on node-b: %s\n%s", to, p.Name, f.Verdict(), b.String())
				}
				for tool, traces := range nodeTraces(f) {
					for _, tr := range traces {
						if !tr.Certain {
							t.Errorf("%s: uncertain verdict on node-b for %s: %s, assuming %v", to, tr.Flow, tr.Verdict, tr.Assumes)
						}
						if tool == p.Format && tr.Flow.Src == netip.MustParseAddr(client.IP) && webFlow(tr.Flow) {
							trace = &tr
						}
					}
				}
			}
			if trace == nil {
				t.Fatalf("no trace of %s on node-b", web.IP)
			}
			// The DROP goes where the probe's flow is halfway through the
			// rules it walks on node-b.
			chain, table := middleChain(trace)
			comment := "netdiag test: dropped in the middle of " + p.Name
			if err := insertDrop(ctx, ns, p.Format, table, chain, client.IP, web.IP, comment); err != nil {
				t.Fatal(err)
			}
			f := ask(t, "pod/default/web:8080")
			ev := ""
			for _, o := range f.Evidence {
				ev += o.Collector + ": " + o.Observation + "\n"
			}
			if f.Verdict() != diagnose.PortFirewall || f.Confidence < 0.9 || !strings.Contains(ev, comment) {
				t.Errorf("DROP in %s %s: got %s %.2f, want port-unreachable/firewall naming the rule\n%s\n%s", table, chain, f.Verdict(), f.Confidence, f.Summary, ev)
			}
		})
	}
}

// nodeTraces are node-b's firewall traces in a finding's raw evidence (the
// client's node: the node scope), by the format of the rules they walked.
func nodeTraces(f *diagnose.Finding) map[string][]collectors.FlowTrace {
	out := map[string][]collectors.FlowTrace{}
	for _, e := range f.Raw {
		if e.Scope != collectors.ScopeNode {
			continue
		}
		switch d := e.Data.(type) {
		case *collectors.Iptables:
			out["iptables"] = append(out["iptables"], d.Traces...)
		case *collectors.Nftables:
			out["nft"] = append(out["nft"], d.Traces...)
		}
	}
	return out
}

// middleChain is the filter-table chain of the middle step of a trace (the
// steps of the nat table, where DROP is not allowed, are left out).
func middleChain(tr *collectors.FlowTrace) (chain, table string) {
	var steps []collectors.RuleStep
	for _, s := range tr.Steps {
		if s.Table == "filter" || strings.HasPrefix(s.Table, "ip ") || strings.HasPrefix(s.Table, "inet ") {
			steps = append(steps, s)
		}
	}
	if len(steps) == 0 {
		return "FORWARD", "filter"
	}
	m := steps[len(steps)/2]
	return m.Chain, m.Table
}

func insertDrop(ctx context.Context, ns interface {
	Output(context.Context, string, ...string) ([]byte, error)
}, format, table, chain, src, dst, comment string) error {
	if format == "iptables" {
		bin, err := tools.Find("iptables")
		if err != nil {
			return err
		}
		_, err = ns.Output(ctx, bin, "-w", "5", "-t", table, "-I", chain, "1", "-s", src, "-d", dst, "-p", "tcp", "--dport", "8080",
			"-m", "comment", "--comment", comment, "-j", "DROP")
		return err
	}
	bin, err := tools.Find("nft")
	if err != nil {
		return err
	}
	family, name, _ := strings.Cut(table, " ")
	_, err = ns.Output(ctx, bin, "insert", "rule", family, name, chain, "ip", "saddr", src, "ip", "daddr", dst, "tcp", "dport", "8080",
		"counter", "drop", "comment", fmt.Sprintf("%q", comment))
	return err
}
