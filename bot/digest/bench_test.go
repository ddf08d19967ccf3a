package digest

import (
	"io"
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
				b.Logf("%v per digest, over the %v budget", per, budget)
			}
		})
	}
}
