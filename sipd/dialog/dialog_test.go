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
