package relay

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// After a restart the SIP layer knows the calls that were up (it keeps
// them on disk) and gives each back to a new engine with RestoreStream:
// the stream gets the relay ports it had, so the SDP both phones hold
// stays right; the kernel flows a previous process left on those ports
// (adopted, see Adopt) become the stream's own, so media that kept
// flowing in the kernel while sipd was down goes on, and a flow that was
// locked stays locked to its source; a flow that was still learning
// learns again, in userspace. Latches are never saved (they change with
// packets, not signaling): the kernel map is where a locked one survives.

// RestoreLeg is one leg of a restored stream.
type RestoreLeg struct {
	// Ports are the leg's relay address (by name and local address) and
	// RTP port, as StreamPorts had them.
	Ports LegPorts
	// Announced media of this side, as SetPeer takes it; Set is false
	// while the side had announced none.
	Set       bool
	RTP, RTCP netip.AddrPort
	Mux       bool
}

// RestoreStream recreates stream index of a session (CreateSession first)
// with the ports of legs. since is when the call's media was last known
// to be set up (its answer or last offer): silence counts from it, or
// from the last packet the kernel forwarded meanwhile, whichever is
// later, so a call whose media stopped while sipd was down times out at
// the next scan. Ports must be free or held by adopted flows; anything
// else is an error and the stream is not created.
func (e *Engine) RestoreStream(callID string, index int, legs [2]RestoreLeg, since time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return fmt.Errorf("restore stream %q/%d: %w", callID, index, ErrSessionNotFound)
	}
	if s.stream(index) != nil {
		return fmt.Errorf("restore stream %q/%d: stream exists", callID, index)
	}
	var pools [2]*addrPool
	for i, l := range legs {
		pair := netip.AddrPortFrom(l.Ports.Local.Unmap(), l.Ports.RTP)
		p := e.poolOf(pair, l.Ports.Address)
		if p == nil || p.cfg.Name != l.Ports.Address || l.Ports.RTP%2 != 0 {
			return fmt.Errorf("restore stream %q/%d side %s: port %s is in no configured relay range", callID, index, Side(i), pair)
		}
		pools[i] = p
	}
	// Take both pairs before changing anything: from an adopted group, or
	// from the free pool.
	var kernel []Flow // adopted flows on the stream's ports
	var taken []pairRef
	release := func() {
		for _, r := range taken {
			_ = r.pool.pool.free(r.rtp)
		}
	}
	for i, l := range legs {
		ref := pairRef{pool: pools[i], rtp: l.Ports.RTP}
		if fs, ok := e.claimAdopted(ref); ok {
			kernel = append(kernel, fs...)
			continue
		}
		if got := ref.pool.pool.reserve([]uint16{ref.rtp}); len(got) != 1 {
			release()
			return fmt.Errorf("restore stream %q/%d side %s: port %d on %s is taken", callID, index, Side(i), ref.rtp, ref.pool.cfg.Local)
		}
		taken = append(taken, ref)
	}

	st := &stream{sess: s, index: index}
	for i, l := range legs {
		lg := leg{pool: pools[i], rtp: l.Ports.RTP}
		if l.Set {
			rtcp := unmap(l.RTCP)
			if l.Mux {
				rtcp = netip.AddrPort{}
			}
			lg.announced = [2]netip.AddrPort{unmap(l.RTP), rtcp}
			lg.mux, lg.peerSet = l.Mux, true
		}
		st.legs[i] = lg
	}
	e.indexDirs(st)
	// A kernel flow that was forwarding was locked to its source: it stays
	// so, and the kernel keeps it (installed in place, counters kept).
	for _, f := range kernel {
		d, ok := e.flows[f.Key.Local]
		if !ok || d.st != st {
			continue
		}
		d.inKern = true
		d.valid = true
		if f.Learning || !f.Peer.IsValid() {
			continue
		}
		lg := &st.legs[d.from]
		if !lg.peerSet {
			continue
		}
		rank := RankIP
		if unmap(f.Peer) == lg.announced[d.comp] {
			rank = RankExact
		}
		lg.latch[d.comp] = Latch{Source: unmap(f.Peer), Rank: rank, Locked: true}
	}
	s.streams = append(s.streams, st)
	// Learning that was under way starts a new window: a flow's first
	// packets after the restart come now.
	e.reopen(st)
	err := e.reconcile(st)
	for i := range st.dirs {
		if d := &st.dirs[i]; d.valid {
			d.since = since
		}
	}
	if now := e.now(); !s.timedOut && (s.checkAt.IsZero() || s.checkAt.After(now)) {
		s.checkAt = now
	}
	if err != nil {
		return fmt.Errorf("restore stream %q/%d: %w", callID, index, err)
	}
	return nil
}

// claimAdopted takes the pair ref out of the adopted group that holds it,
// with the group's flows arriving on that pair; the group goes when
// nothing is left of it. The kernel keeps the flows. Called with e.mu held.
func (e *Engine) claimAdopted(ref pairRef) ([]Flow, bool) {
	for id, g := range e.adopted {
		i := slices.IndexFunc(g.pairs, func(p pairRef) bool { return p.pool == ref.pool && p.rtp == ref.rtp })
		if i < 0 {
			continue
		}
		g.pairs = slices.Delete(g.pairs, i, i+1)
		var mine []Flow
		keep := g.flows[:0]
		for _, f := range g.flows {
			if pairOf(f.Key.Local) == netip.AddrPortFrom(ref.pool.cfg.Local, ref.rtp) {
				mine = append(mine, f)
			} else {
				keep = append(keep, f)
			}
		}
		g.flows = keep
		if len(g.flows) == 0 {
			// Its other pairs (if any) hold no flow: give them back.
			for _, p := range g.pairs {
				_ = p.pool.pool.free(p.rtp)
			}
			delete(e.adopted, id)
		}
		return mine, true
	}
	return nil, false
}
