package relay

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"
)

// FlowWithStats is one flow a kernel path holds, with its counters.
type FlowWithStats struct {
	Flow  Flow
	Stats FlowStats
}

// KernelLister is implemented by a kernel path whose flows outlive the
// process (pinned maps). After a restart the new engine adopts them: they
// keep forwarding, their ports are not handed to new calls, and they are
// deleted once idle for MediaTimeout, since no SIP dialog will ever end
// them.
type KernelLister interface {
	ListFlows() ([]FlowWithStats, error)
}

// AdoptedPrefix starts the call id under which adopted flows are shown.
const AdoptedPrefix = "adopted:"

// adoptedGroup is the flows of one former call: port pairs joined by
// flows that arrive on one and leave from the other.
type adoptedGroup struct {
	id      string
	flows   []Flow
	pairs   []pairRef // reserved in a pool; freed with the group
	since   time.Time
	checkAt time.Time
}

type pairRef struct {
	pool *addrPool
	rtp  uint16
}

func pairOf(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()&^1)
}

// poolOf finds the pool whose range holds the pair; nil if none does (the
// configuration changed since the flow was installed). A local address
// shared by several interfaces has one addrPool per name: name
// picks among them when one has that name, else the first is taken.
func (e *Engine) poolOf(pair netip.AddrPort, name string) *addrPool {
	var first *addrPool
	for _, p := range e.pools {
		if p.cfg.Local == pair.Addr() && p.pool.holds(pair.Port()) {
			if p.cfg.Name == name {
				return p
			}
			if first == nil {
				first = p
			}
		}
	}
	return first
}

// Adopt takes over the flows the kernel path holds that no session of this
// engine knows: those a previous process installed. Call it once, after
// NewEngine and before the first session. It returns the number of flows
// adopted. A kernel path that cannot list flows adopts nothing.
//
// Adopted flows show in Flows and Stats, under a call id AdoptedPrefix +
// the lowest relay address:port of the former call, and DeleteSession of
// that id removes them; Session and Sessions leave them out, since there
// is no SDP state to show. Their timeout emits no Event: no SIP dialog
// owns them.
func (e *Engine) Adopt() (int, error) {
	kl, ok := e.kernel.(KernelLister)
	if e.kernel == nil || !ok {
		return 0, nil
	}
	list, err := kl.ListFlows()
	if err != nil {
		return 0, fmt.Errorf("adopt kernel flows: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return 0, fmt.Errorf("adopt kernel flows: %w", ErrEngineClosed)
	}
	adopted := map[netip.AddrPort]bool{}
	for _, g := range e.adopted {
		for _, f := range g.flows {
			adopted[f.Key.Local] = true
		}
	}
	var flows []Flow
	for _, fs := range list {
		f := fs.Flow
		f.Key.Local = unmap(f.Key.Local)
		f.Out = unmap(f.Out)
		if !f.Key.Local.IsValid() || adopted[f.Key.Local] {
			continue
		}
		if _, mine := e.flows[f.Key.Local]; mine {
			continue
		}
		flows = append(flows, f)
	}
	if len(flows) == 0 {
		return 0, nil
	}

	// Union-find over port pairs: a call's flows link its two legs' pairs
	// (A→B arrives on A's pair and leaves from B's), so each component is
	// one former call.
	parent := map[netip.AddrPort]netip.AddrPort{}
	var find func(x netip.AddrPort) netip.AddrPort
	find = func(x netip.AddrPort) netip.AddrPort {
		p, ok := parent[x]
		if !ok {
			parent[x] = x
			return x
		}
		if p == x {
			return x
		}
		r := find(p)
		parent[x] = r
		return r
	}
	for _, f := range flows {
		a := find(pairOf(f.Key.Local))
		if f.Out.IsValid() {
			if b := find(pairOf(f.Out)); a != b {
				parent[b] = a
			}
		}
	}
	byRoot := map[netip.AddrPort]*adoptedGroup{}
	members := map[netip.AddrPort][]netip.AddrPort{}
	for x := range parent {
		r := find(x)
		members[r] = append(members[r], x)
	}
	now := e.now()
	for _, f := range flows {
		r := find(pairOf(f.Key.Local))
		g := byRoot[r]
		if g == nil {
			g = &adoptedGroup{since: now, checkAt: now.Add(e.cfg.MediaTimeout)}
			byRoot[r] = g
		}
		g.flows = append(g.flows, f)
	}

	// Reserve all pairs of a pool in one pass: rebuilding a pool's free
	// ring per pair would be quadratic at 50,000 calls.
	want := map[*addrPool][]uint16{}
	for _, ms := range members {
		for _, m := range ms {
			if p := e.poolOf(m, ""); p != nil {
				want[p] = append(want[p], m.Port())
			}
		}
	}
	reserved := map[netip.AddrPort]bool{}
	for p, rtps := range want {
		for _, rtp := range p.pool.reserve(rtps) {
			reserved[netip.AddrPortFrom(p.cfg.Local, rtp)] = true
		}
	}
	n := 0
	for r, g := range byRoot {
		ms := members[r]
		sort.Slice(ms, func(i, j int) bool { return ms[i].Compare(ms[j]) < 0 })
		g.id = AdoptedPrefix + ms[0].String()
		for _, m := range ms {
			if reserved[m] {
				g.pairs = append(g.pairs, pairRef{pool: e.poolOf(m, ""), rtp: m.Port()})
			}
		}
		sort.Slice(g.flows, func(i, j int) bool { return g.flows[i].Key.Local.Compare(g.flows[j].Key.Local) < 0 })
		e.adopted[g.id] = g
		n += len(g.flows)
	}
	e.log.Warn("adopted kernel flows left by a previous process; they forward until idle for the media timeout",
		"flows", n, "calls", len(byRoot), "timeout", e.cfg.MediaTimeout)
	return n, nil
}

// deleteAdopted removes a group's flows from the kernel and frees its
// ports. Called with e.mu held.
func (e *Engine) deleteAdopted(g *adoptedGroup) {
	for _, f := range g.flows {
		var st FlowStats
		e.retire(e.kernel, f.Key, &st)
		e.endedKern = e.endedKern.Add(st)
	}
	for _, p := range g.pairs {
		if err := p.pool.pool.free(p.rtp); err != nil {
			e.log.Error("free adopted relay ports", "call", g.id, "err", err)
		}
	}
	delete(e.adopted, g.id)
}

// adoptedStats reads the live counters of one adopted flow; a flow gone
// from the kernel (deleted by relayctl) counts as silent.
func (e *Engine) adoptedStats(f Flow) FlowStats {
	st, err := e.kernel.Stats(f.Key)
	if err != nil && !errors.Is(err, ErrFlowNotFound) {
		e.log.Warn("stats of adopted flow", "flow", f.Key.String(), "err", err)
	}
	return st
}

// scanAdopted deletes groups silent for MediaTimeout. Like scan, a group is
// only read when its checkAt is due. Called with e.mu held.
func (e *Engine) scanAdopted(now time.Time) {
	for _, g := range e.adopted {
		if now.Before(g.checkAt) {
			continue
		}
		last := g.since
		for _, f := range g.flows {
			if s := e.adoptedStats(f); s.LastSeen.After(last) {
				last = s.LastSeen
			}
		}
		if now.Sub(last) < e.cfg.MediaTimeout {
			g.checkAt = last.Add(e.cfg.MediaTimeout)
			continue
		}
		e.log.Info("adopted flows idle: removed", "call", g.id, "flows", len(g.flows), "last_packet", last)
		e.deleteAdopted(g)
	}
}

// adoptedInfo lists adopted flows the way Flows lists sessions' flows.
// Called with e.mu held.
func (e *Engine) adoptedInfo(now time.Time) []FlowInfo {
	var out []FlowInfo
	for _, g := range e.adopted {
		first := pairOf(g.flows[0].Key.Local)
		for _, f := range g.flows {
			s := e.adoptedStats(f)
			fi := FlowInfo{CallID: g.id, Side: SideA, Component: "rtp", Local: f.Key.Local, Peer: f.Peer,
				Out: f.Out, Dst: f.Dst, Path: PathKernel, State: StateActive,
				Packets: s.Packets, Bytes: s.Bytes, LastSeen: s.LastSeen}
			if pairOf(f.Key.Local) != first {
				fi.Side = SideB
			}
			if f.Key.Local.Port()%2 == 1 {
				fi.Component = "rtcp"
			}
			// A learning flow stays so: the slow path that would latch
			// it has gone with the old process.
			fi.State = flowState(f.Learning, s.LastSeen, g.since, now)
			fi.Latch = LatchLocked
			if f.Learning {
				fi.Latch = LatchLearning
			}
			out = append(out, fi)
		}
	}
	return out
}
