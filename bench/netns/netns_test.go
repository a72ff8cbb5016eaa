package netns

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"

	"sipxdp/internal/testenv"
)

// sendUDP sends one datagram from inside ns: the socket is made on a
// thread switched into it, and that thread is discarded afterwards.
func sendUDP(t *testing.T, ns NS, dst netip.AddrPort) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := vnetns.GetFromPath(ns.Path)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := vnetns.Set(h); err != nil {
			errc <- err
			return
		}
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		_, err = c.Write([]byte("probe"))
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func rxPackets(t *testing.T, ns NS, ifc string) uint64 {
	t.Helper()
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := ReadCounters(h, ifc)
	if err != nil {
		t.Fatal(err)
	}
	return c.RxPackets
}

// With a direct link, traffic between the end hosts skips the relay while
// traffic to the relay's addresses still reaches it.
func TestDirectLink(t *testing.T) {
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Create(ctx, Config{Prefix: "sxdpt", Left: netip.MustParsePrefix("10.249.1.0/24"),
		Right: netip.MustParsePrefix("10.249.2.0/24"), Direct: netip.MustParsePrefix("10.249.3.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	}()
	if l.SenderDirectIf == "" || l.ReceiverDirectIf == "" {
		t.Fatal("no direct interfaces recorded")
	}
	direct0, relay0 := rxPackets(t, l.Receiver, l.ReceiverDirectIf), rxPackets(t, l.Relay, l.RelayLeftIf)
	for range 5 {
		sendUDP(t, l.Sender, netip.AddrPortFrom(l.ReceiverAddr, 9))
	}
	sendUDP(t, l.Sender, netip.AddrPortFrom(l.RelayLeftAddr, 9))
	time.Sleep(100 * time.Millisecond)
	if got := rxPackets(t, l.Receiver, l.ReceiverDirectIf) - direct0; got != 5 {
		t.Errorf("receiver's direct link got %d packets, want 5", got)
	}
	if got := rxPackets(t, l.Relay, l.RelayLeftIf) - relay0; got != 1 {
		t.Errorf("relay got %d packets, want only the 1 sent to it", got)
	}
}
