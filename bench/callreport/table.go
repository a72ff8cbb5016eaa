package callreport

import (
	"strings"

	"sipxdp/bench/out"
)

// newTable lays a table out like the reference: the first column as
// labels, the rest centred as values, and a dash for a missing value.
func newTable(head ...string) *out.Table {
	align := make([]out.Align, len(head))
	for i := 1; i < len(align); i++ {
		align[i] = out.AlignCenter
	}
	return &out.Table{Head: head, Align: align, Blank: dash}
}

// writeTable ends a table with the blank line that separates it from
// what follows.
func writeTable(b *strings.Builder, t *out.Table) {
	b.WriteString(t.Markdown())
	b.WriteString("\n")
}
