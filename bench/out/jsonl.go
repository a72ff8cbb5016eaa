package out

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// AppendJSONL adds one JSON line per result to path, creating it and its
// directory. Results accumulate across runs so earlier measurements stay
// next to new ones.
func AppendJSONL[T any](path string, rs []T) error {
	return writeJSONL(path, rs, os.O_APPEND)
}

// WriteJSONL replaces path with one JSON line per result.
func WriteJSONL[T any](path string, rs []T) error {
	return writeJSONL(path, rs, os.O_TRUNC)
}

func writeJSONL[T any](path string, rs []T, mode int) error {
	var buf bytes.Buffer
	for i := range rs {
		line, err := json.Marshal(&rs[i])
		if err != nil {
			return fmt.Errorf("encode result %d: %w", i+1, err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|mode, 0o644)
	if err != nil {
		return fmt.Errorf("open results: %w", err)
	}
	// One write, so a reader never sees half of this batch's lines.
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("write results to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// ReadJSONL reads the results in path, skipping blank lines; an error
// names the line.
func ReadJSONL[T any](path string) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open results: %w", err)
	}
	defer f.Close()
	rs, err := DecodeJSONL[T](f)
	if err != nil {
		return nil, fmt.Errorf("%s %w", path, err)
	}
	return rs, nil
}

// DecodeJSONL reads JSON lines from r, skipping blank ones.
func DecodeJSONL[T any](r io.Reader) ([]T, error) {
	var rs []T
	sc := bufio.NewScanner(r)
	// Notes, commands and profiles can make a line long; the default
	// 64 KiB would fail on a result that is otherwise fine.
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r T
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		rs = append(rs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return rs, nil
}
