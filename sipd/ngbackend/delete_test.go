package ngbackend

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"sipxdp/ng"
)

// TestDelete drives delete through the NG server and checks the reply
// field by field, and whether the call is still there, against rtpengine
// (doc: its NG control protocol documentation, "delete Message"; code:
// rtpengine's call_interfaces.c call_delete_ng and call.c
// call_delete_branch).
func TestDelete(t *testing.T) {
	offer := map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a", "sdp": string(sdp("192.0.2.10", 10000))}
	answer := map[string]any{"command": "answer", "call-id": "c1", "from-tag": "a", "to-tag": "b", "sdp": string(sdp("192.0.2.20", 20000))}
	del := func(kv ...any) map[string]any {
		d := map[string]any{"command": "delete", "call-id": "c1"}
		for i := 0; i+1 < len(kv); i += 2 {
			d[kv[i].(string)] = kv[i+1]
		}
		return d
	}
	const (
		none = iota
		offered
		answered
	)
	for _, tc := range []struct {
		name   string // the doc section or code the row follows
		setup  int
		del    map[string]any
		result string
		// warning and reason are the reply's "warning" and
		// "error-reason" ("" for absent).
		warning, reason string
		stats           bool // the reply carries "created" and "tags"
		kept            bool // the call is still listed after the delete
		// Rows with delete-delay: fire the scheduled delete (after a
		// re-offer when reoffer), then check the call is kept or gone.
		scheduled, reoffer, keptAfter bool
	}{
		{name: "delete Message: unknown call is ok with a warning", setup: none,
			del: del("from-tag", "a"), result: "ok", warning: WarnNotFound},
		{name: "delete Message, fatal: unknown call is an error", setup: none,
			del: del("from-tag", "a", "flags", []any{"fatal"}), result: "error", reason: WarnNotFound},
		{name: "delete Message: no from-tag deletes the whole call", setup: answered,
			del: del(), result: "ok", stats: true},
		{name: "delete Message: from-tag of side A deletes the call (its peer goes with it)", setup: answered,
			del: del("from-tag", "a"), result: "ok", stats: true},
		{name: "delete Message: from-tag of side B deletes the call", setup: answered,
			del: del("from-tag", "b"), result: "ok", stats: true},
		{name: "delete Message: unknown from-tag keeps the call, ok with a warning", setup: answered,
			del: del("from-tag", "x"), result: "ok", warning: WarnNotFound, kept: true},
		{name: "delete Message, fatal: unknown from-tag is an error, call kept", setup: answered,
			del: del("from-tag", "x", "flags", []any{"fatal"}), result: "error", reason: WarnNotFound, kept: true},
		{name: "delete Message, to-tag: without the flag a delete's to-tag is ignored", setup: answered,
			del: del("from-tag", "a", "to-tag", "other"), result: "ok", stats: true},
		{name: "delete Message, to-tag: with the flag an unknown to-tag keeps the answered call", setup: answered,
			del: del("from-tag", "a", "to-tag", "other", "flags", []any{"to-tag"}), result: "ok", warning: WarnNotFound, kept: true},
		{name: "delete Message, to-tag: with the flag a known to-tag deletes the call", setup: answered,
			del: del("from-tag", "x", "to-tag", "b", "flags", []any{"to-tag"}), result: "ok", stats: true},
		{name: "call.c call_delete_branch last resort: unknown to-tag, unanswered call of the from-tag goes", setup: offered,
			del: del("from-tag", "a", "to-tag", "other", "flags", []any{"to-tag"}), result: "ok", stats: true},
		{name: "delete Message, fast: no statistics", setup: answered,
			del: del("from-tag", "a", "flags", []any{"fast"}), result: "ok"},
		{name: "delete Message, delete delay 0: immediate", setup: answered,
			del: del("from-tag", "a", "delete delay", int64(0)), result: "ok", stats: true},
		{name: "delete Message, delete delay: ok at once, call deleted when it fires", setup: answered,
			del: del("from-tag", "a", "delete delay", int64(5)), result: "ok", stats: true, kept: true, scheduled: true},
		{name: "delete Message, delete delay (rtpp-flags form): deleted when it fires", setup: answered,
			del: del("from-tag", "a", "flags", []any{"delete-delay=5"}), result: "ok", stats: true, kept: true, scheduled: true},
		{name: "call.c __tags_associate: a re-offer cancels the scheduled delete", setup: answered,
			del: del("from-tag", "a", "delete-delay", int64(5)), result: "ok", stats: true, kept: true,
			scheduled: true, reoffer: true, keptAfter: true},
		{name: "delete Message, delete delay: not a number is an error", setup: answered,
			del: del("from-tag", "a", "delete-delay", "soon"), result: "error", reason: `delete-delay: want whole seconds, have "soon"`, kept: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := newBackend()
			var mu sync.Mutex
			var fire []func()
			b.delays.after = func(d time.Duration, f func()) *time.Timer {
				if d != 5*time.Second {
					t.Errorf("delay %v, want 5s", d)
				}
				mu.Lock()
				fire = append(fire, f)
				mu.Unlock()
				return time.AfterFunc(time.Hour, func() {})
			}
			var told []string
			b.OnScheduledDelete(func(id string) { told = append(told, id) })
			s := ng.NewServer(b, ng.Options{})
			steps := [][]map[string]any{none: nil, offered: {offer}, answered: {offer, answer}}[tc.setup]
			for i, st := range steps {
				if rep := roundTrip(t, s, fmt.Sprint("s", i), st); rep["result"] != "ok" {
					t.Fatalf("setup %s: %v", st["command"], rep)
				}
			}
			rep := roundTrip(t, s, "d", tc.del)
			if rep["result"] != tc.result {
				t.Errorf("result %v, want %q (reply %v)", rep["result"], tc.result, rep)
			}
			if w, _ := rep["warning"].(string); w != tc.warning {
				t.Errorf("warning %q, want %q", w, tc.warning)
			}
			if r, _ := rep["error-reason"].(string); r != tc.reason {
				t.Errorf("error-reason %q, want %q", r, tc.reason)
			}
			_, created := rep["created"]
			_, tags := rep["tags"]
			if created != tc.stats || tags != tc.stats {
				t.Errorf("created %v tags %v in reply, want %v (reply %v)", created, tags, tc.stats, rep)
			}
			if got := len(b.List(0)) == 1; got != tc.kept {
				t.Errorf("call kept %v, want %v", got, tc.kept)
			}
			mu.Lock()
			pending := fire
			mu.Unlock()
			if (len(pending) == 1) != tc.scheduled {
				t.Fatalf("%d deletes scheduled, want scheduled %v", len(pending), tc.scheduled)
			}
			if !tc.scheduled {
				return
			}
			if tc.reoffer {
				if rep := roundTrip(t, s, "re", offer); rep["result"] != "ok" {
					t.Fatalf("re-offer: %v", rep)
				}
			}
			pending[0]()
			if got := len(b.List(0)) == 1; got != tc.keptAfter {
				t.Errorf("after the delay: call kept %v, want %v", got, tc.keptAfter)
			}
			// The replicator is told of the deletion it did not see.
			if want := !tc.keptAfter; (len(told) == 1 && told[0] == "c1") != want {
				t.Errorf("OnScheduledDelete told %v, want told of c1: %v", told, want)
			}
		})
	}
}

// TestDeleteCancelledByDelete: an immediate delete of a call with a
// scheduled delete stops the schedule, so a new call of the same Call-ID
// is not deleted by the old timer.
func TestDeleteCancelledByDelete(t *testing.T) {
	b, _ := newBackend()
	var fire func()
	b.delays.after = func(_ time.Duration, f func()) *time.Timer {
		fire = f
		return time.AfterFunc(time.Hour, func() {})
	}
	s := ng.NewServer(b, ng.Options{})
	offer := map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a", "sdp": string(sdp("192.0.2.10", 10000))}
	for i, cmd := range []map[string]any{
		offer,
		{"command": "delete", "call-id": "c1", "delete-delay": int64(5)},
		{"command": "delete", "call-id": "c1"},
		offer,
	} {
		if rep := roundTrip(t, s, fmt.Sprint("c", i), cmd); rep["result"] != "ok" || rep["warning"] != nil {
			t.Fatalf("step %d %s: %v", i, cmd["command"], rep)
		}
	}
	if fire == nil {
		t.Fatal("no delete scheduled")
	}
	fire()
	if ids := b.List(0); len(ids) != 1 {
		t.Errorf("calls %v: the cancelled delete removed the new call", ids)
	}
}
