package procsample

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestRead(t *testing.T) {
	// A gone process reads as zero figures, not an error.
	for pid, procOK := range map[int]bool{os.Getpid(): true, -1: false} {
		r := Read(pid)
		if r.ProcOK != procOK || (r.RSS > 0) != procOK {
			t.Errorf("Read(%d): ProcOK %v, RSS %d; want a process: %v", pid, r.ProcOK, r.RSS, procOK)
		}
		if r.Sys.CPUs == 0 || r.At.IsZero() {
			t.Errorf("Read(%d): no system reading: %+v", pid, r.Sys)
		}
	}
}

func TestEveryHandsOnThePreviousReading(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var got []int
	Every(ctx, stop, time.Millisecond, os.Getpid(), func(i int, prev *Reading, cur Reading) {
		got = append(got, i)
		if (prev == nil) != (i == 0) {
			t.Errorf("reading %d: prev %v", i, prev)
		}
		if prev != nil && cur.At.Before(prev.At) {
			t.Errorf("reading %d at %v, before the one before it at %v", i, cur.At, prev.At)
		}
		if i == 2 {
			close(stop)
		}
	})
	if len(got) != 3 || ctx.Err() != nil {
		t.Errorf("readings %v, ctx %v; want 0, 1, 2 and a stop", got, ctx.Err())
	}
}
