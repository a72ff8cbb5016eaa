package callreport

import "strings"

// table is a Markdown table laid out like the reference: the first column
// left-aligned as labels, the rest centred as values.
type table struct {
	head []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(b *strings.Builder) {
	line := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" ")
			b.WriteString(cell(c))
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
	line(t.head)
	b.WriteString("|")
	for i := range t.head {
		if i == 0 {
			b.WriteString("--------|")
		} else {
			b.WriteString(":---:|")
		}
	}
	b.WriteString("\n")
	for _, r := range t.rows {
		line(r)
	}
	b.WriteString("\n")
}

// cell keeps a value inside its cell: a pipe in a command line would
// otherwise start a new column, and a newline would end the table.
func cell(s string) string {
	if s == "" {
		return dash
	}
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}
