// Package protect keeps abusive or broken traffic away from the SIP core:
// per-source flood detection with a temporary ban (Kamailio's pike and
// ipban together), the way back in for the real owner of a banned address
// (Binder, ScanRequest), a cap on calls in setup (Setup), and a sanity
// check of every request.
package protect

import (
	"errors"
	"net/netip"
	"sync"
	"time"
)

// Refusals of Setup.Acquire.
var (
	ErrSetupPerSource = errors.New("too many calls in setup from this source")
	ErrSetupShare     = errors.New("calls in setup from unauthenticated callers hold their share of the relay")
)

// maxTracked bounds each of Pike's tables. A flood from random forged
// sources would otherwise grow them by one entry per address; past the
// bound new sources are neither counted nor banned (a spoofer that varies
// its source defeats a per-source limit anyway), and the memory stays
// within a few tens of megabytes.
const maxTracked = 1 << 18

// PassKind is the proof a request from a banned source carried, each with
// a budget of its own so that a cheap proof cannot spend a strong one's.
type PassKind int

// Proofs.
const (
	// PassCredentials: digest credentials whose nonce was issued to this
	// address (Binder). Only the address's real owner has them.
	PassCredentials PassKind = iota
	// PassDialog: an in-dialog request naming a live dialog.
	PassDialog
	// PassResponse: a response whose branch is one of sipd's. Counted,
	// not limited: responses from sources that are not banned are not
	// limited either (Allow counts requests only).
	PassResponse
	passKinds
)

// Pike counts requests per source IP in fixed windows; a source over the
// limit in one window is banned for banTime, and what it sends in that
// time is dropped without a reply, so a flood costs no writes.
//
// Over UDP the source can be forged, so a ban can land on an innocent
// address. Its owner gets back in with what a forger lacks: Pass lets
// through requests that proved themselves (up to limit per window and
// kind, so the owner of a banned address cannot flood with them either),
// and ChallengeSlot lets through one request per challenge interval to be
// challenged, so a phone whose nonce expired can get a new one.
type Pike struct {
	limit     int
	window    time.Duration
	banTime   time.Duration
	challenge time.Duration
	now       func() time.Time

	mu     sync.Mutex
	start  time.Time
	counts map[netip.Addr]int
	banned map[netip.Addr]*ban
	bans   uint64
	passed [passKinds]uint64
}

type ban struct {
	until         time.Time
	passStart     time.Time
	passes        [passKinds]int
	lastChallenge time.Time
}

// NewPike returns a limiter; limit 0 disables it (Allow always true).
func NewPike(limit int, window, banTime time.Duration, now func() time.Time) *Pike {
	if now == nil {
		now = time.Now
	}
	return &Pike{limit: limit, window: window, banTime: banTime, now: now,
		counts: map[netip.Addr]int{}, banned: map[netip.Addr]*ban{}}
}

// SetChallengeInterval sets how often a banned source may be let through
// to be challenged (ChallengeSlot); 0, the default, never. Call it before
// the Pike is used.
func (p *Pike) SetChallengeInterval(d time.Duration) {
	if p != nil {
		p.challenge = d
	}
}

// Allow counts one request from ip and tells whether to process it: false
// when ip is banned, before or because of this request.
func (p *Pike) Allow(ip netip.Addr) bool {
	if p == nil || p.limit <= 0 {
		return true
	}
	ip = ip.Unmap()
	t := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if b, ok := p.banned[ip]; ok {
		if t.Before(b.until) {
			return false
		}
		delete(p.banned, ip)
	}
	if t.Sub(p.start) >= p.window {
		// A new window forgets everyone, which also bounds the map.
		p.start = t
		clear(p.counts)
		for k, b := range p.banned {
			if !t.Before(b.until) {
				delete(p.banned, k)
			}
		}
	}
	n, ok := p.counts[ip]
	if !ok && len(p.counts) >= maxTracked {
		return true
	}
	n++
	p.counts[ip] = n
	if n > p.limit && len(p.banned) < maxTracked {
		p.banned[ip] = &ban{until: t.Add(p.banTime)}
		p.bans++
		return false
	}
	return true
}

// liveBan locks p and returns ip's ban if it is in force (else nil), and
// the time; the caller unlocks p.mu.
func (p *Pike) liveBan(ip netip.Addr) (*ban, time.Time) {
	t := p.now()
	p.mu.Lock()
	if b, ok := p.banned[ip.Unmap()]; ok && t.Before(b.until) {
		return b, t
	}
	return nil, t
}

// Banned tells whether ip is banned now, counting nothing.
func (p *Pike) Banned(ip netip.Addr) bool {
	if p == nil || p.limit <= 0 {
		return false
	}
	b, _ := p.liveBan(ip)
	p.mu.Unlock()
	return b != nil
}

// Pass spends one unit of a banned source's allowance for requests with
// proof of the given kind: limit per window. It is true when the request
// may go on (also when ip is no longer banned).
func (p *Pike) Pass(ip netip.Addr, kind PassKind) bool {
	if p == nil || p.limit <= 0 || kind < 0 || kind >= passKinds {
		return true
	}
	b, t := p.liveBan(ip)
	defer p.mu.Unlock()
	if b == nil {
		return true
	}
	if t.Sub(b.passStart) >= p.window {
		b.passStart = t
		b.passes = [passKinds]int{}
	}
	if b.passes[kind] >= p.limit && kind != PassResponse {
		return false
	}
	b.passes[kind]++
	p.passed[kind]++
	return true
}

// ChallengeSlot tells whether a request without proof from ip may go on
// to be challenged: at most once per challenge interval while ip is
// banned (always when it is not).
func (p *Pike) ChallengeSlot(ip netip.Addr) bool {
	if p == nil || p.limit <= 0 {
		return true
	}
	b, t := p.liveBan(ip)
	defer p.mu.Unlock()
	if b == nil {
		return true
	}
	if p.challenge <= 0 || (!b.lastChallenge.IsZero() && t.Sub(b.lastChallenge) < p.challenge) {
		return false
	}
	b.lastChallenge = t
	return true
}

// PikeStats are Pike's counters.
type PikeStats struct {
	BannedNow int    // sources banned now
	Bans      uint64 // bans ever
	// Passed counts requests let through from banned sources, by proof.
	Passed [passKinds]uint64
}

// Stats returns the counters.
func (p *Pike) Stats() PikeStats {
	if p == nil {
		return PikeStats{}
	}
	t := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PikeStats{Bans: p.bans, Passed: p.passed}
	for _, b := range p.banned {
		if t.Before(b.until) {
			st.BannedNow++
		}
	}
	return st
}
