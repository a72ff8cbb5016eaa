package usrelay

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// sockaddr is the raw bytes of a sockaddr_in or sockaddr_in6 as the kernel
// reads and writes them in msghdr.msg_name: family in host order, port in
// network order. Working on bytes keeps the hot path free of conversions
// through the syscall package's allocating Sockaddr interface.
type sockaddr [unix.SizeofSockaddrInet6]byte

// encodeSockaddr returns ap as a sockaddr for a socket of family v6 (true)
// or v4. IPv4 addresses for an IPv6 socket become v4-mapped.
func encodeSockaddr(ap netip.AddrPort, v6 bool) (sockaddr, uint32) {
	var sa sockaddr
	binary.BigEndian.PutUint16(sa[2:4], ap.Port())
	if !v6 {
		binary.NativeEndian.PutUint16(sa[0:2], unix.AF_INET)
		a := ap.Addr().Unmap().As4()
		copy(sa[4:8], a[:])
		return sa, unix.SizeofSockaddrInet4
	}
	binary.NativeEndian.PutUint16(sa[0:2], unix.AF_INET6)
	a := ap.Addr().As16()
	copy(sa[8:24], a[:])
	return sa, unix.SizeofSockaddrInet6
}

// decodeSockaddr reads the source address the kernel wrote, n bytes long.
// v4-mapped IPv6 addresses come back as IPv4 so they compare equal to the
// peers the engine gives us.
func decodeSockaddr(sa *sockaddr, n uint32) (netip.AddrPort, bool) {
	switch binary.NativeEndian.Uint16(sa[0:2]) {
	case unix.AF_INET:
		if n < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4])), true
	case unix.AF_INET6:
		if n < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, false
		}
		// The scope id is ignored: relay ports are bound to non-link-local
		// addresses and the kernel does not route link-local across them.
		a := netip.AddrFrom16([16]byte(sa[8:24])).Unmap()
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(sa[2:4])), true
	}
	return netip.AddrPort{}, false
}
