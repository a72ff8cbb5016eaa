package callreport

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteAll writes every output into dir: results.jsonl is appended to, so
// it keeps the history of runs; results.csv, report.md and
// cpu-per-channel.svg describe rs alone and are replaced. It does not call
// Derive: the caller decides which results the derived fields come from.
func WriteAll(dir string, rs []Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create report dir: %w", err)
	}
	if err := AppendJSONL(filepath.Join(dir, "results.jsonl"), rs); err != nil {
		return err
	}
	outputs := []struct {
		name  string
		write func(io.Writer, []Result) error
	}{
		{"results.csv", WriteCSV},
		{"report.md", WriteMarkdown},
		{"cpu-per-channel.svg", WriteSVG},
	}
	for _, o := range outputs {
		// Rendered in memory first, so a failure leaves the previous file
		// rather than half of a new one.
		var buf bytes.Buffer
		if err := o.write(&buf, rs); err != nil {
			return fmt.Errorf("render %s: %w", o.name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, o.name), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", o.name, err)
		}
	}
	return nil
}
