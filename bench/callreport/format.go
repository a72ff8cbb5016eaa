package callreport

import (
	"fmt"
	"strings"

	"sipxdp/bench/out"
)

const dash = out.Dash

func fixed(v float64, dec int) string { return out.Fixed(v, dec) }

func pct(v float64, dec int) string { return fixed(v, dec) + "%" }

func signedPct(v float64, dec int) string {
	s := pct(v, dec)
	if !strings.HasPrefix(s, "-") {
		s = "+" + s
	}
	return s
}

func optPct(p *float64, dec int) string {
	if p == nil {
		return dash
	}
	return pct(*p, dec)
}

func ms(v float64) string { return fixed(v, 2) + " ms" }
func mb(v float64) string { return fixed(v, 1) + " MB" }

func count(n uint64) string { return out.Count(int64(n)) }
func countInt(n int) string { return out.Count(int64(n)) }

// plain prints a configuration value such as CPS without trailing zeros.
func plain(v float64) string { return out.Plain(v) }

func bold(s string) string {
	if s == dash || s == "" {
		return s
	}
	return "**" + s + "**"
}

// denominator is what completion is measured against: the calls asked
// for, or the calls attempted when the total was not recorded.
func denominator(r *Result) int {
	if r.Total > 0 {
		return r.Total
	}
	return r.Attempted
}

func completionPct(r *Result) string {
	den := denominator(r)
	if den <= 0 {
		return dash
	}
	if r.Completed == den {
		return "100%"
	}
	p := 100 * float64(r.Completed) / float64(den)
	// One lost call in tens of thousands must not round up to 100.00%.
	if p > 99.99 && r.Completed < den {
		p = 99.99
	}
	return pct(p, 2)
}

func completion(r *Result) string {
	den := denominator(r)
	if den <= 0 {
		return dash
	}
	return fmt.Sprintf("%s/%s (%s)", countInt(r.Completed), countInt(den), completionPct(r))
}
