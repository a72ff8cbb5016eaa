package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
)

func unmap(ap netip.AddrPort) netip.AddrPort {
	if !ap.IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func known(ap netip.AddrPort) bool {
	return ap.IsValid() && ap.Port() != 0 && !ap.Addr().IsUnspecified()
}

// desired computes what direction d should be, and whether it can be
// installed at all (both sides announced, destination known).
func (e *Engine) desired(d *dir) (Flow, bool) {
	st := d.st
	x, y := &st.legs[d.from], &st.legs[d.from.other()]
	if !y.peerSet || (e.cfg.Strict && !x.peerSet) {
		// Without y's address there is nowhere to send. x's address only
		// seeds latching, and early media may arrive before x's SDP, except
		// in strict mode where nothing may latch before it is announced.
		return Flow{}, false
	}
	if d.comp == compRTCP && x.mux {
		return Flow{}, false // RTCP arrives on the RTP port
	}
	outComp := d.comp
	if y.mux {
		// A muxed receiver takes RTCP on its RTP port.
		outComp = compRTP
	}
	// An asymmetric receiver gets its media where its SDP said, whatever
	// it sends from.
	// So does one that turned learning off (rtpengine's endpoint-learning
	// off never moves the endpoint from the SDP's address).
	yo, xo := st.sess.opts[d.from.other()], st.sess.opts[d.from]
	asym := yo.Asymmetric || yo.Learning == LearnOff
	dst := y.latch[outComp].Dest()
	if !dst.IsValid() || asym {
		dst = y.announced[outComp]
	}
	if !known(dst) {
		return Flow{}, false
	}
	out := y.local(outComp)
	if dst.Addr().Is4() != out.Addr().Is4() {
		return Flow{}, false // the peer announced another family than its leg's relay address
	}
	f := Flow{Key: FlowKey{Local: x.local(d.comp)}, Out: out, Dst: dst, Strict: e.cfg.Strict,
		In: x.sec, OutLeg: y.sec, RTCP: d.comp == compRTCP, TOS: st.sess.tos, Drop: st.sess.drop,
		Learn: xo.Learning, Handover: xo.Handover}
	// NAT-wait: nothing goes to y until y's own packets latched.
	f.Hold = yo.NATWait && !y.latch[outComp].Dest().IsValid()
	f.ICE = x.sec != nil && x.sec.ICE()
	if d.comp == compRTP && x.mux && !y.mux {
		// A muxed sender's RTCP goes to the receiver's RTCP port, in
		// userspace (the kernel does not demultiplex). Until that address
		// is known it goes with the RTP.
		rd := y.latch[compRTCP].Dest()
		if !rd.IsValid() || asym {
			rd = y.announced[compRTCP]
		}
		if known(rd) && rd.Addr().Is4() == out.Addr().Is4() {
			f.RTCPOut, f.RTCPDst = y.local(compRTCP), rd
		}
	}
	lt := x.latch[d.comp]
	if lt.Locked {
		f.Peer, f.Rank = lt.Source, lt.Rank
		if f.Handover {
			f.Announced = x.announced[d.comp] // what its reports are checked against
		}
		return f, true
	}
	f.Learning = true
	f.Announced = x.announced[d.comp]
	f.Peer, f.Rank = lt.Source, lt.Rank
	if lt.Rank == RankNone {
		f.Peer = f.Announced
	}
	f.Hints = e.hints(d)
	if x.peerSet {
		f.LearnUntil = lt.Until
	}
	// A candidate is held until the window closes; a side that has not
	// announced has no window, and RTCP comes from the RTP's host.
	f.NoCandidates = e.cfg.Strict || !x.peerSet || d.comp == compRTCP
	return f, true
}

func (d *dir) key() FlowKey { return FlowKey{Local: d.st.legs[d.from].local(d.comp)} }

func (d *dir) out() netip.AddrPort { return d.st.legs[d.from.other()].local(d.outComp) }

// same reports whether f is what is installed. Key and Strict never change
// for a direction; what a learning flow ranks by is covered by the
// stream's learnGen (Announced changes only with a reset latch, which
// changes Peer or Rank).
func (d *dir) same(f Flow) bool {
	return d.valid && d.peer == f.Peer && d.learning == f.Learning && d.dst == f.Dst && d.out() == f.Out &&
		d.learn == f.Learn && d.handover == f.Handover && d.hold == f.Hold &&
		d.rank == f.Rank && (!f.Learning || d.learnGen == d.st.learnGen) &&
		d.in == f.In && d.outLeg == f.OutLeg && d.rtcpOut == f.RTCPOut && d.rtcpDst == f.RTCPDst &&
		d.tos == f.TOS && d.drop == f.Drop
}

// kernelSame reports whether the kernel's copy would not change: it
// passes every packet of a learning flow up, whatever the flow latched.
func (d *dir) kernelSame(f Flow) bool {
	return d.valid && d.learning == f.Learning && d.dst == f.Dst && d.out() == f.Out &&
		(f.Learning || d.peer == f.Peer) && d.tos == f.TOS && d.drop == f.Drop && d.hold == f.Hold
}

// reconcile brings every direction of a stream in step with its legs.
func (e *Engine) reconcile(st *stream) error {
	var errs []error
	for i := range st.dirs {
		if err := e.sync(&st.dirs[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sync pushes the desired state of one direction to the datapaths.
func (e *Engine) sync(d *dir) error {
	want, ok := e.desired(d)
	if !ok {
		if d.valid {
			e.uninstall(d)
		}
		return nil
	}
	if d.same(want) {
		return nil
	}
	now := e.now()
	kernelSame := d.kernelSame(want)
	d.valid = true
	d.peer, d.dst, d.learning, d.rank, d.tos = want.Peer, want.Dst, want.Learning, want.Rank, want.TOS
	d.learn, d.handover, d.hold = want.Learn, want.Handover, want.Hold
	d.in, d.outLeg, d.rtcpOut, d.rtcpDst = want.In, want.OutLeg, want.RTCPOut, want.RTCPDst
	d.drop = want.Drop
	d.learnGen = d.st.learnGen
	d.outComp = uint8(want.Out.Port() - d.st.legs[d.from.other()].rtp)
	d.since = now
	d.gen++
	if s := d.st.sess; !s.timedOut && (s.checkAt.IsZero() || s.checkAt.Before(now.Add(e.cfg.MediaTimeout))) {
		s.checkAt = now.Add(e.cfg.MediaTimeout)
	}
	k := want.Key

	userOnly := want.UserspaceOnly()
	if e.kernel != nil && (!kernelSame || userOnly != "" && d.inKern) {
		if userOnly != "" {
			d.kernErr = userOnly
			if d.inKern {
				e.retire(e.kernel, k, &d.retiredKern)
				d.inKern = false
			}
		} else if want.Key.Local.Addr().Is4() != want.Out.Addr().Is4() && !e.kernelCrossFamily {
			// Programs loaded without the IPv4<->IPv6 translation would
			// refuse it. Not worth a syscall to be told so.
			d.kernErr = "cross-family legs"
			if d.inKern {
				e.retire(e.kernel, k, &d.retiredKern)
				d.inKern = false
			}
		} else if err := e.upsert(e.kernel, want, d.inKern, &d.retiredKern); err != nil {
			d.kernErr = err.Error()
			if d.inKern {
				// The kernel may still hold the old version; a stale copy
				// would forward to the wrong place.
				e.retire(e.kernel, k, &d.retiredKern)
				d.inKern = false
			}
			if !errors.Is(err, ErrUnsupportedFlow) {
				e.log.Warn("kernel refused flow; kept in userspace", "call", d.st.sess.callID,
					"flow", k.String(), "learning", want.Learning, "err", err)
			} else if e.debug() {
				// Expected for some flows (the program's limits): not a warning.
				e.log.Debug("kernel does not support flow; kept in userspace", "call", d.st.sess.callID,
					"flow", k.String(), "err", err)
			}
		} else {
			d.inKern = true
			d.kernErr = ""
		}
	}

	var err error
	if !d.inKern || want.Learning || d.inSlow {
		// Learning needs userspace to latch; a flow being handed off is
		// updated too so its last packets go to the right place.
		if err = e.upsert(e.slow, want, d.inSlow, &d.retiredUser); err != nil {
			err = fmt.Errorf("userspace upsert %s: %w", k, err)
			e.log.Error("userspace datapath refused flow", "call", d.st.sess.callID, "flow", k.String(), "err", err)
			if want.Learning || !d.inKern {
				// Nothing can forward it: drop every copy and leave it
				// uninstalled, so the next SetPeer or latch tries again.
				e.uninstall(d)
				return err
			}
		} else {
			d.inSlow = true
		}
	}
	if d.inKern && !want.Learning && d.inSlow {
		e.handoffs = append(e.handoffs, handoff{d: d, gen: d.gen, at: now.Add(e.cfg.HandoffDelay)})
	}
	return err
}

// upsert installs f, keeping the counters whether or not the datapath
// resets them when a flow is replaced.
func (e *Engine) upsert(dp Datapath, f Flow, present bool, retired *FlowStats) error {
	var before FlowStats
	if present {
		before, _ = dp.Stats(f.Key)
	}
	if err := dp.Upsert(f); err != nil {
		return err
	}
	if present && before.Packets > 0 {
		if after, err := dp.Stats(f.Key); err == nil && after.Packets < before.Packets {
			*retired = retired.Add(before)
		}
	}
	return nil
}

// retire deletes a flow from a datapath, keeping its counters.
func (e *Engine) retire(dp Datapath, k FlowKey, retired *FlowStats) {
	if st, err := dp.Stats(k); err == nil {
		*retired = retired.Add(st)
	}
	if err := dp.Delete(k); err != nil && !errors.Is(err, ErrFlowNotFound) {
		e.log.Warn("delete flow", "path", dp.Name(), "flow", k.String(), "err", err)
	}
}

func (e *Engine) uninstall(d *dir) {
	k := d.key()
	if d.inKern {
		e.retire(e.kernel, k, &d.retiredKern)
		d.inKern = false
	}
	if d.inSlow {
		e.retire(e.slow, k, &d.retiredUser)
		d.inSlow = false
	}
	d.valid = false
	d.gen++
}

// debug guards debug logs on hot paths: their arguments allocate even
// when the level is off.
func (e *Engine) debug() bool { return e.log.Enabled(context.Background(), slog.LevelDebug) }

// stats of one direction on all paths, split kernel/userspace.
func (e *Engine) dirStats(d *dir) (kern, user FlowStats) {
	kern, user = d.retiredKern, d.retiredUser
	if d.inKern {
		if s, err := e.kernel.Stats(d.key()); err == nil {
			kern = kern.Add(s)
		}
	}
	if d.inSlow {
		if s, err := e.slow.Stats(d.key()); err == nil {
			user = user.Add(s)
		}
	}
	return kern, user
}
