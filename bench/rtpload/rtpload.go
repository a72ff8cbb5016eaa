// Package rtpload sends and sinks RTP-like UDP load in batches (sendmmsg and
// recvmmsg), so the load generator costs little next to the path it
// measures and allocates nothing per packet.
package rtpload

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultSize is the UDP payload of a G.711 packet at 20 ms: a 12-byte RTP
// header and 160 bytes of audio.
const DefaultSize = 172

const (
	rtpHeader = 12
	// minSize fits the RTP header and the 64-bit sequence number the sink
	// uses to count loss beyond RTP's 16-bit wrap.
	minSize = rtpHeader + 8
)

// SenderConfig describes the load. Flow i is sent from Src:SrcPortBase+i to
// Dsts[i].
type SenderConfig struct {
	Src         netip.Addr
	SrcPortBase int
	Dsts        []netip.AddrPort
	Rate        int           // packets per second over all flows
	Duration    time.Duration // sending time, bounded by the caller
	Batch       int           // packets per sendmmsg on one flow; default 8
	Size        int           // UDP payload bytes; default DefaultSize
}

// SenderResult counts what was sent.
type SenderResult struct {
	Sent    uint64        `json:"sent"`
	Errors  uint64        `json:"errors"`
	Elapsed time.Duration `json:"elapsed_ns"`
	// Behind is how many packets the pacer was behind schedule at the end:
	// nonzero means the sender could not keep up with the rate.
	Behind uint64 `json:"behind"`
}

// Send paces packets over all flows until Duration passes or ctx ends.
func Send(ctx context.Context, cfg SenderConfig) (SenderResult, error) {
	var res SenderResult
	if cfg.Batch <= 0 {
		cfg.Batch = 8
	}
	if cfg.Size == 0 {
		cfg.Size = DefaultSize
	}
	if cfg.Size < minSize || cfg.Size > 1400 {
		return res, fmt.Errorf("payload size %d: want %d..1400", cfg.Size, minSize)
	}
	if cfg.Rate <= 0 || len(cfg.Dsts) == 0 || cfg.Duration <= 0 {
		return res, fmt.Errorf("rate %d, %d flows, duration %s: all must be positive", cfg.Rate, len(cfg.Dsts), cfg.Duration)
	}
	if !cfg.Src.Is4() {
		return res, fmt.Errorf("source %s: only IPv4 is supported", cfg.Src)
	}
	fds := make([]int, 0, len(cfg.Dsts))
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for i, dst := range cfg.Dsts {
		fd, err := udpSocket(netip.AddrPortFrom(cfg.Src, uint16(cfg.SrcPortBase+i)))
		if err != nil {
			return res, err
		}
		fds = append(fds, fd)
		// Connected sockets skip a route lookup per packet, as an RTP
		// endpoint with a fixed peer would.
		if err := unix.Connect(fd, sockaddr(dst)); err != nil {
			return res, fmt.Errorf("connect flow %d to %s: %w", i, dst, err)
		}
	}

	seqs := make([]uint64, len(cfg.Dsts))
	bufs := make([][]byte, cfg.Batch)
	iovs := make([]unix.Iovec, cfg.Batch)
	msgs := make([]unix.Mmsghdr, cfg.Batch)
	for i := range bufs {
		b := make([]byte, cfg.Size)
		b[0] = 0x80 // RTP v2
		b[1] = 0    // PCMU
		for j := minSize; j < len(b); j++ {
			b[j] = 0xd5 // PCMU silence
		}
		bufs[i] = b
		iovs[i].Base = &b[0]
		iovs[i].SetLen(len(b))
		msgs[i].Hdr.Iov = &iovs[i]
		msgs[i].Hdr.SetIovlen(1)
	}

	start := time.Now()
	deadline := start.Add(cfg.Duration)
	perPacket := time.Second / time.Duration(cfg.Rate)
	// One pass over every flow is the most a single catch-up may send, so a
	// stall does not turn into an unbounded burst.
	maxBurst := uint64(len(cfg.Dsts) * cfg.Batch)
	flow := 0
	var paced uint64
	for {
		now := time.Now()
		if !now.Before(deadline) || ctx.Err() != nil {
			break
		}
		due := uint64(float64(cfg.Rate) * now.Sub(start).Seconds())
		if paced >= due {
			// Sleep until a whole batch is due; shorter sleeps only burn CPU.
			next := start.Add(time.Duration(paced+uint64(cfg.Batch)) * perPacket)
			time.Sleep(min(time.Until(next), time.Until(deadline), 5*time.Millisecond))
			continue
		}
		want := min(due-paced, maxBurst)
		for want > 0 {
			n := int(min(want, uint64(cfg.Batch)))
			ssrc := uint32(flow)
			for k := 0; k < n; k++ {
				b := bufs[k]
				s := seqs[flow] + uint64(k)
				binary.BigEndian.PutUint16(b[2:4], uint16(s))
				binary.BigEndian.PutUint32(b[4:8], uint32(s*160))
				binary.BigEndian.PutUint32(b[8:12], ssrc)
				binary.BigEndian.PutUint64(b[12:20], s)
			}
			sent, err := sendmmsg(fds[flow], msgs[:n])
			if err != nil {
				sent = 0
			}
			// Sequence numbers advance only for packets the kernel took, so
			// the sink's loss count is not inflated by local send errors.
			seqs[flow] += uint64(sent)
			res.Sent += uint64(sent)
			res.Errors += uint64(n - sent)
			// Refused packets still count for pacing, or a persistent error
			// would spin the loop at full speed.
			paced += uint64(n)
			want -= uint64(n)
			flow++
			if flow == len(fds) {
				flow = 0
			}
		}
	}
	res.Elapsed = time.Since(start)
	if due := uint64(float64(cfg.Rate) * min(res.Elapsed, cfg.Duration).Seconds()); due > paced {
		res.Behind = due - paced
	}
	return res, nil
}

func sendmmsg(fd int, msgs []unix.Mmsghdr) (int, error) {
	for range 3 { // EINTR retries, bounded
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(n), nil
	}
	return 0, unix.EINTR
}

// SinkConfig describes what the sink expects. Flow i must arrive from
// ExpectSrc:ExpectPortBase+i; anything else counts as a bad source.
type SinkConfig struct {
	Addr           netip.AddrPort
	Flows          int
	ExpectSrc      netip.Addr
	ExpectPortBase int
	Batch          int // recvmmsg batch; default 64
	RcvBuf         int // SO_RCVBUFFORCE bytes; default 16 MiB
}

// SinkResult counts what arrived.
type SinkResult struct {
	Received  uint64 `json:"received"`
	Bytes     uint64 `json:"bytes"`
	BadSource uint64 `json:"bad_source"`
	Short     uint64 `json:"short"`
	Reordered uint64 `json:"reordered"` // sequence not above the last seen
	FlowsSeen int    `json:"flows_seen"`
	// Gaps sums, per flow, highest sequence + 1 − packets received: loss
	// as seen by the receiver, independent of the sender's count.
	Gaps uint64 `json:"gaps"`
}

// Sink is a bound receiving socket. Bind it before the sender starts.
type Sink struct {
	cfg SinkConfig
	fd  int
}

// NewSink binds the socket.
func NewSink(cfg SinkConfig) (*Sink, error) {
	if cfg.Batch <= 0 {
		cfg.Batch = 64
	}
	if cfg.RcvBuf <= 0 {
		cfg.RcvBuf = 16 << 20
	}
	if cfg.Flows <= 0 {
		return nil, fmt.Errorf("sink: %d flows", cfg.Flows)
	}
	fd, err := udpSocket(cfg.Addr)
	if err != nil {
		return nil, err
	}
	// Bursts from batched senders must not overflow a default-sized buffer
	// and show up as relay loss.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.RcvBuf); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sink rcvbuf: %w", err)
	}
	// A receive timeout bounds each wait, so cancellation is seen promptly.
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sink rcvtimeo: %w", err)
	}
	return &Sink{cfg: cfg, fd: fd}, nil
}

// Run receives until ctx ends, then closes the socket.
func (s *Sink) Run(ctx context.Context) (SinkResult, error) {
	defer unix.Close(s.fd)
	var res SinkResult
	cfg := s.cfg
	count := make([]uint64, cfg.Flows)
	next := make([]uint64, cfg.Flows) // highest sequence seen + 1
	bufs := make([][]byte, cfg.Batch)
	iovs := make([]unix.Iovec, cfg.Batch)
	names := make([]unix.RawSockaddrInet4, cfg.Batch)
	msgs := make([]unix.Mmsghdr, cfg.Batch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
		iovs[i].Base = &bufs[i][0]
		iovs[i].SetLen(len(bufs[i]))
		msgs[i].Hdr.Iov = &iovs[i]
		msgs[i].Hdr.SetIovlen(1)
		msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&names[i]))
	}
	want := cfg.ExpectSrc.As4()
	for ctx.Err() == nil {
		for i := range msgs {
			msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		}
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_WAITFORONE, 0, 0)
		if errno == unix.EAGAIN || errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return res, fmt.Errorf("recvmmsg: %w", errno)
		}
		for i := 0; i < int(n); i++ {
			l := int(msgs[i].Len)
			res.Bytes += uint64(l)
			nm := &names[i]
			port := int(nm.Port>>8 | nm.Port<<8) // network byte order
			idx := port - cfg.ExpectPortBase
			if nm.Addr != want || idx < 0 || idx >= cfg.Flows {
				res.BadSource++
				continue
			}
			if l < minSize {
				res.Short++
				continue
			}
			res.Received++
			seq := binary.BigEndian.Uint64(bufs[i][12:20])
			if count[idx] == 0 {
				res.FlowsSeen++
			}
			count[idx]++
			if seq+1 > next[idx] {
				next[idx] = seq + 1
			} else {
				res.Reordered++
			}
		}
	}
	for i := range count {
		if next[i] > count[i] {
			res.Gaps += next[i] - count[i]
		}
	}
	return res, nil
}

func udpSocket(bind netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("udp socket: %w", err)
	}
	if err := unix.Bind(fd, sockaddr(bind)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", bind, err)
	}
	return fd, nil
}

func sockaddr(ap netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}
