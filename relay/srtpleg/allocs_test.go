package srtpleg

import "testing"

// The per-packet path in caller buffers allocates nothing of ours: the one allocation of a decrypt is the
// accept closure pion's replay detector returns (replaydetector's slidingWindowDetector.Check).
func TestPerPacketAllocs(t *testing.T) {
	s, p := sdesPair(t, "AES_CM_128_HMAC_SHA1_80")
	plain := rtpPacket(t, 1)
	buf, out := make([]byte, 1500), make([]byte, 1500)
	seq := uint16(1)
	var sealed [][]byte
	for i := 0; i < 200; i++ {
		b, err := p.enc.EncryptRTP(nil, rtpPacket(t, seq), nil)
		if err != nil {
			t.Fatal(err)
		}
		sealed = append(sealed, b)
		seq++
	}
	i := 0
	dec := testing.AllocsPerRun(100, func() {
		if _, err := s.DecryptRTP(buf, sealed[i]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	enc := testing.AllocsPerRun(100, func() {
		if _, err := s.EncryptRTP(out, plain); err != nil {
			t.Fatal(err)
		}
	})
	drop := testing.AllocsPerRun(100, func() {
		if _, err := s.DecryptRTP(buf, sealed[0]); err == nil {
			t.Fatal("replay accepted")
		}
	})
	t.Logf("allocs per packet: decrypt %.1f, encrypt %.1f, dropped %.1f", dec, enc, drop)
	if dec > 1 || enc > 0 || drop > 1 {
		t.Fatalf("allocs per packet: decrypt %.1f (want <= 1), encrypt %.1f (want 0), dropped %.1f (want <= 1)", dec, enc, drop)
	}
}
