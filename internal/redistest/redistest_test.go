package redistest

import (
	"testing"
)

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if err := ping(s.Addr); err != nil {
		t.Fatalf("started but %v", err)
	}
	s.Stop()
	if err := ping(s.Addr); err == nil {
		t.Fatal("answers PING after Stop")
	}
	s.Stop() // twice: a no-op
	s.Restart(t)
	if err := ping(s.Addr); err != nil {
		t.Fatalf("restarted but %v", err)
	}
}
