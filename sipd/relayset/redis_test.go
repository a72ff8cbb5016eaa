package relayset

import (
	"context"
	"errors"
	"testing"
	"time"

	"sipxdp/internal/redistest"
	"sipxdp/ng"
	"sipxdp/sipd/redisconn"
)

// TestSharedStickiness: proxy B sends the answer, query and delete of
// calls proxy A offered to the relay A chose, through the map in Redis;
// the delete removes the call from the map; without Redis B cannot tell,
// counts the error, and recovers when Redis is back.
func TestSharedStickiness(t *testing.T) {
	srv := redistest.Start(t)
	plain, relays := newSet(t, 1, 1)
	var eps []Endpoint
	for _, r := range plain.relays {
		eps = append(eps, r.ep)
	}
	open := func() (*Set, *redisconn.Conn) {
		c, err := redisconn.Open(srv.URL, "relay stickiness", redisconn.Options{Timeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s, err := New(eps, Options{Shared: NewRedisSticky(c), Client: ng.ClientOptions{Retries: 2, RetryInterval: 30 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s, c
	}
	a, _ := open()
	b, bc := open()
	ctx := context.Background()
	offered := map[string]string{}
	for i := range 6 {
		id := callID(i)
		sdp, err := offer(a, id)
		if err != nil {
			t.Fatal(err)
		}
		offered[id] = sdp
	}
	for id, sdp := range offered {
		cmd := &ng.Command{CallID: id, FromTag: "f-" + id, ToTag: "t-" + id, SDP: []byte("v=0")}
		if got, err := b.Answer(ctx, cmd); err != nil || string(got) != sdp {
			t.Fatalf("B's answer for %s: %q, %v; A's offer went to %q", id, got, err, sdp)
		}
		if _, err := b.Delete(ctx, &ng.Command{CallID: id}); err != nil {
			t.Fatalf("B's delete of %s: %v", id, err)
		}
		if url, ok := NewRedisSticky(bc).Relay(id); ok && url != "" {
			t.Fatalf("%s still in the map after its delete: %s", id, url)
		}
	}
	for i, r := range relays {
		for id, cmds := range r.calls() {
			if want := "sdp from " + r.name; offered[id] != want {
				t.Errorf("relay %d got %v for %s, offered to %q", i, cmds, id, offered[id])
			}
			if len(cmds) != 3 || cmds[2] != "delete" {
				t.Errorf("relay %d: %s saw %v, want offer, answer, delete", i, id, cmds)
			}
		}
	}

	if _, err := offer(a, "during"); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if _, err := b.Answer(ctx, &ng.Command{CallID: "during"}); !errors.Is(err, ErrUnknownCall) {
		t.Fatalf("B's answer with redis down: %v", err)
	}
	if sdp, err := offer(a, "new-during"); err != nil || sdp == "" {
		t.Fatalf("a new call with redis down: %q, %v", sdp, err)
	}
	if bc.Errors() == 0 {
		t.Fatal("no error counted")
	}
	srv.Restart(t)
	time.Sleep(1100 * time.Millisecond) // past the fast-fail second
	sdp, err := offer(a, "after")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Answer(ctx, &ng.Command{CallID: "after", FromTag: "f-after", ToTag: "t", SDP: []byte("v=0")}); err != nil || string(got) != sdp {
		t.Fatalf("B's answer after recovery: %q, %v; want %q", got, err, sdp)
	}
}
