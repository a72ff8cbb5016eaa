package callreport

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

// AppendJSONL adds one JSON line per result to path, creating it. Results
// accumulate across runs so earlier measurements stay next to new ones.
func AppendJSONL(path string, rs []Result) error {
	var buf bytes.Buffer
	for i := range rs {
		line, err := json.Marshal(&rs[i])
		if err != nil {
			return fmt.Errorf("encode result %d (%s at %d): %w", i, rs[i].Scenario, rs[i].Level, err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open results: %w", err)
	}
	// One write, so a reader never sees half of this batch's lines.
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("append results to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// ReadJSONL reads the results in path, skipping blank lines.
func ReadJSONL(path string) ([]Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open results: %w", err)
	}
	defer f.Close()
	var rs []Result
	sc := bufio.NewScanner(f)
	// Notes and commands can make a line long; the default 64 KiB would
	// fail on a result that is otherwise fine.
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r Result
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		rs = append(rs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return rs, nil
}
