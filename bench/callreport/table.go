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

// writeNodeSection writes a multi-node scenario's section: its nodes,
// then the runs beside one host. Nothing when no run had nodes.
func writeNodeSection(b *strings.Builder, title, intro string, nodes *out.Table, against string, beside *out.Table) {
	if len(nodes.Rows) == 0 {
		return
	}
	b.WriteString("### " + title + "\n\n" + intro + "\n\n")
	writeTable(b, nodes)
	b.WriteString(against + "\n\n")
	writeTable(b, beside)
}

// addBesideOneHost adds a multi-node run r through row, and then the
// single-host run of its level and path if there is one: extra and
// oneHost are their cells for what only the multi-node layout has.
func addBesideOneHost(rs []*Result, r *Result, layout, extra, oneHost string, row func(layout string, x *Result, extra string)) {
	row(layout, r, extra)
	if one := find(rs, r.Level, r.Path); one != nil {
		row(one.Scenario+" (one host)", one, oneHost)
	}
}
