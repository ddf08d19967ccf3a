package digest

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netdiag/netdiag/diagnose"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func taxonomyAt(i int) (string, string) {
	v := diagnose.Taxonomy[i%len(diagnose.Taxonomy)]
	return v.Class, v.Cause
}

func TestGolden(t *testing.T) {
	firstEver := busyPeriod()
	firstEver.From, firstEver.Previous, firstEver.OpenAlerts = time.Time{}, nil, nil
	tests := []struct {
		name string
		p    Period
	}{
		{"empty", emptyPeriod()},
		{"busy", busyPeriod()},
		{"sweep", sweepPeriod()},
		{"inconclusive", inconclusiveOnlyPeriod()},
		{"first", firstEver},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Build(tt.p)
			for _, r := range []struct {
				ext, got string
			}{{".md", d.Markdown()}, {".txt", d.Text()}} {
				path := filepath.Join("testdata", tt.name+r.ext)
				if *update {
					if err := os.WriteFile(path, []byte(r.got), 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test ./bot/digest -run TestGolden -update to write it)", err)
				}
				if r.got != string(want) {
					t.Errorf("%s differs from the golden file; got:\n%s", path, r.got)
				}
				checkTables(t, path, r.got)
			}
		})
	}
}

// checkTables enforces the width limit on code blocks (the sweep table).
func checkTables(t *testing.T, name, md string) {
	t.Helper()
	in := false
	for _, line := range strings.Split(md, "\n") {
		if line == "```" {
			in = !in
			continue
		}
		if in && len([]rune(line)) > maxTableWidth {
			t.Errorf("%s: table line wider than %d: %q", name, maxTableWidth, line)
		}
	}
}

func TestBuild(t *testing.T) {
	d := Build(busyPeriod())

	if d.Total != 53 || d.PrevTotal != 23 {
		t.Errorf("Total, PrevTotal = %d, %d, want 53, 23", d.Total, d.PrevTotal)
	}
	var classes []string
	for _, c := range d.Classes {
		classes = append(classes, c.Class)
	}
	// The taxonomy's order, whatever the counts.
	want := []string{"network-unreachable", "port-unreachable", "dns-failure", "large-packet-loss", "cni-anomaly", "healthy", "inconclusive"}
	if !slices.Equal(classes, want) {
		t.Errorf("classes %v, want %v", classes, want)
	}
	for _, c := range d.Classes {
		sum := 0
		for _, cc := range c.Causes {
			sum += cc.N
		}
		if sum != c.N {
			t.Errorf("%s: causes add up to %d, class says %d", c.Class, sum, c.N)
		}
		if c.Class == "cni-anomaly" && (c.N != 2 || c.Prev != 4) {
			t.Errorf("cni-anomaly %d (prev %d), want 2 (prev 4)", c.N, c.Prev)
		}
	}

	// Healthy findings do not make a target recur; the top one is the
	// database, 9 + 2 + 1 times, mostly a port firewall.
	if len(d.Targets) == 0 || d.Targets[0].Name != "pod shop/db-0" || d.Targets[0].N != 12 || d.Targets[0].Mostly != "port-unreachable/firewall" {
		t.Errorf("top target %+v, want pod shop/db-0 x12 port-unreachable/firewall", d.Targets[0])
	}
	for _, r := range append(append(slices.Clone(d.Targets), d.Namespaces...), d.Nodes...) {
		if r.N < 2 {
			t.Errorf("%s recurs %d times", r.Name, r.N)
		}
	}
	if i := slices.IndexFunc(d.Targets, func(r Recurring) bool { return r.Name == "pod monitoring/grafana-0" }); i >= 0 {
		t.Errorf("a target seen once is listed: %+v", d.Targets[i])
	}
	if len(d.Inconclusive) != 7 {
		t.Errorf("%d inconclusive findings, want 7", len(d.Inconclusive))
	}
	for i := 1; i < len(d.Inconclusive); i++ {
		if d.Inconclusive[i].At.After(d.Inconclusive[i-1].At) {
			t.Errorf("inconclusive findings not newest first at %d", i)
		}
	}
	if d.OpenAlerts[0].Name != "KubeProxyDown" {
		t.Errorf("oldest open alert %q, want KubeProxyDown", d.OpenAlerts[0].Name)
	}

	// Fri, Sat, Sun, Mon in Berlin; every finding on one of them.
	if len(d.Days) != 4 || d.Days[0].Date.Weekday() != time.Friday {
		t.Fatalf("days %v, want Fri..Mon", d.Days)
	}
	total := 0
	for _, day := range d.Days {
		for _, n := range day.ByClass {
			total += n
		}
	}
	if total != d.Total {
		t.Errorf("days count %d findings, want %d", total, d.Total)
	}
}

// The input's order must not show in the digest.
func TestBuildIgnoresInputOrder(t *testing.T) {
	p := busyPeriod()
	want := Build(p).Markdown()
	slices.Reverse(p.Findings)
	slices.Reverse(p.Previous)
	slices.Reverse(p.OpenAlerts)
	if got := Build(p).Markdown(); got != want {
		t.Errorf("reversed input changes the digest:\n%s\nwant:\n%s", got, want)
	}
}

func TestDays(t *testing.T) {
	tests := []struct {
		name      string
		from, to  time.Time
		wantDays  int
		wantFirst string
	}{
		{"one daily digest", time.Date(2026, 6, 1, 9, 0, 0, 0, berlin), time.Date(2026, 6, 2, 9, 0, 0, 0, berlin), 2, "2026-06-01"},
		{"ends at midnight: that day is not in it", time.Date(2026, 6, 1, 0, 0, 0, 0, berlin), time.Date(2026, 6, 2, 0, 0, 0, 0, berlin), 1, "2026-06-01"},
		{"over spring forward (a 23-hour day)", time.Date(2026, 3, 28, 9, 0, 0, 0, berlin), time.Date(2026, 3, 31, 9, 0, 0, 0, berlin), 4, "2026-03-28"},
		{"long downtime: the last 31 days", time.Date(2026, 1, 1, 9, 0, 0, 0, berlin), time.Date(2026, 6, 1, 9, 0, 0, 0, berlin), MaxChartDays, "2026-05-02"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := days(tt.from, tt.to, berlin, nil)
			if len(got) != tt.wantDays || got[0].Date.Format(time.DateOnly) != tt.wantFirst {
				t.Fatalf("%d days from %v, want %d from %s", len(got), got[0].Date, tt.wantDays, tt.wantFirst)
			}
			for i, d := range got {
				if d.Date.Hour() != 0 || d.Date.Minute() != 0 {
					t.Errorf("day %d starts at %v, want midnight", i, d.Date)
				}
			}
		})
	}
}

func TestSweepTableWidth(t *testing.T) {
	row := SweepRow{Node: "node-with-a-rather-long-name-in-a-big-cluster", Cells: map[string]Cell{"dns": {}}}
	tests := []struct {
		name   string
		checks []string
		want   bool // a table, or only the list of failures
	}{
		{"five checks", sweepChecks, true},
		{"long names are clipped", []string{"dns-resolution-from-pod", "mtu", "overlay"}, true},
		{"too many checks for 80 columns", []string{"dns", "mtu", "overlay", "svc-rules", "kube-proxy", "conntrack", "ipvs", "podcidr", "neighbours"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := sweepTable(&SweepTable{Checks: tt.checks, Rows: []SweepRow{row}}, 1)
			if (got != "") != tt.want {
				t.Fatalf("table %q, want one: %v", got, tt.want)
			}
			for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
				if n := len([]rune(line)); n > maxTableWidth {
					t.Errorf("line of %d columns: %q", n, line)
				}
			}
		})
	}
}
