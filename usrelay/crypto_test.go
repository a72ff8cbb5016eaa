package usrelay

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"sipxdp/relay"
	"sipxdp/relay/cryptoleg"
	"sipxdp/relay/ice"
	"sipxdp/relay/srtpleg"
)

var (
	relayA   = netip.MustParseAddrPort("10.0.0.1:40000")
	relayB   = netip.MustParseAddrPort("10.0.0.1:40002")
	relayBC  = netip.MustParseAddrPort("10.0.0.1:40003")
	peerA    = netip.MustParseAddrPort("192.0.2.10:4000")
	peerB    = netip.MustParseAddrPort("192.0.2.20:5000")
	peerBC   = netip.MustParseAddrPort("192.0.2.20:5001")
	stranger = netip.MustParseAddrPort("198.51.100.66:4000")
)

func key(b byte) srtpleg.Key {
	k := bytes.Repeat([]byte{b}, 30)
	return srtpleg.Key{Suite: "AES_CM_128_HMAC_SHA1_80", Key: k}
}

func plainRTP(seq byte) []byte {
	p := []byte{0x80, 0, 0, seq, 0, 0, 0, seq, 0, 0, 0x12, 0x34}
	return append(p, bytes.Repeat([]byte{seq}, 160)...)
}

func plainRTCP() []byte {
	return []byte{0x80, 200, 0, 6, 0, 0, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3}
}

// sdesTable is a call whose A leg is SDES (the relay decrypts what A sends
// and encrypts what A gets) and muxes RTCP, and whose B leg is plain RTP
// with RTCP apart. ref is A's own SRTP: it encrypts with A's key and
// decrypts with the relay's.
func sdesTable(t testing.TB) (*Table, *srtpleg.Session) {
	t.Helper()
	leg, err := cryptoleg.New(cryptoleg.Config{Kind: cryptoleg.SDES, LocalKey: key(1), RemoteKey: key(2),
		Send: func([]byte, netip.AddrPort) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { leg.Close() })
	ref, err := srtpleg.NewSDES(key(2), key(1))
	if err != nil {
		t.Fatal(err)
	}
	tb := NewTable()
	for _, f := range []relay.Flow{
		{Key: relay.FlowKey{Local: relayA}, Peer: peerA, Rank: relay.RankExact, Out: relayB, Dst: peerB,
			In: leg, RTCPOut: relayBC, RTCPDst: peerBC},
		{Key: relay.FlowKey{Local: relayB}, Peer: peerB, Rank: relay.RankExact, Out: relayA, Dst: peerA, OutLeg: leg},
	} {
		if err := tb.Upsert(f); err != nil {
			t.Fatal(err)
		}
	}
	return tb, ref
}

// TestSpecialFixtures: packets in, verdict and packet out, for a flow
// the relay terminates SDES on (the userspace half of the fixtures the
// kernel path has in relay/relaytest: the kernel never holds these).
func TestSpecialFixtures(t *testing.T) {
	tb, ref := sdesTable(t)
	now := time.Now()
	enc := func(p []byte) []byte {
		out, err := ref.EncryptRTP(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	encRTCP, err := ref.EncryptRTCP(nil, plainRTCP())
	if err != nil {
		t.Fatal(err)
	}
	forged := enc(plainRTP(9))
	forged[len(forged)-1] ^= 1
	stunReq, _ := stun.Build(stun.BindingRequest, stun.TransactionID, stun.Fingerprint)
	cases := []struct {
		name     string
		local    netip.AddrPort
		src      netip.AddrPort
		in       []byte
		verdict  Verdict
		reason   Reason
		out, dst netip.AddrPort
		want     []byte // the packet sent, or a function of it below
		decrypts []byte // the packet sent decrypts (by A's reference) to this
	}{
		{"srtp from A is sent to B as RTP", relayA, peerA, enc(plainRTP(1)), Forward, ReasonNone, relayB, peerB, plainRTP(1), nil},
		{"srtcp on A's muxed port goes to B's RTCP port", relayA, peerA, encRTCP, Forward, ReasonNone, relayBC, peerBC, plainRTCP(), nil},
		{"forged tag is dropped", relayA, peerA, forged, Drop, ReasonSRTP, netip.AddrPort{}, netip.AddrPort{}, nil, nil},
		{"srtp from a stranger is dropped", relayA, stranger, enc(plainRTP(2)), Drop, ReasonWrongSource, netip.AddrPort{}, netip.AddrPort{}, nil, nil},
		{"stun on a leg without ICE", relayA, peerA, stunReq.Raw, Drop, ReasonNotMedia, netip.AddrPort{}, netip.AddrPort{}, nil, nil},
		{"not STUN, DTLS or RTP", relayA, peerA, []byte{0x50, 1, 2, 3}, Drop, ReasonNotMedia, netip.AddrPort{}, netip.AddrPort{}, nil, nil},
		{"rtp from B is sent to A as SRTP", relayB, peerB, plainRTP(3), Forward, ReasonNone, relayA, peerA, nil, plainRTP(3)},
		{"rtp from a stranger to B", relayB, stranger, plainRTP(4), Drop, ReasonWrongSource, netip.AddrPort{}, netip.AddrPort{}, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := tb.ProcessPacket(c.local, c.src, append([]byte(nil), c.in...), now)
			if d.Verdict != c.verdict || d.Reason != c.reason {
				t.Fatalf("verdict %s reason %s, want %s %s", d.Verdict, d.Reason, c.verdict, c.reason)
			}
			if c.verdict != Forward {
				return
			}
			if d.Out != c.out || d.Dst != c.dst {
				t.Errorf("out %v dst %v, want %v %v", d.Out, d.Dst, c.out, c.dst)
			}
			if c.want != nil && !bytes.Equal(d.Packet, c.want) {
				t.Errorf("sent %x, want %x", d.Packet, c.want)
			}
			if c.decrypts != nil {
				got, err := ref.DecryptRTP(nil, d.Packet)
				if err != nil || !bytes.Equal(got, c.decrypts) {
					t.Errorf("sent packet decrypts to %x (%v), want %x", got, err, c.decrypts)
				}
			}
		})
	}
	if got := tb.Counters()["srtp"]; got != 1 {
		t.Errorf("srtp drops %d, want the forged packet", got)
	}
}

// iceTable is a browser leg with ICE-lite and DTLS, not keyed yet: only
// STUN with its credentials latches a source.
func iceTable(t testing.TB) (*Table, ice.Creds) {
	t.Helper()
	cr, err := ice.NewCreds()
	if err != nil {
		t.Fatal(err)
	}
	cr.RemoteUfrag = "brws"
	cert, err := srtpleg.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	leg, err := cryptoleg.New(cryptoleg.Config{Kind: cryptoleg.DTLS, ICE: &cr,
		DTLS: srtpleg.Config{Role: srtpleg.Server, Certificate: cert},
		Send: func([]byte, netip.AddrPort) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { leg.Close() })
	tb := NewTable()
	if err := tb.Upsert(relay.Flow{Key: relay.FlowKey{Local: relayA}, Learning: true, Announced: peerA, Peer: peerA,
		Out: relayB, Dst: peerB, In: leg, ICE: true}); err != nil {
		t.Fatal(err)
	}
	return tb, cr
}

func binding(t *testing.T, cr ice.Creds, pwd string, nominate bool) []byte {
	t.Helper()
	setters := []stun.Setter{stun.BindingRequest, stun.TransactionID,
		stun.NewUsername(cr.LocalUfrag + ":" + cr.RemoteUfrag), stun.NewShortTermIntegrity(pwd), stun.Fingerprint}
	if nominate {
		setters = append(setters[:3], append([]stun.Setter{stun.RawAttribute{Type: stun.AttrUseCandidate}}, setters[3:]...)...)
	}
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// TestICELatch: on a browser leg nothing but STUN with the leg's
// credentials latches: media and DTLS from the announced address itself
// are refused until then, a wrong password gets no answer, and a
// nominating check locks the source.
func TestICELatch(t *testing.T) {
	tb, cr := iceTable(t)
	now := time.Now()
	dtlsHello := []byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	srtp := plainRTP(1)
	steps := []struct {
		name     string
		src      netip.AddrPort
		in       []byte
		consumed bool
		reply    bool
		reason   Reason
		locked   bool
	}{
		{"rtp from the announced address before ICE", peerA, srtp, false, false, ReasonForeign, false},
		{"dtls from the announced address before ICE", peerA, dtlsHello, false, false, ReasonForeign, false},
		{"check with a wrong password", stranger, binding(t, cr, "wrongwrongwrongwrongwrong", true), true, false, ReasonNone, false},
		{"nominating check from the browser's real address", stranger, binding(t, cr, cr.LocalPwd, true), true, true, ReasonNone, true},
		{"srtp from the nominated address, keys not ready", stranger, srtp, false, false, ReasonSRTP, true},
		{"rtp from the announced address after ICE", peerA, srtp, false, false, ReasonForeign, true},
	}
	for _, s := range steps {
		d := tb.ProcessPacket(relayA, s.src, s.in, now)
		if d.Consumed != s.consumed || (d.Reply != nil) != s.reply || (!s.consumed && d.Reason != s.reason) {
			t.Fatalf("%s: consumed %v reply %v reason %s; want %v %v %s", s.name, d.Consumed, d.Reply != nil, d.Reason, s.consumed, s.reply, s.reason)
		}
		if d.Reply != nil {
			var m stun.Message
			m.Raw = d.Reply
			if err := m.Decode(); err != nil || m.Type != stun.BindingSuccess {
				t.Fatalf("%s: reply is not a binding success: %v", s.name, err)
			}
		}
		ev, err := tb.Latch(relay.FlowKey{Local: relayA})
		if err != nil {
			t.Fatal(err)
		}
		if ev.Latch.Locked != s.locked || s.locked && ev.Latch.Source != stranger {
			t.Fatalf("%s: latch %+v, want locked %v to %v", s.name, ev.Latch, s.locked, stranger)
		}
	}
}

// FuzzSpecial feeds arbitrary datagrams from a stranger to a relay port
// whose leg the relay terminates: SDES (source locked) and a browser leg
// (ICE-lite, nothing latched). Nothing may be forwarded, nothing may
// latch without a STUN answer (which needs the leg's password), and
// nothing may panic.
func FuzzSpecial(f *testing.F) {
	seed, _ := stun.Build(stun.BindingRequest, stun.TransactionID, stun.Fingerprint)
	for _, s := range [][]byte{plainRTP(1), plainRTCP(), seed.Raw, {22, 0xfe, 0xfd, 0, 0}, {0}, {}} {
		f.Add(s)
	}
	// The tables are made once: a stranger's datagram cannot change what
	// they decide for the next one (that is what the fuzz checks).
	sdes, _ := sdesTable(f)
	web, _ := iceTable(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		now := time.Now()
		for _, tb := range []*Table{sdes, web} {
			d := tb.ProcessPacket(relayA, stranger, append([]byte(nil), in...), now)
			if d.Verdict == Forward {
				t.Fatalf("a stranger's datagram %x was forwarded", in)
			}
			ev, err := tb.Latch(relay.FlowKey{Local: relayA})
			if err != nil {
				t.Fatal(err)
			}
			if ev.Latch.Source == stranger && d.Reply == nil {
				t.Fatalf("a stranger latched without passing STUN: %+v", ev.Latch)
			}
		}
	})
}
