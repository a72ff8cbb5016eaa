package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// KernelPath is the fast path (XDP or tc). It holds copies of the flows
// that are ready for it.
type KernelPath interface {
	Datapath
	// Reason says why this hook was chosen (shown by /health and relayctl).
	Reason() string
	// Counters are the program's global counters (pass reasons, drops...).
	Counters() (map[string]uint64, error)
}

// SlowPath is the userspace relay. It forwards every flow it holds, latches
// learning flows and calls Engine.OnLatch, and closes a port's socket when
// no flow references it any more.
type SlowPath interface {
	Datapath
	Counters() map[string]uint64
	Sockets() int
}

// AddressConfig is one relay address and its port range.
type AddressConfig struct {
	Name       string     // e.g. "external", "internal"; may repeat across families
	Local      netip.Addr // bound and matched by the datapaths
	Advertised netip.Addr // written into SDP; zero means Local
	PortMin    uint16
	PortMax    uint16
}

// Config of the engine. Zero values get the defaults documented per field.
type Config struct {
	Addresses []AddressConfig
	// Strict: latch only sources whose IP is the announced IP, and drop
	// anything not from the latched source.
	Strict bool
	// MediaTimeout: no packet in any direction of a session for this long
	// emits one Event. Default 60s.
	MediaTimeout time.Duration
	// HandoffDelay: how long userspace keeps forwarding a flow after it is
	// in the kernel, so packets queued on its socket are not lost.
	// Default 1s.
	HandoffDelay time.Duration
	Logger       *slog.Logger
	// ProcDir is where ReserveLocalPorts looks for sysctls; default "/proc".
	ProcDir string
	// Now is the clock; default time.Now. Tests inject one.
	Now func() time.Time
	// LatchQueue bounds the OnLatch queue; default 8192.
	LatchQueue int
}

// Side of a stream: A is the caller (offerer), B the callee.
type Side uint8

const (
	SideA Side = 0
	SideB Side = 1
)

func (s Side) String() string {
	if s == SideA {
		return "A"
	}
	return "B"
}

func (s Side) other() Side { return 1 - s }

// Family selects the IP family of a leg's relay address.
type Family uint8

const (
	FamilyAny Family = iota
	IPv4
	IPv6
)

// LegSpec chooses the relay address of one leg: by name ("" for the
// first configured address) and family.
type LegSpec struct {
	Address string
	Family  Family
}

// LegPorts is what the SIP layer writes into SDP for one leg.
type LegPorts struct {
	Address    string
	Local      netip.Addr
	Advertised netip.Addr
	RTP, RTCP  uint16
}

// StreamPorts are the relay ports of the two legs of one stream.
type StreamPorts struct {
	A, B LegPorts
}

// Leg returns the ports of one side.
func (p StreamPorts) Leg(s Side) LegPorts {
	if s == SideA {
		return p.A
	}
	return p.B
}

// Reason of an Event.
const ReasonMediaTimeout = "media timeout"

// Event is something the SIP layer must act on (e.g. end the call).
type Event struct {
	CallID string
	Reason string
	At     time.Time
}

// Path and state names used in FlowInfo.
const (
	PathKernel    = "kernel"
	PathUserspace = "userspace"

	StateLearning = "learning"
	StateActive   = "active"
	StateIdle     = "idle"
)

// idleAfter: a latched flow with no packet for this long is shown as idle.
// Longer than the usual RTCP interval (5s) so RTCP flows do not flap.
const idleAfter = 10 * time.Second

// FlowInfo describes one installed direction.
type FlowInfo struct {
	CallID    string
	Stream    int
	Side      Side   // the leg packets arrive on
	Component string // "rtp" or "rtcp"
	Local     netip.AddrPort
	Peer      netip.AddrPort
	Out       netip.AddrPort
	Dst       netip.AddrPort
	Path      string // PathKernel or PathUserspace
	State     string // StateLearning, StateActive or StateIdle
	// KernelError says why the flow is not on the kernel path although one
	// exists (e.g. cross-family legs, or the error the kernel returned).
	KernelError string
	Packets     uint64
	Bytes       uint64
	LastSeen    time.Time
}

// LegInfo is one leg of a stream with what was learned about it.
type LegInfo struct {
	LegPorts
	PeerRTP, PeerRTCP       netip.AddrPort // announced in SDP
	RTCPMux                 bool
	LatchedRTP, LatchedRTCP netip.AddrPort // real sources; zero until latched
	// Received counts packets that arrived on this leg's ports.
	Received FlowStats
}

// StreamInfo is one m-line.
type StreamInfo struct {
	Index int
	A, B  LegInfo
}

// SessionInfo is a snapshot of a session, or its final statistics when
// returned by DeleteSession.
type SessionInfo struct {
	CallID   string
	Created  time.Time
	TimedOut bool
	Streams  []StreamInfo
	Stats    FlowStats // all directions together
}

// PoolInfo is the occupancy of one relay address's port pool.
type PoolInfo struct {
	Name       string
	Local      netip.Addr
	FreePairs  int
	TotalPairs int
}

// Totals are engine-wide statistics.
type Totals struct {
	Path, PathReason string
	Draining         bool
	Sessions         int
	Flows            int // installed directions
	KernelFlows      int // latched and on the kernel path
	UserspaceFlows   int
	// Packets and bytes since the engine started, including ended
	// sessions, split by the path that forwarded them.
	KernelPackets, KernelBytes       uint64
	UserspacePackets, UserspaceBytes uint64
	KernelCounters                   map[string]uint64
	KernelCountersError              string
	UserspaceCounters                map[string]uint64
	UserspaceSockets                 int
	LatchDrops                       uint64 // OnLatch calls lost to a full queue
	Pools                            []PoolInfo
}

// Components of a stream direction.
const (
	compRTP  = 0
	compRTCP = 1
)

// dir is one direction of a stream: packets arriving on leg `from`'s port
// of component comp. The sync state says which datapaths hold a copy.
type dir struct {
	st       *stream
	from     Side
	comp     uint8
	outComp  uint8 // RTP when the receiving leg muxes RTCP
	valid    bool  // flow is installed (its Dst is known)
	inSlow   bool
	inKern   bool
	learning bool
	gen      uint32 // bumped on every change; stales queued handoffs
	// Only what cannot be derived from the legs is kept: 50,000 calls
	// hold 200,000 of these.
	peer, dst netip.AddrPort
	since     time.Time // installed or last changed; inactivity base
	kernErr   string
	// Counters of copies removed from a datapath while the flow lives on.
	retiredUser, retiredKern FlowStats
}

type leg struct {
	pool      *addrPool
	rtp       uint16
	announced [2]netip.AddrPort
	latched   [2]netip.AddrPort
	mux       bool
	peerSet   bool
}

func (l *leg) local(comp uint8) netip.AddrPort {
	return netip.AddrPortFrom(l.pool.cfg.Local, l.rtp+uint16(comp))
}

type stream struct {
	sess  *session
	index int
	legs  [2]leg
	// dirs: A→B RTP, A→B RTCP, B→A RTP, B→A RTCP.
	dirs [4]dir
}

func (s *stream) dir(from Side, comp uint8) *dir { return &s.dirs[int(from)*2+int(comp)] }

type session struct {
	callID   string
	created  time.Time
	streams  []*stream
	checkAt  time.Time // next inactivity check; zero when nothing is installed
	timedOut bool
	deleted  bool
}

type addrPool struct {
	cfg  AddressConfig
	pool *portPool
}

type latchEvent struct {
	k   FlowKey
	src netip.AddrPort
}

type handoff struct {
	d   *dir
	gen uint32
	at  time.Time
}

// Engine owns sessions, legs and flows, and keeps the datapaths' copies in
// step. All methods are safe for concurrent use.
type Engine struct {
	cfg          Config
	log          *slog.Logger
	now          func() time.Time
	kernel       KernelPath // nil without eBPF
	slow         SlowPath
	kernelReason string

	latchq     chan latchEvent
	latchDrops atomic.Uint64
	events     chan Event
	done       chan struct{}
	closeOnce  sync.Once
	runMu      sync.Mutex // held by Run for its lifetime
	runDone    chan struct{}

	mu            sync.Mutex
	closed        bool
	draining      bool
	pools         []*addrPool
	sessions      map[string]*session
	flows         map[netip.AddrPort]*dir // every allocated port, installed or not
	handoffs      []handoff               // FIFO: the delay is constant, so deadlines are ordered
	pending       []Event                 // events not yet taken by the reader
	resyncedDrops uint64                  // latchDrops when resync last ran
	// Counters of sessions already deleted, so totals do not go down.
	endedKern, endedUser FlowStats
}

// NewEngine checks the configuration, sets up the port pools and reserves
// their ranges against ephemeral use. kernel may be nil; kernelReason then
// says why (it is what PathReason reports).
func NewEngine(cfg Config, kernel KernelPath, slow SlowPath, kernelReason string) (*Engine, error) {
	if slow == nil {
		return nil, errors.New("new engine: a slow path is required")
	}
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("new engine: no relay addresses")
	}
	if cfg.MediaTimeout <= 0 {
		cfg.MediaTimeout = 60 * time.Second
	}
	if cfg.HandoffDelay <= 0 {
		cfg.HandoffDelay = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LatchQueue <= 0 {
		cfg.LatchQueue = 8192
	}
	e := &Engine{
		cfg:          cfg,
		log:          cfg.Logger,
		now:          cfg.Now,
		kernel:       kernel,
		slow:         slow,
		kernelReason: kernelReason,
		latchq:       make(chan latchEvent, cfg.LatchQueue),
		events:       make(chan Event, 256),
		done:         make(chan struct{}),
		sessions:     make(map[string]*session),
		flows:        make(map[netip.AddrPort]*dir),
	}
	type span struct {
		addr   netip.Addr
		lo, hi uint16
	}
	var spans []span
	var ranges [][2]uint16
	for i, a := range cfg.Addresses {
		if !a.Local.IsValid() {
			return nil, fmt.Errorf("new engine: address %d (%q): no local address", i, a.Name)
		}
		a.Local = a.Local.Unmap()
		if !a.Advertised.IsValid() {
			a.Advertised = a.Local
		}
		if a.PortMin > a.PortMax {
			return nil, fmt.Errorf("new engine: address %s: port range %d-%d is empty", a.Local, a.PortMin, a.PortMax)
		}
		for _, s := range spans {
			if s.addr == a.Local && a.PortMin <= s.hi && a.PortMax >= s.lo {
				return nil, fmt.Errorf("new engine: address %s: port ranges overlap", a.Local)
			}
		}
		spans = append(spans, span{a.Local, a.PortMin, a.PortMax})
		p, err := newPortPool(a.PortMin, a.PortMax)
		if err != nil {
			return nil, fmt.Errorf("new engine: address %s: %w", a.Local, err)
		}
		e.pools = append(e.pools, &addrPool{cfg: a, pool: p})
		ranges = append(ranges, [2]uint16{a.PortMin, a.PortMax})
	}
	// Not fatal: the relay works without the reservation, and the function
	// has logged what is at risk.
	_ = ReserveLocalPorts(cfg.ProcDir, ranges, e.log)
	if kernel != nil {
		e.log.Info("media path", "path", kernel.Name(), "reason", kernel.Reason())
	} else {
		e.log.Warn("media path: no kernel datapath, userspace forwards everything",
			"path", slow.Name(), "reason", kernelReason)
	}
	return e, nil
}

// PathName is the datapath that forwards latched media.
func (e *Engine) PathName() string {
	if e.kernel != nil {
		return e.kernel.Name()
	}
	return e.slow.Name()
}

// PathReason says why that path was chosen.
func (e *Engine) PathReason() string {
	if e.kernel != nil {
		return e.kernel.Reason()
	}
	return e.kernelReason
}

// Events delivers media timeouts. It is closed by Close.
func (e *Engine) Events() <-chan Event { return e.events }

// Drain stops (true) or resumes (false) accepting new sessions. Existing
// sessions go on.
func (e *Engine) Drain(on bool) {
	e.mu.Lock()
	e.draining = on
	e.mu.Unlock()
	e.log.Info("drain", "on", on)
}

// CreateSession starts a session for a call.
func (e *Engine) CreateSession(callID string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("create session %q: %w", callID, ErrEngineClosed)
	}
	if e.draining {
		return fmt.Errorf("create session %q: %w", callID, ErrDraining)
	}
	if _, ok := e.sessions[callID]; ok {
		return fmt.Errorf("create session %q: %w", callID, ErrSessionExists)
	}
	e.sessions[callID] = &session{callID: callID, created: e.now()}
	return nil
}

func (e *Engine) pickPool(spec LegSpec) (*addrPool, error) {
	for _, p := range e.pools {
		if spec.Address != "" && p.cfg.Name != spec.Address {
			continue
		}
		switch spec.Family {
		case IPv4:
			if !p.cfg.Local.Is4() {
				continue
			}
		case IPv6:
			if !p.cfg.Local.Is6() {
				continue
			}
		}
		return p, nil
	}
	return nil, fmt.Errorf("no relay address %q of family %d", spec.Address, spec.Family)
}

// AddStream allocates the relay ports of both legs of m-line index. Adding
// an index that exists returns its ports unchanged, so a re-INVITE can
// call it again.
func (e *Engine) AddStream(callID string, index int, a, b LegSpec) (StreamPorts, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return StreamPorts{}, fmt.Errorf("add stream %q/%d: %w", callID, index, ErrSessionNotFound)
	}
	if st := s.stream(index); st != nil {
		return st.ports(), nil
	}
	pa, err := e.pickPool(a)
	if err != nil {
		return StreamPorts{}, fmt.Errorf("add stream %q/%d side A: %w", callID, index, err)
	}
	pb, err := e.pickPool(b)
	if err != nil {
		return StreamPorts{}, fmt.Errorf("add stream %q/%d side B: %w", callID, index, err)
	}
	ra, err := pa.pool.alloc()
	if err != nil {
		return StreamPorts{}, fmt.Errorf("add stream %q/%d side A on %s: %w", callID, index, pa.cfg.Local, err)
	}
	rb, err := pb.pool.alloc()
	if err != nil {
		_ = pa.pool.free(ra)
		return StreamPorts{}, fmt.Errorf("add stream %q/%d side B on %s: %w", callID, index, pb.cfg.Local, err)
	}
	st := &stream{sess: s, index: index}
	st.legs[SideA] = leg{pool: pa, rtp: ra}
	st.legs[SideB] = leg{pool: pb, rtp: rb}
	for i := range st.dirs {
		d := &st.dirs[i]
		d.st = st
		d.from = Side(i / 2)
		d.comp = uint8(i % 2)
		e.flows[st.legs[d.from].local(d.comp)] = d
	}
	s.streams = append(s.streams, st)
	return st.ports(), nil
}

// RemoveStream removes one m-line (e.g. port 0 in a re-INVITE): its flows
// leave every datapath and its ports are freed.
func (e *Engine) RemoveStream(callID string, index int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return fmt.Errorf("remove stream %q/%d: %w", callID, index, ErrSessionNotFound)
	}
	for i, st := range s.streams {
		if st.index == index {
			e.removeStream(st)
			s.streams = append(s.streams[:i], s.streams[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("remove stream %q/%d: %w", callID, index, ErrStreamNotFound)
}

func (s *session) stream(index int) *stream {
	for _, st := range s.streams {
		if st.index == index {
			return st
		}
	}
	return nil
}

func (st *stream) ports() StreamPorts {
	return StreamPorts{A: st.legs[SideA].ports(), B: st.legs[SideB].ports()}
}

func (l *leg) ports() LegPorts {
	return LegPorts{
		Address:    l.pool.cfg.Name,
		Local:      l.pool.cfg.Local,
		Advertised: l.pool.cfg.Advertised,
		RTP:        l.rtp,
		RTCP:       l.rtp + 1,
	}
}

// SetPeer records the media addresses one side announced in SDP. A changed
// address (re-INVITE) forgets what was latched for it, so the flows learn
// again. rtcp is ignored when rtcpMux is set.
func (e *Engine) SetPeer(callID string, index int, side Side, rtp, rtcp netip.AddrPort, rtcpMux bool) error {
	if side > SideB {
		return fmt.Errorf("set peer %q/%d: bad side %d", callID, index, side)
	}
	rtp = unmap(rtp)
	rtcp = unmap(rtcp)
	if rtcpMux {
		rtcp = netip.AddrPort{}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return fmt.Errorf("set peer %q/%d: %w", callID, index, ErrSessionNotFound)
	}
	st := s.stream(index)
	if st == nil {
		return fmt.Errorf("set peer %q/%d: %w", callID, index, ErrStreamNotFound)
	}
	l := &st.legs[side]
	if l.peerSet && l.announced[compRTP] == rtp && l.announced[compRTCP] == rtcp && l.mux == rtcpMux {
		return nil // a re-INVITE that changes nothing keeps what was latched
	}
	if l.announced[compRTP] != rtp {
		l.latched[compRTP] = netip.AddrPort{}
	}
	if l.announced[compRTCP] != rtcp || l.mux != rtcpMux {
		l.latched[compRTCP] = netip.AddrPort{}
	}
	l.announced = [2]netip.AddrPort{rtp, rtcp}
	l.mux = rtcpMux
	l.peerSet = true
	if err := e.reconcile(st); err != nil {
		return fmt.Errorf("set peer %q/%d side %s: %w", callID, index, side, err)
	}
	return nil
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	if !ap.IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func known(ap netip.AddrPort) bool {
	return ap.IsValid() && ap.Port() != 0 && !ap.Addr().IsUnspecified()
}

// desired computes what direction d should be, and whether it can be
// installed at all (both sides announced, destination known).
func (e *Engine) desired(d *dir) (Flow, bool) {
	st := d.st
	x, y := &st.legs[d.from], &st.legs[d.from.other()]
	if !y.peerSet || (e.cfg.Strict && !x.peerSet) {
		// Without y's address there is nowhere to send. x's address only
		// seeds latching, and early media may arrive before x's SDP, except
		// in strict mode where nothing may latch before it is announced.
		return Flow{}, false
	}
	if d.comp == compRTCP && x.mux {
		return Flow{}, false // RTCP arrives on the RTP port
	}
	outComp := d.comp
	if y.mux {
		// A muxed receiver takes RTCP on its RTP port. (A muxed sender's
		// RTCP goes out on the RTP flow: mixing mux and non-mux legs
		// needs demultiplexing that no datapath does yet.)
		outComp = compRTP
	}
	dst := y.latched[outComp]
	if !dst.IsValid() {
		dst = y.announced[outComp]
	}
	if !known(dst) {
		return Flow{}, false
	}
	out := y.local(outComp)
	if dst.Addr().Is4() != out.Addr().Is4() {
		return Flow{}, false // the peer announced another family than its leg's relay address
	}
	f := Flow{Key: FlowKey{Local: x.local(d.comp)}, Out: out, Dst: dst, Strict: e.cfg.Strict}
	if src := x.latched[d.comp]; src.IsValid() {
		f.Peer = src
	} else {
		f.Peer = x.announced[d.comp]
		f.Learning = true
	}
	return f, true
}

func (d *dir) key() FlowKey { return FlowKey{Local: d.st.legs[d.from].local(d.comp)} }

func (d *dir) out() netip.AddrPort { return d.st.legs[d.from.other()].local(d.outComp) }

// same reports whether f is what is installed. Key and Strict never change
// for a direction.
func (d *dir) same(f Flow) bool {
	return d.valid && d.peer == f.Peer && d.learning == f.Learning && d.dst == f.Dst && d.out() == f.Out
}

// reconcile brings every direction of a stream in step with its legs.
func (e *Engine) reconcile(st *stream) error {
	var errs []error
	for i := range st.dirs {
		if err := e.sync(&st.dirs[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sync pushes the desired state of one direction to the datapaths.
func (e *Engine) sync(d *dir) error {
	want, ok := e.desired(d)
	if !ok {
		if d.valid {
			e.uninstall(d)
		}
		return nil
	}
	if d.same(want) {
		return nil
	}
	now := e.now()
	d.valid = true
	d.peer, d.dst, d.learning = want.Peer, want.Dst, want.Learning
	d.outComp = uint8(want.Out.Port() - d.st.legs[d.from.other()].rtp)
	d.since = now
	d.gen++
	if s := d.st.sess; !s.timedOut && (s.checkAt.IsZero() || s.checkAt.Before(now.Add(e.cfg.MediaTimeout))) {
		s.checkAt = now.Add(e.cfg.MediaTimeout)
	}
	k := want.Key

	if e.kernel != nil {
		if want.Key.Local.Addr().Is4() != want.Out.Addr().Is4() {
			// The kernel rewrites headers in place; it cannot turn IPv4
			// into IPv6. Not worth a syscall to be told so.
			d.kernErr = "cross-family legs"
			if d.inKern {
				e.retire(e.kernel, k, &d.retiredKern)
				d.inKern = false
			}
		} else if err := e.upsert(e.kernel, want, d.inKern, &d.retiredKern); err != nil {
			d.kernErr = err.Error()
			if d.inKern {
				// The kernel may still hold the old version; a stale copy
				// would forward to the wrong place.
				e.retire(e.kernel, k, &d.retiredKern)
				d.inKern = false
			}
			e.log.Warn("kernel refused flow; kept in userspace", "call", d.st.sess.callID,
				"flow", k.String(), "learning", want.Learning, "err", err)
		} else {
			d.inKern = true
			d.kernErr = ""
		}
	}

	var err error
	if !d.inKern || want.Learning || d.inSlow {
		// Learning needs userspace to latch; a flow being handed off is
		// updated too so its last packets go to the right place.
		if err = e.upsert(e.slow, want, d.inSlow, &d.retiredUser); err != nil {
			err = fmt.Errorf("userspace upsert %s: %w", k, err)
			e.log.Error("userspace datapath refused flow", "call", d.st.sess.callID, "flow", k.String(), "err", err)
		} else {
			d.inSlow = true
		}
	}
	if d.inKern && !want.Learning && d.inSlow {
		e.handoffs = append(e.handoffs, handoff{d: d, gen: d.gen, at: now.Add(e.cfg.HandoffDelay)})
	}
	return err
}

// upsert installs f, keeping the counters whether or not the datapath
// resets them when a flow is replaced.
func (e *Engine) upsert(dp Datapath, f Flow, present bool, retired *FlowStats) error {
	var before FlowStats
	if present {
		before, _ = dp.Stats(f.Key)
	}
	if err := dp.Upsert(f); err != nil {
		return err
	}
	if present && before.Packets > 0 {
		if after, err := dp.Stats(f.Key); err == nil && after.Packets < before.Packets {
			*retired = retired.Add(before)
		}
	}
	return nil
}

// retire deletes a flow from a datapath, keeping its counters.
func (e *Engine) retire(dp Datapath, k FlowKey, retired *FlowStats) {
	if st, err := dp.Stats(k); err == nil {
		*retired = retired.Add(st)
	}
	if err := dp.Delete(k); err != nil && !errors.Is(err, ErrFlowNotFound) {
		e.log.Warn("delete flow", "path", dp.Name(), "flow", k.String(), "err", err)
	}
}

func (e *Engine) uninstall(d *dir) {
	k := d.key()
	if d.inKern {
		e.retire(e.kernel, k, &d.retiredKern)
		d.inKern = false
	}
	if d.inSlow {
		e.retire(e.slow, k, &d.retiredUser)
		d.inSlow = false
	}
	d.valid = false
	d.gen++
}

// OnLatch is called by the userspace datapath, from its worker, when a
// learning flow saw its first packet from src. It never blocks: when the
// queue is full the event is counted and dropped (the flow keeps being
// forwarded by userspace, it just does not move to the kernel).
func (e *Engine) OnLatch(k FlowKey, src netip.AddrPort) {
	select {
	case e.latchq <- latchEvent{k, src}:
	default:
		e.latchDrops.Add(1)
	}
}

func (e *Engine) latch(ev latchEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	d, ok := e.flows[ev.k.Local]
	if !ok || !d.valid || d.st.sess.deleted {
		return // the call ended while the event was queued
	}
	e.latchLocked(d, ev.src)
}

func (e *Engine) latchLocked(d *dir, src netip.AddrPort) {
	src = unmap(src)
	l := &d.st.legs[d.from]
	if l.latched[d.comp] == src {
		return
	}
	l.latched[d.comp] = src
	// The whole stream: the reverse direction's Dst is this source.
	if err := e.reconcile(d.st); err != nil {
		e.log.Warn("latch", "call", d.st.sess.callID, "flow", d.key().String(), "err", err)
		return
	}
	if !e.debug() {
		return
	}
	e.log.Debug("latched", "call", d.st.sess.callID, "flow", d.key().String(), "src", src.String(),
		"kernel", d.inKern)
}

// debug guards debug logs on hot paths: their arguments allocate even
// when the level is off.
func (e *Engine) debug() bool { return e.log.Enabled(context.Background(), slog.LevelDebug) }

// stats of one direction on all paths, split kernel/userspace.
func (e *Engine) dirStats(d *dir) (kern, user FlowStats) {
	kern, user = d.retiredKern, d.retiredUser
	if d.inKern {
		if s, err := e.kernel.Stats(d.key()); err == nil {
			kern = kern.Add(s)
		}
	}
	if d.inSlow {
		if s, err := e.slow.Stats(d.key()); err == nil {
			user = user.Add(s)
		}
	}
	return kern, user
}

func (e *Engine) removeStream(st *stream) {
	for i := range st.dirs {
		d := &st.dirs[i]
		if d.valid {
			e.uninstall(d)
		}
		k, u := d.retiredKern, d.retiredUser
		e.endedKern = e.endedKern.Add(k)
		e.endedUser = e.endedUser.Add(u)
		delete(e.flows, st.legs[d.from].local(d.comp))
	}
	for s := range st.legs {
		l := &st.legs[s]
		if err := l.pool.pool.free(l.rtp); err != nil {
			e.log.Error("free relay ports", "call", st.sess.callID, "err", err)
		}
	}
}

// DeleteSession removes every flow of a call from every datapath, frees
// its ports and returns its final statistics.
func (e *Engine) DeleteSession(callID string) (SessionInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return SessionInfo{}, fmt.Errorf("delete session %q: %w", callID, ErrSessionNotFound)
	}
	for _, st := range s.streams {
		for i := range st.dirs {
			if d := &st.dirs[i]; d.valid {
				e.uninstall(d) // moves live counters into retired*
			}
		}
	}
	info := e.info(s)
	for _, st := range s.streams {
		e.removeStream(st)
	}
	s.deleted = true
	delete(e.sessions, callID)
	return info, nil
}

func (e *Engine) info(s *session) SessionInfo {
	si := SessionInfo{CallID: s.callID, Created: s.created, TimedOut: s.timedOut,
		Streams: make([]StreamInfo, 0, len(s.streams))}
	for _, st := range s.streams {
		sti := StreamInfo{Index: st.index}
		for side := SideA; side <= SideB; side++ {
			l := &st.legs[side]
			li := LegInfo{LegPorts: l.ports(), PeerRTP: l.announced[compRTP], PeerRTCP: l.announced[compRTCP],
				RTCPMux: l.mux, LatchedRTP: l.latched[compRTP], LatchedRTCP: l.latched[compRTCP]}
			for c := uint8(0); c < 2; c++ {
				k, u := e.dirStats(st.dir(side, c))
				li.Received = li.Received.Add(k).Add(u)
			}
			si.Stats = si.Stats.Add(li.Received)
			if side == SideA {
				sti.A = li
			} else {
				sti.B = li
			}
		}
		si.Streams = append(si.Streams, sti)
	}
	return si
}

// Session returns a snapshot of one session with its counters.
func (e *Engine) Session(callID string) (SessionInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return SessionInfo{}, fmt.Errorf("session %q: %w", callID, ErrSessionNotFound)
	}
	return e.info(s), nil
}

// Sessions returns a snapshot of every session, sorted by call id. It reads
// the counters of every flow: meant for inspection, not for a hot loop.
func (e *Engine) Sessions() []SessionInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]SessionInfo, 0, len(e.sessions))
	for _, s := range e.sessions {
		out = append(out, e.info(s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CallID < out[j].CallID })
	return out
}

// Flows lists every installed direction, sorted by call, stream, side and
// component.
func (e *Engine) Flows() []FlowInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var out []FlowInfo
	for _, s := range e.sessions {
		for _, st := range s.streams {
			for i := range st.dirs {
				d := &st.dirs[i]
				if !d.valid {
					continue
				}
				k, u := e.dirStats(d)
				t := k.Add(u)
				fi := FlowInfo{CallID: s.callID, Stream: st.index, Side: d.from, Component: "rtp",
					Local: d.key().Local, Peer: d.peer, Out: d.out(), Dst: d.dst,
					Path: PathUserspace, State: StateActive, KernelError: d.kernErr,
					Packets: t.Packets, Bytes: t.Bytes, LastSeen: t.LastSeen}
				if d.comp == compRTCP {
					fi.Component = "rtcp"
				}
				if d.inKern && !d.learning {
					fi.Path = PathKernel
				}
				last := t.LastSeen
				if last.IsZero() {
					last = d.since
				}
				switch {
				case d.learning:
					fi.State = StateLearning
				case now.Sub(last) >= idleAfter:
					fi.State = StateIdle
				}
				out = append(out, fi)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.CallID != b.CallID {
			return a.CallID < b.CallID
		}
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		if a.Side != b.Side {
			return a.Side < b.Side
		}
		return a.Component < b.Component
	})
	return out
}

// Stats returns engine-wide totals. Like Flows it reads every flow's
// counters.
func (e *Engine) Stats() Totals {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := Totals{
		Path: e.PathName(), PathReason: e.PathReason(), Draining: e.draining,
		Sessions: len(e.sessions), LatchDrops: e.latchDrops.Load(),
		UserspaceCounters: e.slow.Counters(), UserspaceSockets: e.slow.Sockets(),
	}
	kern, user := e.endedKern, e.endedUser
	for _, s := range e.sessions {
		for _, st := range s.streams {
			for i := range st.dirs {
				d := &st.dirs[i]
				k, u := e.dirStats(d)
				kern, user = kern.Add(k), user.Add(u)
				if !d.valid {
					continue
				}
				t.Flows++
				if d.inKern && !d.learning {
					t.KernelFlows++
				} else {
					t.UserspaceFlows++
				}
			}
		}
	}
	t.KernelPackets, t.KernelBytes = kern.Packets, kern.Bytes
	t.UserspacePackets, t.UserspaceBytes = user.Packets, user.Bytes
	if e.kernel != nil {
		c, err := e.kernel.Counters()
		t.KernelCounters = c
		if err != nil {
			t.KernelCountersError = err.Error()
		}
	}
	for _, p := range e.pools {
		t.Pools = append(t.Pools, PoolInfo{Name: p.cfg.Name, Local: p.cfg.Local,
			FreePairs: p.pool.available(), TotalPairs: p.pool.total()})
	}
	return t
}

// tickEvery is how often Run looks at handoffs; the inactivity scan runs
// every scanEvery ticks.
const (
	tickEvery = 100 * time.Millisecond
	scanEvery = 10
)

// Run processes latch events, hands flows off to the kernel and scans for
// inactive sessions, until ctx is done or Close is called.
func (e *Engine) Run(ctx context.Context) error {
	if !e.runMu.TryLock() {
		return errors.New("run: already running")
	}
	defer e.runMu.Unlock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("run: %w", ErrEngineClosed)
	}
	e.runDone = make(chan struct{})
	defer close(e.runDone)
	e.mu.Unlock()

	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	n := 0
	for {
		var out chan<- Event
		var next Event
		e.mu.Lock()
		if len(e.pending) > 0 {
			out, next = e.events, e.pending[0]
		}
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.done:
			return nil
		case ev := <-e.latchq:
			e.latch(ev)
		case out <- next:
			e.mu.Lock()
			e.pending = e.pending[1:]
			e.mu.Unlock()
		case <-tick.C:
			n++
			e.step(n%scanEvery == 0)
		}
	}
}

// step runs due handoffs and, when scan is set, the inactivity scan.
func (e *Engine) step(scan bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if drops := e.latchDrops.Load(); drops != e.resyncedDrops {
		e.resyncedDrops = drops
		e.resync()
	}
	e.runHandoffs(now)
	if scan {
		e.scan(now)
	}
}

// PeerReader is implemented by a slow path that can say what it latched
// (the userspace relay does). The engine uses it to recover latches whose
// OnLatch was dropped on a full queue; without it such flows stay in
// userspace and their reverse direction keeps the announced address.
type PeerReader interface {
	Peer(k FlowKey) (peer netip.AddrPort, learning bool, err error)
}

// resync asks the slow path for the peers of flows the engine still
// believes to be learning. It walks every flow, but only after OnLatch
// events were dropped.
func (e *Engine) resync() {
	pr, ok := e.slow.(PeerReader)
	if !ok {
		e.log.Warn("latch events dropped and the slow path cannot report peers; affected flows stay in userspace",
			"dropped_total", e.resyncedDrops)
		return
	}
	n := 0
	for _, d := range e.flows {
		if !d.valid || !d.learning || !d.inSlow {
			continue
		}
		peer, learning, err := pr.Peer(d.key())
		if err != nil || learning || !peer.IsValid() {
			continue
		}
		e.latchLocked(d, peer)
		n++
	}
	e.log.Warn("latch events dropped; recovered latches from the slow path",
		"dropped_total", e.resyncedDrops, "recovered", n)
}

func (e *Engine) runHandoffs(now time.Time) {
	i := 0
	for ; i < len(e.handoffs); i++ {
		h := e.handoffs[i]
		if h.at.After(now) {
			break
		}
		d := h.d
		if d.gen != h.gen || !d.valid || !d.inKern || !d.inSlow || d.learning || d.st.sess.deleted {
			continue // changed since, or gone
		}
		e.retire(e.slow, d.key(), &d.retiredUser)
		d.inSlow = false
		if e.debug() {
			e.log.Debug("handed off to kernel", "call", d.st.sess.callID, "flow", d.key().String())
		}
	}
	// Shift rather than reslice so the backing array does not grow forever.
	n := copy(e.handoffs, e.handoffs[i:])
	clear(e.handoffs[n:])
	e.handoffs = e.handoffs[:n]
}

// scan emits one timeout per session whose flows have all been silent for
// MediaTimeout. Each session is only looked at when its checkAt is due, so
// the counters of a busy session are read about once per MediaTimeout.
func (e *Engine) scan(now time.Time) {
	for _, s := range e.sessions {
		if s.timedOut || s.checkAt.IsZero() || now.Before(s.checkAt) {
			continue
		}
		var last time.Time
		installed := false
		for _, st := range s.streams {
			for i := range st.dirs {
				d := &st.dirs[i]
				if !d.valid {
					continue
				}
				installed = true
				k, u := e.dirStats(d)
				t := k.Add(u)
				seen := t.LastSeen
				if d.since.After(seen) {
					// Re-installed (re-INVITE): silence counts from then.
					seen = d.since
				}
				if seen.After(last) {
					last = seen
				}
			}
		}
		if !installed {
			s.checkAt = time.Time{}
			continue
		}
		if now.Sub(last) < e.cfg.MediaTimeout {
			s.checkAt = last.Add(e.cfg.MediaTimeout)
			continue
		}
		s.timedOut = true
		s.checkAt = time.Time{}
		e.pending = append(e.pending, Event{CallID: s.callID, Reason: ReasonMediaTimeout, At: now})
		e.log.Info("media timeout", "call", s.callID, "last_packet", last, "timeout", e.cfg.MediaTimeout)
	}
}

// Close stops Run and closes both datapaths. Flows stay in the kernel's
// pinned maps on purpose: a restarting daemon must not cut media.
func (e *Engine) Close() error {
	var err error
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		done := e.runDone
		e.mu.Unlock()
		close(e.done)
		if done != nil {
			<-done
		}
		// Run holds runMu until it returned; taking it here also covers a
		// Run that started between the two steps above.
		e.runMu.Lock()
		close(e.events)
		e.runMu.Unlock()
		var errs []error
		if e.kernel != nil {
			if cerr := e.kernel.Close(); cerr != nil {
				errs = append(errs, fmt.Errorf("close kernel path: %w", cerr))
			}
		}
		if cerr := e.slow.Close(); cerr != nil {
			errs = append(errs, fmt.Errorf("close userspace path: %w", cerr))
		}
		err = errors.Join(errs...)
	})
	return err
}
