package relay

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"sipxdp/relay/cryptoleg"
)

// Path and state names used in FlowInfo.
const (
	PathKernel    = "kernel"
	PathUserspace = "userspace"

	StateLearning = "learning"
	StateActive   = "active"
	StateIdle     = "idle"
)

// idleAfter: a latched flow with no packet for this long is shown as idle.
// Longer than the usual RTCP interval (5s) so RTCP flows do not flap.
const idleAfter = 10 * time.Second

// FlowInfo describes one installed direction.
type FlowInfo struct {
	CallID    string
	Stream    int
	Side      Side   // the leg packets arrive on
	Component string // "rtp" or "rtcp"
	Local     netip.AddrPort
	Peer      netip.AddrPort
	Out       netip.AddrPort
	Dst       netip.AddrPort
	Path      string // PathKernel or PathUserspace
	State     string // StateLearning, StateActive or StateIdle
	// Latch is the source's latch phase: LatchLearning, LatchProvisional
	// or LatchLocked; Rank how the source matched (see Latch).
	Latch string
	Rank  Rank
	// KernelError says why the flow is not on the kernel path although one
	// exists (e.g. cross-family legs, or the error the kernel returned).
	KernelError string
	Packets     uint64
	Bytes       uint64
	LastSeen    time.Time
	// Security of the leg the flow arrives on and of the leg it leaves by
	// (nil: plain RTP), and where a muxed sender's RTCP goes when the
	// receiver does not mux.
	In, OutLeg *cryptoleg.Info
	RTCPDst    netip.AddrPort
	// UserspaceOnly says why only the userspace datapath can serve the
	// flow ("" if the kernel could): see Flow.UserspaceOnly.
	UserspaceOnly string
	// TOS is the call's (Flow.TOS).
	TOS TOS
	// Drop: the call's media is dropped (Flow.Drop).
	Drop bool
}

// LegInfo is one leg of a stream with what was learned about it.
type LegInfo struct {
	LegPorts
	PeerRTP, PeerRTCP       netip.AddrPort // announced in SDP
	RTCPMux                 bool
	LatchedRTP, LatchedRTCP netip.AddrPort // trusted sources (provisional or locked); zero until then
	// Latch state of the directions arriving on this leg: everything the
	// learning of their source depends on besides the SDP and Signal.
	// Saved and given back with SetLatch, a restarted engine goes on
	// where it was.
	RTPLatch, RTCPLatch Latch
	// Signal is this side's signaling address (a latching hint).
	Signal netip.Addr
	// Received counts packets that arrived on this leg's ports.
	Received FlowStats
}

// StreamInfo is one m-line.
type StreamInfo struct {
	Index int
	A, B  LegInfo
}

// SessionInfo is a snapshot of a session, or its final statistics when
// returned by DeleteSession.
type SessionInfo struct {
	CallID   string
	Created  time.Time
	TimedOut bool
	Streams  []StreamInfo
	Stats    FlowStats // all directions together
}

// PoolInfo is the occupancy of one relay address's port pool.
type PoolInfo struct {
	Name       string
	Local      netip.Addr
	Advertised netip.Addr // written into SDP (Local unless configured)
	FreePairs  int
	TotalPairs int
}

// Totals are engine-wide statistics.
type Totals struct {
	Path, PathReason string
	Draining         bool
	Sessions         int
	Flows            int // installed directions
	KernelFlows      int // latched and on the kernel path
	UserspaceFlows   int
	// AdoptedFlows are kernel flows left by a previous process (counted
	// in Flows and KernelFlows too); their packets, including those from
	// before the restart, are in the kernel totals.
	AdoptedFlows int
	// Packets and bytes since the engine started, including ended
	// sessions, split by the path that forwarded them.
	KernelPackets, KernelBytes       uint64
	UserspacePackets, UserspaceBytes uint64
	KernelCounters                   map[string]uint64
	KernelCountersError              string
	UserspaceCounters                map[string]uint64
	UserspaceSockets                 int
	LatchDrops                       uint64 // OnLatch calls lost to a full queue
	// WindowLocks are flows the engine locked when their learning window
	// closed (the slow path counts those it locked itself).
	WindowLocks uint64
	// PierceNAT: packets sent to open a side's NAT binding (pierce NAT),
	// and sends the slow path refused.
	PierceNAT, PierceNATErrors uint64
	// DTLSHandshakes completed on WebRTC legs, and crypto legs that failed
	// (handshake error, fingerprint mismatch, not keyed in time).
	DTLSHandshakes, CryptoLegFailures uint64
	Pools                             []PoolInfo
	// ActiveRTP counts RTP directions (a leg's RTP arriving) that
	// carried a packet in the last activeWindow, by the path that
	// forwarded it then: what rtpengine's mediastreams gauge counts.
	ActiveRTP ActiveStreams
}

// ActiveStreams splits recently active RTP directions by path: kernel
// only, userspace only, or both within the window (a flow moving
// between the paths).
type ActiveStreams struct{ Kernel, Userspace, Mixed int }

// activeWindow is how recent a packet makes a direction active: 2 s, as
// rtpengine's call_timer_iterator uses for its stream gauges
// (https://github.com/sipwise/rtpengine/blob/master/daemon/call.c).
const activeWindow = 2 * time.Second

func (a *ActiveStreams) add(kern, user bool) {
	switch {
	case kern && user:
		a.Mixed++
	case kern:
		a.Kernel++
	case user:
		a.Userspace++
	}
}

// walkBatch bounds how long the listings below hold the engine lock: each
// flow's counters may cost a syscall, and 50,000 calls hold 200,000 flows,
// which would stall call setup for a good fraction of a second.
const walkBatch = 512

// walk calls fn for every session that exists when walk starts and still
// exists when its turn comes, taking the lock per batch. pre runs under the
// lock before the walk, to read what must be consistent with the list.
func (e *Engine) walk(pre func(), fn func(s *session)) {
	e.mu.Lock()
	if pre != nil {
		pre()
	}
	list := make([]*session, 0, len(e.sessions))
	for _, s := range e.sessions {
		list = append(list, s)
	}
	e.mu.Unlock()
	for i := 0; i < len(list); i += walkBatch {
		e.mu.Lock()
		for _, s := range list[i:min(i+walkBatch, len(list))] {
			if !s.deleted {
				fn(s)
			}
		}
		e.mu.Unlock()
	}
}

func (e *Engine) info(s *session) SessionInfo {
	si := SessionInfo{CallID: s.callID, Created: s.created, TimedOut: s.timedOut,
		Streams: make([]StreamInfo, 0, len(s.streams))}
	for _, st := range s.streams {
		sti := StreamInfo{Index: st.index}
		for side := SideA; side <= SideB; side++ {
			l := &st.legs[side]
			li := LegInfo{LegPorts: l.ports(), PeerRTP: l.announced[compRTP], PeerRTCP: l.announced[compRTCP],
				RTCPMux: l.mux, LatchedRTP: l.latch[compRTP].Dest(), LatchedRTCP: l.latch[compRTCP].Dest(),
				RTPLatch: l.latch[compRTP], RTCPLatch: l.latch[compRTCP], Signal: s.sig[side]}
			for c := uint8(0); c < 2; c++ {
				k, u := e.dirStats(st.dir(side, c))
				li.Received = li.Received.Add(k).Add(u)
			}
			si.Stats = si.Stats.Add(li.Received)
			if side == SideA {
				sti.A = li
			} else {
				sti.B = li
			}
		}
		si.Streams = append(si.Streams, sti)
	}
	return si
}

// Session returns a snapshot of one session with its counters.
func (e *Engine) Session(callID string) (SessionInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return SessionInfo{}, fmt.Errorf("session %q: %w", callID, ErrSessionNotFound)
	}
	return e.info(s), nil
}

// Sessions returns a snapshot of every session, sorted by call id. It reads
// the counters of every flow: meant for inspection, not for a hot loop.
func (e *Engine) Sessions() []SessionInfo {
	out := []SessionInfo{}
	e.walk(nil, func(s *session) { out = append(out, e.info(s)) })
	sort.Slice(out, func(i, j int) bool { return out[i].CallID < out[j].CallID })
	return out
}

// Flows lists every installed direction, sorted by call, stream, side and
// component.
func (e *Engine) Flows() []FlowInfo {
	now := e.now()
	out := []FlowInfo{}
	e.walk(nil, func(s *session) { out = e.sessionFlows(s, now, out) })
	e.mu.Lock()
	out = append(out, e.adoptedInfo(now)...)
	e.mu.Unlock()
	sortFlows(out)
	return out
}

// CallFlows lists one call's directions like Flows, without reading any
// other call's counters: what a per-call query (NG query, /flows?call_id=)
// needs at tens of thousands of calls. Flows adopted after a restart are
// not tied to a call and are not included.
func (e *Engine) CallFlows(callID string) ([]FlowInfo, error) {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok || s.deleted {
		return nil, fmt.Errorf("session %q: %w", callID, ErrSessionNotFound)
	}
	out := e.sessionFlows(s, now, []FlowInfo{})
	sortFlows(out)
	return out, nil
}

// sessionFlows appends s's valid directions to out; e.mu is held.
func (e *Engine) sessionFlows(s *session, now time.Time, out []FlowInfo) []FlowInfo {
	for _, st := range s.streams {
		for i := range st.dirs {
			d := &st.dirs[i]
			if !d.valid {
				continue
			}
			k, u := e.dirStats(d)
			t := k.Add(u)
			fi := FlowInfo{CallID: s.callID, Stream: st.index, Side: d.from, Component: "rtp",
				Local: d.key().Local, Peer: d.peer, Out: d.out(), Dst: d.dst,
				Path: PathUserspace, State: StateActive, KernelError: d.kernErr,
				Packets: t.Packets, Bytes: t.Bytes, LastSeen: t.LastSeen}
			if d.comp == compRTCP {
				fi.Component = "rtcp"
			}
			if d.inKern && !d.learning {
				fi.Path = PathKernel
			}
			if d.in != nil {
				in := d.in.Info()
				fi.In = &in
			}
			if d.outLeg != nil {
				out := d.outLeg.Info()
				fi.OutLeg = &out
			}
			fi.RTCPDst, fi.TOS, fi.Drop = d.rtcpDst, d.tos, d.drop
			fi.UserspaceOnly = Flow{In: d.in, OutLeg: d.outLeg, RTCPOut: d.rtcpOut}.UserspaceOnly()
			fi.State = flowState(d.learning, t.LastSeen, d.since, now)
			lt := st.legs[d.from].latch[d.comp]
			fi.Latch, fi.Rank = lt.Phase(), lt.Rank
			out = append(out, fi)
		}
	}
	return out
}

// flowState is a flow's state for listings: learning until latched, idle
// after idleAfter without a packet (counted from its install when it has
// never seen one), else active.
func flowState(learning bool, lastSeen, since, now time.Time) string {
	if lastSeen.IsZero() {
		lastSeen = since
	}
	switch {
	case learning:
		return StateLearning
	case now.Sub(lastSeen) >= idleAfter:
		return StateIdle
	}
	return StateActive
}

func sortFlows(out []FlowInfo) {
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.CallID != b.CallID {
			return a.CallID < b.CallID
		}
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		if a.Side != b.Side {
			return a.Side < b.Side
		}
		return a.Component < b.Component
	})
}

// Stats returns engine-wide totals. Like Flows it reads every flow's
// counters. A call that ends during the walk is left out of the packet
// totals of this one snapshot, rather than counted twice: an undercount
// cannot make a monitoring counter go backwards at the next poll.
func (e *Engine) Stats() Totals {
	t := Totals{
		Path: e.PathName(), PathReason: e.PathReason(), LatchDrops: e.latchDrops.Load(), WindowLocks: e.windowLocks.Load(),
		DTLSHandshakes: e.dtlsDone.Load(), CryptoLegFailures: e.legFails.Load(),
		PierceNAT: e.pierces.Load(), PierceNATErrors: e.pierceErrors.Load(),
		UserspaceCounters: e.slow.Counters(), UserspaceSockets: e.slow.Sockets(),
	}
	var kern, user FlowStats
	now := e.now()
	e.walk(func() {
		t.Draining, t.Sessions = e.draining, len(e.sessions)
		kern, user = e.endedKern, e.endedUser
		for _, g := range e.adopted {
			for _, f := range g.flows {
				st := e.adoptedStats(f)
				kern = kern.Add(st)
				if f.Key.Local.Port()%2 == 0 { // RTP ports are even (portPool)
					t.ActiveRTP.add(now.Sub(st.LastSeen) < activeWindow, false)
				}
				t.Flows++
				t.KernelFlows++
				t.AdoptedFlows++
			}
		}
		for _, p := range e.pools {
			t.Pools = append(t.Pools, PoolInfo{Name: p.cfg.Name, Local: p.cfg.Local, Advertised: p.cfg.Advertised,
				FreePairs: p.pool.available(), TotalPairs: p.pool.total()})
		}
	}, func(s *session) {
		for _, st := range s.streams {
			for i := range st.dirs {
				d := &st.dirs[i]
				k, u := e.dirStats(d)
				kern, user = kern.Add(k), user.Add(u)
				if !d.valid {
					continue
				}
				t.Flows++
				if d.inKern && !d.learning {
					t.KernelFlows++
				} else {
					t.UserspaceFlows++
				}
				if d.comp == compRTP {
					t.ActiveRTP.add(now.Sub(k.LastSeen) < activeWindow, now.Sub(u.LastSeen) < activeWindow)
				}
			}
		}
	})
	t.KernelPackets, t.KernelBytes = kern.Packets, kern.Bytes
	t.UserspacePackets, t.UserspaceBytes = user.Packets, user.Bytes
	if e.kernel != nil {
		c, err := e.kernel.Counters()
		t.KernelCounters = c
		if err != nil {
			t.KernelCountersError = err.Error()
		}
	}
	return t
}
