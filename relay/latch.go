package relay

import (
	"fmt"
	"net/netip"
	"time"
)

// Latching: which source a direction accepts.
//
// A relay port is reachable by anyone, and the relay learns the real
// source of a side's media from its packets, since NAT rewrites it. Were
// the first packet to decide, whoever sprays the relay's ports first
// would get the call's audio and could inject into it (RTP bleed). So a
// direction learns during a window that opens with the call's signaling
// (the offer or answer that installs it, any later SDP or 2xx) and lasts
// Config.LearnWindow. Sources are ranked:
//
//   - RankExact: the address and port announced in SDP. It latches and
//     locks at once: nothing can beat it.
//   - RankIP: the announced IP on another port, or a hint: the IP the
//     side's SIP signaling came from (a NATed phone announces a private
//     address but sends from the public one its SIP uses), and for RTCP
//     the IP the side's RTP latched to. It latches provisionally: its
//     packets are forwarded and the other direction sends to it at once,
//     but a RankExact source may still take over until the window closes.
//   - RankOther: anything else. It is only held as a candidate: its
//     packets are dropped while the window is open, and it is locked when
//     the window closes if nothing better came. RTCP and a side that has
//     not announced its media yet take no candidates.
//
// Within the window a better rank replaces a worse one; an equal rank
// never replaces. When the window closes the flow is locked to what it
// latched; if it latched nothing, the first RankIP or RankExact source
// locks it at once and others are dropped. Only the locked source, or a
// new offer or answer that changes the side's address, moves a locked
// flow. Strict mode accepts RankIP only for the announced IP and never
// holds candidates.

// Rank is how strongly a source is tied to the side it claims to be.
type Rank uint8

const (
	RankNone  Rank = iota // nothing latched
	RankOther             // matches neither SDP nor signaling: a candidate
	RankIP                // the announced IP, or a hint IP
	RankExact             // the announced address and port
)

var rankNames = [...]string{RankNone: "none", RankOther: "other", RankIP: "ip", RankExact: "exact"}

func (r Rank) String() string {
	if int(r) < len(rankNames) {
		return rankNames[r]
	}
	return fmt.Sprintf("rank(%d)", uint8(r))
}

// MarshalText writes the rank's name, so saved state stays readable.
func (r Rank) MarshalText() ([]byte, error) {
	if int(r) >= len(rankNames) {
		return nil, fmt.Errorf("marshal rank %d: out of range", uint8(r))
	}
	return []byte(rankNames[r]), nil
}

// UnmarshalText reads a rank's name.
func (r *Rank) UnmarshalText(b []byte) error {
	for i, n := range rankNames {
		if string(b) == n {
			*r = Rank(i)
			return nil
		}
	}
	return fmt.Errorf("unmarshal rank %q: want none, other, ip or exact", b)
}

// Latch phases, as listings show them.
const (
	LatchLearning    = "learning"    // nothing latched, or only a candidate held
	LatchProvisional = "provisional" // forwarding; a better source may still take over
	LatchLocked      = "locked"      // final until the side announces a new address
)

// Latch is what one direction has learned about its source. It is the
// whole learning state of a flow, plain data so that it can be saved and
// given back (SetLatch) after a restart.
type Latch struct {
	// Source is the latched source, or the candidate while Rank is
	// RankOther and not Locked. Invalid while Rank is RankNone.
	Source netip.AddrPort `json:"source,omitzero"`
	Rank   Rank           `json:"rank"`
	Locked bool           `json:"locked,omitempty"`
	// Until closes the learning window. Zero while the side has not
	// announced its media: such a flow never locks.
	Until time.Time `json:"until,omitzero"`
}

// Phase names the latch's state for listings.
func (l Latch) Phase() string {
	switch {
	case l.Locked:
		return LatchLocked
	case l.Rank >= RankIP:
		return LatchProvisional
	}
	return LatchLearning
}

// Dest is where the other direction sends to reach this side: the
// latched source once it is trusted (provisional or locked), else
// invalid and the announced address is used. A candidate is never sent
// to: an attacker's would receive the call's audio.
func (l Latch) Dest() netip.AddrPort {
	if l.Locked || l.Rank >= RankIP {
		return l.Source
	}
	return netip.AddrPort{}
}

// Validate checks that a latch given back by SetLatch is consistent.
func (l Latch) Validate() error {
	switch {
	case l.Rank > RankExact:
		return fmt.Errorf("latch rank %d out of range", uint8(l.Rank))
	case l.Rank == RankNone && l.Locked:
		return fmt.Errorf("latch locked with no source")
	case l.Rank != RankNone && !known(unmap(l.Source)):
		return fmt.Errorf("latch of rank %s with source %v", l.Rank, l.Source)
	}
	return nil
}

// LatchEvent is what the slow path reports when a learning flow takes a
// new source (provisional or candidate) or locks.
type LatchEvent struct {
	Key   FlowKey
	Latch Latch // Until is not used
	// Announced is the SDP address the flow was learning against: an
	// event from before the side re-announced is stale and ignored.
	Announced netip.AddrPort
}

// RankOf ranks src against what a learning flow knows about its side:
// the announced address and the hint IPs (ignored in strict mode).
func RankOf(src, announced netip.AddrPort, hints [2]netip.Addr, strict bool) Rank {
	if announced.IsValid() && src == announced {
		return RankExact
	}
	a := src.Addr()
	if announced.IsValid() && a == announced.Addr() {
		return RankIP
	}
	if !strict {
		for _, h := range hints {
			if h.IsValid() && a == h {
				return RankIP
			}
		}
	}
	return RankOther
}
