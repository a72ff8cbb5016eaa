package registrar

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sipxdp/internal/testenv"
	"sipxdp/sipd/journal"
)

func bind(aor string, now time.Time) []Change {
	return []Change{{Binding: Binding{AoR: aor, Contact: "sip:" + aor + "@192.0.2.1:5060", CallID: "c-" + aor, CSeq: 1,
		Expires: now.Add(time.Hour), Updated: now}}}
}

func apply(t *testing.T, st *Store, aor string) error {
	t.Helper()
	_, err := st.Apply(aor, "c-"+aor, 1, false, bind(aor, time.Now()), 10)
	return err
}

// openStore opens (or reopens) the store at path.
func openStore(t *testing.T, path string) *Store {
	t.Helper()
	st, err := NewStore(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func aors(st *Store) string {
	var out []string
	all, _ := st.All() // Store.All never fails
	for _, b := range all {
		out = append(out, b.AoR)
	}
	return strings.Join(out, ",")
}

// When Apply returns, the change is in the journal file, not in a buffer.
func TestApplyReturnsWhenWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "location.json")
	st := openStore(t, path)
	defer st.Close()
	for i := range 10 {
		aor := fmt.Sprintf("u%d", i)
		if err := apply(t, st, aor); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path + ".journal")
		if !bytes.Contains(b, []byte(`"aor":"`+aor+`"`)) {
			t.Fatalf("Apply of %s returned before its record was written; journal:\n%s", aor, b)
		}
	}
}

// blockSnapshot makes writing the snapshot fail: a directory stands where
// the new snapshot would be renamed to.
func blockSnapshot(t *testing.T, path string, on bool) {
	t.Helper()
	if on {
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(path, "x"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
}

// A snapshot that cannot be written loses nothing, twice in a row: the
// journal set aside by the first failure is not overwritten by the second
// compaction.
func TestCompactFailureKeepsJournals(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "location.json")
	st := openStore(t, path)
	for _, a := range []string{"a", "b"} {
		if err := apply(t, st, a); err != nil {
			t.Fatal(err)
		}
	}
	blockSnapshot(t, path, true)
	if err := st.Compact(); err == nil {
		t.Fatal("Compact succeeded with its target blocked")
	}
	if err := apply(t, st, "c"); err != nil {
		t.Fatal(err)
	}
	if err := st.Compact(); err == nil {
		t.Fatal("second Compact succeeded with its target blocked")
	}
	if err := apply(t, st, "d"); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".location*")); len(left) > 0 {
		t.Errorf("temporary snapshot files left: %v", left)
	}
	blockSnapshot(t, path, false)
	st = openStore(t, path)
	if got := aors(st); got != "a,b,c,d" {
		t.Fatalf("after two failed compactions and a restart: %q, want a,b,c,d", got)
	}
	// Opening finished the compaction: one snapshot, the old journal gone.
	if _, err := os.Stat(path + ".journal.old"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal.old still there after a successful compaction: %v", err)
	}
	if err := apply(t, st, "e"); err != nil {
		t.Fatal(err)
	}
	if err := st.Compact(); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = openStore(t, path)
	defer st.Close()
	if got := aors(st); got != "a,b,c,d,e" {
		t.Fatalf("after a good compaction: %q", got)
	}
}

// A journal damaged in the middle (a bad record, not only a torn end)
// loses that record only.
func TestReplaySkipsBadRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "location.json")
	st := openStore(t, path)
	for _, a := range []string{"a", "b", "c"} {
		if err := apply(t, st, a); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	b, _ := os.ReadFile(path + ".journal")
	b = bytes.Replace(b, []byte(`{"aor":"b"`), []byte(`{"aor":"b"\x00\x00`), 1)
	b = append(b, `{"aor":"z","b":[{"ao`...)
	if err := os.WriteFile(path+".journal", b, 0o600); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, path)
	if got := aors(st); got != "a,c" {
		t.Fatalf("replay of a damaged journal: %q, want a,c", got)
	}
	// The torn tail was cut: the next record is whole.
	if err := apply(t, st, "d"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = openStore(t, path)
	defer st.Close()
	if got := aors(st); got != "a,c,d" {
		t.Fatalf("after appending to it: %q, want a,c,d", got)
	}
}

// The disk fills up: Apply reports ErrUnavailable (nothing is promised)
// and goes on doing so, compaction fails without loss; space is freed:
// Apply works again without a restart, and a restart keeps every change,
// the refused ones included (their records were kept and written).
func TestStoreOnFullDisk(t *testing.T) {
	testenv.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	path := filepath.Join(dir, "location.json")
	st, err := OpenStore(path, StoreOptions{Retry: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := apply(t, st, "before"); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		if _, err = f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling: %v", err)
	}
	var refused []string
	for i := 0; i < 100 && len(refused) < 3; i++ {
		aor := fmt.Sprintf("full%02d", i)
		if err := apply(t, st, aor); err != nil {
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Apply on a full disk: %v", err)
			}
			refused = append(refused, aor)
		}
	}
	if len(refused) == 0 {
		t.Fatal("100 changes on a full disk all reported durable")
	}
	if js, _ := st.Journal(); !js.Degraded || js.Errors == 0 {
		t.Fatalf("journal state on a full disk: %+v", js)
	}
	if err := st.Compact(); err == nil {
		t.Fatal("Compact on a full disk succeeded")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if js, _ := st.Journal(); !js.Degraded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("journal still degraded 5 s after space was freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := apply(t, st, "after"); err != nil {
		t.Fatalf("Apply after space was freed: %v", err)
	}
	want := aors(st)
	if err := st.Compact(); err != nil {
		t.Fatalf("Compact after space was freed: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, path)
	defer st.Close()
	if got := aors(st); got != want {
		t.Fatalf("after restart %q, want %q", got, want)
	}
	for _, a := range refused {
		if !strings.Contains(want, a) {
			t.Fatalf("refused change %s not kept", a)
		}
	}
}

// FuzzLocationReplay: whatever the journal holds, replaying it never
// fails (a damaged journal never stops sipd from starting) and leaves
// only well-formed bindings, each under its own AoR.
func FuzzLocationReplay(f *testing.F) {
	f.Add([]byte(`{"aor":"a","b":[{"aor":"a","contact":"sip:a@192.0.2.1","call_id":"c","cseq":1,"expires":"2999-01-01T00:00:00Z","updated":"2025-01-01T00:00:00Z"}]}` + "\n"))
	f.Add([]byte("{\"aor\":\"a\",\"b\":[{\"aor\"\n\x00\x00\n{\"aor\":\"\"}\n{\"aor\":\"b\",\"b\":null}\n{\"aor"))
	f.Add([]byte(`{"aor":"x","b":[{"contact":"` + strings.Repeat("c", 70000) + `"}]}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := NewStore("", nil) // the table alone: no files synced per input
		if err != nil {
			t.Fatal(err)
		}
		if _, err := journal.ReplayReader(bytes.NewReader(data), st.applyRecord); err != nil {
			t.Fatalf("replay of a damaged journal: %v", err)
		}
		aors, contacts := st.Count()
		all, _ := st.All()
		if len(all) != contacts || aors > contacts {
			t.Fatalf("count %d/%d, listed %d", aors, contacts, len(all))
		}
		for _, b := range all {
			if b.AoR == "" {
				t.Fatalf("binding without an AoR: %+v", b)
			}
		}
	})
}

func TestSnapshotSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "location.json")
	st := openStore(t, path)
	if st.SnapshotSize() != 0 {
		t.Fatalf("no snapshot yet: %d", st.SnapshotSize())
	}
	apply(t, st, "a")
	if err := st.Compact(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if st.SnapshotSize() != fi.Size() || fi.Size() == 0 {
		t.Fatalf("after compaction %d, file %d", st.SnapshotSize(), fi.Size())
	}
	st.Close()
	st = openStore(t, path)
	defer st.Close()
	if st.SnapshotSize() != fi.Size() {
		t.Fatalf("loaded %d, file %d", st.SnapshotSize(), fi.Size())
	}
}
