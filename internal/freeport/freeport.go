// Package freeport picks ports that were free a moment ago, for tests and
// benchmarks that must write a port into a config before the program that
// binds it starts. Between the pick and that bind another process can take
// the port; callers that can bind port 0 themselves should.
package freeport

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// Networks On accepts.
const (
	UDP  = "udp"
	TCP  = "tcp"
	Both = "udp+tcp" // free for UDP and TCP at once, as a SIP listener needs
)

var handedOut = struct {
	sync.Mutex
	m map[netip.AddrPort]bool
}{m: map[netip.AddrPort]bool{}}

// On returns a port on ip that was free for network a moment ago and that
// this process has not been given before: the kernel may hand the same
// ephemeral port out again once the probe socket is closed, and hundreds
// of picks would then collide.
func On(network string, ip netip.Addr) (netip.AddrPort, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	var lastErr error
	for range 1000 {
		ap, err := probe(network, ip)
		if err != nil {
			// Both can fail when the UDP port is taken for TCP: try another.
			lastErr = err
			if network == Both {
				continue
			}
			return netip.AddrPort{}, err
		}
		if !handedOut.m[ap] {
			handedOut.m[ap] = true
			return ap, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no free %s port on %s: %v", network, ip, lastErr)
}

// Loopback is On for 127.0.0.1, as a port number.
func Loopback(network string) (int, error) {
	ap, err := On(network, netip.AddrFrom4([4]byte{127, 0, 0, 1}))
	return int(ap.Port()), err
}

func probe(network string, ip netip.Addr) (netip.AddrPort, error) {
	switch network {
	case UDP, Both:
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("probe udp on %s: %w", ip, err)
		}
		defer c.Close()
		ap := netip.AddrPortFrom(ip, c.LocalAddr().(*net.UDPAddr).AddrPort().Port())
		if network == UDP {
			return ap, nil
		}
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("probe tcp on %s: %w", ap, err)
		}
		l.Close()
		return ap, nil
	case TCP:
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("probe tcp on %s: %w", ip, err)
		}
		defer l.Close()
		return netip.AddrPortFrom(ip, l.Addr().(*net.TCPAddr).AddrPort().Port()), nil
	}
	return netip.AddrPort{}, fmt.Errorf("freeport: unknown network %q", network)
}
