package itsp

import (
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr of <sys/socket.h>: x/sys/unix has the
// system call numbers but no wrappers for sendmmsg and recvmmsg.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// sock is a non-blocking UDP socket connected to sipd: every message the
// generator sends, requests and the callee's responses alike, goes to the
// proxy, and every message it reads comes from it.
type sock struct {
	fd    int
	port  uint16
	rhdr  []mmsghdr
	riov  []unix.Iovec
	rbufs [][]byte
	whdr  []mmsghdr
	wiov  []unix.Iovec
}

const batch = 256

func openSock(local netip.Addr, proxy netip.AddrPort) (*sock, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	// Large buffers absorb bursts of answers; FORCE works as root, the
	// plain option otherwise (capped at rmem_max).
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], 8<<20) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], 8<<20)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local.As4()}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", local, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: proxy.Addr().As4(), Port: int(proxy.Port())}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect %s: %w", proxy, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	s := &sock{fd: fd, port: uint16(sa.(*unix.SockaddrInet4).Port),
		rhdr: make([]mmsghdr, batch), riov: make([]unix.Iovec, batch), rbufs: make([][]byte, batch),
		whdr: make([]mmsghdr, batch), wiov: make([]unix.Iovec, batch)}
	for i := range s.rbufs {
		s.rbufs[i] = make([]byte, 8192)
		s.riov[i].Base = &s.rbufs[i][0]
		s.riov[i].SetLen(len(s.rbufs[i]))
		s.rhdr[i].hdr.Iov = &s.riov[i]
		s.rhdr[i].hdr.SetIovlen(1)
	}
	return s, nil
}

func (s *sock) close() { unix.Close(s.fd) }

// recv reads up to batch datagrams without waiting; the i-th is
// s.rbufs[i][:s.rhdr[i].n].
func (s *sock) recv() int {
	for i := range s.rhdr {
		s.rhdr[i].n = 0
	}
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.rhdr[0])), batch, unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0
	}
	return int(n)
}

// send writes every message, batch at a time, waiting for buffer space
// when the socket is full. It returns the number dropped on errors.
func (s *sock) send(msgs [][]byte) int {
	dropped := 0
	for len(msgs) > 0 {
		k := min(len(msgs), batch)
		for i := range k {
			s.wiov[i].Base = &msgs[i][0]
			s.wiov[i].SetLen(len(msgs[i]))
			s.whdr[i] = mmsghdr{}
			s.whdr[i].hdr.Iov = &s.wiov[i]
			s.whdr[i].hdr.SetIovlen(1)
		}
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.whdr[0])), uintptr(k), 0, 0, 0)
		switch {
		case errno == unix.EAGAIN || errno == unix.EINTR:
			unix.Poll([]unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLOUT}}, 10)
			continue
		case errno != 0:
			// ECONNREFUSED from an earlier ICMP error, or sipd gone: the
			// first message is lost; the retransmission timers count it.
			msgs = msgs[1:]
			dropped++
			continue
		}
		msgs = msgs[n:]
	}
	return dropped
}
