package kamailio

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"testing"
	"time"

	"sipxdp/internal/sipdrun"
	"sipxdp/internal/sipdtest"
)

// relayCtl is sipd running -relay-only in the test's namespace.
type relayCtl struct {
	relay netip.Addr // the address the relay puts in SDP
	sipd  *sipdrun.Sipd
}

// startRelay builds sipd, edits its embedded default config, starts it
// -relay-only in the namespace and waits until its HTTP API answers and
// its NG listener answers a ping. Its pins are removed with sipd
// -uninstall when the test ends.
func startRelay(t *testing.T, ns *netNS, dir string) *relayCtl {
	t.Helper()
	cfg := sipdtest.Config(t)
	// The sipxdp-test-PID- prefix lets mediapath's tests remove the pins
	// of a test process that died before its cleanup.
	pin := fmt.Sprintf("/sys/fs/bpf/sipxdp-test-%d-kamailio", os.Getpid())
	cfg.HTTP.Listen = httpAddr.String()
	// tc: the kernel hook for local senders on loopback.
	cfg.Media.Datapath = "tc"
	cfg.Media.Interfaces = []string{"lo"}
	cfg.Media.PinPath = pin
	cfg.Media.Addresses[0].PortMin, cfg.Media.Addresses[0].PortMax = relayPortMin, relayPortMax
	cfg.NG.Listen = ngAddr.String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := sipdrun.Start(ctx, cfg, sipdrun.Options{Binary: sipdtest.Binary(t), Dir: dir, NetNS: ns.Path,
		Dial: ns.DialContext, Args: []string{"-relay-only"}})
	if err != nil {
		t.Fatalf("start sipd: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop sipd: %v", err)
		}
		if _, err := os.Stat(pin); err == nil {
			t.Errorf("pins left at %s after sipd -uninstall", pin)
		}
		if t.Failed() {
			t.Logf("sipd log (%s), last lines:\n%s", d.LogPath, d.Tail(4000))
		}
	})
	c := &relayCtl{relay: loopback, sipd: d}
	// rtpengine's own ping, as Kamailio's module sends it.
	probe := ns.listenUDP(t, netip.AddrPortFrom(loopback, 0))
	buf := make([]byte, 1024)
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("sipd's NG listener %v does not answer ping", ngAddr)
		}
		cookie := fmt.Sprintf("probe%d", i)
		if _, err := probe.WriteToUDPAddrPort([]byte(cookie+" d7:command4:pinge"), ngAddr); err != nil {
			t.Fatal(err)
		}
		probe.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, _, err := probe.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue
		}
		if got, want := string(buf[:n]), cookie+" d6:result4:ponge"; got != want {
			t.Fatalf("NG ping: got %q, want %q", got, want)
		}
		break
	}
	return c
}

// flows reads /flows, for one call or (callID "") all.
func (c *relayCtl) flows(t *testing.T, callID string) []flowJSON {
	t.Helper()
	path := "/flows"
	if callID != "" {
		path += "?call_id=" + url.QueryEscape(callID)
	}
	var fs []flowJSON
	if err := c.sipd.GetJSON(context.Background(), path, &fs); err != nil {
		t.Fatal(err)
	}
	return fs
}
