package out

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Point is one value of a series.
type Point struct{ X, Y float64 }

// Series is one line of a LineChart.
type Series struct {
	Label  string
	Color  string
	Dashed bool // dashed, with hollow markers
	Right  bool // measured on the right-hand axis
	Points []Point
}

// LineChart is series against a shared x axis, with a left y axis and,
// when a series asks for it, a right one in another unit.
type LineChart struct {
	Title, Subtitle string
	XLabel, YLabel  string
	Y2Label         string
	// XTick and YTick format tick labels (YTick and Y2Tick with the decimals
	// the step needs, and with 4 for a marker's hover text). Nil: Plain and
	// Fixed.
	XTick         func(x float64) string
	YTick, Y2Tick func(y float64, dec int) string
	Series        []Series
}

// Palette gives series without a colour of their own one that stays apart
// from the usual ones.
var Palette = []string{"#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"}

// Esc escapes text for SVG.
func Esc(s string) string {
	var b strings.Builder
	// Escaping into a strings.Builder cannot fail.
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// Ticks spans [lo, hi] with 1, 2 or 5 × 10^n steps, the numbers a reader
// can interpolate between.
func Ticks(lo, hi float64, want int) (float64, float64, float64) {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(want)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * mag
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	return math.Floor(lo/step) * step, math.Ceil(hi/step) * step, step
}

func tickDecimals(step float64) int {
	return max(0, int(-math.Floor(math.Log10(step)+1e-9)))
}

// axis is one y axis: its tick range and scale.
type axis struct {
	y0, y1, step float64
	tick         func(float64, int) string
}

func newAxis(ss []Series, right bool, tick func(float64, int) string) axis {
	minY, maxY := 0.0, 0.0
	for _, s := range ss {
		if s.Right != right {
			continue
		}
		for _, p := range s.Points {
			minY, maxY = min(minY, p.Y), max(maxY, p.Y)
		}
	}
	y0, y1, step := Ticks(minY, max(maxY*1.1, minY+0.01), 5)
	if tick == nil {
		tick = Fixed
	}
	return axis{y0, y1, step, tick}
}

// WriteSVG draws the chart as a self-contained SVG.
func (c LineChart) WriteSVG(w io.Writer) error {
	const (
		height                   = 480.0
		left, right, top, bottom = 80.0, 560.0, 70.0, 410.0
		legendY, legendH         = 80.0, 20.0
	)
	width, legendX := 900.0, 580.0
	hasRight := slices.ContainsFunc(c.Series, func(s Series) bool { return s.Right })
	if hasRight {
		width, legendX = 960, 640
	}
	xtick := c.XTick
	if xtick == nil {
		xtick = Plain
	}

	// x starts at zero so a single point sits inside the axis, not on it.
	maxX := 0.0
	for _, s := range c.Series {
		for _, p := range s.Points {
			maxX = max(maxX, p.X)
		}
	}
	x0, x1, xstep := Ticks(0, max(maxX*1.1, 1), 6)
	ly, ry := newAxis(c.Series, false, c.YTick), newAxis(c.Series, true, c.Y2Tick)
	px := func(x float64) float64 { return left + (x-x0)/(x1-x0)*(right-left) }
	pyOn := func(a axis, y float64) float64 { return bottom - (y-a.y0)/(a.y1-a.y0)*(bottom-top) }
	py := func(y float64) float64 { return pyOn(ly, y) }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%g" height="%g" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%g" y="28" text-anchor="middle" font-size="16" font-weight="bold">%s</text>`+"\n",
		(left+right)/2, Esc(c.Title))
	if c.Subtitle != "" {
		fmt.Fprintf(&b, `<text x="%g" y="48" text-anchor="middle" fill="#555">%s</text>`+"\n",
			(left+right)/2, Esc(c.Subtitle))
	}

	// Grid and tick labels.
	ydec := tickDecimals(ly.step)
	for x := x0; x <= x1+xstep/2; x += xstep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#e5e5e5"/>`+"\n", px(x), top, px(x), bottom)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="black"/>`+"\n", px(x), bottom, px(x), bottom+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", px(x), bottom+19, Esc(xtick(x)))
	}
	for y := ly.y0; y <= ly.y1+ly.step/2; y += ly.step {
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#e5e5e5"/>`+"\n", left, py(y), right, py(y))
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="black"/>`+"\n", left-5, py(y), left, py(y))
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, py(y)+4, Esc(ly.tick(y, ydec)))
	}
	if hasRight {
		rdec := tickDecimals(ry.step)
		for y := ry.y0; y <= ry.y1+ry.step/2; y += ry.step {
			fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="black"/>`+"\n", right, pyOn(ry, y), right+5, pyOn(ry, y))
			fmt.Fprintf(&b, `<text x="%g" y="%.1f">%s</text>`+"\n", right+8, pyOn(ry, y)+4, Esc(ry.tick(y, rdec)))
		}
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", right, top, right, bottom)
		fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle" transform="rotate(90 %g %g)">%s</text>`+"\n",
			right+62, (top+bottom)/2, right+62, (top+bottom)/2, Esc(c.Y2Label))
	}
	// Axes; a zero line too when noise has made a value negative.
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", left, top, left, bottom)
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", left, bottom, right, bottom)
	if ly.y0 < 0 {
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="black" stroke-width="0.5"/>`+"\n", left, py(0), right, py(0))
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">%s</text>`+"\n", (left+right)/2, bottom+42, Esc(c.XLabel))
	fmt.Fprintf(&b, `<text x="22" y="%g" text-anchor="middle" transform="rotate(-90 22 %g)">%s</text>`+"\n",
		(top+bottom)/2, (top+bottom)/2, Esc(c.YLabel))

	if len(c.Series) == 0 {
		fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle" fill="#555">no data</text>`+"\n", (left+right)/2, (top+bottom)/2)
	}
	for i, s := range c.Series {
		a := ly
		if s.Right {
			a = ry
		}
		pts := slices.Clone(s.Points)
		slices.SortFunc(pts, func(a, b Point) int { return cmp.Compare(a.X, b.X) })
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		var d strings.Builder
		for j, p := range pts {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, px(p.X), pyOn(a, p.Y))
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"%s><title>%s</title></path>`+"\n",
			strings.TrimSpace(d.String()), s.Color, dash, Esc(s.Label))
		// Hollow markers keep a dashed series apart from a solid one where
		// they overlap, and carry the value for a hover.
		fill := s.Color
		if s.Dashed {
			fill = "white"
		}
		for _, p := range pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s" stroke="%s" stroke-width="1.5"><title>%s</title></circle>`+"\n",
				px(p.X), pyOn(a, p.Y), fill, s.Color, Esc(fmt.Sprintf("%s at %s: %s", s.Label, xtick(p.X), a.tick(p.Y, 4))))
		}
		y := legendY + float64(i)*legendH
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2"%s/>`+"\n",
			legendX, y, legendX+28, y, s.Color, dash)
		fmt.Fprintf(&b, `<circle cx="%g" cy="%g" r="4" fill="%s" stroke="%s" stroke-width="1.5"/>`+"\n",
			legendX+14, y, fill, s.Color)
		fmt.Fprintf(&b, `<text x="%g" y="%g">%s</text>`+"\n", legendX+36, y+4, Esc(s.Label))
	}
	b.WriteString("</svg>\n")
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}

// Bar is one bar of a BarChart, with an optional target line across it.
type Bar struct {
	Label      string // under the bar
	Value      float64
	Text       string // above the bar
	Hover      string
	Color      string
	Target     float64 // 0: none
	TargetText string
}

// BarChart is bars against a zero baseline.
type BarChart struct {
	Title string
	Bars  []Bar
}

// WriteSVG draws the chart as a self-contained SVG.
func (c BarChart) WriteSVG(w io.Writer) error {
	const width, height, left, bottom, barW = 480, 300, 60, 40, 80
	top := 1.0
	for _, r := range c.Bars {
		top = max(top, r.Value, r.Target)
	}
	top *= 1.15
	y := func(v float64) float64 { return float64(height-bottom) - v/top*float64(height-bottom-30) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">%s</text>`+"\n", left, Esc(c.Title))
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, height-bottom, width-20, height-bottom)
	for i, r := range c.Bars {
		x := float64(left + 40 + i*(barW+80))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s</title></rect>`+"\n",
			x, y(r.Value), barW, float64(height-bottom)-y(r.Value), r.Color, Esc(r.Hover))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x+barW/2, y(r.Value)-4, Esc(r.Text))
		if r.Target > 0 {
			fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="black" stroke-dasharray="4 3"/>`+"\n", x-10, y(r.Target), x+barW+10, y(r.Target))
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" font-size="10">%s</text>`+"\n", x+barW+12, y(r.Target)+3, Esc(r.TargetText))
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%s</text>`+"\n", x+barW/2, height-bottom+18, Esc(r.Label))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
