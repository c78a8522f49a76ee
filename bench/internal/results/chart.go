package results

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Chart geometry, in pixels.
const (
	chartWidth  = 1200
	labelWidth  = 470
	plotLeft    = labelWidth + 20
	plotRight   = chartWidth - 60
	headerH     = 70
	barH        = 12
	barGap      = 3
	groupGap    = 12
	footerH     = 40
	maxRatioCap = 3.0
)

type series struct {
	name      string
	color     color.RGBA
	base      string // divided by this target's values
	webSocket bool   // drawn for the WebSocket metrics only, which the others are not
}

func chartSeries() []series {
	return []series{
		{"no-proxy", color.RGBA{0xb0, 0xb0, 0xb0, 0xff}, baseline, false},
		{"nginx", color.RGBA{0x3c, 0x9a, 0x5f, 0xff}, baseline, false},
		{"mqgate", color.RGBA{0x2f, 0x6d, 0xc8, 0xff}, baseline, false},
		{"mqgate-1", color.RGBA{0x8f, 0xb4, 0xea, 0xff}, "haproxy-1", false},
		{"mqgate", color.RGBA{0x1a, 0x3a, 0x6e, 0xff}, wsBaseline, true},
	}
}

type bar struct {
	s     series
	ratio float64
}

type group struct {
	label string
	bars  []bar
}

// Chart draws a PNG bar chart: for every metric, each target's value divided
// by HAProxy's in the same round (median over rounds; mqgate-1 by
// haproxy-1; in the WebSocket metrics mqgate by NGINX); the line at 1 is
// the base.
func (r *Run) Chart() ([]byte, error) {
	rounds := max(r.Plan.Rounds, 1)
	var groups []group
	maxRatio := 2.0
	for _, m := range metrics() {
		g := group{label: chartLabel(m)}
		for _, s := range chartSeries() {
			t, b := r.Target(s.name), r.Target(s.base)
			if s.webSocket != m.webSocket || t == nil || t.Skipped != "" || b == nil || b.Skipped != "" || (m.proxyOnly && s.name == "no-proxy") {
				continue
			}
			sum := summarize(ratios(m.values(t, rounds), m.values(b, rounds)))
			if !sum.ok() {
				continue
			}
			g.bars = append(g.bars, bar{s, sum.median})
			maxRatio = math.Max(maxRatio, sum.median*1.1)
		}
		if len(g.bars) > 0 {
			groups = append(groups, g)
		}
	}
	maxRatio = math.Min(math.Ceil(maxRatio*2)/2, maxRatioCap)

	height := headerH + footerH
	for _, g := range groups {
		height += len(g.bars)*(barH+barGap) + groupGap
	}
	if len(groups) == 0 {
		height += 40
	}
	img := image.NewRGBA(image.Rect(0, 0, chartWidth, height))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	black := color.RGBA{0x20, 0x20, 0x20, 0xff}
	grid := color.RGBA{0xe4, 0xe4, 0xe4, 0xff}

	title := "mqgate benchmark: each target / HAProxy in the same round (median of rounds)"
	if r.Quick {
		title += "  [QUICK smoke run]"
	}
	text(img, 10, 18, title, black)
	text(img, 10, 36, fmt.Sprintf("%s   %d x %s   %s", r.Date, r.Machine.CPUs, r.Machine.CPUModel, r.Command), black)
	lx := 10
	for _, s := range chartSeries() {
		fill(img, lx, 48, lx+12, 60, s.color)
		text(img, lx+16, 58, s.label(), black)
		lx += 24 + 7*len(s.label()) + 20
	}
	text(img, lx, 58, "| line at 1.0 = haproxy (nginx for WebSocket)", black)

	xOf := func(v float64) int {
		return plotLeft + int(math.Round(math.Min(v, maxRatio)/maxRatio*float64(plotRight-plotLeft)))
	}
	plotTop, plotBottom := headerH, height-footerH+4
	for v := 0.0; v <= maxRatio+1e-9; v += 0.5 {
		x := xOf(v)
		c := grid
		if v == 1 {
			c = color.RGBA{0xd0, 0x30, 0x30, 0xff}
		}
		fill(img, x, plotTop, x+1, plotBottom, c)
		text(img, x-8, plotBottom+14, fmt.Sprintf("%.1f", v), black)
	}

	y := headerH
	if len(groups) == 0 {
		text(img, 10, y+20, "no ratios to draw: HAProxy or the other targets were not measured", black)
	}
	for _, g := range groups {
		gh := len(g.bars)*(barH+barGap) - barGap
		text(img, 10, y+gh/2+5, g.label, black)
		for _, b := range g.bars {
			x1 := xOf(b.ratio)
			fill(img, plotLeft, y, max(x1, plotLeft+1), y+barH, b.s.color)
			label := fmt.Sprintf("%.2f", b.ratio)
			if b.ratio > maxRatio {
				label = ">" + label
			}
			text(img, x1+4, y+barH-2, label, black)
			y += barH + barGap
		}
		y += groupGap - barGap
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encoding PNG: %w", err)
	}
	return buf.Bytes(), nil
}

func chartLabel(m metric) string {
	way := "lower is better"
	if m.higherBetter {
		way = "higher is better"
	}
	name := strings.NewReplacer("→", "->", "µ", "u").Replace(m.name)
	return fmt.Sprintf("%s: %s (%s)", m.section, name, way)
}

func fill(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	draw.Draw(img, image.Rect(x0, y0, x1, y1), &image.Uniform{C: c}, image.Point{}, draw.Src)
}

func text(img *image.RGBA, x, y int, s string, c color.RGBA) {
	d := font.Drawer{
		Dst:  img,
		Src:  &image.Uniform{C: c},
		Face: basicfont.Face7x13,
		Dot:  fixed.P(x, y),
	}
	d.DrawString(s)
}

// label names the series in the legend, with its base when not HAProxy.
func (s series) label() string {
	if s.base != baseline {
		return s.name + "/" + s.base
	}
	return s.name
}
