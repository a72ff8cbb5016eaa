package dialog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// openState opens a tracker on the state kept at path.
func openState(t *testing.T, path string, now func() time.Time, cdr Sink) (*Tracker, []Restored) {
	t.Helper()
	tr := New(cdr, time.Hour, now)
	got, err := tr.OpenState(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.CloseState() })
	return tr, got
}

// What a crash leaves is what the next start knows: every confirmed call
// (with its latest attachment, its tags, its real answer time), none that
// ended, none in setup; and the restored calls behave as before.
func TestStateSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dialogs.json")
	clock := time.Unix(1_700_000_000, 0)
	now := func() time.Time { return clock }
	tr, got := openState(t, path, now, nil)
	if len(got) != 0 {
		t.Fatalf("a new state restored %d calls", len(got))
	}
	for _, id := range []string{"up", "moved", "ended"} {
		tr.Invite(id, "caller-"+id, "sip:a@x", "sip:b@x")
		tr.Seen(id, "caller-"+id, "early-"+id)
		tr.Final(id, "caller-"+id, "callee-"+id, 200, []byte(`{"v":1}`))
	}
	tr.Invite("ringing", "caller-r", "a", "b")
	clock = clock.Add(time.Minute)
	tr.SetMedia("moved", "callee-moved", "caller-moved", []byte(`{"v":2}`))
	tr.SetMedia("moved", "caller-moved", "someone-else", []byte(`{"v":3}`)) // not the dialog: ignored
	tr.End("ended", "caller-ended", "callee-ended", "bye")
	tr.CloseState() // a crash leaves the same: every record was synced

	clock = clock.Add(time.Minute)
	tr2, got := openState(t, path, now, nil)
	byID := map[string]Restored{}
	for _, r := range got {
		byID[r.Call.CallID] = r
	}
	if len(got) != 2 || byID["up"].Call.CallID == "" || byID["moved"].Call.CallID == "" {
		t.Fatalf("restored %+v, want the calls up and moved", got)
	}
	if r := byID["moved"]; string(r.Media) != `{"v":2}` || !r.MediaAt.Equal(time.Unix(1_700_000_060, 0)) {
		t.Errorf("moved: media %s at %v, want the re-INVITE's {\"v\":2} at +1m", r.Media, r.MediaAt)
	}
	if r := byID["up"]; string(r.Media) != `{"v":1}` || !r.Call.Answered.Equal(time.Unix(1_700_000_000, 0)) || r.Call.ToTag != "callee-up" {
		t.Errorf("up: %+v, media %s", r.Call, r.Media)
	}
	if _, a, _, _ := tr2.Stats(); a != 2 {
		t.Errorf("%d active calls after the restart, want 2", a)
	}
	cases := []struct {
		id, from, to string
		want         Match
	}{
		{"up", "caller-up", "callee-up", Confirmed},
		{"up", "callee-up", "caller-up", Confirmed},
		{"up", "caller-up", "early-up", Fork}, // its early tag came back too
		{"up", "caller-up", "forged", Mismatch},
		{"ended", "caller-ended", "callee-ended", Unknown},
		{"ringing", "caller-r", "x", Unknown},
	}
	for _, c := range cases {
		if got := tr2.Match(c.id, c.from, c.to); got != c.want {
			t.Errorf("after restart Match(%s, %s, %s) = %v, want %v", c.id, c.from, c.to, got, c.want)
		}
	}
	// The restored call ends like any other: a CDR with its real start.
	cdr := &bufSink{}
	tr2.out = cdr
	if !tr2.End("up", "callee-up", "caller-up", "bye") {
		t.Fatal("the restored call's BYE ended nothing")
	}
	if !strings.Contains(cdr.String(), `"answered":"`+time.Unix(1_700_000_000, 0).Format(time.RFC3339)) {
		t.Errorf("CDR of the restored call: %s; want its real answer time", cdr.String())
	}
	tr2.CloseState()
	_, got = openState(t, path, now, nil)
	if len(got) != 1 || got[0].Call.CallID != "moved" {
		t.Fatalf("after the BYE the state holds %+v, want only the call moved", got)
	}
}

// A compaction folds the journal into a snapshot with the same calls; one
// interrupted (journal set aside, no snapshot yet) loses nothing; a torn
// last record is skipped.
func TestStateCompaction(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dialogs.json")
	tr, _ := openState(t, path, nil, nil)
	for _, id := range []string{"a", "b", "c"} {
		tr.Invite(id, "f"+id, "x", "y")
		tr.Final(id, "f"+id, "t"+id, 200, []byte(`{}`))
	}
	tr.End("b", "fb", "tb", "bye")
	if err := tr.CompactState(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path + ".journal"); err != nil || fi.Size() != 0 {
		t.Fatalf("journal after compaction: %v, %v; want empty", fi, err)
	}
	tr.Invite("d", "fd", "x", "y")
	tr.Final("d", "fd", "td", 200, nil)
	tr.CloseState()
	// An interrupted compaction: the journal was set aside, the snapshot
	// not written. And a crash mid-write of a record.
	if err := os.Rename(path+".journal", path+".journal.old"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".journal", []byte(`{"op":"end","id":"a","tag":"fa"}`+"\n"+`{"op":"up","call":{"call_id":"e"`), 0o600); err != nil {
		t.Fatal(err)
	}
	tr2, got := openState(t, path, nil, nil)
	ids := map[string]bool{}
	for _, r := range got {
		ids[r.Call.CallID] = true
	}
	if len(got) != 2 || !ids["c"] || !ids["d"] {
		t.Fatalf("restored %v, want c and d (a ended, b ended, e torn)", ids)
	}
	if _, err := os.Stat(path + ".journal.old"); !os.IsNotExist(err) {
		t.Errorf("the interrupted compaction was not finished at open: %v", err)
	}
	tr2.CloseState()
	if _, got := openState(t, path, nil, nil); len(got) != 2 {
		t.Fatalf("after finishing the compaction: %d calls, want 2", len(got))
	}
}

// Without state on disk, Shutdown ends the calls with a CDR; with it,
// Shutdown ends nothing: the calls resume at the next start.
func TestShutdownKeepsKeptCalls(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dialogs.json")
	cdr := &bufSink{}
	tr, _ := openState(t, path, nil, cdr)
	tr.Invite("c", "f", "x", "y")
	tr.Final("c", "f", "t", 200, nil)
	tr.Shutdown()
	if cdr.String() != "" {
		t.Fatalf("shutdown wrote a CDR for a call kept on disk: %s", cdr.String())
	}
	tr.CloseState()
	if _, got := openState(t, path, nil, nil); len(got) != 1 {
		t.Fatalf("%d calls after a clean stop, want 1", len(got))
	}
}

// Whatever the journal holds, opening it never panics, and every call it
// gives back is one the tracker then matches as confirmed.
func FuzzStateReplay(f *testing.F) {
	f.Add([]byte(`{"op":"up","call":{"call_id":"c","from_tag":"f","to_tag":"t"},"media":{"x":1}}` + "\n" +
		`{"op":"media","id":"c","tag":"f","media":[1,2]}` + "\n" + `{"op":"end","id":"c","tag":"f"}` + "\n"))
	f.Add([]byte(`{"op":"up","call":{"call_id":"c","from_tag":"f"},"peers":["a","b"]}` + "\n{"))
	f.Add([]byte("\n\n{\"op\":\"nope\"}\nnot json\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "dialogs.json")
		if err := os.WriteFile(path+".journal", data, 0o600); err != nil {
			t.Fatal(err)
		}
		tr := New(nil, time.Hour, nil)
		got, err := tr.OpenState(path, nil)
		if err != nil {
			return // an unreadable file is an error, not a panic
		}
		defer tr.CloseState()
		for _, r := range got {
			if m := tr.Match(r.Call.CallID, r.Call.FromTag, r.Call.ToTag); m != Confirmed {
				t.Fatalf("restored call %+v matches as %v", r.Call, m)
			}
		}
	})
}
