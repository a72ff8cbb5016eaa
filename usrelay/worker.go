package usrelay

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Tuning switches. Variables, not constants, so the CPU measurement can
// compare the alternatives on the same machine.
var (
	// edgeTriggered registers sockets with EPOLLET: the kernel does not
	// re-poll every socket that was ready on the previous wait, and a
	// short recvmmsg proves the queue empty, so no EAGAIN round trip.
	edgeTriggered = true
	// rawSyscalls issues recvmmsg/sendmmsg without telling the scheduler:
	// they never block (MSG_DONTWAIT), so handing the P off is never
	// needed, and entersyscall/exitsyscall are pure overhead around them.
	rawSyscalls = true
	// waitInRuntime parks the worker in the Go netpoller (its epoll fd is
	// itself pollable) instead of blocking a locked thread in epoll_wait.
	// A goroutine blocked in a syscall has its P retaken by sysmon after
	// 20 µs whenever no P is idle, which on a 2-CPU box with 2 workers is
	// always: sysmon then polls every 20 µs and each wakeup has to win a P
	// back. See the CPU test's SIPXDP_PERF_WAIT for the comparison.
	waitInRuntime = true
	// coalesce, if set, is how long a worker sleeps after a wakeup that
	// did not fill its event array, so that the next epoll_wait finds
	// more ready sockets at once; a datagram then waits up to this long.
	// Off: with 2,000 sockets at 25 pps each (50,000 pps, the call
	// bench's load) 500 µs raised datagrams per wakeup from ~7 to ~35 but
	// not the CPU per datagram (8.7 µs with, 8.5 without, means of 9 and
	// 5 runs: within the run-to-run noise). The per-socket recvmmsg and
	// send and the kernel's UDP path dominate, and the timer wakeup costs
	// about what the netpoller wakeup did.
	coalesce time.Duration
	// singleSendto sends a batch of one with sendto instead of sendmmsg;
	// with many low-rate sockets nearly every batch is one datagram.
	singleSendto = true
)

// maxRounds bounds the batches read from one socket per wakeup, so one
// flooded socket cannot starve the others on its worker.
const maxRounds = 4

func epollEvents() uint32 {
	if edgeTriggered {
		return unix.EPOLLIN | unix.EPOLLET
	}
	return unix.EPOLLIN
}

func syscall6(trap, a1, a2, a3, a4 uintptr) (uintptr, unix.Errno) {
	if rawSyscalls {
		r, _, e := unix.RawSyscall6(trap, a1, a2, a3, a4, 0, 0)
		return r, e
	}
	r, _, e := unix.Syscall6(trap, a1, a2, a3, a4, 0, 0)
	return r, e
}

// worker is one epoll loop with its share of the sockets. All its buffers
// are allocated once; the per-datagram path does not allocate.
type worker struct {
	r     *Relay
	epfd  int
	evfd  int
	batch int
	done  chan struct{}

	// Grace periods: control code appends a channel and kicks the eventfd;
	// the worker closes the channels at the top of its loop.
	qmu     sync.Mutex
	waiters []chan struct{}
	pending atomic.Bool

	cnt counters

	events []unix.EpollEvent
	rhdr   []unix.Mmsghdr
	riov   []unix.Iovec
	rname  []sockaddr
	buf    []byte
	shdr   []unix.Mmsghdr
	siov   []unix.Iovec
	sname  []sockaddr
	evbuf  [8]byte
	modev  unix.EpollEvent
	// dec and enc hold a crypto flow's decrypted and re-encrypted datagram
	// (room for the SRTP tag and MKI).
	dec, enc []byte

	// Set when the worker waits in the netpoller.
	epfile *os.File
	rc     syscall.RawConn
	pollFn func(fd uintptr) bool // made once: a closure per wait would allocate
	nev    int
	everr  unix.Errno
}

func newWorker(r *Relay, batch int) (*worker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return nil, fmt.Errorf("register eventfd with epoll: %w", err)
	}
	w := &worker{r: r, epfd: epfd, evfd: evfd, batch: batch, done: make(chan struct{})}
	w.initBuffers(batch)
	if waitInRuntime {
		if err := w.initRuntimeWait(); err != nil {
			unix.Close(evfd)
			unix.Close(epfd)
			return nil, err
		}
	}
	return w, nil
}

func (w *worker) initRuntimeWait() error {
	if err := unix.SetNonblock(w.epfd, true); err != nil {
		return fmt.Errorf("set epoll fd non-blocking: %w", err)
	}
	// A non-blocking descriptor handed to os.NewFile is registered with
	// the runtime's poller.
	w.epfile = os.NewFile(uintptr(w.epfd), "usrelay-epoll")
	rc, err := w.epfile.SyscallConn()
	if err != nil {
		w.epfile = nil
		return fmt.Errorf("epoll fd raw conn: %w", err)
	}
	w.rc = rc
	w.pollFn = func(fd uintptr) bool {
		n, errno := epollPoll(int(fd), w.events)
		switch errno {
		case 0:
			w.nev = n
			return n > 0
		case unix.EINTR:
			// Report done with nothing rather than wait: events may be
			// pending with no new edge to come.
			w.nev = 0
			return true
		}
		w.everr = errno
		return true
	}
	return nil
}

// epollPoll is a non-blocking epoll_wait.
func epollPoll(epfd int, events []unix.EpollEvent) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd),
		uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return int(n), errno
}

// wait returns the next ready events.
func (w *worker) wait() (int, error) {
	if w.rc == nil {
		return unix.EpollWait(w.epfd, w.events, -1)
	}
	w.nev, w.everr = 0, 0
	if err := w.rc.Read(w.pollFn); err != nil {
		return 0, err
	}
	if w.everr != 0 {
		return 0, w.everr
	}
	return w.nev, nil
}

// initBuffers wires the msghdrs to their iovecs and name buffers once, so
// the loop only rewrites lengths.
func (w *worker) initBuffers(batch int) {
	w.events = make([]unix.EpollEvent, maxEvents)
	w.rhdr = make([]unix.Mmsghdr, batch)
	w.riov = make([]unix.Iovec, batch)
	w.rname = make([]sockaddr, batch)
	w.buf = make([]byte, batch*bufSize)
	w.shdr = make([]unix.Mmsghdr, batch)
	w.siov = make([]unix.Iovec, batch)
	w.sname = make([]sockaddr, batch)
	w.dec = make([]byte, 0, bufSize+srtpTagRoom)
	w.enc = make([]byte, 0, bufSize+srtpTagRoom)
	for i := 0; i < batch; i++ {
		w.riov[i].Base = &w.buf[i*bufSize]
		w.riov[i].SetLen(bufSize)
		h := &w.rhdr[i].Hdr
		h.Iov = &w.riov[i]
		h.Iovlen = 1
		h.Name = &w.rname[i][0]
		h.Namelen = uint32(len(sockaddr{}))

		s := &w.shdr[i].Hdr
		s.Iov = &w.siov[i]
		s.Iovlen = 1
		s.Name = &w.sname[i][0]
	}
}

func (w *worker) closeFDs() error {
	err1 := unix.Close(w.evfd)
	var err2 error
	if w.epfile != nil {
		err2 = w.epfile.Close()
	} else {
		err2 = unix.Close(w.epfd)
	}
	if err1 != nil || err2 != nil {
		return fmt.Errorf("close worker descriptors: %v, %v", err1, err2)
	}
	return nil
}

// kick wakes the worker from epoll_wait.
func (w *worker) kick() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	for {
		_, err := unix.Write(w.evfd, one[:])
		// EAGAIN means the counter is saturated: the worker is awake anyway.
		if err != unix.EINTR {
			return
		}
	}
}

// quiesce asks for a grace period; the returned channel closes when the
// worker has passed the top of its loop.
func (w *worker) quiesce() chan struct{} {
	ch := make(chan struct{})
	w.qmu.Lock()
	w.waiters = append(w.waiters, ch)
	w.pending.Store(true)
	w.qmu.Unlock()
	w.kick()
	return ch
}

func (w *worker) releaseWaiters() {
	w.qmu.Lock()
	ws := w.waiters
	w.waiters = nil
	w.pending.Store(false)
	w.qmu.Unlock()
	for _, ch := range ws {
		close(ch)
	}
}

func (w *worker) run() {
	defer w.r.wg.Done()
	defer close(w.done)
	if !waitInRuntime {
		// The loop blocks in epoll_wait; a locked thread keeps it from
		// taking a P's thread away from other goroutines each time.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	defer w.releaseWaiters()
	for {
		// Top of the loop: nothing looked up in the previous round is
		// still in use, which is what a grace period waits for.
		if w.pending.Load() {
			w.releaseWaiters()
		}
		if w.r.closing.Load() {
			return
		}
		n, err := w.wait()
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			w.r.log.Error("epoll_wait failed; worker stops", "err", err)
			return
		}
		w.cnt.c[cntWakeups].Add(1)
		now := time.Now().UnixNano()
		for i := 0; i < n; i++ {
			fd := w.events[i].Fd
			if int(fd) == w.evfd {
				unix.Read(w.evfd, w.evbuf[:])
				continue
			}
			p := w.r.fds.load(fd)
			if p == nil {
				continue
			}
			w.serve(p, now)
		}
		if coalesce > 0 && n < len(w.events) {
			time.Sleep(coalesce)
		}
	}
}

// serve reads batches from p, decides and sends the forwarded part of
// each. Level-triggered, one batch per wakeup suffices: epoll reports the
// socket again if data is left. Edge-triggered, it reads until a short
// batch, or re-arms after maxRounds so the rest is reported again.
func (w *worker) serve(p *port, now int64) {
	for round := 0; ; round++ {
		n := w.recv(p.fd)
		if n <= 0 {
			return
		}
		if e := p.flow.Load(); e != nil && e.special {
			w.serveSpecial(p, e, n, now)
		} else if out, ns := w.decideBatch(e, n, now); ns > 0 {
			w.send(out.fd, ns)
		}
		if !edgeTriggered || n < w.batch {
			return
		}
		if round == maxRounds-1 {
			w.modev = unix.EpollEvent{Events: epollEvents(), Fd: int32(p.fd)}
			unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, p.fd, &w.modev)
			return
		}
	}
}

func (w *worker) recv(fd int) int {
	for i := 0; i < w.batch; i++ {
		w.rhdr[i].Hdr.Namelen = uint32(len(sockaddr{}))
		w.rhdr[i].Hdr.Flags = 0
	}
	for {
		w.cnt.c[cntRecvCalls].Add(1)
		n, errno := syscall6(unix.SYS_RECVMMSG, uintptr(fd),
			uintptr(unsafe.Pointer(&w.rhdr[0])), uintptr(w.batch), unix.MSG_DONTWAIT)
		switch errno {
		case 0:
			return int(n)
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0
		}
		w.cnt.c[ReasonRecvError].Add(1)
		return 0
	}
}

// decideBatch runs the decision over the n datagrams in the receive
// buffers and lays the forwarded ones out as a sendmmsg batch that points
// into the same buffers: no copy. A socket has at most one flow, so one
// batch has one sending socket.
func (w *worker) decideBatch(e *flowEntry, n int, now int64) (*port, int) {
	w.cnt.c[cntReceived].Add(uint64(n))
	if e == nil {
		w.cnt.c[ReasonNoFlow].Add(uint64(n))
		return nil, 0
	}
	ns := 0
	// Drops are counted here and added once per batch: an atomic add per
	// datagram would cost more than the decision.
	var drops [ReasonRecvError + 1]uint64
	for i := 0; i < n; i++ {
		h := &w.rhdr[i]
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			drops[ReasonOversize]++
			continue
		}
		src, ok := decodeSockaddr(&w.rname[i], h.Hdr.Namelen)
		if !ok {
			drops[ReasonWrongSource]++
			continue
		}
		v, reason, ch := e.decide(src, int(h.Len), now)
		if ch != changeNone {
			w.cnt.countChange(ch)
			if cb := w.r.cfg.OnLatch; cb != nil {
				cb(e.event())
			}
		}
		if v != Forward {
			drops[reason]++
			continue
		}
		w.sname[ns] = e.dstSA
		w.shdr[ns].Hdr.Namelen = e.dstLen
		w.siov[ns].Base = &w.buf[i*bufSize]
		w.siov[ns].SetLen(int(h.Len))
		ns++
	}
	for r, d := range drops {
		if d != 0 {
			w.cnt.c[r].Add(d)
		}
	}
	return e.outPort, ns
}

// send pushes ns prepared messages. A message the kernel refuses is
// counted and skipped; a full send buffer drops the rest of the batch
// rather than stall every other socket of this worker.
func (w *worker) send(fd, ns int) {
	if ns == 1 && singleSendto {
		w.sendOne(fd)
		return
	}
	off := 0
	var sent uint64
	for off < ns {
		w.cnt.c[cntSendCalls].Add(1)
		n, errno := syscall6(unix.SYS_SENDMMSG, uintptr(fd),
			uintptr(unsafe.Pointer(&w.shdr[off])), uintptr(ns-off), unix.MSG_DONTWAIT)
		switch errno {
		case 0:
			off += int(n)
			sent += uint64(n)
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			w.cnt.c[ReasonSendError].Add(uint64(ns - off))
			off = ns
			continue
		}
		w.cnt.c[ReasonSendError].Add(1)
		off++
	}
	w.cnt.c[cntForwarded].Add(sent)
}

// sendOne sends the one prepared message with sendto: with thousands of
// sockets at a low rate each, a batch is nearly always one datagram, and
// sendto spares sendmmsg's copy of the msghdr and iovec from user memory.
func (w *worker) sendOne(fd int) {
	h := &w.shdr[0].Hdr
	for {
		w.cnt.c[cntSendCalls].Add(1)
		_, errno := syscall6sendto(uintptr(fd), uintptr(unsafe.Pointer(w.siov[0].Base)), uintptr(w.siov[0].Len),
			uintptr(unsafe.Pointer(h.Name)), uintptr(h.Namelen))
		switch errno {
		case 0:
			w.cnt.c[cntForwarded].Add(1)
			return
		case unix.EINTR:
			continue
		}
		w.cnt.c[ReasonSendError].Add(1)
		return
	}
}

func syscall6sendto(fd, buf, n, name, namelen uintptr) (uintptr, unix.Errno) {
	if rawSyscalls {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, buf, n, unix.MSG_DONTWAIT, name, namelen)
		return r, e
	}
	r, _, e := unix.Syscall6(unix.SYS_SENDTO, fd, buf, n, unix.MSG_DONTWAIT, name, namelen)
	return r, e
}
