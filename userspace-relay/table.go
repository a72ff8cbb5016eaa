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
	ReasonWrongSource        // not from the (latched) peer
	ReasonStrict             // learning, strict, source IP is not the announced one
	ReasonSendError          // sendmmsg refused it
	ReasonOversize           // larger than the receive buffer (MSG_TRUNC)
	ReasonRecvError          // recvmmsg failed
)

func (r Reason) String() string { return counterNames[r] }

// Counter slots. The drop reasons come first so a Reason indexes them.
const (
	cntReceived = iota + int(ReasonRecvError) + 1
	cntForwarded
	cntLatched
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
	ReasonStrict:      "strict",
	ReasonSendError:   "send_error",
	ReasonOversize:    "oversize",
	ReasonRecvError:   "recv_error",
	cntReceived:       "received",
	cntForwarded:      "forwarded",
	cntLatched:        "latched",
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
	Latched bool   // this datagram's source became the flow's peer
	Out     netip.AddrPort
	Dst     netip.AddrPort
}

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

	// learning flips to false exactly once. peer is written before that
	// store (under latchMu) and only read after a load that saw false, so
	// the hot path reads it without a lock.
	learning atomic.Bool
	latchMu  sync.Mutex
	peer     netip.AddrPort

	stats   *flowStats
	outPort *port
	dstSA   sockaddr
	dstLen  uint32
}

// decide runs the flow semantics for one datagram from src carrying n
// payload bytes, at time now (unix ns). It is shared by Table.Process and
// the workers so that the fixtures test the code that runs.
func (e *flowEntry) decide(src netip.AddrPort, n int, now int64) (Verdict, Reason, bool) {
	latched := false
	if e.learning.Load() {
		e.latchMu.Lock()
		if e.learning.Load() {
			if e.strict && src.Addr() != e.peer.Addr() {
				e.latchMu.Unlock()
				return Drop, ReasonStrict, false
			}
			e.peer = src
			e.learning.Store(false)
			latched = true
		}
		e.latchMu.Unlock()
	}
	if !latched && src != e.peer {
		return Drop, ReasonWrongSource, false
	}
	e.stats.packets.Add(1)
	e.stats.bytes.Add(uint64(n))
	e.stats.last.Store(now)
	return Forward, ReasonNone, latched
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
	if open != nil {
		if lnew {
			if err := open(lp); err != nil {
				return nil, err
			}
		}
		if onew {
			if err := open(op); err != nil {
				if lnew {
					undo([]*port{lp})
				}
				return nil, err
			}
		}
	}
	if lnew {
		t.ports[local] = lp
	}
	if onew {
		t.ports[out] = op
	}

	e := &flowEntry{
		key:     relay.FlowKey{Local: local},
		out:     out,
		dst:     normalize(f.Dst),
		strict:  f.Strict,
		peer:    normalize(f.Peer),
		outPort: op,
	}
	e.learning.Store(f.Learning)
	e.dstSA, e.dstLen = encodeSockaddr(e.dst, out.Addr().Is6())
	old := lp.flow.Load()
	if old != nil {
		e.stats = old.stats
	} else {
		e.stats = new(flowStats)
	}
	lp.refs++
	op.refs++
	lp.flow.Store(e)
	if old == nil {
		return nil, nil
	}
	return t.release(lp, old.outPort), nil
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
	return t.release(lp, old.outPort), nil
}

// Stats returns the counters of the flow for k.
func (t *Table) Stats(k relay.FlowKey) (relay.FlowStats, error) {
	t.mu.RLock()
	lp := t.ports[normalize(k.Local)]
	var e *flowEntry
	if lp != nil {
		e = lp.flow.Load()
	}
	t.mu.RUnlock()
	if e == nil {
		return relay.FlowStats{}, fmt.Errorf("stats %s: %w", k, relay.ErrFlowNotFound)
	}
	s := relay.FlowStats{Packets: e.stats.packets.Load(), Bytes: e.stats.bytes.Load()}
	if ns := e.stats.last.Load(); ns != 0 {
		s.LastSeen = time.Unix(0, ns)
	}
	return s, nil
}

// Peer returns the flow's current peer and whether it is still learning.
func (t *Table) Peer(k relay.FlowKey) (netip.AddrPort, bool, error) {
	t.mu.RLock()
	lp := t.ports[normalize(k.Local)]
	var e *flowEntry
	if lp != nil {
		e = lp.flow.Load()
	}
	t.mu.RUnlock()
	if e == nil {
		return netip.AddrPort{}, false, fmt.Errorf("peer %s: %w", k, relay.ErrFlowNotFound)
	}
	e.latchMu.Lock()
	defer e.latchMu.Unlock()
	return e.peer, e.learning.Load(), nil
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
	t.mu.RLock()
	lp := t.ports[normalize(local)]
	t.mu.RUnlock()
	t.cnt.c[cntReceived].Add(1)
	var e *flowEntry
	if lp != nil {
		e = lp.flow.Load()
	}
	if e == nil {
		t.cnt.c[ReasonNoFlow].Add(1)
		return Decision{Verdict: Drop, Reason: ReasonNoFlow}
	}
	v, r, latched := e.decide(normalize(src), payloadLen, time.Now().UnixNano())
	if latched {
		t.cnt.c[cntLatched].Add(1)
	}
	if v != Forward {
		t.cnt.c[r].Add(1)
		return Decision{Verdict: v, Reason: r}
	}
	t.cnt.c[cntForwarded].Add(1)
	return Decision{Verdict: Forward, Latched: latched, Out: e.out, Dst: e.dst}
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
