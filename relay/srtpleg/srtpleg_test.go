package srtpleg

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// peer is the reference side: pion's srtp.Contexts keyed as the remote endpoint keys them.
type peer struct{ enc, dec *srtp.Context }

func rtpPacket(t testing.TB, seq uint16) []byte {
	t.Helper()
	p := rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 0x11223344},
		Payload: bytes.Repeat([]byte{byte(seq), 0x55}, 80),
	}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rtcpPacket(t testing.TB) []byte {
	t.Helper()
	b, err := (&rtcp.ReceiverReport{SSRC: 0x55667788, Reports: []rtcp.ReceptionReport{{SSRC: 0x11223344, LastSequenceNumber: 7}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// roundTrip checks both directions against the reference: what the peer protects, s recovers byte for byte,
// and what s protects, the peer recovers.
func roundTrip(t *testing.T, s *Session, p peer) {
	t.Helper()
	buf := make([]byte, 1500)
	for seq := uint16(1); seq <= 3; seq++ {
		plain := rtpPacket(t, seq)
		sealed, err := p.enc.EncryptRTP(nil, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(sealed, plain[12:]) {
			t.Fatal("peer's SRTP carries the plain payload")
		}
		got, err := s.DecryptRTP(buf, sealed)
		if err != nil {
			t.Fatalf("DecryptRTP seq %d: %v", seq, err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("DecryptRTP seq %d: got %x, want %x", seq, got, plain)
		}
		ours, err := s.EncryptRTP(buf, plain)
		if err != nil {
			t.Fatal(err)
		}
		back, err := p.dec.DecryptRTP(nil, ours, nil)
		if err != nil {
			t.Fatalf("peer decrypts our seq %d: %v", seq, err)
		}
		if !bytes.Equal(back, plain) {
			t.Fatalf("peer got %x, want %x", back, plain)
		}
	}
	plain := rtcpPacket(t)
	sealed, err := p.enc.EncryptRTCP(nil, plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.DecryptRTCP(buf, sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("DecryptRTCP: %x, %v; want %x", got, err, plain)
	}
	ours, err := s.EncryptRTCP(buf, plain)
	if err != nil {
		t.Fatal(err)
	}
	back, err := p.dec.DecryptRTCP(nil, ours, nil)
	if err != nil || !bytes.Equal(back, plain) {
		t.Fatalf("peer DecryptRTCP: %x, %v; want %x", back, err, plain)
	}
	if d := s.Drops(); d != [numReasons]uint64{} {
		t.Fatalf("drops after a clean round trip: %v", d)
	}
}

func sdesKey(t testing.TB, suite string) Key {
	t.Helper()
	k := make([]byte, 30)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return Key{Suite: suite, Key: k}
}

// sdesPair is a session from two a=crypto keys and the reference peer holding the same keys the other way.
func sdesPair(t testing.TB, suite string) (*Session, peer) {
	t.Helper()
	local, remote := sdesKey(t, suite), sdesKey(t, suite)
	s, err := NewSDES(local, remote)
	if err != nil {
		t.Fatal(err)
	}
	prof := sdesSuites[suite]
	enc, err := srtp.CreateContext(remote.Key[:16], remote.Key[16:], prof)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := srtp.CreateContext(local.Key[:16], local.Key[16:], prof)
	if err != nil {
		t.Fatal(err)
	}
	return s, peer{enc: enc, dec: dec}
}

func TestSDESRoundTrip(t *testing.T) {
	for _, suite := range []string{"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"} {
		t.Run(suite, func(t *testing.T) {
			s, p := sdesPair(t, suite)
			roundTrip(t, s, p)
		})
	}
}

func TestSDESBadKeys(t *testing.T) {
	good := sdesKey(t, "AES_CM_128_HMAC_SHA1_80")
	for _, tc := range []struct {
		name          string
		local, remote Key
	}{
		{"unknown suite", Key{Suite: "F8_128_HMAC_SHA1_80", Key: good.Key}, good},
		{"short key", good, Key{Suite: good.Suite, Key: good.Key[:29]}},
		{"gcm not for sdes", good, Key{Suite: "AEAD_AES_128_GCM", Key: good.Key[:28]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewSDES(tc.local, tc.remote); err == nil {
				t.Fatal("NewSDES accepted it")
			}
		})
	}
}

func TestDecryptDrops(t *testing.T) {
	for _, tc := range []struct {
		name string
		rtcp bool
		// mangle turns a valid sealed packet into the ones to feed, after first feeding the valid one when
		// feedValid is set.
		feedValid bool
		mangle    func([]byte) []byte
		want      Reason
	}{
		{"rtp auth tag corrupted", false, false, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, BadAuth},
		{"rtp payload corrupted", false, false, func(b []byte) []byte { b[20] ^= 0x80; return b }, BadAuth},
		{"rtp replayed", false, true, func(b []byte) []byte { return b }, Replayed},
		{"rtp too short", false, false, func(b []byte) []byte { return b[:15] }, TooShort},
		{"rtp extension past the end", false, false, func(b []byte) []byte { b[0] |= 0x10; b[14], b[15] = 0xff, 0xff; return b }, Malformed},
		{"rtcp auth tag corrupted", true, false, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, BadAuth},
		{"rtcp replayed", true, true, func(b []byte) []byte { return b }, Replayed},
		{"rtcp too short", true, false, func(b []byte) []byte { return b[:10] }, TooShort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p := sdesPair(t, "AES_CM_128_HMAC_SHA1_80")
			var sealed []byte
			var err error
			decrypt := s.DecryptRTP
			if tc.rtcp {
				sealed, err = p.enc.EncryptRTCP(nil, rtcpPacket(t), nil)
				decrypt = s.DecryptRTCP
			} else {
				sealed, err = p.enc.EncryptRTP(nil, rtpPacket(t, 9), nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.feedValid {
				if _, err := decrypt(nil, append([]byte(nil), sealed...)); err != nil {
					t.Fatalf("first copy: %v", err)
				}
			}
			_, err = decrypt(nil, tc.mangle(sealed))
			if !errors.Is(err, reasonErr[tc.want]) {
				t.Fatalf("err = %v, want %v", err, reasonErr[tc.want])
			}
			want := [numReasons]uint64{}
			want[tc.want] = 1
			if got := s.Drops(); got != want {
				t.Fatalf("drops = %v, want %v", got, want)
			}
			if s.Dropped(tc.want) != 1 {
				t.Fatalf("Dropped(%s) = %d", tc.want, s.Dropped(tc.want))
			}
		})
	}
}

// A valid packet after dropped ones still decrypts: a forged packet must not poison the replay window or the
// rollover counter.
func TestDecryptAfterDrops(t *testing.T) {
	s, p := sdesPair(t, "AES_CM_128_HMAC_SHA1_80")
	forged, err := p.enc.EncryptRTP(nil, rtpPacket(t, 100), nil)
	if err != nil {
		t.Fatal(err)
	}
	forged[len(forged)-1] ^= 1
	if _, err := s.DecryptRTP(nil, forged); !errors.Is(err, ErrBadAuth) {
		t.Fatalf("forged: %v", err)
	}
	next, err := p.enc.EncryptRTP(nil, rtpPacket(t, 101), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DecryptRTP(nil, next); err != nil {
		t.Fatalf("genuine packet after a forgery: %v", err)
	}
}
