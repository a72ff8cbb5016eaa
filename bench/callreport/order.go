package callreport

import (
	"slices"
	"strconv"
	"strings"
)

// scenarioRank puts the paths in the order a reader compares them: the
// baseline, the userspace relay, then the kernel paths. Unknown scenarios
// follow in the order they came.
var scenarioRank = map[string]int{
	NoneScenario:    0,
	"userspace":     1,
	SRTPScenario:    2,
	"xdp":           3,
	"xdp-native":    4,
	"tc":            5,
	RelaysScenario:  6,
	ProxiesScenario: 7,
}

func rank(s string) int {
	if n, ok := scenarioRank[s]; ok {
		return n
	}
	return len(scenarioRank)
}

// ordered returns pointers into rs sorted by level, then scenario; the
// caller's slice is left as the orchestrator produced it.
func ordered(rs []Result) []*Result {
	out := make([]*Result, len(rs))
	for i := range rs {
		out[i] = &rs[i]
	}
	slices.SortStableFunc(out, func(a, b *Result) int {
		if a.Level != b.Level {
			return a.Level - b.Level
		}
		return rank(a.Scenario) - rank(b.Scenario)
	})
	return out
}

func levels(rs []*Result) []int {
	var out []int
	for _, r := range rs {
		if !slices.Contains(out, r.Level) {
			out = append(out, r.Level)
		}
	}
	slices.Sort(out)
	return out
}

func atLevel(rs []*Result, level int) []*Result {
	var out []*Result
	for _, r := range rs {
		if r.Level == level {
			out = append(out, r)
		}
	}
	return out
}

func find(rs []*Result, level int, scenario string) *Result {
	for _, r := range rs {
		if r.Level == level && r.Scenario == scenario {
			return r
		}
	}
	return nil
}

// statusCodes lists SIP codes numerically, then any non-numeric outcome
// such as "timeout", so two reports of the same run read the same.
func statusCodes(m map[string]int, sep string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		na, ea := strconv.Atoi(a)
		nb, eb := strconv.Atoi(b)
		switch {
		case ea == nil && eb == nil:
			return na - nb
		case ea == nil:
			return -1
		case eb == nil:
			return 1
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ":" + strconv.Itoa(m[k])
	}
	return strings.Join(parts, sep)
}

// distinct keeps the first occurrence of each non-empty value.
func distinct(vals []string) []string {
	var out []string
	for _, v := range vals {
		if v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
