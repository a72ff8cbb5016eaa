package connguard

import (
	"fmt"
	"syscall"
)

// Budget shares a process's descriptor limit (RLIMIT_NOFILE) between the
// connections peers open and everything else, and derives the caps.
type Budget struct {
	NoFile uint64 // the limit
	// Reserved descriptors: Fixed for files, listeners, the API and NG
	// sockets and their clients; Outbound for connections the server
	// opens itself (to phones whose connection has gone, to relays); Relay
	// for relay sockets, one per port at most.
	Fixed, Outbound, Relay int
	Max, PerSource         int // the caps
}

// Parts of the budget.
const (
	FixedReserve = 128     // files, listeners, API and NG clients
	outboundDiv  = 16      // 1/16 of the limit for outbound connections
	relayDiv     = 2       // relay sockets take at most half the limit
	floorDiv     = 8       // connections get at least 1/8 of the limit
	maxDerived   = 1 << 20 // beyond this memory, not descriptors, is what runs out
	minPerSource = 8
	maxPerSource = 256
	perSourceDiv = 16 // one source may take 1/16 of Max, within the bounds above
)

// Derive shares nofile out with relayPorts relay ports in use at most.
func Derive(nofile uint64, relayPorts int) Budget {
	n := int(min(nofile, 1<<30))
	b := Budget{NoFile: nofile, Fixed: FixedReserve, Outbound: n / outboundDiv, Relay: min(max(relayPorts, 0), n/relayDiv)}
	b.Max = min(max(n-b.Fixed-b.Outbound-b.Relay, n/floorDiv, 1), maxDerived)
	b.PerSource = PerSourceFor(b.Max)
	return b
}

// PerSourceFor is the per-source cap derived from a total cap: a 16th of
// it, at least 8 and at most 256 (and never above the total).
func PerSourceFor(total int) int {
	return min(max(total/perSourceDiv, minPerSource), maxPerSource, total)
}

// Room is how many connections the limit leaves after the reserves: a
// configured Max above it may meet EMFILE.
func (b Budget) Room() int { return int(min(b.NoFile, 1<<30)) - b.Fixed - b.Outbound - b.Relay }

// NoFile returns the process's RLIMIT_NOFILE (the soft limit, which Go
// raises to the hard one at start).
func NoFile() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("getrlimit nofile: %w", err)
	}
	return r.Cur, nil
}
