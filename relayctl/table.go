package relayctl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

// column is one column of a table: its header and whether its cells
// (numbers) are right-aligned.
type column struct {
	name  string
	right bool
}

func left(name string) column  { return column{name: name} }
func right(name string) column { return column{name: name, right: true} }

// table lays rows out as ss and bpftool do: a header row, columns two
// spaces apart, numbers right-aligned. text/tabwriter does the layout,
// but it aligns every column the same way, so the cells of right-aligned
// columns are padded to their column's width before it sees them.
type table struct {
	cols []column
	rows [][]string
}

func newTable(cols ...column) *table { return &table{cols: cols} }

// add appends a row; it must have one cell per column.
func (t *table) add(cells ...string) {
	if len(cells) != len(t.cols) {
		panic(fmt.Sprintf("relayctl: table row has %d cells for %d columns", len(cells), len(t.cols)))
	}
	t.rows = append(t.rows, cells)
}

// write prints the header and the rows, or the header and empty (as
// "(no flows)") when there are no rows.
func (t *table) write(w io.Writer, empty string) error {
	width := make([]int, len(t.cols))
	for i, c := range t.cols {
		width[i] = utf8.RuneCountInString(c.name)
	}
	for _, r := range t.rows {
		for i, cell := range r {
			width[i] = max(width[i], utf8.RuneCountInString(cell))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(cells []string) {
		out := make([]string, len(cells))
		for i, cell := range cells {
			if t.cols[i].right {
				cell = strings.Repeat(" ", width[i]-utf8.RuneCountInString(cell)) + cell
			}
			out[i] = cell
		}
		fmt.Fprintln(tw, strings.Join(out, "\t"))
	}
	header := make([]string, len(t.cols))
	for i, c := range t.cols {
		header[i] = c.name
	}
	line(header)
	for _, r := range t.rows {
		line(r)
	}
	if len(t.rows) == 0 && empty != "" {
		fmt.Fprintln(tw, empty)
	}
	return tw.Flush()
}
