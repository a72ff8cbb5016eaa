// Package relaytest holds what the tests of both datapaths share, and only
// tests import: a parser and builder for the Ethernet/IP/UDP frames the
// relay forwards, and the table of frames (Cases) that the kernel programs
// run through BPF_PROG_TEST_RUN and the userspace relay through its
// forwarding decision, so both agree on what a frame means and what becomes
// of it.
package relaytest

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
)

// Reasons a frame is not relayable; the kernel passes such frames to the
// stack untouched.
var (
	ErrTruncated = errors.New("truncated frame")
	ErrNotIP     = errors.New("not IPv4 or IPv6")
	ErrNotUDP    = errors.New("not UDP")
	ErrFragment  = errors.New("IP fragment")
	ErrIPOptions = errors.New("IPv4 options")
	ErrIPv6Ext   = errors.New("IPv6 extension header")
	ErrBadLength = errors.New("inconsistent length fields")
)

const (
	EthLen  = 14
	IPv4Len = 20
	IPv6Len = 40
	UDPLen  = 8

	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	protoUDP      = 17
	ipv6FragHdr   = 44
)

// Frame is a parsed Ethernet/IP/UDP frame. Payload aliases the input.
type Frame struct {
	DstMAC, SrcMAC net.HardwareAddr
	Src, Dst       netip.AddrPort
	// Header fields a relay keeps unchanged.
	TOS       uint8  // IPv4 TOS or IPv6 traffic class
	TTL       uint8  // IPv4 TTL or IPv6 hop limit
	ID        uint16 // IPv4 identification
	DF        bool   // IPv4 don't-fragment
	FlowLabel uint32 // IPv6
	Payload   []byte
}

// Parse reads an Ethernet frame carrying UDP over IPv4 (no options, not
// fragmented) or IPv6 (no extension headers). Trailing bytes beyond the IP
// length (Ethernet padding) are ignored.
func Parse(b []byte) (Frame, error) {
	var f Frame
	if len(b) < EthLen {
		return f, ErrTruncated
	}
	f.DstMAC = net.HardwareAddr(b[0:6])
	f.SrcMAC = net.HardwareAddr(b[6:12])
	ip := b[EthLen:]
	var udp []byte
	switch binary.BigEndian.Uint16(b[12:14]) {
	case etherTypeIPv4:
		if len(ip) < IPv4Len {
			return f, ErrTruncated
		}
		if ip[0]>>4 != 4 {
			return f, ErrNotIP
		}
		if ip[0]&0x0f != 5 {
			if ip[0]&0x0f < 5 {
				return f, ErrBadLength
			}
			return f, ErrIPOptions
		}
		frag := binary.BigEndian.Uint16(ip[6:8])
		if frag&0x3fff != 0 { // MF set or nonzero offset
			return f, ErrFragment
		}
		if ip[9] != protoUDP {
			return f, ErrNotUDP
		}
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		if total < IPv4Len+UDPLen {
			return f, ErrBadLength
		}
		if total > len(ip) {
			return f, ErrTruncated
		}
		f.TOS = ip[1]
		f.ID = binary.BigEndian.Uint16(ip[4:6])
		f.DF = frag&0x4000 != 0
		f.TTL = ip[8]
		src := netip.AddrFrom4([4]byte(ip[12:16]))
		dst := netip.AddrFrom4([4]byte(ip[16:20]))
		udp = ip[IPv4Len:total]
		f.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:2]))
		f.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:4]))
	case etherTypeIPv6:
		if len(ip) < IPv6Len {
			return f, ErrTruncated
		}
		if ip[0]>>4 != 6 {
			return f, ErrNotIP
		}
		switch ip[6] {
		case protoUDP:
		case 0, 43, 60, ipv6FragHdr, 51, 50, 135, 139, 140:
			if ip[6] == ipv6FragHdr {
				return f, ErrFragment
			}
			return f, ErrIPv6Ext
		default:
			return f, ErrNotUDP
		}
		plen := int(binary.BigEndian.Uint16(ip[4:6]))
		if plen < UDPLen {
			return f, ErrBadLength
		}
		if IPv6Len+plen > len(ip) {
			return f, ErrTruncated
		}
		vtf := binary.BigEndian.Uint32(ip[0:4])
		f.TOS = uint8(vtf >> 20)
		f.FlowLabel = vtf & 0xfffff
		f.TTL = ip[7]
		src := netip.AddrFrom16([16]byte(ip[8:24]))
		dst := netip.AddrFrom16([16]byte(ip[24:40]))
		udp = ip[IPv6Len : IPv6Len+plen]
		f.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:2]))
		f.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:4]))
	default:
		return f, ErrNotIP
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < UDPLen || ulen > len(udp) {
		return f, ErrBadLength
	}
	f.Payload = udp[UDPLen:ulen]
	return f, nil
}

// Build serialises f with freshly computed IP and UDP checksums. Src and Dst
// must be of one family; IPv4-mapped IPv6 addresses count as IPv4.
func Build(f Frame) []byte {
	src, dst := f.Src.Addr().Unmap(), f.Dst.Addr().Unmap()
	v4 := src.Is4()
	iplen := IPv6Len
	etype := uint16(etherTypeIPv6)
	if v4 {
		iplen = IPv4Len
		etype = etherTypeIPv4
	}
	ulen := UDPLen + len(f.Payload)
	b := make([]byte, EthLen+iplen+ulen)
	copy(b[0:6], f.DstMAC)
	copy(b[6:12], f.SrcMAC)
	binary.BigEndian.PutUint16(b[12:14], etype)
	ip := b[EthLen:]
	if v4 {
		ip[0] = 0x45
		ip[1] = f.TOS
		binary.BigEndian.PutUint16(ip[2:4], uint16(iplen+ulen))
		binary.BigEndian.PutUint16(ip[4:6], f.ID)
		if f.DF {
			ip[6] = 0x40
		}
		ip[8] = f.TTL
		ip[9] = protoUDP
		s4, d4 := src.As4(), dst.As4()
		copy(ip[12:16], s4[:])
		copy(ip[16:20], d4[:])
		binary.BigEndian.PutUint16(ip[10:12], ^fold(sum(ip[:IPv4Len], 0)))
	} else {
		binary.BigEndian.PutUint32(ip[0:4], 6<<28|uint32(f.TOS)<<20|f.FlowLabel&0xfffff)
		binary.BigEndian.PutUint16(ip[4:6], uint16(ulen))
		ip[6] = protoUDP
		ip[7] = f.TTL
		s16, d16 := src.As16(), dst.As16()
		copy(ip[8:24], s16[:])
		copy(ip[24:40], d16[:])
	}
	udp := ip[iplen:]
	binary.BigEndian.PutUint16(udp[0:2], f.Src.Port())
	binary.BigEndian.PutUint16(udp[2:4], f.Dst.Port())
	binary.BigEndian.PutUint16(udp[4:6], uint16(ulen))
	copy(udp[UDPLen:], f.Payload)
	binary.BigEndian.PutUint16(udp[6:8], UDPChecksum(src, dst, udp))
	return b
}

// UDPChecksum computes the UDP checksum of seg (header with a zero or any
// checksum field, plus payload) for the given addresses. A result of zero
// is sent as 0xffff, per RFC 768.
func UDPChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var s uint32
	if src.Unmap().Is4() {
		a, b := src.Unmap().As4(), dst.Unmap().As4()
		s = sum(a[:], s)
		s = sum(b[:], s)
	} else {
		a, b := src.As16(), dst.As16()
		s = sum(a[:], s)
		s = sum(b[:], s)
	}
	s += protoUDP + uint32(len(seg))
	hdr := [8]byte{}
	copy(hdr[:6], seg[:6])
	s = sum(hdr[:], s)
	s = sum(seg[8:], s)
	c := ^fold(s)
	if c == 0 {
		c = 0xffff
	}
	return c
}

// ValidChecksums reports whether b's IPv4 header checksum (if IPv4) and UDP
// checksum verify. A zero UDP checksum over IPv4 means "none" and passes.
func ValidChecksums(b []byte) bool {
	f, err := Parse(b)
	if err != nil {
		return false
	}
	ip := b[EthLen:]
	var udp []byte
	if f.Src.Addr().Is4() {
		if fold(sum(ip[:IPv4Len], 0)) != 0xffff {
			return false
		}
		udp = ip[IPv4Len : IPv4Len+UDPLen+len(f.Payload)]
		if binary.BigEndian.Uint16(udp[6:8]) == 0 {
			return true
		}
	} else {
		udp = ip[IPv6Len : IPv6Len+UDPLen+len(f.Payload)]
	}
	return binary.BigEndian.Uint16(udp[6:8]) == UDPChecksum(f.Src.Addr(), f.Dst.Addr(), udp)
}

func sum(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
