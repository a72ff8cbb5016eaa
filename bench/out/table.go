package out

import (
	"encoding/csv"
	"fmt"
	"io"
	"strings"
)

// Align is a column's alignment in Markdown.
type Align int

// Alignments; the zero value leaves it to the renderer (left).
const (
	AlignDefault Align = iota
	AlignLeft
	AlignCenter
	AlignRight
)

// Table is the one model behind every Markdown table and CSV file of the
// bench: a header, rows of already formatted cells, and per column an
// alignment.
type Table struct {
	Head  []string
	Align []Align // per column; a missing entry is AlignDefault
	Rows  [][]string
	// Blank is printed in Markdown for an empty body cell (for instance
	// Dash, so a value not measured is not mistaken for a zero).
	Blank string
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Markdown renders the table as GitHub-flavoured Markdown, ending with the
// last row's newline.
func (t *Table) Markdown() string {
	var b strings.Builder
	line := func(cells []string, blank string) {
		b.WriteString("|")
		for _, c := range cells {
			if c == "" {
				c = blank
			}
			b.WriteString(" ")
			b.WriteString(Cell(c))
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
	line(t.Head, "")
	b.WriteString("|")
	for i := range t.Head {
		a := AlignDefault
		if i < len(t.Align) {
			a = t.Align[i]
		}
		b.WriteString([...]string{"---|", ":---|", ":---:|", "---:|"}[a])
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		line(r, t.Blank)
	}
	return b.String()
}

// Cell keeps a value inside its Markdown cell: a pipe in a command line
// would otherwise start a new column, and a newline would end the table.
func Cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// WriteCSV writes the header and the rows as CSV (RFC 4180 quoting).
func (t *Table) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(t.Head); err != nil {
		return fmt.Errorf("write csv header: %w", err)
	}
	for i, r := range t.Rows {
		if err := cw.Write(r); err != nil {
			return fmt.Errorf("write csv row %d: %w", i+1, err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	return nil
}

// Column is a named cell of a result of type T.
type Column[T any] struct {
	Name string
	Get  func(*T) string
}

// Columns lays results out one per row, one column each, in the order
// given.
func Columns[T any](cols []Column[T], rs []T) *Table {
	t := &Table{Head: make([]string, len(cols))}
	for i, c := range cols {
		t.Head[i] = c.Name
	}
	for i := range rs {
		row := make([]string, len(cols))
		for j, c := range cols {
			row[j] = c.Get(&rs[i])
		}
		t.Add(row...)
	}
	return t
}

// Col is a Column, for tables of columns written one a line.
func Col[T any](name string, get func(*T) string) Column[T] { return Column[T]{Name: name, Get: get} }
