package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// BenchmarkCommit: durable commits per second and fdatasyncs per commit
// with N goroutines committing at once, on a real file (in
// JOURNAL_BENCH_DIR, default the test's temporary directory: make sure it
// is on the disk you care about, not tmpfs). A few seconds:
//
//	go test -run '^$' -bench Commit -benchtime 2s ./sipd/journal/
func BenchmarkCommit(b *testing.B) {
	rec := []byte(`{"aor":"user0000001","b":[{"aor":"user0000001","contact":"sip:user0000001@192.0.2.1:5060","received":"192.0.2.1:5060","transport":"UDP","call_id":"0123456789abcdef@192.0.2.1","cseq":2,"user_agent":"Linphone/5.2.0","expires":"2026-01-01T00:00:00Z","updated":"2025-12-31T23:00:00Z"}]}`)
	for _, n := range []int{1, 16, 256, 1024} {
		b.Run(fmt.Sprintf("committers=%d", n), func(b *testing.B) {
			dir := os.Getenv("JOURNAL_BENCH_DIR")
			if dir == "" {
				dir = b.TempDir()
			}
			path := filepath.Join(dir, fmt.Sprintf("bench-%d.journal", n))
			defer os.Remove(path)
			j, err := Open(path, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			b.ResetTimer()
			var wg sync.WaitGroup
			per := (b.N + n - 1) / n
			for g := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := g * per; i < min((g+1)*per, b.N); i++ {
						if err := j.Append(rec).Wait(); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			st := j.Stats()
			b.ReportMetric(float64(st.Records)/b.Elapsed().Seconds(), "commits/s")
			b.ReportMetric(float64(st.Syncs)/float64(st.Records), "syncs/commit")
			b.ReportMetric(0, "ns/op")
		})
	}
}
