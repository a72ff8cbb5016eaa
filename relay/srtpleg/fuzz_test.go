package srtpleg

import (
	"bytes"
	"testing"

	"github.com/pion/srtp/v3"
)

// FuzzDecrypt feeds arbitrary datagrams to both Decrypts, as the relay port would: never a panic, and anything
// accepted must be a packet the key holder sealed (random bytes never pass the auth tag).
func FuzzDecrypt(f *testing.F) {
	key := bytes.Repeat([]byte{0x42}, 30)
	ref, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		f.Fatal(err)
	}
	seed, err := ref.EncryptRTP(nil, rtpPacket(f, 1), nil)
	if err != nil {
		f.Fatal(err)
	}
	seedRTCP, err := ref.EncryptRTCP(nil, rtcpPacket(f), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seedRTCP)
	f.Add([]byte{0x80})
	f.Add(make([]byte, 12))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := NewSDES(Key{Suite: "AES_CM_128_HMAC_SHA1_80", Key: key}, Key{Suite: "AES_CM_128_HMAC_SHA1_80", Key: key})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		_, errRTP := s.DecryptRTP(buf, b)
		_, errRTCP := s.DecryptRTCP(buf, b)
		genuine := bytes.Equal(b, seed) || bytes.Equal(b, seedRTCP)
		if !genuine && (errRTP == nil || errRTCP == nil) {
			t.Fatalf("accepted a datagram nobody sealed: %x", b)
		}
		var total uint64
		for _, n := range s.Drops() {
			total += n
		}
		want := uint64(0)
		if errRTP != nil {
			want++
		}
		if errRTCP != nil {
			want++
		}
		if total != want {
			t.Fatalf("drops counted %d, errors %d", total, want)
		}
	})
}
