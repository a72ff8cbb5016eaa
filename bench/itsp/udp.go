package itsp

import (
	"encoding/binary"
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

// sock is a non-blocking UDP socket talking to the proxies, peers. With
// one proxy it is connected to it: every message the generator sends,
// requests and the callee's responses alike, goes to the proxy, and every
// message it reads comes from it. With several (proxies sharing a
// location table) a subscriber registered through one is called through
// another, so the socket is left unconnected: each message it sends names
// its proxy by index in peers, and each it reads says which sent it.
type sock struct {
	fd     int
	port   uint16
	peers  []unix.RawSockaddrInet4
	rhdr   []mmsghdr
	riov   []unix.Iovec
	rbufs  [][]byte
	rnames []unix.RawSockaddrInet4
	whdr   []mmsghdr
	wiov   []unix.Iovec
}

const batch = 256

func openSock(local netip.Addr, proxies []netip.AddrPort) (*sock, error) {
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
	if len(proxies) == 1 {
		proxy := proxies[0]
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: proxy.Addr().As4(), Port: int(proxy.Port())}); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("connect %s: %w", proxy, err)
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	s := &sock{fd: fd, port: uint16(sa.(*unix.SockaddrInet4).Port),
		rhdr: make([]mmsghdr, batch), riov: make([]unix.Iovec, batch), rbufs: make([][]byte, batch),
		whdr: make([]mmsghdr, batch), wiov: make([]unix.Iovec, batch)}
	if len(proxies) > 1 {
		for _, p := range proxies {
			sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: p.Addr().As4()}
			// sin_port is in network byte order.
			binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], p.Port())
			s.peers = append(s.peers, sa)
		}
		s.rnames = make([]unix.RawSockaddrInet4, batch)
	}
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
		if s.rnames != nil {
			s.rhdr[i].hdr.Name = (*byte)(unsafe.Pointer(&s.rnames[i]))
			s.rhdr[i].hdr.Namelen = unix.SizeofSockaddrInet4
		}
	}
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.rhdr[0])), batch, unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0
	}
	return int(n)
}

// from is the index in peers of the proxy that sent the i-th datagram
// of the last recv: 0 on a connected socket, -1 from anyone else.
func (s *sock) from(i int) int {
	if s.rnames == nil {
		return 0
	}
	n := &s.rnames[i]
	for j := range s.peers {
		if p := &s.peers[j]; p.Port == n.Port && p.Addr == n.Addr {
			return j
		}
	}
	return -1
}

// send writes every message, batch at a time, waiting for buffer space
// when the socket is full; to[i] is msgs[i]'s proxy (ignored when
// connected). It returns the number dropped on errors.
func (s *sock) send(msgs [][]byte, to []uint8) int {
	dropped := 0
	for len(msgs) > 0 {
		k := min(len(msgs), batch)
		for i := range k {
			s.wiov[i].Base = &msgs[i][0]
			s.wiov[i].SetLen(len(msgs[i]))
			s.whdr[i] = mmsghdr{}
			s.whdr[i].hdr.Iov = &s.wiov[i]
			s.whdr[i].hdr.SetIovlen(1)
			if s.peers != nil {
				s.whdr[i].hdr.Name = (*byte)(unsafe.Pointer(&s.peers[to[i]]))
				s.whdr[i].hdr.Namelen = unix.SizeofSockaddrInet4
			}
		}
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.whdr[0])), uintptr(k), 0, 0, 0)
		switch {
		case errno == unix.EAGAIN || errno == unix.EINTR:
			unix.Poll([]unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLOUT}}, 10)
			continue
		case errno != 0:
			// ECONNREFUSED from an earlier ICMP error, or sipd gone: the
			// first message is lost; the retransmission timers count it.
			msgs, to = msgs[1:], to[1:]
			dropped++
			continue
		}
		msgs, to = msgs[n:], to[n:]
	}
	return dropped
}
