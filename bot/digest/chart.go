package digest

import (
	"bufio"
	"fmt"
	"image/color"
	"image/png"
	"io"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The chart's size in pixels.
const (
	ChartWidth  = 640
	ChartHeight = 320
	chartDPI    = 96
)

// classColors gives every class one colour for good, so that digests read
// alike from one week to the next.
var classColors = map[string]color.RGBA{
	"network-unreachable": {R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, // red
	"port-unreachable":    {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // orange
	"dns-failure":         {R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, // purple
	"large-packet-loss":   {R: 0x8c, G: 0x56, B: 0x4b, A: 0xff}, // brown
	"cni-anomaly":         {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // blue
	"healthy":             {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // green
	"inconclusive":        {R: 0x9a, G: 0xa0, B: 0xa6, A: 0xff}, // grey
}

// otherColor is for a class the taxonomy does not (yet) name.
var otherColor = color.RGBA{R: 0x40, G: 0x40, B: 0x40, A: 0xff}

// ChartPNG draws the findings per day by class as stacked bars, 640x320
// pixels, with a legend, and writes it as PNG. The same digest gives the
// same bytes. The fonts are gonum/plot's Liberation fonts, compiled into the
// binary: nothing is read from disk or the network.
func (d *Digest) ChartPNG(w io.Writer) error {
	p := plot.New()
	p.Title.Text = "Findings per day by class"
	p.Y.Label.Text = "findings"
	p.Y.Tick.Marker = intTicks{}
	for _, f := range []*font.Font{&p.Title.TextStyle.Font, &p.X.Label.TextStyle.Font, &p.Y.Label.TextStyle.Font, &p.X.Tick.Label.Font, &p.Y.Tick.Label.Font} {
		f.Variant = "Sans"
	}
	p.Title.TextStyle.Font.Size = vg.Points(11)
	p.Y.Label.TextStyle.Font.Size = vg.Points(10)
	p.X.Tick.Label.Font.Size = vg.Points(9)
	p.Y.Tick.Label.Font.Size = vg.Points(9)

	labels := make([]string, len(d.Days))
	// About eight labels fit under the bars; the others stay blank.
	every := max(1, (len(d.Days)+7)/8)
	for i, day := range d.Days {
		if i%every == 0 {
			labels[i] = day.Date.Format("Mon 2 Jan")
			if every > 1 || len(d.Days) > 5 {
				labels[i] = day.Date.Format("2 Jan")
			}
		}
	}
	p.NominalX(labels...)
	// Fixed, so that the days keep their places when no bar is drawn.
	p.X.Min, p.X.Max = -0.5, float64(len(d.Days))-0.5

	// Classes in the taxonomy's order, bottom to top, those with a bar only.
	var classes []string
	for _, c := range d.Classes {
		for _, day := range d.Days {
			if day.ByClass[c.Class] > 0 {
				classes = append(classes, c.Class)
				break
			}
		}
	}

	legend := plot.NewLegend()
	legend.Top = true
	legend.Left = true
	legend.TextStyle.Font.Size = vg.Points(9)
	legend.TextStyle.Font.Variant = "Sans"
	legend.ThumbnailWidth = vg.Points(10)

	plotW := vg.Length(ChartWidth) * vg.Inch / chartDPI
	plotH := vg.Length(ChartHeight) * vg.Inch / chartDPI

	peak := 0
	if len(d.Days) > 0 {
		for _, day := range d.Days {
			total := 0
			for _, c := range classes {
				total += day.ByClass[c]
			}
			peak = max(peak, total)
		}
		// Bars take 70 % of a day's share of the plot's width.
		barW := (plotW * 0.7 / 1.3) / vg.Length(len(d.Days))
		var below *plotter.BarChart
		bars := make([]*plotter.BarChart, 0, len(classes))
		for _, c := range classes {
			vals := make(plotter.Values, len(d.Days))
			for i, day := range d.Days {
				vals[i] = float64(day.ByClass[c])
			}
			bc, err := plotter.NewBarChart(vals, barW)
			if err != nil {
				return fmt.Errorf("digest chart: bars for %s: %w", c, err)
			}
			bc.Color = colorOf(c)
			bc.LineStyle.Width = 0
			if below != nil {
				bc.StackOn(below)
			}
			p.Add(bc)
			bars = append(bars, bc)
			below = bc
		}
		// The legend lists the top of the stack first, as the bars read.
		for i := len(bars) - 1; i >= 0; i-- {
			legend.Add(classes[i], bars[i])
		}
	}
	if len(classes) == 0 {
		p.Title.Text += ": none"
	}
	p.Y.Min, p.Y.Max = 0, math.Max(1, float64(peak)*1.05)

	c := vgimg.NewWith(vgimg.UseWH(plotW, plotH), vgimg.UseDPI(chartDPI), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(c)
	legendW := vg.Length(0)
	if len(classes) > 0 {
		legendW = legend.Rectangle(dc).Size().X + vg.Points(12)
	}
	p.Draw(draw.Crop(dc, 0, -legendW, 0, 0))
	legendArea := draw.Crop(dc, plotW-legendW+vg.Points(6), 0, 0, -vg.Points(24))
	legend.Draw(legendArea)

	// Fastest compression: the chart is a few flat colours, and the benchmark
	// budget is better spent elsewhere.
	bw := bufio.NewWriter(w)
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(bw, c.Image()); err != nil {
		return fmt.Errorf("digest chart: encoding PNG: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("digest chart: writing PNG: %w", err)
	}
	return nil
}

func colorOf(class string) color.Color {
	if c, ok := classColors[class]; ok {
		return c
	}
	return otherColor
}

// intTicks labels the count axis with whole numbers only.
type intTicks struct{}

func (intTicks) Ticks(lo, hi float64) []plot.Tick {
	span := hi - lo
	step := 1.0
	// 1, 2, 5, 10, 20, 50 ... whichever gives at most six labels.
	for mult := 1.0; ; mult *= 10 {
		found := false
		for _, s := range []float64{1, 2, 5} {
			if span/(s*mult) <= 6 {
				step, found = s*mult, true
				break
			}
		}
		if found {
			break
		}
	}
	var ticks []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi; v += step {
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', 0, 64)})
	}
	return ticks
}
