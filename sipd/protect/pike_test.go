package protect

import (
	"net/netip"
	"testing"
	"time"
)

func TestPike(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	mapped := netip.MustParseAddr("::ffff:192.0.2.1")
	type op int
	const (
		allow op = iota
		banned
		passCred
		passDialog
		passResponse
		challenge
	)
	type step struct {
		after time.Duration // clock advance before the step
		ip    netip.Addr
		op    op
		times int // repeat; 0 means 1
		want  bool
	}
	cases := []struct {
		name      string
		challenge time.Duration
		steps     []step
		bans      uint64
	}{
		{name: "under the limit", steps: []step{{ip: a, op: allow, times: 5, want: true}, {ip: a, op: banned, want: false}}},
		{name: "ban, innocent spared, forgiven after ban time", bans: 1, steps: []step{
			{ip: a, op: allow, times: 5, want: true},
			{ip: a, op: allow, want: false},
			{ip: b, op: allow, want: true},
			{ip: a, op: banned, want: true},
			{ip: mapped, op: banned, want: true}, // the same source as an IPv4-mapped address
			{ip: b, op: banned, want: false},
			{after: 5 * time.Second, ip: a, op: allow, want: false},
			{after: 6 * time.Second, ip: a, op: allow, want: true},
			{ip: a, op: banned, want: false},
		}},
		{name: "a new window forgets counts", steps: []step{
			{ip: a, op: allow, times: 5, want: true},
			{after: time.Second, ip: a, op: allow, times: 5, want: true},
		}},
		{name: "proofs pass within their own allowance", bans: 1, steps: []step{
			{ip: a, op: allow, times: 5, want: true},
			{ip: a, op: allow, want: false},
			{ip: a, op: banned, want: true},
			{ip: a, op: passCred, times: 5, want: true},
			{ip: a, op: passCred, want: false},
			{ip: a, op: passDialog, times: 5, want: true}, // a spent kind leaves the others
			{ip: a, op: passDialog, want: false},
			{ip: a, op: passResponse, times: 20, want: true}, // responses are never limited
			{after: time.Second, ip: a, op: passCred, times: 5, want: true},
			{ip: b, op: passCred, want: true}, // not banned: nothing to pass
		}},
		{name: "challenge slots", challenge: 5 * time.Second, bans: 1, steps: []step{
			{ip: a, op: allow, times: 5, want: true},
			{ip: a, op: allow, want: false},
			{ip: a, op: challenge, want: true},
			{ip: a, op: challenge, want: false},
			{after: 4 * time.Second, ip: a, op: challenge, want: false},
			{after: time.Second, ip: a, op: challenge, want: true},
			{ip: b, op: challenge, want: true}, // not banned
		}},
		{name: "no challenge slots by default", bans: 1, steps: []step{
			{ip: a, op: allow, times: 5, want: true},
			{ip: a, op: allow, want: false},
			{ip: a, op: challenge, want: false},
			{after: 9 * time.Second, ip: a, op: challenge, want: false},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := time.Unix(1_700_000_000, 0)
			p := NewPike(5, time.Second, 10*time.Second, func() time.Time { return now })
			p.SetChallengeInterval(c.challenge)
			for i, s := range c.steps {
				now = now.Add(s.after)
				for n := 0; n < max(s.times, 1); n++ {
					var got bool
					switch s.op {
					case allow:
						got = p.Allow(s.ip)
					case banned:
						got = p.Banned(s.ip)
					case passCred:
						got = p.Pass(s.ip, PassCredentials)
					case passDialog:
						got = p.Pass(s.ip, PassDialog)
					case passResponse:
						got = p.Pass(s.ip, PassResponse)
					case challenge:
						got = p.ChallengeSlot(s.ip)
					}
					if got != s.want {
						t.Fatalf("step %d (op %d, repeat %d): got %v, want %v", i, s.op, n, got, s.want)
					}
				}
			}
			if st := p.Stats(); st.Bans != c.bans {
				t.Fatalf("bans %d, want %d", st.Bans, c.bans)
			}
		})
	}
}

func TestPikeDisabledAndStats(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	var off *Pike
	if !off.Allow(a) || off.Banned(a) || !off.Pass(a, PassCredentials) || !off.ChallengeSlot(a) || off.Stats() != (PikeStats{}) {
		t.Fatal("nil pike is not off")
	}
	if p := NewPike(0, 0, 0, nil); !p.Allow(a) || p.Banned(a) {
		t.Fatal("limit 0 is not off")
	}
	now := time.Unix(1_700_000_000, 0)
	p := NewPike(1, time.Second, 10*time.Second, func() time.Time { return now })
	p.Allow(a)
	p.Allow(a)
	p.Pass(a, PassDialog)
	if st := p.Stats(); st.BannedNow != 1 || st.Bans != 1 || st.Passed[PassDialog] != 1 {
		t.Fatalf("stats %+v", st)
	}
	now = now.Add(11 * time.Second)
	if st := p.Stats(); st.BannedNow != 0 {
		t.Fatalf("an expired ban still counted: %+v", st)
	}
}

// The tables stay bounded under a flood from ever-new (forged) sources.
func TestPikeTablesBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p := NewPike(1, time.Hour, time.Hour, func() time.Time { return now })
	for i := 0; i < maxTracked+1000; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		p.Allow(ip)
		p.Allow(ip)
	}
	if len(p.counts) > maxTracked || len(p.banned) > maxTracked {
		t.Fatalf("tables %d and %d entries, bound %d", len(p.counts), len(p.banned), maxTracked)
	}
}
