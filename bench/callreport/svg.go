package callreport

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

// Fixed colours per path, so the same path looks the same in every chart.
var scenarioColor = map[string]string{
	NoneScenario: "#7f7f7f",
	"userspace":  "#d62728",
	"xdp":        "#1f77b4",
	"xdp-native": "#2ca02c",
	"tc":         "#9467bd",
}

var extraColors = []string{"#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"}

type point struct{ x, y float64 }

type series struct {
	label  string
	color  string
	dashed bool
	pts    []point
}

// chartSeries gives each path its whole-machine CPU per call, and each
// relayed path also its cost above none: the gap between the two is what
// signaling and the load generator cost, which the relay cannot change.
func chartSeries(rs []Result) []series {
	all := ordered(rs)
	var names []string
	for _, r := range all {
		if !slices.Contains(names, r.Scenario) {
			names = append(names, r.Scenario)
		}
	}
	slices.SortStableFunc(names, func(a, b string) int { return rank(a) - rank(b) })
	var out []series
	extra := 0
	for _, name := range names {
		color, ok := scenarioColor[name]
		if !ok {
			color = extraColors[extra%len(extraColors)]
			extra++
		}
		sys := series{label: name + ": system CPU / call", color: color}
		relay := series{label: name + ": relay cost / call (vs none)", color: color, dashed: true}
		for _, r := range all {
			if r.Scenario != name {
				continue
			}
			if v, ok := r.systemCPUPerCall(); ok {
				sys.pts = append(sys.pts, point{float64(r.Level), v})
			}
			if r.RelayCPUPerCallPct != nil {
				relay.pts = append(relay.pts, point{float64(r.Level), *r.RelayCPUPerCallPct})
			}
		}
		for _, s := range []series{sys, relay} {
			if len(s.pts) > 0 {
				out = append(out, s)
			}
		}
	}
	return out
}

// ticks spans [lo, hi] with 1, 2 or 5 × 10^n steps, the numbers a reader
// can interpolate between.
func ticks(lo, hi float64, want int) (float64, float64, float64) {
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

func esc(s string) string {
	var b strings.Builder
	// Escaping into a strings.Builder cannot fail.
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// WriteSVG draws CPU per channel against concurrency for each path as a
// self-contained SVG. It reads the derived fields, so call Derive first.
func WriteSVG(w io.Writer, rs []Result) error {
	const (
		width, height             = 900.0, 480.0
		left, right, top, bottom  = 80.0, 560.0, 70.0, 410.0
		legendX, legendY, legendH = 580.0, 80.0, 20.0
	)
	ss := chartSeries(rs)

	// x starts at zero so a single level sits inside the axis, not on it.
	maxX, minY, maxY := 0.0, 0.0, 0.0
	for _, s := range ss {
		for _, p := range s.pts {
			maxX, minY, maxY = max(maxX, p.x), min(minY, p.y), max(maxY, p.y)
		}
	}
	x0, x1, xstep := ticks(0, max(maxX*1.1, 1), 6)
	y0, y1, ystep := ticks(minY, max(maxY*1.1, minY+0.01), 5)
	px := func(x float64) float64 { return left + (x-x0)/(x1-x0)*(right-left) }
	py := func(y float64) float64 { return bottom - (y-y0)/(y1-y0)*(bottom-top) }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%g" height="%g" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%g" y="28" text-anchor="middle" font-size="16" font-weight="bold">%s</text>`+"\n",
		(left+right)/2, esc("CPU per channel against concurrency"))
	fmt.Fprintf(&b, `<text x="%g" y="48" text-anchor="middle" fill="#555">%s</text>`+"\n",
		(left+right)/2, esc("solid: whole machine in the steady window; dashed: relay cost above media none"))

	// Grid and tick labels.
	ydec := tickDecimals(ystep)
	for x := x0; x <= x1+xstep/2; x += xstep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#e5e5e5"/>`+"\n", px(x), top, px(x), bottom)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="black"/>`+"\n", px(x), bottom, px(x), bottom+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", px(x), bottom+19, esc(countInt(int(math.Round(x)))))
	}
	for y := y0; y <= y1+ystep/2; y += ystep {
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#e5e5e5"/>`+"\n", left, py(y), right, py(y))
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="black"/>`+"\n", left-5, py(y), left, py(y))
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, py(y)+4, esc(pct(y, ydec)))
	}
	// Axes; a zero line too when noise has made a relay cost negative.
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", left, top, left, bottom)
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", left, bottom, right, bottom)
	if y0 < 0 {
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="black" stroke-width="0.5"/>`+"\n", left, py(0), right, py(0))
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">%s</text>`+"\n", (left+right)/2, bottom+42, esc("concurrent calls"))
	fmt.Fprintf(&b, `<text x="22" y="%g" text-anchor="middle" transform="rotate(-90 22 %g)">%s</text>`+"\n",
		(top+bottom)/2, (top+bottom)/2, esc("% of one core per call"))

	if len(ss) == 0 {
		fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle" fill="#555">no data</text>`+"\n", (left+right)/2, (top+bottom)/2)
	}
	for i, s := range ss {
		pts := slices.Clone(s.pts)
		slices.SortFunc(pts, func(a, b point) int { return cmp.Compare(a.x, b.x) })
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		var d strings.Builder
		for j, p := range pts {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, px(p.x), py(p.y))
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"%s><title>%s</title></path>`+"\n",
			strings.TrimSpace(d.String()), s.color, dash, esc(s.label))
		// Hollow markers for relay cost keep the two series apart where
		// they overlap, and carry the value for a hover.
		fill := s.color
		if s.dashed {
			fill = "white"
		}
		for _, p := range pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s" stroke="%s" stroke-width="1.5"><title>%s</title></circle>`+"\n",
				px(p.x), py(p.y), fill, s.color, esc(fmt.Sprintf("%s at %s: %s", s.label, countInt(int(p.x)), pct(p.y, 4))))
		}
		ly := legendY + float64(i)*legendH
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2"%s/>`+"\n",
			legendX, ly, legendX+28, ly, s.color, dash)
		fmt.Fprintf(&b, `<circle cx="%g" cy="%g" r="4" fill="%s" stroke="%s" stroke-width="1.5"/>`+"\n",
			legendX+14, ly, fill, s.color)
		fmt.Fprintf(&b, `<text x="%g" y="%g">%s</text>`+"\n", legendX+36, ly+4, esc(s.label))
	}
	b.WriteString("</svg>\n")
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}
