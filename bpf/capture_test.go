package bpf

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"sipxdp/relay/relaytest"
)

// capture reads every frame that arrives on a device with an AF_PACKET
// socket and checks the UDP checksum of those sent to port: in full when
// the kernel says the checksum is ready, or, for a CHECKSUM_PARTIAL skb
// (TP_STATUS_CSUMNOTREADY), that the checksum field holds the
// pseudo-header seed for the frame's (rewritten) addresses. A receiving
// socket never verifies a partial checksum, so without this a wrong
// pseudo-header update would go unnoticed over veth.
type capture struct {
	fd   int
	port uint16
	wg   sync.WaitGroup

	mu                   sync.Mutex
	full, partial, wrong int
	firstWrong           string
}

func startCapture(t *testing.T, tp *topo, i int, dev string, port uint16) *capture {
	t.Helper()
	c := &capture{port: port}
	tp.in(t, i, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		c.fd = fd
		ifi, err := netInterfaceIndex(dev)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi}); err != nil {
			return fmt.Errorf("bind packet socket: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	c.wg.Add(1)
	go c.run()
	return c
}

type tpacketAuxdata struct {
	Status, Len, Snaplen uint32
	Mac, Net             uint16
	VlanTCI, VlanTPID    uint16
}

const tpStatusCsumNotReady = 1 << 3

func (c *capture) run() {
	defer c.wg.Done()
	buf := make([]byte, 4096)
	oob := make([]byte, 256)
	idle := 0
	for idle < 10 { // stop 2 s after the last frame, or when closed
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			if err == unix.EAGAIN || err == unix.EINTR {
				idle++
				continue
			}
			return
		}
		idle = 0
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		var status uint32
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= int(unsafe.Sizeof(tpacketAuxdata{})) {
				status = (*tpacketAuxdata)(unsafe.Pointer(&m.Data[0])).Status
			}
		}
		c.check(buf[:n], status&tpStatusCsumNotReady != 0)
	}
}

func (c *capture) check(frame []byte, partial bool) {
	f, err := relaytest.Parse(frame)
	if err != nil || f.Dst.Port() != c.port {
		return
	}
	ipOff := relaytest.EthLen
	udpOff := ipOff + relaytest.IPv4Len
	if f.Dst.Addr().Is6() {
		udpOff = ipOff + relaytest.IPv6Len
	}
	ulen := int(binary.BigEndian.Uint16(frame[udpOff+4:]))
	seg := frame[udpOff : udpOff+ulen]
	got := binary.BigEndian.Uint16(seg[6:])
	ok := false
	if partial {
		ok = got == pseudoSeed(f.Src.Addr(), f.Dst.Addr(), ulen)
	} else {
		ok = ones(pseudoSum(f.Src.Addr(), f.Dst.Addr(), ulen)+sum16(seg)) == 0xffff
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if partial {
		c.partial++
	} else {
		c.full++
	}
	if !ok {
		c.wrong++
		if c.firstWrong == "" {
			c.firstWrong = fmt.Sprintf("partial=%v %v->%v check %#04x", partial, f.Src, f.Dst, got)
		}
	}
}

// stop waits for the reader to drain and reports the tallies.
func (c *capture) stop() (full, partial, wrong int, firstWrong string) {
	c.wg.Wait()
	unix.Close(c.fd)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.full, c.partial, c.wrong, c.firstWrong
}

func sum16(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func pseudoSum(src, dst netip.Addr, ulen int) uint32 {
	s := sum16(src.AsSlice()) + sum16(dst.AsSlice())
	return s + 17 + uint32(ulen)
}

func ones(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// pseudoSeed is what a CHECKSUM_PARTIAL UDP header carries: the folded,
// uncomplemented pseudo-header sum.
func pseudoSeed(src, dst netip.Addr, ulen int) uint16 { return ones(pseudoSum(src, dst, ulen)) }
