package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"sipxdp/relay/cryptoleg"
	"sipxdp/relay/srtpleg"
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

// SlowPath is the userspace relay. It forwards every flow it holds, ranks
// the sources of learning flows (see Latch) and calls Engine.OnLatch, and
// closes a port's socket when no flow references it any more.
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
	// Strict: latch only sources whose IP is the announced IP; the
	// signaling address is no hint and nothing is held as a candidate.
	Strict bool
	// LearnWindow: how long after the call's last signaling a learning
	// flow may still change its source for a better one (see Latch).
	// Default 3s, as rtpengine's.
	LearnWindow time.Duration
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
	// DTLSTimeout: a DTLS-SRTP leg not keyed this long after the answer
	// fails its call. Default srtpleg.DefaultTimeout (10s).
	DTLSTimeout time.Duration
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
	rank     Rank // of peer, as installed
	tos      TOS  // as installed
	drop     bool // as installed
	learn    LearnMode
	handover bool
	hold     bool
	gen      uint32 // bumped on every change; stales queued handoffs
	learnGen uint32 // the stream's learnGen when installed
	// Only what cannot be derived from the legs is kept: 50,000 calls
	// hold 200,000 of these.
	peer, dst netip.AddrPort
	// The crypto and demux of the installed flow (see Flow).
	in, outLeg       *cryptoleg.Leg
	rtcpOut, rtcpDst netip.AddrPort
	since            time.Time // installed or last changed; inactivity base
	kernErr          string
	// Counters of copies removed from a datapath while the flow lives on.
	retiredUser, retiredKern FlowStats
}

type leg struct {
	pool      *addrPool
	rtp       uint16
	announced [2]netip.AddrPort
	latch     [2]Latch
	mux       bool
	peerSet   bool
	// sec terminates the leg's SRTP (nil: plain RTP); spec is what made it.
	sec  *cryptoleg.Leg
	spec LegSecurity
}

func (l *leg) local(comp uint8) netip.AddrPort {
	return netip.AddrPortFrom(l.pool.cfg.Local, l.rtp+uint16(comp))
}

type stream struct {
	sess  *session
	index int
	legs  [2]leg
	// learnGen is bumped when what learning flows rank sources by changes
	// in a way the installed flows cannot show (a hint, the window), so
	// they are installed again.
	learnGen uint32
	// dirs: A→B RTP, A→B RTCP, B→A RTP, B→A RTCP.
	dirs [4]dir
}

func (s *stream) dir(from Side, comp uint8) *dir { return &s.dirs[int(from)*2+int(comp)] }

type session struct {
	callID  string
	created time.Time
	// sig is each side's signaling address: a hint for latching.
	sig [2]netip.Addr
	// opts are each side's per-call options, tos and drop the call's
	// (SetSideOptions, SetTOS, SetDrop).
	opts     [2]SideOptions
	tos      TOS
	drop     bool
	streams  []*stream
	checkAt  time.Time // next inactivity check; zero when nothing is installed
	timedOut bool
	deleted  bool
	// held: a standby's copy of another node's call (see Hold); it is
	// not timed out.
	held bool
}

type addrPool struct {
	cfg  AddressConfig
	pool *portPool
}

type handoff struct {
	d   *dir
	gen uint32
	at  time.Time
}

// window is a learning window to close: at its end the direction locks to
// what it latched.
type window struct {
	d  *dir
	at time.Time
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
	// kernelCrossFamily: the kernel path relays flows between IPv4 and
	// IPv6 legs (CrossFamilyPath); fixed when the engine is made.
	kernelCrossFamily bool

	latchq     chan LatchEvent
	latchDrops atomic.Uint64
	// windowLocks counts flows locked by closeWindow.
	windowLocks atomic.Uint64
	// piercing are the sessions a side of which asked for pierce NAT
	// (pierce.go); pierces and pierceErrors count its packets.
	piercing              map[*session]struct{}
	pierces, pierceErrors atomic.Uint64
	events                chan Event
	done                  chan struct{}
	closeOnce             sync.Once
	runMu                 sync.Mutex // held by Run for its lifetime
	runDone               chan struct{}

	mu            sync.Mutex
	closed        bool
	draining      bool
	pools         []*addrPool
	sessions      map[string]*session
	flows         map[netip.AddrPort]*dir // every allocated port, installed or not
	handoffs      []handoff               // FIFO: the delay is constant, so deadlines are ordered
	windows       []window                // FIFO, ordered the same way but for SetLatch
	pending       []Event                 // events not yet taken by the reader
	resyncedDrops uint64                  // latchDrops when resync last ran
	// Counters of sessions already deleted, so totals do not go down.
	endedKern, endedUser FlowStats
	// Kernel flows a previous process left, by group call id (see Adopt).
	adopted map[string]*adoptedGroup

	// cert is the DTLS identity of every WebRTC leg, made at start (its
	// fingerprint goes into SDP); failq carries legs that failed to Run.
	cert      *srtpleg.Certificate
	failq     chan legFailure
	failDrops atomic.Uint64
	// DTLS handshakes completed and crypto legs failed, since start.
	dtlsDone, legFails atomic.Uint64
	// onLock is told the call whose direction locked (see SetOnLock).
	onLock atomic.Pointer[func(callID string)]
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
	if cfg.LearnWindow <= 0 {
		cfg.LearnWindow = 3 * time.Second
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
	if cfg.DTLSTimeout <= 0 {
		cfg.DTLSTimeout = srtpleg.DefaultTimeout
	}
	cert, err := srtpleg.NewCertificate()
	if err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	e := &Engine{
		cfg:          cfg,
		log:          cfg.Logger,
		now:          cfg.Now,
		kernel:       kernel,
		slow:         slow,
		kernelReason: kernelReason,
		latchq:       make(chan LatchEvent, cfg.LatchQueue),
		events:       make(chan Event, 256),
		done:         make(chan struct{}),
		sessions:     make(map[string]*session),
		flows:        make(map[netip.AddrPort]*dir),
		adopted:      make(map[string]*adoptedGroup),
		cert:         cert,
		failq:        make(chan legFailure, 256),
		piercing:     make(map[*session]struct{}),
	}
	e.kernelCrossFamily = kernel != nil && crossFamily(kernel)
	// One local address may serve several logical interfaces (rtpengine's
	// interface= naming one address twice, advertised differently): they
	// share one port pool, so a port is never handed out twice.
	type span struct {
		addr   netip.Addr
		lo, hi uint16
		pool   *portPool
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
		var p *portPool
		for _, s := range spans {
			if s.addr != a.Local || a.PortMin > s.hi || a.PortMax < s.lo {
				continue
			}
			if a.PortMin != s.lo || a.PortMax != s.hi {
				return nil, fmt.Errorf("new engine: address %s: port ranges overlap (give every interface on one local address the same range)", a.Local)
			}
			p = s.pool
		}
		if p == nil {
			if p, err = newPortPool(a.PortMin, a.PortMax); err != nil {
				return nil, fmt.Errorf("new engine: address %s: %w", a.Local, err)
			}
			spans = append(spans, span{a.Local, a.PortMin, a.PortMax, p})
			ranges = append(ranges, [2]uint16{a.PortMin, a.PortMax})
		}
		e.pools = append(e.pools, &addrPool{cfg: a, pool: p})
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
	e.indexDirs(st)
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

// streamOf finds a stream, or says which of session and stream op lacks.
// Called with e.mu held.
func (e *Engine) streamOf(op, callID string, index int) (*stream, error) {
	s, ok := e.sessions[callID]
	if !ok {
		return nil, fmt.Errorf("%s %q/%d: %w", op, callID, index, ErrSessionNotFound)
	}
	st := s.stream(index)
	if st == nil {
		return nil, fmt.Errorf("%s %q/%d: %w", op, callID, index, ErrStreamNotFound)
	}
	return st, nil
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
// again; an unchanged one keeps a locked latch. Either way it is
// signaling: the learning window of every flow of the stream that is not
// locked opens again. rtcp is ignored when rtcpMux is set.
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
	st, err := e.streamOf("set peer", callID, index)
	if err != nil {
		return err
	}
	l := &st.legs[side]
	// A re-INVITE that changes nothing keeps what was latched, and still
	// reconciles: it retries flows a datapath refused before.
	if l.announced[compRTP] != rtp {
		l.latch[compRTP] = Latch{}
	}
	if l.announced[compRTCP] != rtcp || l.mux != rtcpMux {
		l.latch[compRTCP] = Latch{}
	}
	l.announced = [2]netip.AddrPort{rtp, rtcp}
	l.mux = rtcpMux
	l.peerSet = true
	e.reopen(st)
	err = e.reconcile(st)
	e.armSecurity(st)
	if err != nil {
		return fmt.Errorf("set peer %q/%d side %s: %w", callID, index, side, err)
	}
	return nil
}

func (e *Engine) removeStream(st *stream) {
	// Crypto first: a handshake still running must not send from a port
	// that is about to go back to the pool.
	e.closeSecurity(st)
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
		if g, ok := e.adopted[callID]; ok {
			// An operator ending a call the engine only inherited.
			info := SessionInfo{CallID: callID, Created: g.since}
			for _, f := range g.flows {
				info.Stats = info.Stats.Add(e.adoptedStats(f))
			}
			e.deleteAdopted(g)
			return info, nil
		}
		return SessionInfo{}, fmt.Errorf("delete session %q: %w", callID, ErrSessionNotFound)
	}
	for _, st := range s.streams {
		e.closeSecurity(st)
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

// indexDirs ties each of st's four directions (two sides, RTP and RTCP)
// to it and indexes them by the relay address they arrive on. The legs'
// ports must be set. Caller holds e.mu.
func (e *Engine) indexDirs(st *stream) {
	for i := range st.dirs {
		d := &st.dirs[i]
		d.st = st
		d.from = Side(i / 2)
		d.comp = uint8(i % 2)
		e.flows[st.legs[d.from].local(d.comp)] = d
	}
}
