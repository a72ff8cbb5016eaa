package callreport

import (
	"io"
	"path/filepath"

	"sipxdp/bench/out"
)

// WriteAll writes every output into dir: results.jsonl is appended to, so
// it keeps the history of runs; results.csv, report.md and
// cpu-per-channel.svg describe rs alone and are replaced. It does not call
// Derive: the caller decides which results the derived fields come from.
func WriteAll(dir string, rs []Result) error {
	if err := AppendJSONL(filepath.Join(dir, "results.jsonl"), rs); err != nil {
		return err
	}
	of := func(write func(io.Writer, []Result) error) func(io.Writer) error {
		return func(w io.Writer) error { return write(w, rs) }
	}
	return out.WriteFiles(dir,
		out.File{Name: "results.csv", Render: of(WriteCSV)},
		out.File{Name: "report.md", Render: of(WriteMarkdown)},
		out.File{Name: "cpu-per-channel.svg", Render: of(WriteSVG)})
}
