package callreport

import "sipxdp/bench/out"

// AppendJSONL adds one JSON line per result to path, creating it. Results
// accumulate across runs so earlier measurements stay next to new ones.
func AppendJSONL(path string, rs []Result) error { return out.AppendJSONL(path, rs) }

// ReadJSONL reads the results in path, skipping blank lines.
func ReadJSONL(path string) ([]Result, error) { return out.ReadJSONL[Result](path) }
