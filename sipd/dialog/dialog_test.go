package dialog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"sipxdp/sipd/journal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// bufSink keeps CDR lines in memory; with fail set it refuses them.
type bufSink struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	fail error
}

func (s *bufSink) Append(rec []byte) *journal.Commit {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return journal.Finished(s.fail)
	}
	s.buf.Write(rec)
	s.buf.WriteByte('\n')
	return journal.Finished(nil)
}

func (s *bufSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *bufSink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Reset()
}

func TestCallLifecycleAndCDR(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	buf := &bufSink{}
	tr := New(buf, time.Hour, func() time.Time { return now })
	tr.Invite("c1", "ft", "sip:a@x", "sip:b@x")
	tr.Invite("c1", "ft", "sip:a@x", "sip:b@x") // retransmission or auth retry
	now = now.Add(1500 * time.Millisecond)
	tr.Final("c1", "ft", "tt", 200, nil)
	if s, a, _, _ := tr.Stats(); s != 0 || a != 1 {
		t.Fatalf("setup %d active %d", s, a)
	}
	now = now.Add(30 * time.Second)
	tr.End("c1", "tt", "ft", "bye") // callee hangs up: tags swapped
	_, a, done, _ := tr.Stats()
	if a != 0 || done != 1 {
		t.Fatalf("active %d done %d", a, done)
	}
	var c Call
	if err := json.Unmarshal([]byte(buf.String()), &c); err != nil {
		t.Fatalf("cdr %q: %v", buf.String(), err)
	}
	if c.SetupMs != 1500 || c.Duration != 30 || c.Status != 200 || c.EndReason != "bye" {
		t.Fatalf("cdr %+v", c)
	}

	buf.Reset()
	tr.Invite("c2", "f", "a", "b")
	tr.Final("c2", "f", "", 486, nil)
	if !strings.Contains(buf.String(), `"status":486`) {
		t.Fatalf("failed-call cdr %q", buf.String())
	}
	tr.Invite("c3", "f", "a", "b")
	tr.Final("c3", "f", "t", 200, nil)
	now = now.Add(2 * time.Hour)
	tr.Sweep()
	if _, a, _, _ := tr.Stats(); a != 0 || !strings.Contains(buf.String(), "timeout") {
		t.Fatalf("sweep left %d, cdr %q", a, buf.String())
	}
	if w, e := tr.CDRs(); w != 3 || e != 0 {
		t.Fatalf("cdrs written %d, errors %d", w, e)
	}
}

// A CDR that cannot be written is counted, and the call is over all the
// same.
func TestCDRWriteErrorCounted(t *testing.T) {
	sink := &bufSink{fail: errors.New("no space left on device")}
	tr := New(sink, time.Hour, nil)
	for _, id := range []string{"c1", "c2"} {
		tr.Invite(id, "f", "a", "b")
		tr.Final(id, "f", "t", 200, nil)
	}
	tr.End("c1", "f", "t", "bye")
	tr.Invite("c3", "f", "a", "b")
	tr.Final("c3", "f", "", 503, nil)
	if w, e := tr.CDRs(); w != 0 || e != 2 {
		t.Fatalf("cdrs written %d, errors %d; want 0, 2", w, e)
	}
	if _, a, done, failed := tr.Stats(); a != 1 || done != 1 || failed != 1 {
		t.Fatalf("active %d done %d failed %d", a, done, failed)
	}
}

// With a journal, Bye returns once the CDR is in the file; Shutdown ends
// the calls still up with end_reason shutdown.
func TestCDRDurableAndShutdown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.jsonl")
	j, err := journal.Open(path, journal.Options{Name: "cdr"})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	tr := New(j, time.Hour, nil)
	for _, id := range []string{"c1", "c2", "c3"} {
		tr.Invite(id, "f", "a", "b")
		tr.Final(id, "f", "t", 200, nil)
	}
	tr.Invite("c4", "f", "a", "b") // in setup: forgotten at shutdown
	tr.End("c1", "t", "f", "bye")
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `"call_id":"c1"`) {
		t.Fatalf("Bye returned before its CDR was written: %q", b)
	}
	tr.Shutdown()
	b, _ = os.ReadFile(path)
	if n := strings.Count(string(b), `"end_reason":"shutdown"`); n != 2 {
		t.Fatalf("%d shutdown CDRs, want 2:\n%s", n, b)
	}
	if s, a, _, _ := tr.Stats(); s != 0 || a != 0 {
		t.Fatalf("after shutdown: setup %d active %d", s, a)
	}
	if w, e := tr.CDRs(); w != 3 || e != 0 {
		t.Fatalf("cdrs written %d, errors %d", w, e)
	}
}

func TestLive(t *testing.T) {
	tr := New(nil, time.Hour, nil)
	tr.Invite("ringing", "caller1", "a", "b")
	tr.Seen("ringing", "caller1", "early") // a provisional response's tag
	tr.Invite("up", "caller2", "a", "b")
	tr.Final("up", "caller2", "callee2", 200, nil)
	tr.Invite("failed", "caller3", "a", "b")
	tr.Final("failed", "caller3", "", 486, nil)
	cases := []struct {
		name, callID, from, to string
		want                   bool
	}{
		{"cancel of a call in setup", "ringing", "caller1", "", true},
		{"early-dialog request from the caller", "ringing", "caller1", "early", true},
		{"early-dialog request from the callee", "ringing", "early", "caller1", true},
		{"early-dialog request with a tag never seen", "ringing", "caller1", "made-up", false},
		{"in-dialog from the caller", "up", "caller2", "callee2", true},
		{"in-dialog from the callee", "up", "callee2", "caller2", true},
		{"wrong to tag", "up", "caller2", "other", false},
		{"callee's tag alone", "up", "callee2", "", false},
		{"wrong call-id", "nope", "caller2", "callee2", false},
		{"failed call", "failed", "caller3", "", false},
		{"no tags", "up", "", "", false},
	}
	for _, c := range cases {
		if got := tr.Live(c.callID, c.from, c.to); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	tr.End("up", "callee2", "caller2", "bye")
	if tr.Live("up", "caller2", "callee2") {
		t.Error("a call that ended is live")
	}
}

func TestMatch(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	buf := &bufSink{}
	tr := New(buf, time.Hour, func() time.Time { return now })
	check := func(stage string, cases [][3]string, want Match) {
		t.Helper()
		for _, c := range cases {
			if got := tr.Match(c[0], c[1], c[2]); got != want {
				t.Errorf("%s: Match(%q, %q, %q) = %v, want %v", stage, c[0], c[1], c[2], got, want)
			}
		}
	}
	tr.Invite("c1", "caller", "a", "b")
	check("setup", [][3]string{{"c1", "caller", "early1"}, {"c1", "x", "y"}}, Mismatch)
	check("setup", [][3]string{{"c2", "caller", "early1"}}, Unknown)
	tr.Seen("c1", "caller", "early1")
	tr.Seen("c1", "caller", "early1")
	tr.Seen("c1", "caller", "")
	tr.Seen("c1", "nobody", "early9") // no such call: ignored
	check("early", [][3]string{{"c1", "caller", "early1"}, {"c1", "early1", "caller"}}, Early)
	check("early", [][3]string{{"c1", "caller", "early2"}, {"c1", "early1", "x"}, {"c1", "caller", ""}}, Mismatch)
	tr.Final("c1", "caller", "answer", 200, nil)
	tr.Seen("c1", "caller", "fork2") // a second 2xx
	check("answered", [][3]string{{"c1", "caller", "answer"}, {"c1", "answer", "caller"}}, Confirmed)
	check("answered", [][3]string{{"c1", "caller", "fork2"}, {"c1", "fork2", "caller"}, {"c1", "caller", "early1"}}, Fork)
	check("answered", [][3]string{{"c1", "caller", "evil"}, {"c1", "evil", "answer"}, {"c1", "answer", "evil"}}, Mismatch)
	// A BYE in the other fork's dialog, or with made-up tags, ends nothing.
	for _, tags := range [][2]string{{"caller", "fork2"}, {"caller", "evil"}, {"evil", "answer"}, {"answer", "answer"}} {
		if tr.End("c1", tags[0], tags[1], "bye") {
			t.Errorf("End(%q, %q) ended the call", tags[0], tags[1])
		}
	}
	if _, a, _, _ := tr.Stats(); a != 1 || buf.String() != "" {
		t.Fatalf("active %d, cdr %q", a, buf.String())
	}
	if !tr.End("c1", "answer", "caller", "bye") {
		t.Fatal("the callee's BYE did not end the call")
	}
	check("ended", [][3]string{{"c1", "caller", "answer"}}, Unknown)
	if s, a, done, _ := tr.Stats(); s != 0 || a != 0 || done != 1 {
		t.Fatalf("setup %d active %d done %d", s, a, done)
	}
}

// TestSharedCallID: two calls with one Call-ID (a caller reusing it with
// a new tag) are told apart by the caller's tag.
func TestSharedCallID(t *testing.T) {
	tr := New(nil, time.Hour, nil)
	tr.Invite("c", "a1", "", "")
	tr.Invite("c", "a2", "", "")
	tr.Final("c", "a1", "b1", 200, nil)
	tr.Final("c", "a2", "b2", 486, nil)
	if m := tr.Match("c", "a1", "b1"); m != Confirmed {
		t.Fatalf("first call: %v", m)
	}
	if m := tr.Match("c", "a2", "b2"); m != Mismatch {
		t.Fatalf("failed call: %v", m)
	}
	if s, a, _, failed := tr.Stats(); s != 0 || a != 1 || failed != 1 {
		t.Fatalf("setup %d active %d failed %d", s, a, failed)
	}
}

func TestPeerTagsBounded(t *testing.T) {
	tr := New(nil, time.Hour, nil)
	tr.Invite("c", "a", "", "")
	for i := 0; i < 3*MaxPeerTags; i++ {
		tr.Seen("c", "a", fmt.Sprint("t", i))
	}
	if m := tr.Match("c", "a", fmt.Sprint("t", MaxPeerTags-1)); m != Early {
		t.Fatalf("last kept tag: %v", m)
	}
	if m := tr.Match("c", "a", fmt.Sprint("t", MaxPeerTags)); m != Mismatch {
		t.Fatalf("tag beyond the bound: %v", m)
	}
}

// TestObserveSetup: each call's setup time is told once, at its first
// final response, answered or not.
func TestObserveSetup(t *testing.T) {
	type setup struct {
		status int
		d      time.Duration
	}
	now := time.Unix(1_700_000_000, 0)
	tr := New(nil, time.Hour, func() time.Time { return now })
	var got []setup
	tr.ObserveSetup(func(status int, d time.Duration) { got = append(got, setup{status, d}) })
	tr.Invite("ok", "f", "sip:a@x", "sip:b@x")
	tr.Invite("busy", "f", "sip:a@x", "sip:b@x")
	now = now.Add(2 * time.Second)
	tr.Final("busy", "f", "", 486, nil)
	now = now.Add(time.Second)
	tr.Final("ok", "f", "t", 200, nil)
	tr.Final("ok", "f", "t", 200, nil)  // a retransmitted 2xx: the call is up already
	tr.Final("nope", "f", "", 200, nil) // not a call we saw
	want := []setup{{486, 2 * time.Second}, {200, 3 * time.Second}}
	if !slices.Equal(got, want) {
		t.Errorf("observed %v, want %v", got, want)
	}
}
