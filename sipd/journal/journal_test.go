package journal

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memFile is a File in memory whose faults the test switches on and off.
// durable is what a crash would leave: the content at the last
// successful Sync.
type memFile struct {
	mu      sync.Mutex
	data    []byte
	durable []byte
	// Faults: while set, the call fails. A failing write first writes
	// half of what it was given, as a full disk does.
	writeErr, syncErr, truncErr error
	writes, syncs, truncs       int
	closed                      bool
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if off != int64(len(f.data)) {
		return 0, fmt.Errorf("write at %d, file is %d long: a hole or an overwrite", off, len(f.data))
	}
	if f.writeErr != nil {
		f.data = append(f.data, p[:len(p)/2]...)
		return len(p) / 2, f.writeErr
	}
	f.data = append(f.data, p...)
	return len(p), nil
}

func (f *memFile) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.syncErr != nil {
		return f.syncErr
	}
	f.syncs++
	f.durable = append(f.durable[:0], f.data...)
	return nil
}

func (f *memFile) Truncate(n int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.truncs++
	if f.truncErr != nil {
		return f.truncErr
	}
	if n > int64(len(f.data)) {
		return errors.New("truncate would extend")
	}
	f.data = f.data[:n]
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.data)), nil
}

func (f *memFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *memFile) set(fn func(f *memFile)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *memFile) content() (data, durable string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.data), string(f.durable)
}

func openMem(t *testing.T, f *memFile, o Options) *Journal {
	t.Helper()
	o.Open = func(string, os.FileMode) (File, error) { return f, nil }
	if o.Retry == 0 {
		o.Retry = 20 * time.Millisecond
	}
	j, err := Open(filepath.Join(t.TempDir(), "j"), o)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func lines(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

func joined(recs ...[]string) string {
	var b strings.Builder
	for _, rs := range recs {
		for _, r := range rs {
			b.WriteString(r + "\n")
		}
	}
	return b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Concurrent commits all succeed, each record is in the file once, and
// they share syncs.
func TestGroupCommit(t *testing.T) {
	f := &memFile{}
	j := openMem(t, f, Options{})
	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- j.Append(fmt.Appendf(nil, "r%05d", i)).Wait()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	data, durable := f.content()
	if data != durable {
		t.Fatal("data past the last sync after Close")
	}
	got := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
	seen := map[string]bool{}
	for _, l := range got {
		seen[l] = true
	}
	if len(got) != n || len(seen) != n {
		t.Fatalf("%d lines, %d distinct, want %d", len(got), len(seen), n)
	}
	st := j.Stats()
	if st.Records != n || st.Syncs == 0 || st.Syncs >= n {
		t.Fatalf("stats %+v: want %d records in fewer syncs", st, n)
	}
	t.Logf("%d commits, %d syncs", n, st.Syncs)
}

// Faults while writing: the waiters of the failing batch get the error,
// nothing of it stays in the file, later commits are refused at once but
// kept, and when the fault clears every record is written, once, in
// order, without anyone calling the journal again.
func TestFaults(t *testing.T) {
	enospc := &os.PathError{Op: "write", Path: "j", Err: syscall.ENOSPC}
	eio := &os.PathError{Op: "fdatasync", Path: "j", Err: syscall.EIO}
	for _, tc := range []struct {
		name  string
		fault func(f *memFile, on bool)
		cause error
	}{
		{"write ENOSPC", func(f *memFile, on bool) {
			f.writeErr = nil
			if on {
				f.writeErr = enospc
			}
		}, syscall.ENOSPC},
		{"sync EIO", func(f *memFile, on bool) {
			f.syncErr = nil
			if on {
				f.syncErr = eio
			}
		}, syscall.EIO},
		{"write and truncate fail", func(f *memFile, on bool) {
			f.writeErr, f.truncErr = nil, nil
			if on {
				f.writeErr, f.truncErr = enospc, syscall.EIO
			}
		}, syscall.ENOSPC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &memFile{}
			j := openMem(t, f, Options{Name: "test"})
			defer j.Close()
			before := lines(3, "ok")
			for _, r := range before {
				if err := j.Append([]byte(r)).Wait(); err != nil {
					t.Fatal(err)
				}
			}
			f.set(func(f *memFile) { tc.fault(f, true) })
			err := j.Append([]byte("failed-batch")).Wait()
			if !errors.Is(err, ErrDegraded) || !errors.Is(err, tc.cause) {
				t.Fatalf("commit on a failing disk: %v, want ErrDegraded wrapping %v", err, tc.cause)
			}
			st := j.Stats()
			if !st.Degraded || st.Errors < 1 || st.Error == "" {
				t.Fatalf("stats while failing: %+v", st)
			}
			// Refused at once, not after a retry.
			start := time.Now()
			during := lines(5, "during")
			for _, r := range during {
				if err := j.Append([]byte(r)).Wait(); !errors.Is(err, ErrDegraded) {
					t.Fatalf("commit while degraded: %v", err)
				}
			}
			if d := time.Since(start); d > 10*time.Millisecond {
				t.Fatalf("refusals took %v", d)
			}
			if err := j.Sync(); !errors.Is(err, ErrDegraded) {
				t.Fatalf("Sync while degraded: %v", err)
			}
			if err := j.Rotate(filepath.Join(t.TempDir(), "old")); !errors.Is(err, ErrDegraded) {
				t.Fatalf("Rotate while degraded: %v", err)
			}
			// Retries fail too, and are counted.
			waitFor(t, "a failed retry", func() bool { return j.Stats().Errors >= 2 })
			f.set(func(f *memFile) {
				if tc.name != "write and truncate fail" {
					// Nothing of a failed batch is left for a crash to find.
					if string(f.data) != joined(before) {
						t.Errorf("file while failing %q, want %q", f.data, joined(before))
					}
				}
				tc.fault(f, false)
			})
			waitFor(t, "recovery", func() bool { return !j.Stats().Degraded && j.Stats().PendingBytes == 0 })
			after := []string{"after"}
			if err := j.Append([]byte("after")).Wait(); err != nil {
				t.Fatalf("commit after recovery: %v", err)
			}
			want := joined(before, []string{"failed-batch"}, during, after)
			if data, durable := f.content(); data != want || durable != want {
				t.Fatalf("file after recovery\n%q\nwant\n%q", data, want)
			}
			if st := j.Stats(); st.Degraded || st.Error != "" || st.Records != uint64(len(before)+1+len(during)+1) {
				t.Fatalf("stats after recovery %+v", st)
			}
		})
	}
}

// While degraded, the records kept are bounded; the rest are dropped and
// counted.
func TestBacklogBound(t *testing.T) {
	f := &memFile{writeErr: syscall.ENOSPC}
	j := openMem(t, f, Options{MaxPending: 100, Retry: time.Hour})
	j.Append([]byte("first")).Wait()
	var dropped int
	for i := range 50 {
		if err := j.Append(fmt.Appendf(nil, "rec%02d", i)).Wait(); errors.Is(err, ErrBacklog) {
			dropped++
		}
	}
	st := j.Stats()
	if dropped == 0 || st.Dropped != uint64(dropped) || st.PendingBytes > 100 {
		t.Fatalf("dropped %d, stats %+v", dropped, st)
	}
	err := j.Close()
	if err == nil || !strings.Contains(err.Error(), "not written") {
		t.Fatalf("Close on a failing disk: %v", err)
	}
}

// Close writes what is queued; later calls fail cleanly.
func TestClose(t *testing.T) {
	f := &memFile{}
	j := openMem(t, f, Options{})
	c := j.Append([]byte("last"))
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, durable := f.content(); durable != "last\n" {
		t.Fatalf("durable %q", durable)
	}
	if err := j.Append([]byte("x")).Wait(); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := j.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	for _, rec := range []string{"", "a\nb"} {
		if err := (&Journal{}).Append([]byte(rec)).Wait(); !errors.Is(err, ErrRecord) {
			t.Fatalf("record %q: %v", rec, err)
		}
	}
}

// A crash mid-write leaves an incomplete last record: Open cuts it, so
// the next record does not join it.
func TestOpenCutsTornTail(t *testing.T) {
	for _, tc := range []struct{ name, before, want string }{
		{"empty", "", ""},
		{"complete", "a\nb\n", "a\nb\n"},
		{"torn", "a\nb\n{\"par", "a\nb\n"},
		{"only torn", "{\"par", ""},
		{"long torn", "a\n" + strings.Repeat("x", 10000), "a\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j")
			if err := os.WriteFile(path, []byte(tc.before), 0o600); err != nil {
				t.Fatal(err)
			}
			j, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := j.Append([]byte("new")).Wait(); err != nil {
				t.Fatal(err)
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(path)
			if string(b) != tc.want+"new\n" {
				t.Fatalf("file %q, want %q", b, tc.want+"new\n")
			}
		})
	}
}

func TestRotate(t *testing.T) {
	dir := t.TempDir()
	path, old := filepath.Join(dir, "j"), filepath.Join(dir, "j.old")
	j, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	j.Append([]byte("one"))
	if err := j.Rotate(old); err != nil {
		t.Fatal(err)
	}
	if err := j.Append([]byte("two")).Wait(); err != nil {
		t.Fatal(err)
	}
	// A target that exists is never replaced: it may hold the only copy.
	if err := j.Rotate(old); !errors.Is(err, ErrExists) {
		t.Fatalf("rotate onto an existing file: %v", err)
	}
	if err := j.Append([]byte("three")).Wait(); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{old: "one\n", path: "two\nthree\n"} {
		if b, _ := os.ReadFile(p); string(b) != want {
			t.Errorf("%s: %q, want %q", filepath.Base(p), b, want)
		}
	}
}

// Compact: the snapshot is written after the journal is set aside, and
// the set-aside file goes only once the snapshot is in place; a failed
// snapshot keeps it, and the next attempt does not set aside again (which
// would lose it) but covers it.
func TestCompact(t *testing.T) {
	dir := t.TempDir()
	path, snap := filepath.Join(dir, "j"), filepath.Join(dir, "snap")
	j, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	j.Append([]byte("one"))
	boom := errors.New("disk full")
	if err := j.Compact(snap, 0o600, func(w *bufio.Writer) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed snapshot: %v", err)
	}
	if read(path+".old") != "one\n" || read(snap) != "" {
		t.Fatalf("after a failed snapshot: old %q, snapshot %q; want the journal set aside, no snapshot", read(path+".old"), read(snap))
	}
	if err := j.Append([]byte("two")).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := j.Compact(snap, 0o600, func(w *bufio.Writer) error {
		// Called after any setting aside: the journal holds "two", and
		// .old still "one" (not overwritten by a second rotation).
		if read(path+".old") != "one\n" || read(path) != "two\n" {
			t.Errorf("during the retry: old %q, journal %q", read(path+".old"), read(path))
		}
		_, err := w.WriteString("state\n")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".old"); !os.IsNotExist(err) {
		t.Errorf("set-aside journal left after a good snapshot: %v", err)
	}
	if read(snap) != "state\n" {
		t.Errorf("snapshot %q", read(snap))
	}
}

// A real file on a real disk: what the committer wrote replays.
func TestReplayRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	var commits []*Commit
	for i := range 100 {
		r := fmt.Sprintf(`{"n":%d}`, i)
		want = append(want, r)
		commits = append(commits, j.Append([]byte(r)))
	}
	for _, c := range commits {
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	st, err := Replay(path, func(rec []byte) error { got = append(got, string(rec)); return nil })
	if err != nil || st.Records != 100 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("replay %+v %v", st, err)
	}
	if st, err := Replay(filepath.Join(t.TempDir(), "none"), nil); err != nil || st != (ReplayStats{}) {
		t.Fatalf("missing file: %+v %v", st, err)
	}
}

func TestReplay(t *testing.T) {
	json := func(rec []byte) error {
		if rec[0] != '{' || rec[len(rec)-1] != '}' {
			return errors.New("bad")
		}
		return nil
	}
	long := "{" + strings.Repeat("x", MaxRecord) + "}"
	for _, tc := range []struct {
		name string
		in   string
		want ReplayStats
	}{
		{"empty", "", ReplayStats{}},
		{"records", "{a}\n{b}\n", ReplayStats{Records: 2}},
		{"torn last", "{a}\n{b}\n{c", ReplayStats{Records: 2, Torn: 2}},
		{"bad in the middle", "{a}\ngarbage\n{b}\n", ReplayStats{Records: 2, Bad: 1}},
		{"zeros from a crash", "{a}\n\x00\x00\x00\x00\n{b}\n\x00\x00", ReplayStats{Records: 2, Bad: 1, Torn: 2}},
		{"blank lines", "\n{a}\n\n", ReplayStats{Records: 1}},
		{"record past the reader's buffer", "{" + strings.Repeat("y", 100000) + "}\n{b}\n", ReplayStats{Records: 2}},
		{"too long", long + "\n{b}\n", ReplayStats{Records: 1, Bad: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ReplayReader(strings.NewReader(tc.in), json)
			if err != nil || st != tc.want {
				t.Fatalf("got %+v %v, want %+v", st, err, tc.want)
			}
		})
	}
}

// FuzzReplay: any bytes replay without a panic; each record handed on is
// one whole line; the counts add up to the lines in the input.
func FuzzReplay(f *testing.F) {
	f.Add([]byte("{\"aor\":\"a\",\"b\":[]}\n{\"aor\":\"b\"\n"))
	f.Add([]byte("\n\n\x00\x00\n{}"))
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var got [][]byte
		st, err := ReplayReader(bytes.NewReader(data), func(rec []byte) error {
			if len(rec) == 0 || bytes.IndexByte(rec, '\n') >= 0 {
				t.Fatalf("record %q", rec)
			}
			got = append(got, bytes.Clone(rec))
			if rec[0] != '{' {
				return errors.New("bad")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		complete := data[:bytes.LastIndexByte(data, '\n')+1]
		var want [][]byte
		for _, l := range bytes.Split(complete, []byte("\n")) {
			if len(l) > 0 {
				want = append(want, l)
			}
		}
		if len(got) != len(want) || st.Records+st.Bad != len(want) || st.Torn != len(data)-len(complete) {
			t.Fatalf("stats %+v, %d records handed on, %d lines", st, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("record %d %q, want %q", i, got[i], want[i])
			}
		}
	})
}
