package callreport

import (
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
	return out.WriteFiles(dir,
		out.File{Name: "results.csv", Render: out.Of(WriteCSV, rs)},
		out.File{Name: "report.md", Render: out.Of(WriteMarkdown, rs)},
		out.File{Name: "cpu-per-channel.svg", Render: out.Of(WriteSVG, rs)})
}
