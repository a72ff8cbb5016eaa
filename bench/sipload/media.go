package sipload

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	batchSize = 64   // datagrams per recvmmsg
	rxBufSize = 1500 // larger datagrams are truncated, which no RTP here needs
	sockBuf   = 4 << 20
)

// pair is one RTP socket (even port) and its RTCP socket (port+1). Many
// calls share a pair; packets are told apart by SSRC.
type pair struct {
	rtp, rtcp     *net.UDPConn
	rtpRC, rtcpRC syscall.RawConn
	port          uint16 // the RTP port; RTCP is port+1
}

func (p *pair) close() {
	p.rtp.Close()
	p.rtcp.Close()
}

// setBuffers asks for large kernel buffers: the FORCE variants ignore
// rmem_max/wmem_max but need CAP_NET_ADMIN, so the plain ones are the
// fallback when not root.
func setBuffers(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, sockBuf)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, sockBuf)
		}
	})
}

func listenUDP4(addr netip.Addr, port int) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
	if err != nil {
		return nil, err
	}
	setBuffers(c)
	return c, nil
}

// bindPair binds RTP on port and RTCP on port+1; port 0 picks a free even
// port whose odd neighbour is free too.
func bindPair(addr netip.Addr, port int) (*pair, error) {
	if !addr.Is4() {
		return nil, fmt.Errorf("media address %s: only IPv4 is supported", addr)
	}
	if port != 0 {
		if port%2 != 0 || port > 65534 {
			return nil, fmt.Errorf("rtp port %d: must be even and below 65535", port)
		}
		return openPair(addr, port)
	}
	// The kernel hands out ports at random; an odd one or a taken
	// neighbour just means another try.
	for range 200 {
		c, err := listenUDP4(addr, 0)
		if err != nil {
			return nil, fmt.Errorf("bind rtp pair %s: %w", addr, err)
		}
		p := c.LocalAddr().(*net.UDPAddr).Port
		if p%2 != 0 || p > 65534 {
			c.Close()
			continue
		}
		r, err := listenUDP4(addr, p+1)
		if err != nil {
			c.Close()
			continue
		}
		return newPair(c, r)
	}
	return nil, fmt.Errorf("bind rtp pair %s: no free even/odd port pair found", addr)
}

func openPair(addr netip.Addr, port int) (*pair, error) {
	c, err := listenUDP4(addr, port)
	if err != nil {
		return nil, fmt.Errorf("bind rtp pair %s: %w", netip.AddrPortFrom(addr, uint16(port)), err)
	}
	r, err := listenUDP4(addr, port+1)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("bind rtp pair %s: %w", netip.AddrPortFrom(addr, uint16(port+1)), err)
	}
	return newPair(c, r)
}

func newPair(rtp, rtcp *net.UDPConn) (*pair, error) {
	p := &pair{rtp: rtp, rtcp: rtcp, port: uint16(rtp.LocalAddr().(*net.UDPAddr).Port)}
	var err1, err2 error
	p.rtpRC, err1 = rtp.SyscallConn()
	p.rtcpRC, err2 = rtcp.SyscallConn()
	if err := errors.Join(err1, err2); err != nil {
		p.close()
		return nil, fmt.Errorf("rtp pair raw conn: %w", err)
	}
	return p, nil
}

// bindPairs binds n pairs, at port+2i when port is set.
func bindPairs(addr netip.Addr, port, n int) ([]*pair, error) {
	var ps []*pair
	for i := range n {
		pp := 0
		if port != 0 {
			pp = port + 2*i
		}
		p, err := bindPair(addr, pp)
		if err != nil {
			closePairs(ps)
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func closePairs(ps []*pair) {
	for _, p := range ps {
		p.close()
	}
}

// batch is a reusable set of mmsghdrs with their buffers and addresses, for
// one recvmmsg or sendmmsg. Its memory stays referenced by the batch, so the
// pointers the kernel is given remain valid for the call.
type batch struct {
	msgs   []unix.Mmsghdr
	iovs   []unix.Iovec
	names  []unix.RawSockaddrInet4
	bufs   [][]byte
	n      int   // messages filled for sending
	failed []int // reused by flushReport
}

func newBatch(size, bufSize int) *batch {
	b := &batch{msgs: make([]unix.Mmsghdr, size), iovs: make([]unix.Iovec, size),
		names: make([]unix.RawSockaddrInet4, size), bufs: make([][]byte, size)}
	mem := make([]byte, size*bufSize)
	for i := range size {
		b.bufs[i] = mem[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
		b.link(i, bufSize)
	}
	return b
}

func (b *batch) link(i, length int) {
	b.iovs[i].Base = &b.bufs[i][0]
	b.iovs[i].SetLen(length)
	h := &b.msgs[i].Hdr
	h.Iov = &b.iovs[i]
	h.SetIovlen(1)
	h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	h.Namelen = unix.SizeofSockaddrInet4
	h.Control = nil
	h.Controllen = 0
	h.Flags = 0
}

// grow makes room for one more message to send and returns its buffer.
func (b *batch) grow(bufSize int) int {
	if b.n == len(b.msgs) {
		nb := newBatch(max(2*len(b.msgs), batchSize), bufSize)
		for i := range b.n {
			copy(nb.bufs[i], b.bufs[i])
			nb.names[i] = b.names[i]
			nb.msgs[i].Hdr.Iov.SetLen(int(b.iovs[i].Len))
		}
		nb.n = b.n
		*b = *nb
	}
	b.n++
	return b.n - 1
}

// add queues data to dst for sending.
func (b *batch) add(data []byte, dst netip.AddrPort) {
	i := b.grow(rxBufSize)
	n := copy(b.bufs[i], data)
	b.setMsg(i, n, dst)
}

func (b *batch) setMsg(i, n int, dst netip.AddrPort) {
	b.iovs[i].SetLen(n)
	b.names[i] = sockaddr4(dst)
}

func sockaddr4(ap netip.AddrPort) unix.RawSockaddrInet4 {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().Unmap().As4()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
	return sa
}

func addrPort4(sa *unix.RawSockaddrInet4) netip.AddrPort {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
}

func mmsg(trap, fd uintptr, msgs []unix.Mmsghdr, flags int) (int, error) {
	n, _, errno := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), uintptr(flags), 0, 0)
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}

// recv fills b with up to len(b.msgs) datagrams, waiting in the runtime's
// poller rather than in a blocked thread. It returns how many arrived; an
// error means the socket was closed.
func (b *batch) recv(rc syscall.RawConn) (int, error) {
	for i := range b.msgs {
		b.msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		b.msgs[i].Hdr.Flags = 0
		b.iovs[i].SetLen(len(b.bufs[i]))
	}
	var n int
	var serr error
	err := rc.Read(func(fd uintptr) bool {
		n, serr = mmsg(unix.SYS_RECVMMSG, fd, b.msgs, unix.MSG_DONTWAIT)
		return !errors.Is(serr, unix.EAGAIN) && !errors.Is(serr, unix.EINTR)
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		// Errors queued on the socket (ICMP) are not fatal to a reader.
		return 0, nil
	}
	return n, nil
}

// data is message i's payload after recv.
func (b *batch) data(i int) []byte { return b.bufs[i][:b.msgs[i].Len] }

// from is message i's source after recv.
func (b *batch) from(i int) netip.AddrPort { return addrPort4(&b.names[i]) }

// flush sends the queued messages with as few sendmmsg calls as the kernel
// allows and empties the batch. It returns how many were sent.
func (b *batch) flush(rc syscall.RawConn) int {
	n := b.n
	return n - len(b.flushReport(rc))
}

// flushReport is flush returning the indexes of messages not sent: a
// message the kernel refuses outright is skipped, not retried, and after
// the socket is closed nothing more is.
func (b *batch) flushReport(rc syscall.RawConn) []int {
	b.failed = b.failed[:0]
	off := 0
	for off < b.n {
		var n int
		var serr error
		err := rc.Write(func(fd uintptr) bool {
			n, serr = mmsg(unix.SYS_SENDMMSG, fd, b.msgs[off:b.n], unix.MSG_DONTWAIT)
			return !errors.Is(serr, unix.EAGAIN) && !errors.Is(serr, unix.EINTR)
		})
		if err != nil {
			for ; off < b.n; off++ {
				b.failed = append(b.failed, off)
			}
			break
		}
		if serr != nil || n <= 0 {
			b.failed = append(b.failed, off)
			off++
			continue
		}
		off += n
	}
	b.n = 0
	return b.failed
}
