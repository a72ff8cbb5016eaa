package netns

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
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

// udpNoPorts reads the namespace's count of UDP datagrams that found no
// socket: the probes go to a port nobody listens on, so each one that
// arrives is counted there, and nothing else (neighbour discovery, IPv6
// router solicitations) is.
func udpNoPorts(t *testing.T, ns NS) int { return snmp(t, ns, "Udp:", "NoPorts") }

// snmp reads one counter of /proc/net/snmp inside ns.
func snmp(t *testing.T, ns NS, proto, name string) int {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+ns.Path, "cat", "/proc/net/snmp").Output()
	if err != nil {
		t.Fatal(err)
	}
	var head []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != proto {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, h := range head {
			if h == name && i < len(f) {
				n, err := strconv.Atoi(f[i])
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
	}
	t.Fatalf("no %s %s in /proc/net/snmp", proto, name)
	return 0
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
	rcv0, relay0, fwd0 := udpNoPorts(t, l.Receiver), udpNoPorts(t, l.Relay), snmp(t, l.Relay, "Ip:", "ForwDatagrams")
	for range 5 {
		sendUDP(t, l.Sender, netip.AddrPortFrom(l.ReceiverAddr, 9))
	}
	sendUDP(t, l.Sender, netip.AddrPortFrom(l.RelayLeftAddr, 9))
	time.Sleep(100 * time.Millisecond)
	if got := udpNoPorts(t, l.Receiver) - rcv0; got != 5 {
		t.Errorf("receiver got %d probes, want 5", got)
	}
	if got := udpNoPorts(t, l.Relay) - relay0; got != 1 {
		t.Errorf("relay got %d probes, want only the 1 sent to it", got)
	}
	// The relay forwards (ip_forward=1), so the receiver getting the
	// probes does not show they skipped it: its forwarding counter does.
	if got := snmp(t, l.Relay, "Ip:", "ForwDatagrams") - fwd0; got != 0 {
		t.Errorf("the relay forwarded %d datagrams; the probes should have gone direct", got)
	}
}
