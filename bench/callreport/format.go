package callreport

import (
	"fmt"
	"strconv"
	"strings"
)

// dash marks a value the scenario does not have or that was not measured,
// so it cannot be mistaken for a measured zero.
const dash = "–"

// fixed formats v with dec decimals, without the "-0.00" that rounding a
// tiny negative noise figure would otherwise print.
func fixed(v float64, dec int) string {
	s := strconv.FormatFloat(v, 'f', dec, 64)
	if strings.HasPrefix(s, "-") && strings.Trim(s[1:], "0.") == "" {
		return s[1:]
	}
	return s
}

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

// count groups digits in threes, as the reference prints packet totals.
func count(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func countInt(n int) string {
	if n < 0 {
		return "-" + count(uint64(-n))
	}
	return count(uint64(n))
}

// plain prints a configuration value such as CPS without trailing zeros.
func plain(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

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
