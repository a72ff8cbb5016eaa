package dialog

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"sipxdp/internal/redistest"
	"sipxdp/sipd/redisconn"
)

// sharedTracker is a tracker whose calls live in the Redis at url, as
// node; adopted calls are appended to *adopted.
func sharedTracker(t *testing.T, url, node string, now func() time.Time, cdr Sink, adopted *[]Restored) *Tracker {
	t.Helper()
	c, err := redisconn.Open(url, "dialog store", redisconn.Options{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tr := New(cdr, time.Hour, now)
	var mu sync.Mutex
	tr.ShareState(c, node, func(r Restored) {
		mu.Lock()
		defer mu.Unlock()
		if adopted != nil {
			*adopted = append(*adopted, r)
		}
	})
	return tr
}

func rawGet(t *testing.T, url, key string) (string, time.Duration) {
	t.Helper()
	c, err := redisconn.Open(url, "test", redisconn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v, _ := c.C.Get(context.Background(), key).Result()
	ttl, _ := c.C.PTTL(context.Background(), key).Result()
	return v, ttl
}

// TestSharedTakeOver: a call answered through node A is known to node B
// by its Call-ID and either side's tags, with A's attachment and real
// answer time; B ends it with a CDR, and it is gone from Redis.
func TestSharedTakeOver(t *testing.T) {
	srv := redistest.Start(t)
	clock := time.Unix(1_700_000_000, 0)
	now := func() time.Time { return clock }
	a := sharedTracker(t, srv.URL, "A", now, nil, nil)
	var adopted []Restored
	cdrB := &bufSink{}
	b := sharedTracker(t, srv.URL, "B", now, cdrB, &adopted)

	a.Invite("call-1", "caller", "sip:alice@x", "sip:bob@x")
	a.Seen("call-1", "caller", "early")
	a.Final("call-1", "caller", "callee", 200, []byte(`{"v":1}`))
	clock = clock.Add(time.Minute)
	a.SetMedia("call-1", "callee", "caller", []byte(`{"v":2}`))
	a.Invite("ringing", "caller-r", "a", "b") // in setup: A's only

	v, ttl := rawGet(t, srv.URL, StateKey("call-1", "caller"))
	if !strings.Contains(v, `"node":"A"`) || !strings.Contains(v, `"media":{"v":2}`) {
		t.Fatalf("redis holds %s", v)
	}
	if ttl < time.Hour || ttl > 2*time.Hour {
		t.Fatalf("ttl %v, want maxAge (1h) plus an hour", ttl)
	}

	if got := b.Match("call-1", "caller", "callee"); got != Unknown || b.Adopted() != 0 {
		t.Fatalf("B.Match = %v, %d adopted: Match must not ask redis", got, b.Adopted())
	}
	cases := []struct {
		name          string
		callID, f, to string
		want          Match
	}{
		{"caller's request", "call-1", "caller", "callee", Confirmed},
		{"callee's request", "call-1", "callee", "caller", Confirmed},
		{"another fork's dialog", "call-1", "caller", "early", Fork},
		{"a tag of no dialog", "call-1", "caller", "nobody", Mismatch},
		{"another Call-ID", "call-2", "caller", "callee", Unknown},
		{"a call in setup elsewhere", "ringing", "caller-r", "x", Unknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := b.Find(c.callID, c.f, c.to); got != c.want {
				t.Fatalf("B.Find = %v, want %v", got, c.want)
			}
		})
	}
	if len(adopted) != 1 || string(adopted[0].Media) != `{"v":2}` || !adopted[0].Call.Answered.Equal(time.Unix(1_700_000_000, 0)) {
		t.Fatalf("adopted %+v", adopted)
	}
	if _, active, _, _ := b.Stats(); active != 1 || b.Adopted() != 1 {
		t.Fatalf("B: %d active, %d adopted", active, b.Adopted())
	}

	clock = clock.Add(time.Minute)
	if !b.End("call-1", "callee", "caller", "bye") {
		t.Fatal("B did not end the call")
	}
	var cdr Call
	if err := json.Unmarshal([]byte(strings.TrimSpace(cdrB.String())), &cdr); err != nil {
		t.Fatalf("cdr %q: %v", cdrB.String(), err)
	}
	if cdr.Duration != 120 || cdr.From != "sip:alice@x" || cdr.EndReason != "bye" {
		t.Fatalf("cdr %+v", cdr)
	}
	if v, _ := rawGet(t, srv.URL, StateKey("call-1", "caller")); v != "" {
		t.Fatalf("ended call still in redis: %s", v)
	}
	// A late media change on A must not bring the call back.
	a.SetMedia("call-1", "caller", "callee", []byte(`{"v":3}`))
	if v, _ := rawGet(t, srv.URL, StateKey("call-1", "caller")); v != "" {
		t.Fatalf("media change after the end wrote %s", v)
	}
	if errs, down, _, ok := b.SharedStats(); !ok || errs != 0 || down {
		t.Fatalf("B shared stats: %d errors, down %v", errs, down)
	}
}

// TestSharedRedisDown: without Redis, answers and ends go on (the call is
// this node's only), other nodes' calls are unknown rather than refused,
// errors are counted; with Redis back, calls are shared again.
func TestSharedRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	a := sharedTracker(t, srv.URL, "A", nil, nil, nil)
	b := sharedTracker(t, srv.URL, "B", nil, nil, nil)
	a.Invite("before", "c0", "a", "b")
	a.Final("before", "c0", "d0", 200, nil)

	srv.Stop()
	a.Invite("during", "c1", "a", "b")
	start := time.Now()
	a.Final("during", "c1", "d1", 200, nil)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("answer held %v with redis down", d)
	}
	if got := a.Match("during", "c1", "d1"); got != Confirmed {
		t.Fatalf("A lost its own call: %v", got)
	}
	if got := b.Find("before", "c0", "d0"); got != Unknown {
		t.Fatalf("B.Find with redis down = %v, want unknown (routed by token, not refused)", got)
	}
	if !a.End("before", "c0", "d0", "bye") {
		t.Fatal("A could not end a call with redis down")
	}
	errs, down, why, _ := a.SharedStats()
	if errs == 0 || !down || why == "" {
		t.Fatalf("A: %d errors, down %v (%q)", errs, down, why)
	}
	if errs, _, _, _ := b.SharedStats(); errs == 0 {
		t.Fatal("B counted no error")
	}

	srv.Restart(t)
	time.Sleep(1100 * time.Millisecond) // past the fast-fail second
	a.Invite("after", "c2", "a", "b")
	a.Final("after", "c2", "d2", 200, nil)
	if _, down, _, _ := a.SharedStats(); down {
		t.Fatal("A still down with redis back")
	}
	if got := b.Find("after", "d2", "c2"); got != Confirmed {
		t.Fatalf("B.Find after recovery = %v", got)
	}
}

// TestStateKey: no Call-ID and tag pair names another's key.
func TestStateKey(t *testing.T) {
	pairs := [][2]string{{"a}:b", "c"}, {"a", "b}:c"}, {"a:1", "b"}, {"a", "1:b"}, {"", "x"}, {"x", ""}}
	seen := map[string][2]string{}
	for _, p := range pairs {
		k := StateKey(p[0], p[1])
		if q, ok := seen[k]; ok {
			t.Fatalf("%q and %q share key %q", p, q, k)
		}
		seen[k] = p
	}
}

func FuzzDecodeShared(f *testing.F) {
	rec := upRecord(&Call{CallID: "c", FromTag: "f", ToTag: "t", peers: []string{"p"}, media: []byte(`{"x":1}`)})
	b, _ := json.Marshal(rec)
	f.Add(b)
	f.Add([]byte(`{"op":"end","id":"c","tag":"f"}`))
	f.Add([]byte(`{"op":"up","call":{"call_id":"c"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeShared(b)
		if err != nil {
			return
		}
		if c.CallID == "" || c.FromTag == "" || c.ToTag == "" || !c.active || len(c.peers) > MaxPeerTags {
			t.Fatalf("decoded an unusable call: %+v", c)
		}
	})
}
