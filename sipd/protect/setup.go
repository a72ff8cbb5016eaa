package protect

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// Setup caps what calls in setup (an INVITE forwarded, no final answer
// yet) from callers who did not authenticate may hold: a number of calls
// per source address, and, all of them together, a number of relay port
// pairs. A proxy has to take calls from strangers (inbound calls to its
// users), and each relayed one holds ports for as long as the phone rings;
// without a bound a few dozen INVITEs empty the pool. The per-source cap
// stops one stranger; the global bound stops one who forges many source
// addresses (UDP), so that authenticated users always find ports.
//
// Authenticated callers and exempt sources are not the Setup's business:
// the caller does not ask for them. Counting them per source would hand a
// forger of their address the power to refuse their calls.
type Setup struct {
	perSource int
	budget    int

	mu       sync.Mutex
	bySource map[netip.Addr]int
	calls    int
	held     int

	refusedPerSource, refusedShare atomic.Uint64
}

// NewSetup returns a Setup allowing perSource calls in setup per source
// address and budget relay port pairs for all of them; 0 leaves either
// unbounded.
func NewSetup(perSource, budget int) *Setup {
	return &Setup{perSource: perSource, budget: budget, bySource: map[netip.Addr]int{}}
}

// Hold is one admitted call in setup; Release it when the call gets its
// final answer (or is refused after all).
type Hold struct {
	s     *Setup
	src   netip.Addr
	pairs int
	done  bool
}

// Acquire admits a call from src whose offer takes pairs relay port
// pairs, or refuses it with ErrSetupPerSource or ErrSetupShare (counted).
// A nil Setup admits everything (with a nil Hold).
func (s *Setup) Acquire(src netip.Addr, pairs int) (*Hold, error) {
	if s == nil {
		return nil, nil
	}
	src = src.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perSource > 0 && s.bySource[src] >= s.perSource {
		s.refusedPerSource.Add(1)
		return nil, ErrSetupPerSource
	}
	if s.budget > 0 && s.held+pairs > s.budget {
		s.refusedShare.Add(1)
		return nil, ErrSetupShare
	}
	s.bySource[src]++
	s.calls++
	s.held += pairs
	return &Hold{s: s, src: src, pairs: pairs}, nil
}

// Release ends the hold; later calls, and calls on nil, do nothing.
func (h *Hold) Release() {
	if h == nil {
		return
	}
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.done {
		return
	}
	h.done = true
	s.calls--
	s.held -= h.pairs
	if n := s.bySource[h.src] - 1; n > 0 {
		s.bySource[h.src] = n
	} else {
		delete(s.bySource, h.src)
	}
}

// SetupStats are the Setup's gauges and counters.
type SetupStats struct {
	Calls, Pairs     int // admitted calls in setup, and the pairs they hold
	Budget           int // pairs they may hold together; 0: no bound
	RefusedPerSource uint64
	RefusedShare     uint64
}

// Stats returns the gauges and counters.
func (s *Setup) Stats() SetupStats {
	if s == nil {
		return SetupStats{}
	}
	s.mu.Lock()
	st := SetupStats{Calls: s.calls, Pairs: s.held, Budget: s.budget}
	s.mu.Unlock()
	st.RefusedPerSource, st.RefusedShare = s.refusedPerSource.Load(), s.refusedShare.Load()
	return st
}
