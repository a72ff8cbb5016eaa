// Package connguard keeps stream connections (TCP, TLS, WS and WSS) from
// taking a server down. It wraps any net.Listener and
// the connections it accepts:
//
//   - caps on the connections open at once, in total and per source (an
//     IPv4 address, an IPv6 /64): a connection beyond them is closed as
//     soon as it is accepted;
//   - a handshake timeout (for connections with a Handshake method, such
//     as *tls.Conn), a message timeout (once a message's first byte has
//     arrived, the whole message must follow within it; a Framer finds
//     the boundaries) and an idle timeout, which Keep defers for a
//     connection a registration holds;
//   - accept errors (EMFILE, ENFILE, ECONNABORTED, ...) are counted and
//     retried with backoff: Accept returns an error only once the
//     listener is closed.
//
// Every refusal and timeout is counted by Reason. Nothing runs per
// connection: no goroutine, timer or buffer. The timeouts are read
// deadlines that Read sets as it goes, and a connection's state is a few
// words.
package connguard

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"sipxdp/internal/guard"
)

// Reason is why a connection was refused or closed.
type Reason uint8

const (
	TotalCap         Reason = iota // the total cap was reached
	PerSourceCap                   // the source's cap was reached
	MessageTimeout                 // a message did not arrive in full in time
	IdleTimeout                    // nothing was carried for the idle timeout
	HandshakeTimeout               // the TLS handshake did not finish in time
	HandshakeFailed                // the TLS handshake failed
	AcceptError                    // accept failed (the listener retries)
	numReasons
)

var reasonNames = [numReasons]string{"total_cap", "per_source_cap", "message_timeout", "idle_timeout",
	"handshake_timeout", "handshake_failed", "accept_error"}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", r)
}

// Reasons lists every reason, in order.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// Sentinel errors. What Read returns for a connection the guard closed
// also matches net.ErrClosed.
var (
	ErrMessageTimeout   = errors.New("message not complete within the message timeout")
	ErrIdleTimeout      = errors.New("connection idle for the idle timeout")
	ErrHandshakeTimeout = errors.New("handshake not complete within the handshake timeout")
	ErrHandshake        = errors.New("handshake failed")
	ErrConfig           = errors.New("connguard: bad config")
)

// Config sets the caps and timeouts; a zero timeout is none.
type Config struct {
	// Max is the most connections open at once, on all the listeners of
	// the Guard together. It must be positive.
	Max int
	// PerSource is the most connections from one source; 0: no cap.
	PerSource int
	// Exempt sources have no per-source cap (they count toward Max).
	Exempt func(netip.Addr) bool
	// MessageTimeout bounds a message from its first byte to its last.
	MessageTimeout time.Duration
	// IdleTimeout closes a connection that has carried no message either
	// way for this long, unless Keep holds it longer.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds a handshake (connections with a Handshake
	// method, as *tls.Conn has) from accept.
	HandshakeTimeout time.Duration
	// NewFramer makes a connection's framer; nil: SIP over a stream.
	NewFramer func() Framer
	// Log gets a warning when a cap is reached or accept fails, at most
	// once a minute for each reason; nil: none.
	Log *slog.Logger
}

// Guard holds the caps shared by its listeners and the counters.
type Guard struct {
	cfg   Config
	epoch time.Time

	mu        sync.Mutex
	perSource map[netip.Addr]int32
	conns     map[netip.AddrPort]*Conn
	open      atomic.Int64 // written under mu

	refused  [numReasons]atomic.Uint64
	lastWarn [numReasons]atomic.Int64
}

// New returns a guard; it starts nothing.
func New(cfg Config) (*Guard, error) {
	if cfg.Max < 1 || cfg.PerSource < 0 || cfg.MessageTimeout < 0 || cfg.IdleTimeout < 0 || cfg.HandshakeTimeout < 0 {
		return nil, fmt.Errorf("%w: max %d, per source %d, timeouts %v %v %v", ErrConfig,
			cfg.Max, cfg.PerSource, cfg.MessageTimeout, cfg.IdleTimeout, cfg.HandshakeTimeout)
	}
	if cfg.NewFramer == nil {
		cfg.NewFramer = NewSIPFramer
	}
	return &Guard{cfg: cfg, epoch: time.Now(), perSource: map[netip.Addr]int32{}, conns: map[netip.AddrPort]*Conn{}}, nil
}

// now is the time since the guard's epoch, from the monotonic clock; it
// is always positive, so 0 can mean "none".
func (g *Guard) now() int64 { return int64(time.Since(g.epoch)) + 1 }

// since turns t into the guard's clock; the zero time is 0.
func (g *Guard) since(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(1, int64(t.Sub(g.epoch))+1)
}

// at turns the guard's clock into a deadline; 0 is none.
func (g *Guard) at(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return g.epoch.Add(time.Duration(ns - 1))
}

func (g *Guard) count(r Reason, err error) {
	g.refused[r].Add(1)
	if g.cfg.Log == nil || (r != TotalCap && r != PerSourceCap && r != AcceptError) {
		return
	}
	now, last := g.now(), g.lastWarn[r].Load()
	if last != 0 && now-last < int64(time.Minute) || !g.lastWarn[r].CompareAndSwap(last, now) {
		return
	}
	attrs := []any{"reason", r.String(), "count", g.refused[r].Load(), "open", g.open.Load(), "max", g.cfg.Max}
	switch r {
	case PerSourceCap:
		attrs = append(attrs, "per_source", g.cfg.PerSource)
	case AcceptError:
		attrs = append(attrs, "error", err)
	}
	g.cfg.Log.Warn("connections refused (logged at most once a minute; see sipxdp_sip_connections_refused_total)", attrs...)
}

// Stats is a snapshot for /health and /metrics.
type Stats struct {
	Open      int               `json:"open"`
	Max       int               `json:"max"`
	PerSource int               `json:"per_source"`
	Refused   map[string]uint64 `json:"refused"`
}

// Stats returns the open count, the caps and the refusals by reason.
func (g *Guard) Stats() Stats {
	st := Stats{Open: int(g.open.Load()), Max: g.cfg.Max, PerSource: g.cfg.PerSource, Refused: make(map[string]uint64, numReasons)}
	for r := range numReasons {
		st.Refused[r.String()] = g.refused[r].Load()
	}
	return st
}

// Refused is the count of one reason.
func (g *Guard) Refused(r Reason) uint64 { return g.refused[r].Load() }

// Keep holds the connection from remote open until at least until, idle
// or not: a registration made over it lasts that long, and the
// connection is the way to the phone. It reports whether remote has a
// connection here. Keep never shortens what an earlier call granted.
func (g *Guard) Keep(remote netip.AddrPort, until time.Time) bool {
	remote = unmap(remote)
	g.mu.Lock()
	c := g.conns[remote]
	g.mu.Unlock()
	if c == nil {
		return false
	}
	u := g.since(until)
	for {
		old := c.keepUntil.Load()
		if u <= old || c.keepUntil.CompareAndSwap(old, u) {
			return true
		}
	}
}

// sourceKey is what the per-source cap counts: the address, or for IPv6
// its /64, which one subscriber line usually gets whole.
func sourceKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func unmap(ap netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) }

func remoteAddr(c net.Conn) netip.AddrPort {
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		return unmap(a.AddrPort())
	case nil:
		return netip.AddrPort{}
	default:
		ap, _ := netip.ParseAddrPort(a.String())
		return unmap(ap)
	}
}

// admit counts c in, or says which cap it is over.
func (g *Guard) admit(c net.Conn, newFramer func() Framer) (*Conn, Reason, bool) {
	remote := remoteAddr(c)
	var src netip.Addr
	if g.cfg.PerSource > 0 && remote.IsValid() && (g.cfg.Exempt == nil || !g.cfg.Exempt(remote.Addr())) {
		src = sourceKey(remote.Addr())
	}
	now := g.now()
	gc := &Conn{Conn: c, g: g, remote: remote, source: src, framer: newFramer(), accepted: now}
	gc.lastActive.Store(now)
	if hs, ok := c.(handshaker); ok {
		gc.hs = hs
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if int(g.open.Load()) >= g.cfg.Max {
		return nil, TotalCap, false
	}
	if src.IsValid() {
		if int(g.perSource[src]) >= g.cfg.PerSource {
			return nil, PerSourceCap, false
		}
		g.perSource[src]++
	}
	g.open.Add(1)
	if remote.IsValid() {
		g.conns[remote] = gc
	}
	return gc, 0, true
}

func (g *Guard) release(c *Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open.Add(-1)
	if c.source.IsValid() {
		if n := g.perSource[c.source] - 1; n > 0 {
			g.perSource[c.source] = n
		} else {
			delete(g.perSource, c.source)
		}
	}
	if g.conns[c.remote] == c {
		delete(g.conns, c.remote)
	}
}

// Listen wraps l: Accept applies the caps and retries errors, and the
// connections it returns apply the timeouts.
func (g *Guard) Listen(l net.Listener) net.Listener {
	return g.ListenFramed(l, g.cfg.NewFramer)
}

// ListenFramed is Listen with the listener's own framer (WebSocket's
// beside SIP's), under the same caps and counters.
func (g *Guard) ListenFramed(l net.Listener, newFramer func() Framer) net.Listener {
	return &listener{Listener: l, g: g, newFramer: newFramer, done: make(chan struct{})}
}

type listener struct {
	net.Listener
	g         *Guard
	newFramer func() Framer
	done      chan struct{}
	once      sync.Once
}

// Accept returns the next connection within the caps. Errors other than
// the listener's closing are counted and retried after a backoff
// (guard.AcceptRetry), so a descriptor shortage (EMFILE) stalls new
// connections instead of ending the server.
func (l *listener) Accept() (net.Conn, error) {
	for {
		c, _, err := guard.AcceptRetry(l.Listener, l.done, func(err error, _ int) { l.g.count(AcceptError, err) })
		if err != nil {
			return nil, err
		}
		gc, why, ok := l.g.admit(c, l.newFramer)
		if !ok {
			l.g.count(why, nil)
			reject(c)
			continue
		}
		return gc, nil
	}
}

func (l *listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// reject closes a connection over a cap with a reset: nothing was said on
// it, and the socket leaves no TIME_WAIT behind.
func reject(c net.Conn) {
	raw := c
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		raw = nc.NetConn()
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

type handshaker interface{ Handshake() error }

// Conn is an accepted connection under the guard's timeouts.
type Conn struct {
	net.Conn
	g        *Guard
	remote   netip.AddrPort
	source   netip.Addr // the per-source key; invalid when not capped
	framer   Framer
	hs       handshaker // until the handshake is done
	accepted int64

	// Read's own: one goroutine reads.
	inMsg    bool
	msgStart int64

	mu     sync.Mutex // the read deadline
	armed  int64      // what is set on Conn; 0 none
	userDL int64      // the caller's own read deadline; 0 none

	lastActive atomic.Int64 // a message read or written
	keepUntil  atomic.Int64 // a registration over the connection
	closed     atomic.Bool
}

// closedError is what Read returns for a connection the guard closed.
func closedError(sentinel error) error { return fmt.Errorf("%w: %w", sentinel, net.ErrClosed) }

// Read reads, first completing a handshake, under the deadline that the
// connection's state calls for: the handshake's, the message's, or the
// idle one (moved on by writes and Keep).
func (c *Conn) Read(p []byte) (int, error) {
	if c.hs != nil {
		if err := c.handshake(); err != nil {
			return 0, err
		}
	}
	for {
		dl, _ := c.deadline()
		c.arm(dl)
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.feed(p[:n])
			return n, err
		}
		var ne net.Error
		if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
			return n, err
		}
		now := c.g.now()
		c.mu.Lock()
		user := c.userDL
		c.mu.Unlock()
		if user != 0 && now >= user {
			return 0, err
		}
		dl, why := c.deadline()
		if dl == 0 || dl > now {
			continue // a write or Keep moved it, or the caller's deadline went
		}
		c.g.count(why, nil)
		c.Close()
		if why == MessageTimeout {
			return 0, closedError(ErrMessageTimeout)
		}
		return 0, closedError(ErrIdleTimeout)
	}
}

// deadline is when the connection's state times out, and why.
func (c *Conn) deadline() (int64, Reason) {
	cfg := &c.g.cfg
	if c.inMsg && cfg.MessageTimeout > 0 {
		return c.msgStart + int64(cfg.MessageTimeout), MessageTimeout
	}
	if cfg.IdleTimeout > 0 {
		return max(c.lastActive.Load()+int64(cfg.IdleTimeout), c.keepUntil.Load()), IdleTimeout
	}
	return 0, IdleTimeout
}

// arm sets dl, or the caller's earlier deadline, on the connection.
func (c *Conn) arm(dl int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.userDL != 0 && (dl == 0 || c.userDL < dl) {
		dl = c.userDL
	}
	if dl != c.armed {
		c.armed = dl
		c.Conn.SetReadDeadline(c.g.at(dl))
	}
}

func (c *Conn) feed(p []byte) {
	done, partial := c.framer.Feed(p)
	if done == 0 && partial == c.inMsg {
		return
	}
	now := c.g.now()
	if done > 0 {
		c.lastActive.Store(now)
	}
	if partial && (!c.inMsg || done > 0) {
		c.msgStart = now
	}
	c.inMsg = partial
}

func (c *Conn) handshake() error {
	if t := c.g.cfg.HandshakeTimeout; t > 0 {
		dl := c.accepted + int64(t)
		c.mu.Lock()
		c.armed = dl
		c.Conn.SetDeadline(c.g.at(dl))
		c.mu.Unlock()
	}
	err := c.hs.Handshake()
	if err != nil {
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			c.g.count(HandshakeTimeout, nil)
			err = closedError(ErrHandshakeTimeout)
		case errors.Is(err, io.EOF):
			// The peer left: nothing refused.
		default:
			c.g.count(HandshakeFailed, nil)
			err = fmt.Errorf("%w: %w: %w", ErrHandshake, err, net.ErrClosed)
		}
		c.Close()
		return err
	}
	c.hs = nil
	c.Conn.SetWriteDeadline(time.Time{})
	c.lastActive.Store(c.g.now())
	return nil
}

// Write writes and counts as activity unless p is only CR and LF (a
// keep-alive or its answer), which keep no unregistered connection open.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	for _, b := range p[:n] {
		if b != '\r' && b != '\n' {
			c.lastActive.Store(c.g.now())
			break
		}
	}
	return n, err
}

// SetReadDeadline sets the caller's own read deadline; the guard's
// earlier ones still apply.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.userDL = c.g.since(t)
	if c.userDL != 0 && (c.armed == 0 || c.userDL < c.armed) {
		c.armed = c.userDL
		return c.Conn.SetReadDeadline(t)
	}
	return nil
}

// SetDeadline sets the caller's read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// Close closes the connection and counts it out.
func (c *Conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.g.release(c)
	}
	return c.Conn.Close()
}

// NetConn is the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }
