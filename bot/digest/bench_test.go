package digest

import (
	"io"
	"slices"
	"testing"
	"time"
)

// The budget: a digest built in under 100 ms, chart included.
const budget = 100 * time.Millisecond

// BenchmarkBuild measures a week's digest from 5,000 findings (and 5,000 in
// the week before, 12 open alerts, a sweep of 20 nodes): Build alone, Build
// with Markdown, and Build with Markdown and the chart.
func BenchmarkBuild(b *testing.B) {
	p := benchPeriod(5000)
	if len(p.Findings) != 5000 || len(p.Previous) != 5000 || len(p.Sweep.Rows) != 20 {
		b.Fatalf("input: %d findings, %d before, %d sweep rows", len(p.Findings), len(p.Previous), len(p.Sweep.Rows))
	}
	// The first chart parses the embedded fonts once per process; the bot
	// pays that at its first digest, not at each.
	if err := Build(p).ChartPNG(io.Discard); err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name string
		run  func(b *testing.B)
	}{
		{"build", func(b *testing.B) { _ = Build(p) }},
		{"build+markdown", func(b *testing.B) { _ = Build(p).Markdown() }},
		{"build+markdown+chart", func(b *testing.B) {
			d := Build(p)
			_ = d.Markdown()
			if err := d.ChartPNG(io.Discard); err != nil {
				b.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				c.run(b)
			}
			per := time.Since(start) / time.Duration(b.N)
			b.ReportMetric(float64(per)/float64(time.Millisecond), "ms/digest")
			if per > budget {
				b.Errorf("%v per digest, over the %v budget", per, budget)
			}
		})
	}
}

// TestBuildBudget keeps the budget checked by a plain go test: one full
// digest (Build, Markdown, chart) of the benchmark's input, best of three.
func TestBuildBudget(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("a timing: not under -short or -race")
	}
	p := benchPeriod(5000)
	var took []time.Duration
	for range 3 {
		start := time.Now()
		d := Build(p)
		_ = d.Markdown()
		if err := d.ChartPNG(io.Discard); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	best := slices.Min(took)
	t.Logf("a digest of 5,000 findings: %v, %v, %v (the first parses the chart's fonts, if no test did before)", took[0], took[1], took[2])
	// Twice the budget: a busy CI machine must not fail this; the benchmark
	// reports the real figure.
	if best > 2*budget {
		t.Errorf("%v per digest, want under %v", best, budget)
	}
}
