package redisconn

import (
	"errors"
	"testing"
	"time"

	"sipxdp/internal/redistest"
)

// TestDownFailsFast: with Redis gone, one operation a second is tried
// and the others fail at once with ErrDown, all counted; with Redis back
// the next try succeeds and the down state clears.
func TestDownFailsFast(t *testing.T) {
	srv := redistest.Start(t)
	c, err := Open(srv.URL, "test store", Options{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ping := func() error {
		ctx, cancel, err := c.Begin("ping")
		if err != nil {
			return err
		}
		defer cancel()
		return c.Done("ping", c.C.Ping(ctx).Err())
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	tried := ping()
	if tried == nil || errors.Is(tried, ErrDown) {
		t.Fatalf("first ping with redis down: %v, want redis's own error", tried)
	}
	for range 3 {
		if err := ping(); !errors.Is(err, ErrDown) {
			t.Fatalf("ping within the second: %v, want ErrDown", err)
		}
	}
	if down, why := c.Down(); !down || why == "" || c.Errors() != 4 {
		t.Fatalf("down %v (%q), %d errors; want down and 4", down, why, c.Errors())
	}
	srv.Restart(t)
	time.Sleep(1100 * time.Millisecond)
	if err := ping(); err != nil {
		t.Fatalf("ping with redis back: %v", err)
	}
	if down, _ := c.Down(); down {
		t.Fatal("still down")
	}
}

func TestParseURL(t *testing.T) {
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"redis://127.0.0.1:6379/0", true},
		{"rediss://r.example:6380/2?dial_timeout=2s", true},
		{"redis://127.0.0.1:6379/notanumber", false},
		{"http://127.0.0.1:6379/0", false},
		{"dialogs.json", false},
	} {
		if _, err := ParseURL(tt.url); (err == nil) != tt.ok {
			t.Errorf("ParseURL(%q): %v, want ok %v", tt.url, err, tt.ok)
		}
	}
}

// TestOKReportsRecovery: OK is true once, for the first answer after a
// failure, so that a store re-writes what it missed only then.
func TestOKReportsRecovery(t *testing.T) {
	c, err := Open("redis://127.0.0.1:1/0", "test store", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	steps := []struct {
		fail bool
		want bool
	}{
		{false, false}, // up from the start
		{true, true},
		{false, false},
		{true, true},
	}
	for i, s := range steps {
		if s.fail {
			_ = c.Fail("test", errors.New("boom"))
		}
		if got := c.OK(); got != s.want {
			t.Errorf("step %d: OK() = %v, want %v", i, got, s.want)
		}
	}
}
