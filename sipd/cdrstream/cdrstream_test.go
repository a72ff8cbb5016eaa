package cdrstream

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sipxdp/internal/redistest"
)

func client(t *testing.T, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// waitLen waits until the stream holds want entries.
func waitLen(t *testing.T, c *redis.Client, key string, want int64) {
	t.Helper()
	var n int64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n, _ = c.XLen(context.Background(), key).Result(); n == want {
			return
		}
	}
	t.Fatalf("stream %s has %d entries, want %d", key, n, want)
}

// TestStream: CDRs land in the stream in order, under the field "cdr";
// the stream is trimmed near MaxLen; with Redis down Add does not block,
// the failure is counted, and the CDRs queued meanwhile arrive once it
// is back.
func TestStream(t *testing.T) {
	srv := redistest.Start(t)
	c := client(t, srv.URL)
	s, err := Open(srv.URL, Options{Key: "cdrs", MaxLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 3 {
		s.Add(fmt.Appendf(nil, `{"call_id":"c%d"}`, i))
	}
	waitLen(t, c, "cdrs", 3)
	msgs, err := c.XRange(context.Background(), "cdrs", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if want := fmt.Sprintf(`{"call_id":"c%d"}`, i); m.Values[Field] != want {
			t.Fatalf("entry %d: %v, want %s", i, m.Values, want)
		}
	}

	// MAXLEN ~ trims by whole nodes (100 entries by default): well below
	// what was added, never below MaxLen.
	for i := range 1000 {
		s.Add(fmt.Appendf(nil, `{"n":%d}`, i))
	}
	for deadline := time.Now().Add(5 * time.Second); s.Stats().Written < 1003 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if n, _ := c.XLen(context.Background(), "cdrs").Result(); n < 10 || n > 300 {
		t.Fatalf("stream holds %d entries after 1003 with MaxLen 10", n)
	}

	srv.Stop()
	start := time.Now()
	for i := range 5 {
		s.Add(fmt.Appendf(nil, `{"down":%d}`, i))
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("Add blocked %v with redis down", d)
	}
	for deadline := time.Now().Add(5 * time.Second); s.Stats().Errors == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if st := s.Stats(); st.Errors == 0 || !st.Down {
		t.Fatalf("stats with redis down: %+v", st)
	}
	srv.Restart(t) // empty: only what was queued lands
	waitLen(t, c, "cdrs", 5)
	if st := s.Stats(); st.Down || st.Dropped != 0 || st.Written != 1008 {
		t.Fatalf("stats after recovery: %+v", st)
	}
}

// TestStreamQueueFull: beyond QueueLen waiting lines, Add drops and counts.
func TestStreamQueueFull(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	s, err := Open(srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range QueueLen + batch + 50 {
		s.Add([]byte(`{}`))
	}
	if st := s.Stats(); st.Dropped < 50 {
		t.Fatalf("dropped %d, want at least 50", st.Dropped)
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("close took %v", d)
	}
}
