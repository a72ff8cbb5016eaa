package callreport

import (
	"io"
	"math"
	"slices"

	"sipxdp/bench/out"
)

// Fixed colours per path, so the same path looks the same in every chart.
var scenarioColor = map[string]string{
	NoneScenario: "#7f7f7f",
	"userspace":  "#d62728",
	SRTPScenario: "#ff7f0e",
	"xdp":        "#1f77b4",
	"xdp-native": "#2ca02c",
	"tc":         "#9467bd",
}

// chartSeries gives each path its whole-machine CPU per call, and each
// relayed path also its cost above none: the gap between the two is what
// signaling and the load generator cost, which the relay cannot change.
func chartSeries(rs []Result) []out.Series {
	all := ordered(rs)
	var names []string
	for _, r := range all {
		if !slices.Contains(names, r.Scenario) {
			names = append(names, r.Scenario)
		}
	}
	slices.SortStableFunc(names, func(a, b string) int { return rank(a) - rank(b) })
	var series []out.Series
	extra := 0
	for _, name := range names {
		color, ok := scenarioColor[name]
		if !ok {
			color = out.Palette[extra%len(out.Palette)]
			extra++
		}
		sys := out.Series{Label: name + ": system CPU / call", Color: color}
		relay := out.Series{Label: name + ": relay cost / call (vs none)", Color: color, Dashed: true}
		for _, r := range all {
			if r.Scenario != name {
				continue
			}
			if v, ok := r.systemCPUPerCall(); ok {
				sys.Points = append(sys.Points, out.Point{X: float64(r.Level), Y: v})
			}
			if r.RelayCPUPerCallPct != nil {
				relay.Points = append(relay.Points, out.Point{X: float64(r.Level), Y: *r.RelayCPUPerCallPct})
			}
		}
		for _, s := range []out.Series{sys, relay} {
			if len(s.Points) > 0 {
				series = append(series, s)
			}
		}
	}
	return series
}

// WriteSVG draws CPU per channel against concurrency for each path as a
// self-contained SVG. It reads the derived fields, so call Derive first.
func WriteSVG(w io.Writer, rs []Result) error {
	return out.LineChart{
		Title:    "CPU per channel against concurrency",
		Subtitle: "solid: whole machine in the steady window; dashed: relay cost above media none",
		XLabel:   "concurrent calls",
		YLabel:   "% of one core per call",
		XTick:    func(x float64) string { return countInt(int(math.Round(x))) },
		YTick:    pct,
		Series:   chartSeries(rs),
	}.WriteSVG(w)
}
