// Package usrelay is the userspace Datapath: a Go relay that forwards RTP
// with one UDP socket per relay port, recvmmsg/sendmmsg batches and a few
// OS-thread-locked workers driven by epoll. It is the fallback when the
// kernel path is unavailable and the slow path (latching) when it is.
package usrelay

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"sipxdp/relay"
	"sipxdp/relay/cryptoleg"
)

// Verdict is what the relay does with one datagram.
type Verdict uint8

const (
	Forward Verdict = iota
	Drop
)

func (v Verdict) String() string {
	if v == Forward {
		return "forward"
	}
	return "drop"
}

// Reason says why a datagram was dropped; it indexes the counters.
type Reason uint8

const (
	ReasonNone        Reason = iota
	ReasonNoFlow             // no flow has this local address:port
	ReasonWrongSource        // locked flow, not from its source: foreign
	ReasonForeign            // learning flow, a source it did not take (or a held candidate)
	ReasonStrict             // learning, strict, source IP is not the announced one
	ReasonSendError          // sendmmsg refused it
	ReasonOversize           // larger than the receive buffer (MSG_TRUNC)
	ReasonSRTP               // SRTP that did not decrypt, or media before the leg's keys (cryptoleg counts which)
	ReasonNotMedia           // on a crypto leg's port: neither STUN, DTLS nor RTP (RFC 7983)
	ReasonDropTraffic        // the call drops its media (relay.Flow.Drop)
	ReasonNATWait            // the receiver asked for NAT-wait and has not sent yet (relay.Flow.Hold)
	ReasonRecvError          // recvmmsg failed
)

func (r Reason) String() string { return counterNames[r] }

// Counter slots. The drop reasons come first so a Reason indexes them.
const (
	cntReceived = iota + int(ReasonRecvError) + 1
	cntForwarded
	cntLatched   // a learning flow took a new source it forwards (provisional or locked)
	cntRelatched // ... replacing one it had taken in the window
	cntLocked    // a learning flow locked
	cntCandidate // a source held as a candidate
	// Datagrams a crypto leg's port consumed rather than forwarded.
	cntSTUN // STUN, answered or not (cryptoleg counts which)
	cntDTLS // DTLS, handed to the leg's handshake
	// How well batching works: datagrams per wakeup and per syscall.
	cntWakeups
	cntRecvCalls
	cntSendCalls
	nCounters
)

var counterNames = [nCounters]string{
	ReasonNone:        "none",
	ReasonNoFlow:      "no_flow",
	ReasonWrongSource: "wrong_source",
	ReasonForeign:     "foreign_learning",
	ReasonStrict:      "strict",
	ReasonSendError:   "send_error",
	ReasonOversize:    "oversize",
	ReasonSRTP:        "srtp",
	ReasonNotMedia:    "not_media",
	ReasonDropTraffic: "drop_traffic",
	ReasonNATWait:     "nat_wait",
	ReasonRecvError:   "recv_error",
	cntReceived:       "received",
	cntForwarded:      "forwarded",
	cntLatched:        "latched",
	cntRelatched:      "relatched",
	cntLocked:         "locked",
	cntCandidate:      "candidates",
	cntSTUN:           "stun",
	cntDTLS:           "dtls",
	cntWakeups:        "epoll_wakeups",
	cntRecvCalls:      "recvmmsg_calls",
	cntSendCalls:      "sendmmsg_calls",
}

// counters is padded to its own cache lines so that workers do not share
// lines with each other.
type counters struct {
	_ [64]byte
	c [nCounters]atomic.Uint64
	_ [64]byte
}

func (c *counters) addTo(m map[string]uint64) {
	for i := 1; i < nCounters; i++ {
		m[counterNames[i]] += c.c[i].Load()
	}
}

// Decision is the outcome for one datagram.
type Decision struct {
	Verdict Verdict
	Reason  Reason // for Drop
	Latched bool   // this datagram's source became the flow's forwarded source
	// Event is what the datagram changed in a learning flow's latch:
	// reported to the engine.
	Event latchChange
	Out   netip.AddrPort
	Dst   netip.AddrPort
	// For flows only userspace serves (crypto, RTCP demux): Packet is
	// what is sent (decrypted, re-encrypted), RTCP that it leaves by the
	// RTCP port (Out and Dst are then that port's), Consumed that STUN or
	// DTLS was taken by the leg, and Reply the STUN answer to the source.
	Packet   []byte
	RTCP     bool
	Consumed bool
	Reply    []byte
}

// latchChange is what one datagram did to a learning flow's latch: a set
// of the bits below.
type latchChange uint8

const (
	changeNone      latchChange = 0
	changeCandidate latchChange = 1 << iota // held as a candidate
	changeLatch                             // took it as the source it forwards
	changeRelatch                           // ... replacing one it had taken in the window
	changeLock                              // locked (to this source or the one it had)
)

// flowStats outlives a flow entry: replacing a flow keeps its counters.
type flowStats struct {
	packets atomic.Uint64
	bytes   atomic.Uint64
	last    atomic.Int64 // unix nanoseconds, 0 = never
}

// flowEntry is one published flow. Everything but the latch state and the
// stats is immutable once published; Upsert publishes a new entry.
type flowEntry struct {
	key    relay.FlowKey
	out    netip.AddrPort
	dst    netip.AddrPort
	strict bool
	// drop: the call drops its media (relay.Flow.Drop); nothing is
	// forwarded, latched or counted on the flow.
	drop bool

	// What a learning flow ranks sources by (see relay.Latch).
	announced netip.AddrPort
	hints     [2]netip.Addr
	until     int64 // unix ns; 0: never locks (the side has not announced)
	noCand    bool
	mode      relay.LearnMode

	// handover: a locked flow follows a new source (relay.Flow.Handover);
	// peer is then read and written under latchMu only. hold: learn but
	// forward nothing (relay.Flow.Hold).
	handover, hold bool

	// learning flips to false exactly once. peer is written before that
	// store (under latchMu) and only read after a load that saw false, so
	// the hot path reads it without a lock. While learning, peer and rank
	// are the latch (rank RankNone: nothing taken yet).
	learning atomic.Bool
	latchMu  sync.Mutex
	peer     netip.AddrPort
	rank     relay.Rank

	stats   *flowStats
	outPort *port
	dstSA   sockaddr
	dstLen  uint32

	// Set only on flows the kernel cannot serve (relay.Flow.UserspaceOnly);
	// the workers take the per-datagram path of crypto.go for them.
	special    bool
	in, outLeg *cryptoleg.Leg
	ice        bool
	rtcp       bool
	rtcpPort   *port
	rtcpSA     sockaddr
	rtcpLen    uint32
}

// decide runs the flow semantics for one datagram from src carrying n
// payload bytes, at time now (unix ns). It is shared by Table.Process and
// the workers so that the fixtures test the code that runs. A locked flow
// costs one atomic load and a compare.
func (e *flowEntry) decide(src netip.AddrPort, n int, now int64) (Verdict, Reason, latchChange) {
	if e.drop {
		// rtpengine drops before it latches or counts (stream_packet in
		// its media_socket.c).
		return Drop, ReasonDropTraffic, changeNone
	}
	if e.learning.Load() || e.handover {
		e.latchMu.Lock()
		if e.learning.Load() {
			ch, r := e.learn(src, now)
			e.latchMu.Unlock()
			if r != ReasonNone {
				return Drop, r, ch
			}
			if e.hold {
				return Drop, ReasonNATWait, ch
			}
			e.account(n, now)
			return Forward, ReasonNone, ch
		}
		if e.handover {
			ch := changeNone
			if src != e.peer {
				// rtpengine's media handover: the endpoint is re-learned.
				e.peer = src
				ch = changeLatch | changeRelatch | changeLock
			}
			e.latchMu.Unlock()
			if e.hold {
				return Drop, ReasonNATWait, ch
			}
			e.account(n, now)
			return Forward, ReasonNone, ch
		}
		e.latchMu.Unlock()
	}
	if src != e.peer {
		return Drop, ReasonWrongSource, changeNone
	}
	if e.hold {
		return Drop, ReasonNATWait, changeNone
	}
	e.account(n, now)
	return Forward, ReasonNone, changeNone
}

func (e *flowEntry) account(n int, now int64) {
	e.stats.packets.Add(1)
	e.stats.bytes.Add(uint64(n))
	e.stats.last.Store(now)
}

// learn ranks src for a learning flow (see relay.Latch) and updates the
// latch. It returns a drop reason, or ReasonNone when the datagram is to
// be forwarded (src is then the peer). Called with latchMu held.
func (e *flowEntry) learn(src netip.AddrPort, now int64) (latchChange, Reason) {
	r := relay.RankOf(src, e.announced, e.hints, e.strict)
	if e.strict && r < relay.RankIP {
		return changeNone, ReasonStrict
	}
	took := e.rank != relay.RankNone
	switch e.mode {
	case relay.LearnImmediate:
		// rtpengine's immediate: the first packet's source is the endpoint.
		e.peer, e.rank = src, r
		e.lock()
		return changeLatch | changeLock, ReasonNone
	case relay.LearnDelayed:
		// rtpengine's delayed: every source is trusted alike and the
		// latest wins until the window closes.
		if r < relay.RankIP {
			r = relay.RankIP
		}
		if r < relay.RankExact && (e.until == 0 || now < e.until) {
			if took && src == e.peer {
				return changeNone, ReasonNone
			}
			ch := changeLatch
			if took {
				ch |= changeRelatch
			}
			e.peer, e.rank = src, r
			return ch, ReasonNone
		}
	}
	if e.until != 0 && now >= e.until {
		// The window has closed: lock to what it latched, or else to the
		// first trusted source.
		switch {
		case took:
			e.lock()
			if src != e.peer {
				return changeLock, ReasonWrongSource
			}
			return changeLock, ReasonNone
		case r >= relay.RankIP:
			e.peer, e.rank = src, r
			e.lock()
			return changeLatch | changeLock, ReasonNone
		}
		return changeNone, ReasonForeign
	}
	if r == relay.RankExact {
		// The announced address itself: nothing can beat it.
		ch := changeLatch | changeLock
		if took && e.rank >= relay.RankIP {
			ch |= changeRelatch
		}
		e.peer, e.rank = src, r
		e.lock()
		return ch, ReasonNone
	}
	if took && src == e.peer {
		if e.rank == relay.RankOther {
			return changeNone, ReasonForeign // a candidate waits for the window to close
		}
		return changeNone, ReasonNone
	}
	if r <= e.rank || (r == relay.RankOther && e.noCand) {
		return changeNone, ReasonForeign
	}
	prev := e.rank
	e.peer, e.rank = src, r
	switch {
	case r == relay.RankOther:
		return changeCandidate, ReasonForeign
	case prev >= relay.RankIP:
		return changeLatch | changeRelatch, ReasonNone
	}
	return changeLatch, ReasonNone
}

// lock makes the latched peer final. Called with latchMu held.
func (e *flowEntry) lock() { e.learning.Store(false) }

// latchState is the entry's latch as the engine knows it.
func (e *flowEntry) latchState() relay.Latch {
	e.latchMu.Lock()
	defer e.latchMu.Unlock()
	l := relay.Latch{Rank: e.rank, Locked: !e.learning.Load()}
	if l.Rank != relay.RankNone || l.Locked {
		l.Source = e.peer
	}
	return l
}

// event is what the engine is told after a datagram changed the latch.
func (e *flowEntry) event() relay.LatchEvent {
	return relay.LatchEvent{Key: e.key, Latch: e.latchState(), Announced: e.announced}
}

// port is one relay address:port. The Relay backs it with a socket; a bare
// Table leaves fd at -1.
type port struct {
	addr netip.AddrPort
	// flow is the flow whose Key.Local is addr, nil if none.
	flow atomic.Pointer[flowEntry]
	// refs counts the flow receiving here plus every flow sending from
	// here. Guarded by Table.mu.
	refs int
	fd   int
	w    *worker
	// tos is the socket's IP_TOS or IPV6_TCLASS (Relay.setTOS).
	tos int
}

// Table holds the flows and the reference counts of the ports they use.
// Lookups by the workers go through a port's atomic flow pointer and take
// no lock; writers serialise on mu.
type Table struct {
	mu    sync.RWMutex
	ports map[netip.AddrPort]*port
	cnt   counters
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{ports: make(map[netip.AddrPort]*port)}
}

func normalize(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func validate(f relay.Flow) error {
	switch {
	case !f.Key.Local.IsValid() || f.Key.Local.Port() == 0:
		return fmt.Errorf("invalid local address: %w", relay.ErrUnsupportedFlow)
	case !f.Out.IsValid() || f.Out.Port() == 0:
		return fmt.Errorf("invalid out address %s: %w", f.Out, relay.ErrUnsupportedFlow)
	case !f.Dst.IsValid() || f.Dst.Port() == 0:
		return fmt.Errorf("invalid destination %s: %w", f.Dst, relay.ErrUnsupportedFlow)
	case f.Out.Addr().Unmap().Is4() != f.Dst.Addr().Unmap().Is4():
		// A socket bound to one family cannot reach the other; the
		// family change happens between Key.Local and Out.
		return fmt.Errorf("out %s and destination %s differ in family: %w", f.Out, f.Dst, relay.ErrUnsupportedFlow)
	case f.RTCPOut.IsValid() && (f.RTCPOut.Port() == 0 || !f.RTCPDst.IsValid() || f.RTCPDst.Port() == 0 ||
		f.RTCPOut.Addr().Unmap().Is4() != f.RTCPDst.Addr().Unmap().Is4()):
		return fmt.Errorf("invalid rtcp out %s or destination %s: %w", f.RTCPOut, f.RTCPDst, relay.ErrUnsupportedFlow)
	}
	return nil
}

// Upsert installs or replaces the flow for f.Key. Replacing keeps the
// flow's counters.
func (t *Table) Upsert(f relay.Flow) error {
	if _, err := t.upsert(f, nil, nil); err != nil {
		return fmt.Errorf("upsert %s: %w", f.Key, err)
	}
	return nil
}

// upsert installs f. open is called for every port that does not exist yet,
// before the flow is published; undo closes ports opened here if a later
// open fails. It returns the ports no flow references any more; the caller
// closes them.
func (t *Table) upsert(f relay.Flow, open func(*port) error, undo func([]*port)) ([]*port, error) {
	if err := validate(f); err != nil {
		return nil, err
	}
	local, out := normalize(f.Key.Local), normalize(f.Out)
	t.mu.Lock()
	defer t.mu.Unlock()

	get := func(a netip.AddrPort) (*port, bool) {
		if p := t.ports[a]; p != nil {
			return p, false
		}
		return &port{addr: a, fd: -1}, true
	}
	lp, lnew := get(local)
	op, onew := lp, false
	if out != local {
		op, onew = get(out)
	}
	var rp *port
	rnew := false
	rtcpOut := normalize(f.RTCPOut)
	if f.RTCPOut.IsValid() {
		switch rtcpOut {
		case local:
			rp = lp
		case out:
			rp = op
		default:
			rp, rnew = get(rtcpOut)
		}
	}
	if open != nil {
		var opened []*port
		for _, n := range []struct {
			p   *port
			new bool
		}{{lp, lnew}, {op, onew}, {rp, rnew}} {
			if !n.new {
				continue
			}
			if err := open(n.p); err != nil {
				if len(opened) > 0 {
					undo(opened)
				}
				return nil, err
			}
			opened = append(opened, n.p)
		}
	}
	if lnew {
		t.ports[local] = lp
	}
	if onew {
		t.ports[out] = op
	}
	if rnew {
		t.ports[rtcpOut] = rp
	}

	e := &flowEntry{
		key:     relay.FlowKey{Local: local},
		out:     out,
		dst:     normalize(f.Dst),
		strict:  f.Strict,
		drop:    f.Drop,
		peer:    normalize(f.Peer),
		rank:    f.Rank,
		outPort: op,
	}
	if f.Learning || f.Handover {
		// A handover's report names the SDP address it moved against.
		e.announced = normalize(f.Announced)
	}
	if f.Learning {
		for i, h := range f.Hints {
			e.hints[i] = h.Unmap()
		}
		if !f.LearnUntil.IsZero() {
			e.until = f.LearnUntil.UnixNano()
		}
		e.noCand = f.NoCandidates || f.Strict
		e.mode = f.Learn
	}
	e.handover, e.hold = f.Handover, f.Hold
	e.learning.Store(f.Learning)
	e.dstSA, e.dstLen = encodeSockaddr(e.dst, out.Addr().Is6())
	g := f
	g.Hold = false // Hold alone needs no per-datagram path: decide drops
	if g.UserspaceOnly() != "" {
		e.special = true
		e.in, e.outLeg, e.ice, e.rtcp = f.In, f.OutLeg, f.ICE, f.RTCP
		if rp != nil {
			e.rtcpPort = rp
			e.rtcpSA, e.rtcpLen = encodeSockaddr(normalize(f.RTCPDst), rtcpOut.Addr().Is6())
		}
	}
	old := lp.flow.Load()
	if old != nil {
		e.stats = old.stats
		if f.Learning && old.announced == e.announced && old.strict == e.strict {
			keepLatch(e, old)
		}
	} else {
		e.stats = new(flowStats)
	}
	lp.refs++
	op.refs++
	if rp != nil {
		rp.refs++
	}
	lp.flow.Store(e)
	if old == nil {
		return nil, nil
	}
	return t.release(old.ports(lp)...), nil
}

// ports are the ports e holds a reference on, receiving on lp.
func (e *flowEntry) ports(lp *port) []*port {
	if e.rtcpPort != nil {
		return []*port{lp, e.outPort, e.rtcpPort}
	}
	return []*port{lp, e.outPort}
}

// keepLatch carries what old decided into e, which replaces it while
// learning against the same announced address: the engine's copy of the
// latch may lag behind (its reports are still queued), and must not take
// a flow back to an earlier state. Only a new announcement resets it.
func keepLatch(e, old *flowEntry) {
	old.latchMu.Lock()
	defer old.latchMu.Unlock()
	switch {
	case !old.learning.Load():
		e.peer, e.rank = old.peer, old.rank
		e.learning.Store(false)
	case old.rank > e.rank:
		e.peer, e.rank = old.peer, old.rank
	}
}

// release drops one reference from each port and returns those left
// unreferenced, removed from the table. Caller holds mu.
func (t *Table) release(ps ...*port) []*port {
	var gone []*port
	for _, p := range ps {
		p.refs--
		if p.refs == 0 {
			delete(t.ports, p.addr)
			gone = append(gone, p)
		}
	}
	return gone
}

// Delete removes the flow for k.
func (t *Table) Delete(k relay.FlowKey) error {
	_, err := t.delete(k)
	return err
}

func (t *Table) delete(k relay.FlowKey) ([]*port, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	lp := t.ports[normalize(k.Local)]
	if lp == nil || lp.flow.Load() == nil {
		return nil, fmt.Errorf("delete %s: %w", k, relay.ErrFlowNotFound)
	}
	old := lp.flow.Load()
	lp.flow.Store(nil)
	return t.release(old.ports(lp)...), nil
}

// entry is the flow installed on the relay address local, or nil. The
// entry is read after the lock is let go: ports hold it in an atomic
// pointer, so a flow replaced meanwhile is seen whole, old or new.
func (t *Table) entry(local netip.AddrPort) *flowEntry {
	t.mu.RLock()
	lp := t.ports[normalize(local)]
	t.mu.RUnlock()
	if lp == nil {
		return nil
	}
	return lp.flow.Load()
}

// Stats returns the counters of the flow for k.
func (t *Table) Stats(k relay.FlowKey) (relay.FlowStats, error) {
	e := t.entry(k.Local)
	if e == nil {
		return relay.FlowStats{}, fmt.Errorf("stats %s: %w", k, relay.ErrFlowNotFound)
	}
	s := relay.FlowStats{Packets: e.stats.packets.Load(), Bytes: e.stats.bytes.Load()}
	if ns := e.stats.last.Load(); ns != 0 {
		s.LastSeen = time.Unix(0, ns)
	}
	return s, nil
}

// Latch returns what the flow has latched, as the report the engine gets
// (relay.LatchReader).
func (t *Table) Latch(k relay.FlowKey) (relay.LatchEvent, error) {
	e := t.entry(k.Local)
	if e == nil {
		return relay.LatchEvent{}, fmt.Errorf("latch %s: %w", k, relay.ErrFlowNotFound)
	}
	return e.event(), nil
}

// Len returns the number of ports the table references.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.ports)
}

// Process decides what to do with a datagram of payloadLen bytes that
// arrived at local from src, updating flow and table counters. It is the
// same decision the workers make, reached through a map lookup instead of
// the socket.
func (t *Table) Process(local, src netip.AddrPort, payloadLen int) Decision {
	return t.ProcessAt(local, src, payloadLen, time.Now())
}

// ProcessAt is Process at a given time, for tests of the learning window.
func (t *Table) ProcessAt(local, src netip.AddrPort, payloadLen int, now time.Time) Decision {
	e := t.entry(local)
	t.cnt.c[cntReceived].Add(1)
	if e == nil {
		t.cnt.c[ReasonNoFlow].Add(1)
		return Decision{Verdict: Drop, Reason: ReasonNoFlow}
	}
	if e.special {
		return t.processSpecial(e, normalize(src), make([]byte, payloadLen), now)
	}
	v, r, ch := e.decide(normalize(src), payloadLen, now.UnixNano())
	t.cnt.countChange(ch)
	if v != Forward {
		t.cnt.c[r].Add(1)
		return Decision{Verdict: v, Reason: r, Event: ch}
	}
	t.cnt.c[cntForwarded].Add(1)
	return Decision{Verdict: Forward, Latched: latchedBy(ch), Event: ch, Out: e.out, Dst: e.dst}
}

// ProcessPacket is Process for a datagram whose bytes matter: flows the
// relay terminates crypto on decide by them (STUN, DTLS, SRTP).
func (t *Table) ProcessPacket(local, src netip.AddrPort, pkt []byte, now time.Time) Decision {
	e := t.entry(local)
	if e == nil || !e.special {
		return t.ProcessAt(local, src, len(pkt), now)
	}
	t.cnt.c[cntReceived].Add(1)
	return t.processSpecial(e, normalize(src), pkt, now)
}

func (t *Table) processSpecial(e *flowEntry, src netip.AddrPort, pkt []byte, now time.Time) Decision {
	dec, enc := make([]byte, 0, bufSize+64), make([]byte, 0, bufSize+64)
	o := e.decideSpecial(pkt, src, now.UnixNano(), dec, enc)
	t.cnt.countChange(o.change)
	d := Decision{Event: o.change, Latched: latchedBy(o.change)}
	switch {
	case o.consumed:
		d.Verdict, d.Consumed, d.Reply = Drop, true, o.reply
	case o.verdict != Forward:
		t.cnt.c[o.reason].Add(1)
		d.Verdict, d.Reason = Drop, o.reason
	default:
		t.cnt.c[cntForwarded].Add(1)
		d.Verdict, d.Packet, d.RTCP, d.Out, d.Dst = Forward, o.pkt, o.rtcp, e.out, e.dst
		if o.rtcp {
			d.Out = e.rtcpPort.addr
			d.Dst, _ = decodeSockaddr(&e.rtcpSA, e.rtcpLen)
		}
	}
	return d
}

// latchedBy reports whether a change made the datagram's source the one
// the flow forwards.
func latchedBy(ch latchChange) bool { return ch&changeLatch != 0 }

// countChange counts what a datagram did to a latch.
func (c *counters) countChange(ch latchChange) {
	if ch == changeNone {
		return
	}
	for _, b := range [...]struct {
		bit latchChange
		cnt int
	}{{changeCandidate, cntCandidate}, {changeLatch, cntLatched}, {changeRelatch, cntRelatched}, {changeLock, cntLocked}} {
		if ch&b.bit != 0 {
			c.c[b.cnt].Add(1)
		}
	}
}

// Counters returns the table's own counters (those of Process).
func (t *Table) Counters() map[string]uint64 {
	m := make(map[string]uint64)
	t.cnt.addTo(m)
	addDropped(m)
	return m
}

func addDropped(m map[string]uint64) {
	var d uint64
	for r := ReasonNoFlow; r <= ReasonRecvError; r++ {
		d += m[counterNames[r]]
	}
	m["dropped"] = d
}
