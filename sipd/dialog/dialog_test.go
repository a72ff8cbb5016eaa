package dialog

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestCallLifecycleAndCDR(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var buf bytes.Buffer
	tr := New(&buf, time.Hour, func() time.Time { return now })
	tr.Invite("c1", "ft", "sip:a@x", "sip:b@x")
	tr.Invite("c1", "ft", "sip:a@x", "sip:b@x") // retransmission or auth retry
	now = now.Add(1500 * time.Millisecond)
	tr.Final("c1", "ft", "tt", 200)
	if s, a, _, _ := tr.Stats(); s != 0 || a != 1 {
		t.Fatalf("setup %d active %d", s, a)
	}
	now = now.Add(30 * time.Second)
	tr.Bye("c1", "tt", "ft", "bye") // callee hangs up: tags swapped
	_, a, done, _ := tr.Stats()
	if a != 0 || done != 1 {
		t.Fatalf("active %d done %d", a, done)
	}
	var c Call
	if err := json.Unmarshal(buf.Bytes(), &c); err != nil {
		t.Fatalf("cdr %q: %v", buf.String(), err)
	}
	if c.SetupMs != 1500 || c.Duration != 30 || c.Status != 200 || c.EndReason != "bye" {
		t.Fatalf("cdr %+v", c)
	}

	buf.Reset()
	tr.Invite("c2", "f", "a", "b")
	tr.Final("c2", "f", "", 486)
	if !strings.Contains(buf.String(), `"status":486`) {
		t.Fatalf("failed-call cdr %q", buf.String())
	}
	tr.Invite("c3", "f", "a", "b")
	tr.Final("c3", "f", "t", 200)
	now = now.Add(2 * time.Hour)
	tr.Sweep()
	if _, a, _, _ := tr.Stats(); a != 0 || !strings.Contains(buf.String(), "timeout") {
		t.Fatalf("sweep left %d, cdr %q", a, buf.String())
	}
}

func TestLive(t *testing.T) {
	tr := New(nil, time.Hour, nil)
	tr.Invite("ringing", "caller1", "a", "b")
	tr.Invite("up", "caller2", "a", "b")
	tr.Final("up", "caller2", "callee2", 200)
	tr.Invite("failed", "caller3", "a", "b")
	tr.Final("failed", "caller3", "", 486)
	cases := []struct {
		name, callID, from, to string
		want                   bool
	}{
		{"cancel of a call in setup", "ringing", "caller1", "", true},
		{"early-dialog request from the caller", "ringing", "caller1", "early", true},
		{"early-dialog request from the callee", "ringing", "early", "caller1", true},
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
	tr.Bye("up", "callee2", "caller2", "bye")
	if tr.Live("up", "caller2", "callee2") {
		t.Error("a call that ended is live")
	}
}
