package callreport

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

type svgElems struct {
	paths   []map[string]string
	circles int
	texts   []string
}

func parseSVG(t *testing.T, rs []Result) svgElems {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteSVG(&buf, rs); err != nil {
		t.Fatal(err)
	}
	var e svgElems
	dec := xml.NewDecoder(&buf)
	inText := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG does not parse as XML: %v", err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			switch tk.Name.Local {
			case "path":
				attrs := map[string]string{}
				for _, a := range tk.Attr {
					attrs[a.Name.Local] = a.Value
				}
				e.paths = append(e.paths, attrs)
			case "circle":
				e.circles++
			case "text":
				inText = true
			}
		case xml.EndElement:
			if tk.Name.Local == "text" {
				inText = false
			}
		case xml.CharData:
			if inText {
				e.texts = append(e.texts, string(tk))
			}
		}
	}
	return e
}

func TestWriteSVG(t *testing.T) {
	many := fixtureSet()
	Derive(many)
	one := []Result{fixture(NoneScenario, 500, 40), fixture("xdp", 500, 44)}
	Derive(one)
	noise := []Result{fixture(NoneScenario, 500, 40), fixture("xdp", 500, 39)}
	Derive(noise)
	tests := []struct {
		name   string
		rs     []Result
		series int // none, and for each relayed path system and relay
		dashed int
		points int    // markers on the lines, plus one per legend entry
		tick   string // an x tick label the axis must have
	}{
		{"two levels", many, 5, 2, 10 + 5, "800"},
		{"one level", one, 3, 1, 3 + 3, "500"},
		{"negative relay cost", noise, 3, 1, 3 + 3, "500"},
		{"no results", nil, 0, 0, 0, "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := parseSVG(t, tt.rs)
			if len(e.paths) != tt.series {
				t.Errorf("%d paths, want one per series: %d", len(e.paths), tt.series)
			}
			dashed := 0
			for _, p := range e.paths {
				if p["stroke-dasharray"] != "" {
					dashed++
				}
				if strings.Contains(p["d"], "NaN") || strings.Contains(p["d"], "Inf") {
					t.Errorf("path has a non-finite coordinate: %q", p["d"])
				}
			}
			if dashed != tt.dashed {
				t.Errorf("%d dashed paths, want %d", dashed, tt.dashed)
			}
			if e.circles != tt.points {
				t.Errorf("%d markers, want %d", e.circles, tt.points)
			}
			all := strings.Join(e.texts, "\n")
			for _, want := range []string{"CPU per channel against concurrency", "concurrent calls", "% of one core per call"} {
				if !strings.Contains(all, want) {
					t.Errorf("chart lacks text %q", want)
				}
			}
			if !slices.Contains(e.texts, tt.tick) {
				t.Errorf("x axis has no tick %q", tt.tick)
			}
		})
	}
}
