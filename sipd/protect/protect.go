// Package protect keeps abusive or broken traffic away from the SIP core:
// per-source flood detection with a temporary ban (Kamailio's pike and
// ipban together) and a sanity check of every request.
package protect

import (
	"net/netip"
	"sync"
	"time"
)

// Pike counts requests per source IP in fixed windows; a source over the
// limit in one window is banned for banTime, and everything it sends in
// that time is dropped without a reply, so a flood costs us no writes.
type Pike struct {
	limit   int
	window  time.Duration
	banTime time.Duration
	now     func() time.Time

	mu      sync.Mutex
	start   time.Time
	counts  map[netip.Addr]int
	banned  map[netip.Addr]time.Time
	bans    uint64
	dropped uint64
}

// NewPike returns a limiter; limit 0 disables it (Allow always true).
func NewPike(limit int, window, banTime time.Duration, now func() time.Time) *Pike {
	if now == nil {
		now = time.Now
	}
	return &Pike{limit: limit, window: window, banTime: banTime, now: now,
		counts: map[netip.Addr]int{}, banned: map[netip.Addr]time.Time{}}
}

// Allow counts one message from ip and tells whether to process it.
func (p *Pike) Allow(ip netip.Addr) bool {
	if p == nil || p.limit <= 0 {
		return true
	}
	ip = ip.Unmap()
	t := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if until, ok := p.banned[ip]; ok {
		if t.Before(until) {
			p.dropped++
			return false
		}
		delete(p.banned, ip)
	}
	if t.Sub(p.start) >= p.window {
		// A new window forgets everyone, which also bounds the map.
		p.start = t
		clear(p.counts)
		for k, until := range p.banned {
			if !t.Before(until) {
				delete(p.banned, k)
			}
		}
	}
	p.counts[ip]++
	if p.counts[ip] > p.limit {
		p.banned[ip] = t.Add(p.banTime)
		p.bans++
		p.dropped++
		return false
	}
	return true
}

// Banned tells whether ip is banned now, without counting a message.
func (p *Pike) Banned(ip netip.Addr) bool {
	if p == nil || p.limit <= 0 {
		return false
	}
	ip = ip.Unmap()
	t := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	until, ok := p.banned[ip]
	if ok && t.Before(until) {
		p.dropped++
		return true
	}
	return false
}

// Stats returns the number of sources banned now, bans ever, and messages
// dropped.
func (p *Pike) Stats() (bannedNow int, bans, dropped uint64) {
	if p == nil {
		return 0, 0, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.banned), p.bans, p.dropped
}
