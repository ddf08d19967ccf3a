package sweep_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/diagnose"
	"github.com/netdiag/netdiag/diagnose/labview"
	"github.com/netdiag/netdiag/diagnose/sweep"
	"github.com/netdiag/netdiag/lab"
	"github.com/netdiag/netdiag/lab/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// TestSweepLab: on the healthy lab every cell passes; with kube-proxy
// evicted on one node, that node's row shows it, diagnosed, and the other
// node's row stays clean.
func TestSweepLab(t *testing.T) {
	l := labtest.Up(t, "swp")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	eng := &diagnose.Engine{Runner: diagnose.LocalRunner{}}
	sweepNow := func(t *testing.T) *sweep.Table {
		st, err := lab.GetStatus(l.Instance)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		tab := sweep.Run(ctx, eng, labview.SweepNodes(st), sweep.Options{Cluster: labview.Cluster(st), OutsideName: st.OutsideName})
		t.Logf("sweep of %d nodes in %s", len(tab.Rows), time.Since(start).Round(time.Millisecond))
		for _, r := range tab.Rows {
			var cells []string
			for _, c := range r.Cells {
				cells = append(cells, c.Check+"="+c.Result+" "+c.Verdict)
			}
			t.Logf("  %s: %s", r.Node, strings.Join(cells, "; "))
		}
		return tab
	}
	healthy := sweepNow(t)
	if len(healthy.Rows) != 2 || len(healthy.FailedNodes()) != 0 {
		for _, r := range healthy.Rows {
			for _, c := range r.Cells {
				if c.Result != "ok" {
					t.Errorf("healthy lab: %s %s: %s %s %s", r.Node, c.Check, c.Result, c.Verdict, c.Summary)
				}
			}
		}
	}
	for _, r := range healthy.Rows {
		// kube-proxy, dns, and mtu and overlay to the other node.
		if len(r.Cells) != 4 {
			t.Errorf("%s: %d cells, want 4", r.Node, len(r.Cells))
		}
	}

	fault, err := lab.InjectFault(ctx, l.Instance, "kube-proxy-evicted", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Clear(ctx, l.Instance, nil)
	_ = fault
	st, _ := lab.GetStatus(l.Instance)
	var bad string
	for _, n := range st.Nodes {
		if n.KubeProxy != "Running" {
			bad = n.Name
		}
	}
	tab := sweepNow(t)
	if got := tab.FailedNodes(); len(got) != 1 || got[0] != bad {
		t.Fatalf("failing nodes %v, want only %s", got, bad)
	}
	for _, r := range tab.Rows {
		if r.Node != bad {
			continue
		}
		cells := map[string]sweep.Cell{}
		for _, c := range r.Cells {
			cells[c.Check] = c
		}
		if c := cells["kube-proxy"]; c.Result != "failed" || !strings.Contains(c.Summary, "Pending") {
			t.Errorf("kube-proxy cell %+v, want failed naming Pending", c)
		}
		if c := cells["dns"]; c.Result != "failed" || c.Verdict != diagnose.DNSPathBroken.String() || c.Finding == nil {
			t.Errorf("dns cell %s %s: want failed, diagnosed as %s", c.Result, c.Verdict, diagnose.DNSPathBroken)
		}
	}
}
