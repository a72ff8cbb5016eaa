package freeport

import (
	"net"
	"net/netip"
	"testing"
)

func TestOn(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, network := range []string{UDP, TCP, Both} {
		t.Run(network, func(t *testing.T) {
			seen := map[netip.AddrPort]bool{}
			for range 50 {
				ap, err := On(network, lo)
				if err != nil {
					t.Fatal(err)
				}
				if ap.Addr() != lo || ap.Port() == 0 {
					t.Fatalf("picked %s", ap)
				}
				if seen[ap] {
					t.Fatalf("%s handed out twice", ap)
				}
				seen[ap] = true
				// The port must be bindable for what was asked.
				if network != TCP {
					c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
					if err != nil {
						t.Fatalf("udp %s: %v", ap, err)
					}
					c.Close()
				}
				if network != UDP {
					l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
					if err != nil {
						t.Fatalf("tcp %s: %v", ap, err)
					}
					l.Close()
				}
			}
		})
	}
}

func TestLoopbackAndErrors(t *testing.T) {
	if p, err := Loopback(UDP); err != nil || p == 0 {
		t.Errorf("Loopback(udp) = %d, %v", p, err)
	}
	if _, err := Loopback("sctp"); err == nil {
		t.Error("an unknown network was accepted")
	}
	// An address this host does not have cannot be bound.
	if _, err := On(UDP, netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Error("picked a port on an address that is not local")
	}
}
