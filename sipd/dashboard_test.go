package sipd

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// dashboardFile is the Grafana dashboard shipped in docs.
const dashboardFile = "../docs/grafana/sipxdp.json"

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	labelValues  = regexp.MustCompile(`label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
)

// promKeywords are PromQL words that are not metric names.
var promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true}

// metricNames returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges and grouping
// lists are gone, that are not functions (followed by a parenthesis)
// or keywords.
func metricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRange.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		if loc[0] > 0 && (s[loc[0]-1] == '.' || s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9') {
			continue // a number's exponent or fraction
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") || promKeywords[name] {
			continue
		}
		out = append(out, name)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`sipxdp_sip_active_calls{instance=~"$instance"}`, []string{"sipxdp_sip_active_calls"}},
		{`histogram_quantile(0.99, sum by (le, command) (rate(sipxdp_ng_command_duration_seconds_bucket{x="a{b}"}[$__rate_interval])))`,
			[]string{"sipxdp_ng_command_duration_seconds_bucket"}},
		{`8 * sum without (path) (rate(a_total[5m] offset 1h)) / on(instance) group_left(version) b_info`, []string{"a_total", "b_info"}},
		{`rate(x_total[1m]) > bool 1e3 and y`, []string{"x_total", "y"}},
	} {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// dashboardQueries returns every PromQL expression of the dashboard's
// panels (rows' nested panels included) and the metrics its template
// variables read.
func dashboardQueries(t *testing.T) (exprs []string, varMetrics []string) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title      string            `json:"title"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	type panel struct {
		Type    string            `json:"type"`
		Title   string            `json:"title"`
		Panels  []json.RawMessage `json:"panels"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	}
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: panel: %v", dashboardFile, err)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		for _, m := range labelValues.FindAllStringSubmatch(v.Definition, -1) {
			varMetrics = append(varMetrics, m[1])
		}
	}
	return exprs, varMetrics
}

// TestDashboardSeriesExist: every metric the Grafana dashboard queries is
// one sipd exports (a histogram's _bucket, _sum and _count included), so
// a rename cannot leave a panel empty unnoticed.
func TestDashboardSeriesExist(t *testing.T) {
	api := &API{Started: time.Now(), Version: "test"}
	metricsAPI(t, api)
	exported := map[string]dto.MetricType{}
	for _, g := range []prometheus.Gatherer{api.Registry(), gatherer(collectFunc(func(e emit) { e.media(mediaTotals) }))} {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			exported[mf.GetName()] = mf.GetType()
		}
	}
	exists := func(name string) bool {
		if _, ok := exported[name]; ok {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && exported[base] == dto.MetricType_HISTOGRAM {
				return true
			}
		}
		return false
	}
	exprs, vars := dashboardQueries(t)
	if len(exprs) < 20 {
		t.Fatalf("%d queries in %s: the walk missed panels", len(exprs), dashboardFile)
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		names := metricNames(e)
		if len(names) == 0 {
			t.Errorf("query %q selects no metric", e)
		}
		for _, n := range names {
			seen[n] = true
			if !exists(n) {
				t.Errorf("query %q: %s is not exported", e, n)
			}
		}
	}
	for _, n := range vars {
		if !exists(n) {
			t.Errorf("template variable reads %s, which is not exported", n)
		}
	}
	t.Logf("%d queries over %d metrics", len(exprs), len(seen))
}

func gatherer(c prometheus.Collector) prometheus.Gatherer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	return reg
}
