package relay

import (
	"fmt"
	"time"
)

// A standby relay keeps copies of another node's calls (replicated
// through Redis by the SIP layer) with their flows installed ahead of
// time, so that when the relay address moves to it the kernel forwards
// at once. Until then it sees none of their packets: Hold keeps such a
// session out of the inactivity scan, and releasing it starts its
// silence from the release. A held session's flows also stay in
// userspace beside the kernel (no handoff): the XDP hook cannot resolve
// a next hop the host has not talked to yet and passes such a packet up
// the stack, where the userspace relay forwards it, which resolves the
// neighbour for the packets after it. Released, they are handed off as
// usual.

// Hold marks a session as another node's copy (on) or as this engine's
// own again (off). A held session is never timed out and its flows are
// not handed off to the kernel alone; when released, silence counts from
// now and the handoffs run after Config.HandoffDelay.
func (e *Engine) Hold(callID string, on bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return fmt.Errorf("hold %q: %w", callID, ErrSessionNotFound)
	}
	if s.held == on {
		return nil
	}
	s.held = on
	if on {
		return nil
	}
	now := e.now()
	for _, st := range s.streams {
		for i := range st.dirs {
			d := &st.dirs[i]
			if !d.valid {
				continue
			}
			d.since = now
			if d.inKern && d.inSlow && !d.learning {
				// now is the latest deadline yet: the queue stays ordered.
				e.handoffs = append(e.handoffs, handoff{d: d, gen: d.gen, at: now.Add(e.cfg.HandoffDelay)})
			}
		}
	}
	s.checkAt = now.Add(time.Millisecond)
	return nil
}

// SetOnLock sets the function told the call ID whenever one of its
// directions locks its latch (the slow path's report, or a learning
// window closing): an event per flow, not per packet, for replicating
// latches. It is called with the engine's lock held: it must not block
// nor call the engine. nil removes it.
func (e *Engine) SetOnLock(f func(callID string)) {
	if f == nil {
		e.onLock.Store(nil)
		return
	}
	e.onLock.Store(&f)
}

// locked reports s to the OnLock function. Called with e.mu held.
func (e *Engine) locked(s *session) {
	if f := e.onLock.Load(); f != nil {
		(*f)(s.callID)
	}
}
