package relayctl

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"sipxdp/bpf"
	"sipxdp/internal/netns"
	"sipxdp/internal/testenv"
	"sipxdp/relay"
)

// TestFlowsFromPinnedMaps: with sipd down, relayctl lists the kernel flows
// from the pinned maps and says that is what it does.
func TestFlowsFromPinnedMaps(t *testing.T) {
	testenv.RequireRoot(t)
	tp := netns.New(t, netns.Config{Prefix: "sxrc-"})
	pin := fmt.Sprintf("/sys/fs/bpf/sipxdp-relayctl-test-%d", os.Getpid())
	t.Cleanup(func() {
		if err := bpf.Uninstall(pin); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	flow := relay.Flow{
		Key:  relay.FlowKey{Local: netip.AddrPortFrom(netns.V4.RelayA, 30000)},
		Peer: netip.AddrPortFrom(netns.V4.Caller, 4000),
		Out:  netip.AddrPortFrom(netns.V4.RelayB, 30002),
		Dst:  netip.AddrPortFrom(netns.V4.Callee, 5000),
	}
	if err := tp.Relay.Do(func() error {
		k, err := bpf.Open(bpf.Config{Interfaces: []string{netns.RelayA, netns.RelayB}, Mode: bpf.ModeTC, PinPath: pin})
		if err != nil {
			return err
		}
		defer k.Close() // the pins stay, as when sipd stops
		return k.Upsert(flow)
	}); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	out, code := relayCmd(t, "-api", dead, "-pin", pin, "flows", "-interval", "0")
	if code != 0 {
		t.Fatalf("relayctl flows with sipd down: exit %d\n%s", code, out)
	}
	for _, want := range []string{"pinned maps at " + pin, "sipd is not running", flow.Key.Local.String(), flow.Peer.String(), "kernel", "active"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	stats, code := relayCmd(t, "-api", dead, "-pin", pin, "stats")
	if code != 0 || !strings.Contains(stats, "pinned maps") || !strings.Contains(stats, "kernel.no_flow") {
		t.Fatalf("relayctl stats with sipd down: exit %d\n%s", code, stats)
	}
}
