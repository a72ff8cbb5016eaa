// Package out writes bench results: JSON lines for tools, and CSV,
// Markdown tables and SVG charts for people. Every bench subcommand
// (datapath, calls, itsp, conns) keeps its own result type and layout and
// writes it through this one table model and these writers, so a fix to
// quoting, escaping or chart scaling reaches every report at once.
package out

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// File is one output that WriteFiles renders and writes.
type File struct {
	Name   string
	Render func(io.Writer) error
}

// WriteFiles renders each file in memory and then replaces dir/Name, so a
// failure leaves the previous file rather than half of a new one.
func WriteFiles(dir string, files ...File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for _, f := range files {
		var buf bytes.Buffer
		if err := f.Render(&buf); err != nil {
			return fmt.Errorf("render %s: %w", f.Name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.Name), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", f.Name, err)
		}
	}
	return nil
}

// Of adapts a writer of results to a File's Render.
func Of[T any](write func(io.Writer, []T) error, rs []T) func(io.Writer) error {
	return func(w io.Writer) error { return write(w, rs) }
}
