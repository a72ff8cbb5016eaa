package rtpphone

import (
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/zaf/g711"
)

func packet(t testing.TB, pt uint8, payload []byte) []byte {
	b, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SSRC: 7}, Payload: payload}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// square is Chromium's fake-device beep as it reaches PCMU (see
// interop/webrtc's TestFakeMicrophone): a 400 Hz square wave between 0
// and amp.
func square(amp int16) []byte {
	out := make([]byte, frame)
	for i := range out {
		v := int16(0)
		if (i/10)%2 == 0 {
			v = amp
		}
		out[i] = g711.EncodeUlawFrame(v)
	}
	return out
}

func TestInspect(t *testing.T) {
	noise := make([]byte, frame)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(r.Uint32())
	}
	silence := make([]byte, frame)
	for i := range silence {
		silence[i] = 0xff // mu-law zero
	}
	cases := []struct {
		name            string
		pkt             []byte
		err             error
		rtcp            bool
		pt              uint8
		loud, smooth    bool
		minPeak, maxPek int
	}{
		{name: "tone", pkt: packet(t, PCMU, Tone(440, 3)), loud: true, smooth: true, minPeak: 7000, maxPek: 8200},
		{name: "beep", pkt: packet(t, PCMU, square(32767)), loud: true, smooth: true, minPeak: 32000, maxPek: 32767},
		{name: "silence", pkt: packet(t, PCMU, silence), maxPek: 0},
		{name: "srtp-like noise", pkt: packet(t, PCMU, noise), loud: true, smooth: false, minPeak: 20000, maxPek: 32767},
		{name: "opus", pkt: packet(t, 111, noise), pt: 111},
		{name: "rtcp sender report", pkt: []byte{0x80, 200, 0, 6, 0, 0, 0, 7}, rtcp: true},
		{name: "version 1", pkt: []byte{0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, err: ErrNotRTP},
		{name: "stun", pkt: []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}, err: ErrNotRTP},
		{name: "short", pkt: []byte{0x80, 0}, err: ErrNotRTP},
		{name: "empty", err: ErrNotRTP},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Inspect(c.pkt)
			if !errors.Is(err, c.err) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if err != nil {
				return
			}
			if p.RTCP != c.rtcp || p.PayloadType != c.pt {
				t.Fatalf("got %+v, want rtcp %v type %d", p, c.rtcp, c.pt)
			}
			if p.Peak < c.minPeak || p.Peak > c.maxPek {
				t.Errorf("peak %d, want %d..%d", p.Peak, c.minPeak, c.maxPek)
			}
			if loud := p.Peak > Loud; loud != c.loud {
				t.Errorf("peak %d: loud %v, want %v", p.Peak, loud, c.loud)
			}
			if c.loud {
				if smooth := p.Rough < Smooth; smooth != c.smooth {
					t.Errorf("roughness %.2f: smooth %v, want %v", p.Rough, smooth, c.smooth)
				}
			}
		})
	}
}

// TestToneRoughness pins the figure Smooth is chosen by.
func TestToneRoughness(t *testing.T) {
	p, err := Inspect(packet(t, PCMU, Tone(440, 0)))
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * math.Pi * 440 / sampleRate; math.Abs(p.Rough-want) > 0.1 {
		t.Errorf("roughness of a 440 Hz tone %.3f, want about %.3f", p.Rough, want)
	}
}

// TestPhone runs two phones against each other on loopback: each hears
// the other's tone, from the other's address, as loud PCMU.
func TestPhone(t *testing.T) {
	a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	aa, ba := a.LocalAddr().(*net.UDPAddr).AddrPort(), b.LocalAddr().(*net.UDPAddr).AddrPort()
	pa, pb := Start(a, ba, 440), Start(b, aa, 1000)
	time.Sleep(300 * time.Millisecond)
	ra, errA := pa.Stop()
	rb, errB := pb.Stop()
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	for _, c := range []struct {
		name string
		rec  Recording
		from netip.AddrPort
	}{{"a", ra, ba}, {"b", rb, aa}} {
		if c.rec.Packets < 5 || c.rec.Loud != c.rec.Packets || c.rec.Noisy != 0 || c.rec.Sources[c.from] != c.rec.Packets ||
			c.rec.Types[PCMU] != c.rec.Packets || c.rec.Sent < 5 {
			t.Errorf("%s: %v", c.name, c.rec)
		}
	}
	// Stopped means stopped: nothing more is recorded.
	if _, err := a.WriteToUDPAddrPort(packet(t, PCMU, Tone(440, 0)), ba); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if got := pb.Recording(); got.Packets != rb.Packets {
		t.Errorf("recorded after Stop: %d, was %d", got.Packets, rb.Packets)
	}
}

func FuzzInspect(f *testing.F) {
	f.Add(packet(f, PCMU, Tone(440, 1)))
	f.Add([]byte{0x80, 200, 0, 6})
	f.Add([]byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Inspect(b)
		if err != nil {
			return
		}
		if p.Peak < 0 || p.Peak > 32767 || p.Rough < 0 || math.IsNaN(p.Rough) {
			t.Fatalf("%+v", p)
		}
		if p.PayloadType != PCMU && (p.Peak != 0 || p.Rough != 0) {
			t.Fatalf("levels for payload type %d: %+v", p.PayloadType, p)
		}
	})
}
