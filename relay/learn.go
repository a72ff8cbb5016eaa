package relay

import (
	"fmt"
	"net/netip"
	"time"
)

// The engine's side of latching (see Latch): it opens learning windows
// on signaling, applies what the slow path reports, and keeps each
// direction's latch in the leg, where listings and SetLatch find it.

// reopen opens the learning window of every latch of st that is not
// locked and whose side has announced its media: the call's signaling is
// when a side's media is expected to start. Called with e.mu held.
func (e *Engine) reopen(st *stream) {
	until := e.now().Add(e.cfg.LearnWindow)
	for s := range st.legs {
		l := &st.legs[s]
		if !l.peerSet {
			continue
		}
		for c := range l.latch {
			if !l.latch[c].Locked {
				l.latch[c].Until = until
				e.windows = append(e.windows, window{d: st.dir(Side(s), uint8(c)), at: until})
			}
		}
	}
	st.learnGen++
}

// runWindows locks the directions whose learning window has closed, so
// they reach the kernel without waiting for their next packet (the slow
// path locks a flow itself on the first packet after the window, too).
// Called with e.mu held.
func (e *Engine) runWindows(now time.Time) {
	i := 0
	for ; i < len(e.windows); i++ {
		w := e.windows[i]
		if w.at.After(now) {
			break
		}
		e.closeWindow(w.d, now)
	}
	n := copy(e.windows, e.windows[i:])
	clear(e.windows[n:])
	e.windows = e.windows[:n]
}

// closeWindow locks d to what it latched if its window is over. The slow
// path decides per packet and its reports may still be queued, so what it
// holds is asked first; after the window it can only lock that same
// source, so the two cannot disagree. A direction that latched nothing
// stays open: its first trusted source will lock it.
func (e *Engine) closeWindow(d *dir, now time.Time) {
	l := &d.st.legs[d.from]
	lt := &l.latch[d.comp]
	if d.st.sess.deleted || lt.Locked || lt.Until.IsZero() || now.Before(lt.Until) || !l.peerSet {
		return // locked, or a later window replaced this one
	}
	slowLocked := false
	if lr, ok := e.slow.(LatchReader); ok && d.valid && d.inSlow {
		if ev, err := lr.Latch(d.key()); err == nil && unmap(ev.Announced) == l.announced[d.comp] &&
			(ev.Latch.Locked || ev.Latch.Rank > lt.Rank) {
			lt.Source, lt.Rank = unmap(ev.Latch.Source), ev.Latch.Rank
			slowLocked = ev.Latch.Locked // and counted it
		}
	}
	if lt.Rank == RankNone {
		return
	}
	if !slowLocked {
		e.windowLocks.Add(1)
	}
	before := lt.Dest()
	lt.Locked = true
	if d.comp == compRTP && lt.Dest() != before {
		d.st.learnGen++
	}
	if err := e.reconcile(d.st); err != nil {
		e.log.Warn("lock at the end of the learning window", "call", d.st.sess.callID, "flow", d.key().String(), "err", err)
	}
	e.locked(d.st.sess)
}

// SetSignal records the address side's SIP signaling came from, a hint
// for latching (a NATed phone sends its media from the address its SIP
// comes from, whatever its SDP says), and counts as signaling for every
// stream of the call: learning windows that are not locked open again.
// Call it for every message of the call that carries SDP or answers the
// INVITE; an invalid addr changes no hint.
func (e *Engine) SetSignal(callID string, side Side, addr netip.Addr) error {
	if side > SideB {
		return fmt.Errorf("set signal %q: bad side %d", callID, side)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return fmt.Errorf("set signal %q: %w", callID, ErrSessionNotFound)
	}
	if addr.IsValid() && !addr.IsUnspecified() {
		s.sig[side] = addr.Unmap()
	}
	var errs []error
	for _, st := range s.streams {
		e.reopen(st)
		if err := e.reconcile(st); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("set signal %q side %s: %v", callID, side, errs)
	}
	return nil
}

// SetLatch gives one direction back a latch saved from LegInfo (after a
// restart, so a flow that was learning goes on learning, and a locked one
// stays locked). rtcp selects the RTCP direction. The side must have been
// given its addresses (SetPeer) first.
func (e *Engine) SetLatch(callID string, index int, side Side, rtcp bool, l Latch) error {
	if side > SideB {
		return fmt.Errorf("set latch %q/%d: bad side %d", callID, index, side)
	}
	if err := l.Validate(); err != nil {
		return fmt.Errorf("set latch %q/%d side %s: %w", callID, index, side, err)
	}
	l.Source = unmap(l.Source)
	e.mu.Lock()
	defer e.mu.Unlock()
	st, err := e.streamOf("set latch", callID, index)
	if err != nil {
		return err
	}
	lg := &st.legs[side]
	if !lg.peerSet {
		return fmt.Errorf("set latch %q/%d side %s: side has no announced media", callID, index, side)
	}
	c := uint8(compRTP)
	if rtcp {
		c = compRTCP
	}
	lg.latch[c] = l
	if !l.Locked && !l.Until.IsZero() {
		e.windows = append(e.windows, window{d: st.dir(side, c), at: l.Until})
	}
	st.learnGen++
	if err := e.reconcile(st); err != nil {
		return fmt.Errorf("set latch %q/%d side %s: %w", callID, index, side, err)
	}
	return nil
}

// hints are the IPs a learning direction ranks RankIP besides the
// announced one.
func (e *Engine) hints(d *dir) [2]netip.Addr {
	var h [2]netip.Addr
	if e.cfg.Strict {
		return h
	}
	h[0] = d.st.sess.sig[d.from]
	if d.comp == compRTCP {
		// RTCP comes from the host that sends the RTP.
		h[1] = d.st.legs[d.from].latch[compRTP].Dest().Addr()
	}
	return h
}

// OnLatch is called by the userspace datapath, from its worker, when a
// learning flow takes a new source or locks. It never blocks: when the
// queue is full the event is counted and dropped (the userspace path
// holds the truth and resync reads it back later).
func (e *Engine) OnLatch(ev LatchEvent) {
	select {
	case e.latchq <- ev:
	default:
		e.latchDrops.Add(1)
	}
}

func (e *Engine) latch(ev LatchEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	d, ok := e.flows[ev.Key.Local]
	if !ok || !d.valid || d.st.sess.deleted {
		return // the call ended while the event was queued
	}
	e.latchLocked(d, ev)
}

// latchLocked applies a slow path's report to the direction's latch.
// Reports about what the side announced before, or older than what the
// engine knows, change nothing.
func (e *Engine) latchLocked(d *dir, ev LatchEvent) {
	l := &d.st.legs[d.from]
	cur := &l.latch[d.comp]
	src := unmap(ev.Latch.Source)
	switch {
	case unmap(ev.Announced) != l.announced[d.comp]:
		return
	case cur.Locked && d.handover && ev.Latch.Locked && known(src) && src != cur.Source:
		// media handover: the side's media moved (see SideOptions.Handover).
	case cur.Locked:
		return // nothing moves a locked latch but a new offer or answer
	case !ev.Latch.Locked && ev.Latch.Rank < cur.Rank:
		return
	case cur.Source == src && cur.Rank == ev.Latch.Rank && !ev.Latch.Locked:
		return
	}
	before := cur.Dest()
	cur.Source, cur.Rank, cur.Locked = src, ev.Latch.Rank, ev.Latch.Locked
	if d.comp == compRTP && cur.Dest() != before {
		d.st.learnGen++ // the RTCP direction's hint
	}
	// The whole stream: the reverse direction's Dst is this source.
	if err := e.reconcile(d.st); err != nil {
		e.log.Warn("latch", "call", d.st.sess.callID, "flow", d.key().String(), "err", err)
		return
	}
	if cur.Locked {
		e.locked(d.st.sess)
	}
	if !e.debug() {
		return
	}
	e.log.Debug("latched", "call", d.st.sess.callID, "flow", d.key().String(), "src", src.String(),
		"rank", ev.Latch.Rank.String(), "phase", cur.Phase(), "kernel", d.inKern)
}
