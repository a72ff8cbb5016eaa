package netns

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Capture checks the UDP checksum of every packet that arrives on one
// interface for one destination port. A receiving socket on veth cannot be
// trusted to do it: the stack accepts CHECKSUM_PARTIAL and veth-marked
// packets without looking at the field, so a wrong rewrite would pass.
type Capture struct {
	fd   int
	port uint16
	stop atomic.Bool
	done chan struct{}

	mu  sync.Mutex
	res CaptureResult
}

// CaptureResult counts the captured packets by checksum state.
type CaptureResult struct {
	// Full: a complete checksum that verifies.
	Full int
	// Partial: CHECKSUM_PARTIAL, whose field must hold the pseudo-header
	// sum for the device (or the receiver's stack) to complete; checked
	// against the packet's own addresses.
	Partial int
	// Bad: a checksum that does not verify (or a partial seed that does
	// not match), with the first one described.
	Bad      int
	FirstBad string
}

// CaptureUDP starts capturing packets arriving on dev for UDP port port.
func (n *NS) CaptureUDP(dev string, port uint16) (*Capture, error) {
	c := &Capture{fd: -1, port: port, done: make(chan struct{})}
	err := n.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		c.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return fmt.Errorf("set PACKET_AUXDATA: %w", err)
		}
		// The read loop polls stop this often.
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fmt.Errorf("set SO_RCVTIMEO: %w", err)
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("bind packet socket to %s: %w", dev, err)
		}
		return nil
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		return nil, fmt.Errorf("capture on %s in %s: %w", dev, n.Name, err)
	}
	go c.run()
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Capture) run() {
	defer close(c.done)
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.TpacketAuxdata{}))))
	var stopped time.Time
	for {
		if c.stop.Load() {
			if stopped.IsZero() {
				stopped = time.Now()
			} else if time.Since(stopped) > 2*time.Second {
				return // traffic that never stops must not hold Stop
			}
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			// Only an empty queue ends a stopped capture: packets the
			// receiver already read may still wait here.
			if c.stop.Load() {
				return
			}
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		partial := false
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA &&
					len(m.Data) >= int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
					aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
					partial = aux.Status&unix.TP_STATUS_CSUMNOTREADY != 0
				}
			}
		}
		c.inspect(buf[:n], partial)
	}
}

// inspect checks one Ethernet frame.
func (c *Capture) inspect(f []byte, partial bool) {
	if len(f) < 14 {
		return
	}
	var src, dst netip.Addr
	var udp []byte
	switch binary.BigEndian.Uint16(f[12:]) {
	case unix.ETH_P_IP:
		ip := f[14:]
		if len(ip) < 20 || ip[9] != unix.IPPROTO_UDP {
			return
		}
		ihl := int(ip[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		if tot > len(ip) || ihl+8 > tot {
			return
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		udp = ip[ihl:tot]
	case unix.ETH_P_IPV6:
		ip := f[14:]
		if len(ip) < 48 || ip[6] != unix.IPPROTO_UDP {
			return
		}
		pl := int(binary.BigEndian.Uint16(ip[4:]))
		if 40+pl > len(ip) || pl < 8 {
			return
		}
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		udp = ip[40 : 40+pl]
	default:
		return
	}
	if binary.BigEndian.Uint16(udp[2:]) != c.port {
		return
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen != len(udp) {
		c.bad(fmt.Sprintf("%s→%s: UDP length %d, IP payload %d", src, dst, ulen, len(udp)))
		return
	}
	field := binary.BigEndian.Uint16(udp[6:])
	pseudo := pseudoSum(src, dst, len(udp))
	c.mu.Lock()
	defer c.mu.Unlock()
	if partial {
		// The stack stores the folded, uncomplemented pseudo-header sum
		// and leaves the rest to whoever completes the checksum.
		if want := fold(pseudo); field != want {
			c.badLocked(fmt.Sprintf("%s→%s: partial checksum seed %#04x, want %#04x", src, dst, field, want))
			return
		}
		c.res.Partial++
		return
	}
	if field == 0 && src.Is4() {
		c.badLocked(fmt.Sprintf("%s→%s: no checksum", src, dst))
		return
	}
	if got := fold(pseudo + sum(udp)); got != 0xffff {
		c.badLocked(fmt.Sprintf("%s→%s: checksum %#04x does not verify (sum %#04x)", src, dst, field, got))
		return
	}
	c.res.Full++
}

func (c *Capture) bad(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.badLocked(s)
}

func (c *Capture) badLocked(s string) {
	if c.res.Bad == 0 {
		c.res.FirstBad = s
	}
	c.res.Bad++
}

func sum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func pseudoSum(src, dst netip.Addr, udpLen int) uint32 {
	s := sum(src.AsSlice()) + sum(dst.AsSlice()) + unix.IPPROTO_UDP
	if src.Is4() {
		return s + uint32(udpLen)
	}
	return s + uint32(udpLen>>16) + uint32(udpLen&0xffff)
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// Stop ends the capture and returns what it saw.
func (c *Capture) Stop() CaptureResult {
	if c.stop.CompareAndSwap(false, true) {
		<-c.done
		unix.Close(c.fd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.res
}
