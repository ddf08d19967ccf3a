package digest

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"testing"
)

func TestChartPNG(t *testing.T) {
	tests := []struct {
		name string
		p    Period
	}{
		{"busy", busyPeriod()},
		{"empty", emptyPeriod()},
		{"sweep", sweepPeriod()},
		{"bench week", benchPeriod(5000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Build(tt.p)
			var first, second bytes.Buffer
			if err := d.ChartPNG(&first); err != nil {
				t.Fatal(err)
			}
			// A second digest from the same input, drawn again.
			if err := Build(tt.p).ChartPNG(&second); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(first.Bytes(), second.Bytes()) {
				t.Fatal("two renderings of the same digest differ")
			}
			img, err := png.Decode(bytes.NewReader(first.Bytes()))
			if err != nil {
				t.Fatalf("not a PNG: %v", err)
			}
			if got := img.Bounds().Size(); got != (image.Point{ChartWidth, ChartHeight}) {
				t.Fatalf("size %v, want %dx%d", got, ChartWidth, ChartHeight)
			}
			// Every class with findings has its colour in the bars (and the
			// legend); the others do not appear.
			seen := colours(img)
			for class, c := range classColors {
				has := false
				for _, day := range d.Days {
					has = has || day.ByClass[class] > 0
				}
				if got := seen[c] > 0; got != has {
					t.Errorf("class %s: colour present %v, findings present %v", class, got, has)
				}
			}
			if dir := os.Getenv("DIGEST_CHART_DIR"); dir != "" {
				// For looking at the chart: DIGEST_CHART_DIR=/tmp go test -run ChartPNG
				if err := os.WriteFile(dir+"/digest-"+tt.name+".png", first.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("%d bytes", first.Len())
		})
	}
}

func colours(img image.Image) map[color.RGBA]int {
	out := map[color.RGBA]int{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			out[color.RGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(bl >> 8), A: uint8(a >> 8)}]++
		}
	}
	return out
}
