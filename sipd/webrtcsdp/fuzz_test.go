package webrtcsdp

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzTransform feeds arbitrary bodies to Parse and Describe and, for what parses, both directions of the
// rewrite: nothing may panic, and a rewritten body must parse again with the same number of m-lines.
func FuzzTransform(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.sdp"))
	for _, p := range files {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\na=fingerprint:x\r\nm=audio 1 RTP/AVP 0\r\na=crypto:1 X inline:\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := Parse(raw)
		if err != nil {
			return
		}
		_, _ = Describe(b)
		n := len(b.Media)
		for i := range b.Media {
			_ = Apply(b, i, Profile{Proto: ProtoDTLS, ICE: &relayICE, DTLS: &DTLS{relayFP, SetupActpass}, RTCPMux: RTCPMuxOffer})
		}
		_, _ = AudioOnly(b)
		EnsureMid(b)
		for i := range b.Media {
			_ = Apply(b, i, Profile{Proto: ProtoAVP, RTCPMux: RTCPMuxDemux, RTCPPort: 9})
			if i%2 == 1 {
				_ = Reject(b, i)
			}
		}
		again, err := Parse(b.Bytes())
		if err != nil {
			t.Fatalf("rewritten body does not parse: %v\n%q", err, b.Bytes())
		}
		if len(again.Media) != n {
			t.Fatalf("%d m-lines became %d", n, len(again.Media))
		}
		_, _ = Describe(again)
	})
}
