package digest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// Memory and load time of a large users file. Prints figures, asserts
// nothing; run once:
//
//	go test -run '^$' -bench Users -benchtime 1x ./sipd/digest/
//
// Each user has an MD5 and a SHA-256 HA1, as a provisioning system writes
// them (no clear-text passwords).

func usersFile(b *testing.B, n int) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "users")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 1<<20)
	for i := range n {
		user := fmt.Sprintf("user%07d", i)
		pw := strconv.Itoa(i * 7919)
		buf = fmt.Appendf(buf, "%s ha1-md5=%s ha1-sha256=%s\n", user, HA1(MD5, user, "example.org", pw), HA1(SHA256, user, "example.org", pw))
		if len(buf) > 1<<20-200 {
			f.Write(buf)
			buf = buf[:0]
		}
	}
	f.Write(buf)
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}

func settled() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

func BenchmarkUsers(b *testing.B) {
	for _, n := range []int{1_000_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			path := usersFile(b, n)
			fi, _ := os.Stat(path)
			for range b.N {
				before := settled()
				start := time.Now()
				u, err := LoadUsers(path)
				if err != nil {
					b.Fatal(err)
				}
				load := time.Since(start)
				after := settled()
				start = time.Now()
				if err := u.Reload(); err != nil {
					b.Fatal(err)
				}
				reload := time.Since(start)
				reloaded := settled()
				if u.Len() != n {
					b.Fatalf("%d users, want %d", u.Len(), n)
				}
				if c, ok := u.Lookup("user0000007"); !ok || c.HA1[SHA256] != HA1(SHA256, "user0000007", "example.org", strconv.Itoa(7*7919)) {
					b.Fatalf("user0000007: %+v", c)
				}
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "bytes/user")
				b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(n), "inuse/user")
				b.ReportMetric(float64(reloaded.HeapAlloc-before.HeapAlloc)/float64(n), "bytes/user-after-reload")
				b.ReportMetric(float64(load.Milliseconds()), "ms/load")
				b.ReportMetric(float64(reload.Milliseconds()), "ms/reload")
				b.ReportMetric(float64(fi.Size())/float64(n), "file-B/user")
				runtime.KeepAlive(u)
			}
		})
	}
}
