package out

import (
	"strconv"
	"strings"
)

// Dash marks a value a result does not have or that was not measured, so
// it cannot be mistaken for a measured zero.
const Dash = "–"

// Fixed formats v with dec decimals, without the "-0.00" that rounding a
// tiny negative noise figure would otherwise print.
func Fixed(v float64, dec int) string {
	s := strconv.FormatFloat(v, 'f', dec, 64)
	if strings.HasPrefix(s, "-") && strings.Trim(s[1:], "0.") == "" {
		return s[1:]
	}
	return s
}

// Plain prints v without trailing zeros, as JSON would.
func Plain(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// Count groups digits in threes: 1,234,567.
func Count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
