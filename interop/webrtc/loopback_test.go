package webrtc

import (
	"net/url"
	"testing"
	"time"

	"sipxdp/internal/browser"
	"sipxdp/internal/netns"
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
