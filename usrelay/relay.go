package usrelay

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"sipxdp/relay"
)

// Config configures a Relay. Zero values pick the defaults.
type Config struct {
	// Workers is the number of epoll loops (goroutines, each with its own
	// epoll instance and share of the sockets); default runtime.NumCPU().
	Workers int
	// Batch is the number of datagrams per recvmmsg/sendmmsg; default 32.
	Batch int
	// OnLatch is called from a worker when a learning flow takes a new
	// source (provisional or candidate) or locks. It must not block: the
	// worker forwards nothing meanwhile. Nor may it call Upsert or Delete
	// directly: those can wait for this very worker to finish its round.
	// Hand the event to another goroutine.
	OnLatch func(ev relay.LatchEvent)
	// Logger receives control-path events only; nil discards them.
	Logger *slog.Logger
	// SocketBuffer is SO_RCVBUF and SO_SNDBUF per socket; default 2 MiB.
	// Memory is only used while datagrams are queued, so a large value
	// costs nothing when the relay keeps up and absorbs scheduling hiccups
	// when it does not.
	SocketBuffer int
	// Freebind sets IP_FREEBIND (IPV6_FREEBIND) on the relay sockets, so
	// they bind an address this host does not hold yet: a standby's
	// floating relay address, which arrives when the active node fails.
	Freebind bool
}

const (
	defaultBatch  = 32
	maxBatch      = 1024
	defaultSocBuf = 2 << 20
	// bufSize bounds one datagram. Anything larger than an Ethernet-MTU
	// datagram is not RTP we relay; the kernel flags it MSG_TRUNC and it is
	// counted as oversize.
	bufSize   = 2048
	maxEvents = 256
)

// Relay is the userspace Datapath.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	table   *Table
	fds     fdTable
	workers []*worker
	wg      sync.WaitGroup
	nsock   atomic.Int64
	closing atomic.Bool

	// mu serialises control operations: socket lifecycle and the grace
	// periods that make closing safe.
	mu     sync.Mutex
	closed bool
	// capped logs once that the socket buffers could not be forced.
	capped sync.Once
}

var _ relay.Datapath = (*Relay)(nil)

// New starts the workers. The relay holds no sockets until flows arrive.
func New(cfg Config) (*Relay, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.Batch <= 0 {
		cfg.Batch = defaultBatch
	}
	if cfg.Batch > maxBatch {
		cfg.Batch = maxBatch
	}
	if cfg.SocketBuffer <= 0 {
		cfg.SocketBuffer = defaultSocBuf
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Relay{cfg: cfg, log: log, table: NewTable()}
	for i := 0; i < cfg.Workers; i++ {
		w, err := newWorker(r, cfg.Batch)
		if err != nil {
			for _, w := range r.workers {
				w.closeFDs()
			}
			return nil, fmt.Errorf("start userspace relay worker %d: %w", i, err)
		}
		r.workers = append(r.workers, w)
	}
	for _, w := range r.workers {
		r.wg.Add(1)
		go w.run()
	}
	log.Info("userspace relay started", "workers", cfg.Workers, "batch", cfg.Batch)
	return r, nil
}

// Name implements relay.Datapath.
func (r *Relay) Name() string { return "userspace" }

// Upsert installs or replaces one direction, opening the sockets for
// Key.Local and Out if no other flow holds them yet.
func (r *Relay) Upsert(f relay.Flow) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("upsert %s: userspace relay closed", f.Key)
	}
	gone, err := r.table.upsert(f, r.open, r.closePorts)
	if err != nil {
		return fmt.Errorf("upsert %s: %w", f.Key, err)
	}
	r.closePorts(gone)
	return r.setTOS(f)
}

// setTOS gives the sockets f sends from its TOS (IP_TOS, IPV6_TCLASS):
// a relay port belongs to one call, so a socket option is per call, and
// costs the hot path nothing. Called with r.mu held, which guards
// port.tos.
func (r *Relay) setTOS(f relay.Flow) error {
	for _, a := range []netip.AddrPort{f.Out, f.RTCPOut} {
		if !a.IsValid() {
			continue
		}
		r.table.mu.RLock()
		p := r.table.ports[normalize(a)]
		r.table.mu.RUnlock()
		if p == nil || p.fd < 0 {
			continue
		}
		lvl, opt, want := tosOption(p.addr, f.TOS)
		if p.tos == want {
			continue
		}
		if err := unix.SetsockoptInt(p.fd, lvl, opt, want); err != nil {
			return fmt.Errorf("upsert %s: set tos %s on %s: %w", f.Key, f.TOS, p.addr, err)
		}
		p.tos = want
	}
	return nil
}

// tosOption is the socket option that gives datagrams sent from out the
// TOS t: out's family decides, not the flow's key, so a flow between
// families sets IPV6_TCLASS on an IPv6 socket and IP_TOS on an IPv4 one.
// Unset, the value is a new socket's default, 0.
func tosOption(out netip.AddrPort, t relay.TOS) (level, opt, value int) {
	if t.Set {
		value = int(t.Value)
	}
	if out.Addr().Unmap().Is4() {
		return unix.IPPROTO_IP, unix.IP_TOS, value
	}
	return unix.IPPROTO_IPV6, unix.IPV6_TCLASS, value
}

// Delete removes one direction and closes the sockets no flow uses any
// more. When it returns, those ports can be bound again.
func (r *Relay) Delete(k relay.FlowKey) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("delete %s: %w", k, relay.ErrFlowNotFound)
	}
	gone, err := r.table.delete(k)
	if err != nil {
		return err
	}
	r.closePorts(gone)
	return nil
}

// Stats implements relay.Datapath.
func (r *Relay) Stats(k relay.FlowKey) (relay.FlowStats, error) { return r.table.Stats(k) }

// Latch returns what a flow has latched (relay.LatchReader).
func (r *Relay) Latch(k relay.FlowKey) (relay.LatchEvent, error) { return r.table.Latch(k) }

// Sockets returns the number of open relay sockets.
func (r *Relay) Sockets() int { return int(r.nsock.Load()) }

// Counters returns relay-wide counters: received, forwarded, latched,
// dropped and one entry per drop reason, plus sockets.
func (r *Relay) Counters() map[string]uint64 {
	m := make(map[string]uint64)
	var none counters // every name, even before a worker runs
	none.addTo(m)
	for _, w := range r.workers {
		w.cnt.addTo(m)
	}
	addDropped(m)
	m["sockets"] = uint64(r.nsock.Load())
	return m
}

// Close stops the workers and closes every socket.
func (r *Relay) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.closing.Store(true)
	for _, w := range r.workers {
		w.kick()
	}
	r.wg.Wait()
	var errs []error
	r.table.mu.Lock()
	for a, p := range r.table.ports {
		if p.fd >= 0 {
			r.fds.store(p.fd, nil)
			if err := unix.Close(p.fd); err != nil {
				errs = append(errs, fmt.Errorf("close socket %s: %w", a, err))
			}
			r.nsock.Add(-1)
		}
		p.flow.Store(nil)
		delete(r.table.ports, a)
	}
	r.table.mu.Unlock()
	for _, w := range r.workers {
		if err := w.closeFDs(); err != nil {
			errs = append(errs, err)
		}
	}
	r.log.Info("userspace relay closed")
	return errors.Join(errs...)
}

// open binds the socket for p and hands it to a worker. Called with r.mu
// and the table lock held, before any flow referencing p is published.
func (r *Relay) open(p *port) error {
	a := p.addr.Addr()
	fam := unix.AF_INET
	if a.Is6() {
		fam = unix.AF_INET6
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return fmt.Errorf("open udp socket for %s: %w", p.addr, err)
	}
	fail := func(err error) error {
		unix.Close(fd)
		return err
	}
	if fd >= maxFD {
		return fail(fmt.Errorf("open udp socket for %s: descriptor %d beyond table", p.addr, fd))
	}
	var sa unix.Sockaddr
	if a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(p.addr.Port()), Addr: a.As4()}
	} else {
		// Only this family: a v6 wildcard must not swallow IPv4 ports
		// another flow may bind.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail(fmt.Errorf("set IPV6_V6ONLY on %s: %w", p.addr, err))
		}
		s6 := &unix.SockaddrInet6{Port: int(p.addr.Port()), Addr: a.As16()}
		if z := a.Zone(); z != "" {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return fail(fmt.Errorf("resolve zone of %s: %w", p.addr, err))
			}
			s6.ZoneId = uint32(ifi.Index)
		}
		sa = s6
	}
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if err := setBuffer(fd, o[0], o[1], r.cfg.SocketBuffer); errors.Is(err, unix.EPERM) {
			r.capped.Do(func() {
				r.log.Warn("relay socket buffers are capped by net.core.rmem_max and wmem_max: exceeding them needs CAP_NET_ADMIN",
					"wanted_bytes", r.cfg.SocketBuffer)
			})
		}
	}
	if r.cfg.Freebind {
		lvl, opt := unix.IPPROTO_IP, unix.IP_FREEBIND
		if !a.Is4() {
			lvl, opt = unix.IPPROTO_IPV6, unix.IPV6_FREEBIND
		}
		if err := unix.SetsockoptInt(fd, lvl, opt, 1); err != nil {
			return fail(fmt.Errorf("set freebind on %s: %w", p.addr, err))
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail(fmt.Errorf("bind udp %s: %w", p.addr, err))
	}
	w := r.workers[pickWorker(p.addr, len(r.workers))]
	p.fd, p.w = fd, w
	r.fds.store(fd, p)
	ev := unix.EpollEvent{Events: epollEvents(), Fd: int32(fd)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		r.fds.store(fd, nil)
		p.fd = -1
		return fail(fmt.Errorf("register %s with epoll: %w", p.addr, err))
	}
	r.nsock.Add(1)
	return nil
}

// setBuffer tries the FORCE variant first: with CAP_NET_ADMIN it ignores
// net.core.rmem_max/wmem_max, which are far too small for bursts. It
// returns why FORCE failed (the plain option, capped by the sysctl, is
// then set), or nil.
func setBuffer(fd, force, plain, size int) error {
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size)
	if err == nil {
		return nil
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
	return err
}

// pickWorker spreads ports over workers by a hash of the port so that the
// usual even/odd and leg A/leg B allocation patterns do not all land on
// one worker.
func pickWorker(a netip.AddrPort, n int) int {
	h := uint32(a.Port()) * 0x9e3779b1
	return int((uint64(h) * uint64(n)) >> 32)
}

// closePorts unregisters ps, waits until no worker can still be using
// their descriptors, then closes them.
func (r *Relay) closePorts(ps []*port) {
	if len(ps) == 0 {
		return
	}
	for _, p := range ps {
		if p.fd < 0 {
			continue
		}
		if err := unix.EpollCtl(p.w.epfd, unix.EPOLL_CTL_DEL, p.fd, nil); err != nil {
			r.log.Warn("unregister socket from epoll", "addr", p.addr, "err", err)
		}
		r.fds.store(p.fd, nil)
	}
	r.synchronize()
	for _, p := range ps {
		if p.fd < 0 {
			continue
		}
		if err := unix.Close(p.fd); err != nil {
			r.log.Warn("close socket", "addr", p.addr, "err", err)
		}
		p.fd = -1
		r.nsock.Add(-1)
	}
}

// synchronize returns once every worker has passed the top of its loop,
// so no worker still holds a port, flow or descriptor it looked up before
// the caller unpublished them. A worker sending from a port owned by
// another worker is why this waits for all of them, not just the owner.
func (r *Relay) synchronize() {
	chans := make([]chan struct{}, len(r.workers))
	for i, w := range r.workers {
		chans[i] = w.quiesce()
	}
	for i, w := range r.workers {
		select {
		case <-chans[i]:
		case <-w.done:
		}
	}
}

// fdTable maps descriptors to ports for the workers without locks: two
// levels of atomic pointers, chunks allocated on first use.
const (
	fdChunkBits = 10
	fdChunks    = 1024
	maxFD       = fdChunks << fdChunkBits
)

type fdChunk [1 << fdChunkBits]atomic.Pointer[port]

type fdTable struct {
	chunks [fdChunks]atomic.Pointer[fdChunk]
}

func (t *fdTable) load(fd int32) *port {
	if fd < 0 || fd >= maxFD {
		return nil
	}
	c := t.chunks[fd>>fdChunkBits].Load()
	if c == nil {
		return nil
	}
	return c[fd&(1<<fdChunkBits-1)].Load()
}

// store is called only under Relay.mu.
func (t *fdTable) store(fd int, p *port) {
	c := t.chunks[fd>>fdChunkBits].Load()
	if c == nil {
		if p == nil {
			return
		}
		c = new(fdChunk)
		t.chunks[fd>>fdChunkBits].Store(c)
	}
	c[fd&(1<<fdChunkBits-1)].Store(p)
}

// CounterNames lists, sorted, every counter Counters reports, so that an
// exporter can check it gives each one a place.
func CounterNames() []string {
	var r Relay
	return slices.Sorted(maps.Keys(r.Counters()))
}
