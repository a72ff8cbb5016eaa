package webrtc

import (
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/zaf/g711"

	"sipxdp/internal/browser"
	"sipxdp/internal/netns"
	"sipxdp/internal/rtpphone"
)

// TestBrowserLoopback checks the harness without sipd: the page connects
// two peer connections to each other inside Chromium, over the
// namespace's veth address, and the receiving one's getStats shows audio
// from the fake microphone arriving, with energy, over DTLS-SRTP. If this
// fails, the browser tests' media checks cannot pass whatever the relay
// does.
func TestBrowserLoopback(t *testing.T) {
	bin := requireBrowser(t)
	tp := netns.New(t, netns.Config{Prefix: nsPrefix, Net4: net4})
	page := openPage(t, bin, tp.Caller, url.Values{})
	var loaded struct {
		UserAgent string `json:"userAgent"`
		Secure    bool   `json:"secure"`
	}
	if err := page.Await(10*time.Second, []string{"loaded"}).Decode(&loaded); err != nil {
		t.Fatal(err)
	}
	if !loaded.Secure {
		t.Fatalf("the page is no secure context (%s): getUserMedia would fail", page.Origin)
	}
	t.Logf("browser: %s", loaded.UserAgent)
	page.Command("loopback", nil)
	page.Await(10*time.Second, []string{"loopback"})
	first := page.AwaitStats(10*time.Second, "inbound audio with energy", func(s browser.Stats) bool {
		return s.Inbound != nil && s.Inbound.PacketsReceived > 0 && s.Inbound.TotalAudioEnergy > 0
	})
	later := page.AwaitStats(5*time.Second, "packetsReceived growing", func(s browser.Stats) bool {
		return s.Inbound != nil && s.Inbound.PacketsReceived >= first.Inbound.PacketsReceived+25
	})
	if later.DTLSState != "connected" || later.Pair == nil || later.Pair.State != "succeeded" {
		t.Errorf("transport: %v", later)
	}
	if later.Pair != nil && later.Pair.Local.Address != tp.V4.Caller.String() && later.Pair.Local.Address != tp.V6.Caller.String() {
		t.Errorf("selected pair %v: want the veth address %v", later.Pair, tp.V4.Caller)
	}
	if errs := page.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors: %q", errs)
	}
	t.Logf("stats: %v", later)
}

// TestFakeMicrophone records Chromium's fake microphone at 8 kHz in the
// page (WebAudio, as the PCMU encoder would see it) and checks that
// rtpphone hears its beeps as sound: the media checks of the call tests
// rest on that. (Chromium 156: a 400 Hz square wave from 0 to full
// scale, 20 ms every 500 ms.)
func TestFakeMicrophone(t *testing.T) {
	bin := requireBrowser(t)
	tp := netns.New(t, netns.Config{Prefix: nsPrefix, Net4: net4})
	page := openPage(t, bin, tp.Caller, url.Values{})
	page.Await(10*time.Second, []string{"loaded"})
	page.Command("capture", nil)
	var c struct {
		Rate    int
		Samples []int
	}
	if err := page.Await(15*time.Second, []string{"capture"}).Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Rate != 8000 || len(c.Samples) < 150*160 {
		t.Fatalf("capture at %d Hz, %d samples; want 8000 Hz, 3 s", c.Rate, len(c.Samples))
	}
	rec := rtpphone.Recording{Sources: map[netip.AddrPort]int{}, Types: map[uint8]int{}}
	for i := 0; i+160 <= len(c.Samples); i += 160 {
		payload := make([]byte, 160)
		for j := range payload {
			payload[j] = g711.EncodeUlawFrame(int16(max(-32768, min(32767, c.Samples[i+j]))))
		}
		b, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: rtpphone.PCMU}, Payload: payload}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		rec.Add(b, netip.AddrPort{})
	}
	t.Logf("fake microphone, 3 s as PCMU: %v", rec)
	// Beeps every 500 ms, each over one or two packets: at least 5.
	if rec.Loud < 5 || rec.Noisy > 0 {
		t.Errorf("the fake microphone's beeps are not sound to rtpphone (5 loud and no noisy packets wanted): %v", rec)
	}
}
