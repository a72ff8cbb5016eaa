package relay

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// tickEvery is how often Run looks at handoffs; the inactivity scan runs
// every scanEvery ticks.
const (
	tickEvery = 100 * time.Millisecond
	scanEvery = 10
	// scanBudget: sessions whose counters one inactivity scan reads.
	scanBudget = 4096
)

// Run processes latch events, hands flows off to the kernel and scans for
// inactive sessions, until ctx is done or Close is called.
func (e *Engine) Run(ctx context.Context) error {
	if !e.runMu.TryLock() {
		return errors.New("run: already running")
	}
	defer e.runMu.Unlock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("run: %w", ErrEngineClosed)
	}
	e.runDone = make(chan struct{})
	defer close(e.runDone)
	e.mu.Unlock()

	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	n := 0
	for {
		var out chan<- Event
		var next Event
		e.mu.Lock()
		if len(e.pending) > 0 {
			out, next = e.events, e.pending[0]
		}
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.done:
			return nil
		case ev := <-e.latchq:
			e.latch(ev)
		case f := <-e.failq:
			e.legFailed(f)
		case out <- next:
			e.mu.Lock()
			e.pending = e.pending[1:]
			e.mu.Unlock()
		case <-tick.C:
			n++
			e.step(n%scanEvery == 0)
		}
	}
}

// step runs due handoffs and, when scan is set, the inactivity scan.
func (e *Engine) step(scan bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if drops := e.latchDrops.Load(); drops != e.resyncedDrops {
		e.resyncedDrops = drops
		e.resync()
	}
	e.runWindows(now)
	e.runHandoffs(now)
	if scan {
		e.scan(now)
		e.scanAdopted(now)
		e.pierce()
	}
}

// LatchReader is implemented by a slow path that can say what a learning
// flow latched (the userspace relay does). The engine uses it to recover
// reports whose OnLatch was dropped on a full queue; without it such
// flows go on in userspace and their reverse direction keeps the
// announced address.
type LatchReader interface {
	Latch(k FlowKey) (LatchEvent, error)
}

// resync asks the slow path for the latches of flows the engine still
// believes to be learning. It walks every flow, but only after OnLatch
// events were dropped.
func (e *Engine) resync() {
	lr, ok := e.slow.(LatchReader)
	if !ok {
		e.log.Warn("latch events dropped and the slow path cannot report latches; affected flows stay in userspace",
			"dropped_total", e.resyncedDrops)
		return
	}
	n := 0
	for _, d := range e.flows {
		if !d.valid || !d.learning || !d.inSlow {
			continue
		}
		ev, err := lr.Latch(d.key())
		if err != nil || ev.Latch.Rank == RankNone {
			continue
		}
		e.latchLocked(d, ev)
		n++
	}
	e.log.Warn("latch events dropped; recovered latches from the slow path",
		"dropped_total", e.resyncedDrops, "recovered", n)
}

func (e *Engine) runHandoffs(now time.Time) {
	i := 0
	for ; i < len(e.handoffs); i++ {
		h := e.handoffs[i]
		if h.at.After(now) {
			break
		}
		d := h.d
		if d.gen != h.gen || !d.valid || !d.inKern || !d.inSlow || d.learning || d.st.sess.deleted {
			continue // changed since, or gone
		}
		if d.st.sess.held {
			continue // kept in userspace until released (Hold)
		}
		if d.handover {
			// The kernel passes a new source up as a wrong source; the
			// userspace copy re-latches it (media handover).
			continue
		}
		e.retire(e.slow, d.key(), &d.retiredUser)
		d.inSlow = false
		if e.debug() {
			e.log.Debug("handed off to kernel", "call", d.st.sess.callID, "flow", d.key().String())
		}
	}
	// Shift rather than reslice so the backing array does not grow forever.
	n := copy(e.handoffs, e.handoffs[i:])
	clear(e.handoffs[n:])
	e.handoffs = e.handoffs[:n]
}

// scan emits one timeout per session whose flows have all been silent for
// MediaTimeout. Each session is only looked at when its checkAt is due, so
// the counters of a busy session are read about once per MediaTimeout.
// At most scanBudget sessions are read per scan: when many fall due
// together (calls set up in a burst) the rest wait for the next scans, a
// timeout a few seconds late rather than the lock held for 200,000 reads.
func (e *Engine) scan(now time.Time) {
	checked := 0
	for _, s := range e.sessions {
		if s.timedOut || s.held || s.checkAt.IsZero() || now.Before(s.checkAt) {
			continue
		}
		if checked == scanBudget {
			return
		}
		checked++
		var last time.Time
		installed := false
		for _, st := range s.streams {
			for i := range st.dirs {
				d := &st.dirs[i]
				if !d.valid {
					continue
				}
				installed = true
				k, u := e.dirStats(d)
				t := k.Add(u)
				seen := t.LastSeen
				if d.since.After(seen) {
					// Re-installed (re-INVITE): silence counts from then.
					seen = d.since
				}
				if seen.After(last) {
					last = seen
				}
			}
		}
		if !installed {
			s.checkAt = time.Time{}
			continue
		}
		if now.Sub(last) < e.cfg.MediaTimeout {
			s.checkAt = last.Add(e.cfg.MediaTimeout)
			continue
		}
		s.timedOut = true
		s.checkAt = time.Time{}
		e.pending = append(e.pending, Event{CallID: s.callID, Reason: ReasonMediaTimeout, At: now})
		e.log.Info("media timeout", "call", s.callID, "last_packet", last, "timeout", e.cfg.MediaTimeout)
	}
}

// Close stops Run and closes both datapaths. Flows stay in the kernel's
// pinned maps on purpose: a restarting daemon must not cut media.
func (e *Engine) Close() error {
	var err error
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		done := e.runDone
		e.mu.Unlock()
		close(e.done)
		if done != nil {
			<-done
		}
		// Run holds runMu until it returned; taking it here also covers a
		// Run that started between the two steps above.
		e.runMu.Lock()
		close(e.events)
		e.runMu.Unlock()
		var errs []error
		if e.kernel != nil {
			if cerr := e.kernel.Close(); cerr != nil {
				errs = append(errs, fmt.Errorf("close kernel path: %w", cerr))
			}
		}
		if cerr := e.slow.Close(); cerr != nil {
			errs = append(errs, fmt.Errorf("close userspace path: %w", cerr))
		}
		err = errors.Join(errs...)
	})
	return err
}
