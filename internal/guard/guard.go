// Package guard keeps a control listener (sipd's HTTP API, the NG port
// over TCP) safe to expose: it admits only sources on an allow list, caps
// the connections open at once, and turns accept errors (EMFILE, ENFILE,
// ENOBUFS) into a backoff and retry instead of the end of the server.
// Refusals and errors are counted, never logged per connection.
package guard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Backoff bounds: the first retry after an accept error waits minBackoff,
// each further one twice as long, up to maxBackoff (as net/http does for
// temporary errors, but for every error: a listener never stops).
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// ParsePrefixes reads an allow list: CIDR prefixes ("10.0.0.0/8") or
// single addresses ("192.0.2.7", taken as /32 or /128). IPv4-mapped IPv6
// forms are unmapped so they match IPv4 sources.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	var errs []error
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			errs = append(errs, fmt.Errorf("%q: want a CIDR prefix (10.0.0.0/8) or an address", s))
			continue
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, errors.Join(errs...)
}

// Contains reports whether a (unmapped first) is in one of ps.
func Contains(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// LoopbackOnly reports whether every prefix of a non-empty list lies
// inside the loopback ranges (127.0.0.0/8, ::1): a list that admits no
// other host.
func LoopbackOnly(ps []netip.Prefix) bool {
	if len(ps) == 0 {
		return false
	}
	for _, p := range ps {
		a := p.Addr()
		if a.Is4() && (p.Bits() < 8 || !a.IsLoopback()) || a.Is6() && (p.Bits() < 128 || !a.IsLoopback()) {
			return false
		}
	}
	return true
}

// Loopback is the allow list that admits the host itself only.
func Loopback() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// Config says what a Listener admits.
type Config struct {
	// Allow lists the sources admitted; nil admits every source.
	Allow []netip.Prefix
	// MaxConns caps connections open at once; 0: no cap. A connection
	// over the cap is accepted and closed at once, so the backlog does
	// not fill with clients that would wait forever.
	MaxConns int
	// Log receives one line when accept starts failing and one when it
	// recovers; nil: no logging.
	Log *slog.Logger
}

// Stats are a Listener's counters.
type Stats struct {
	RefusedSource uint64 // connections from a source not on the allow list
	RefusedConns  uint64 // connections over MaxConns
	AcceptErrors  uint64 // accept errors retried after a backoff
	Active        int64  // connections open now
}

// Listener wraps a net.Listener with the checks of Config. Accept
// returns only admitted connections, and only net.ErrClosed as an error
// (once Close is called or the inner listener is closed).
type Listener struct {
	net.Listener
	cfg Config

	active                                    atomic.Int64
	refusedSource, refusedConns, acceptErrors atomic.Uint64

	done      chan struct{}
	closeOnce sync.Once
}

// New wraps ln.
func New(ln net.Listener, c Config) *Listener {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &Listener{Listener: ln, cfg: c, done: make(chan struct{})}
}

// Accept waits for the next admitted connection.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, retries, err := AcceptRetry(l.Listener, l.done, func(err error, retry int) {
			l.acceptErrors.Add(1)
			if retry == 0 {
				l.cfg.Log.Warn("accept failing, retrying with backoff", "addr", l.Addr().String(), "err", err)
			}
		})
		if err != nil {
			return nil, err
		}
		if retries > 0 {
			l.cfg.Log.Info("accept recovered", "addr", l.Addr().String())
		}
		if l.cfg.Allow != nil && !Contains(l.cfg.Allow, addrOf(c.RemoteAddr())) {
			l.refusedSource.Add(1)
			refuse(c)
			continue
		}
		if n := l.active.Add(1); l.cfg.MaxConns > 0 && n > int64(l.cfg.MaxConns) {
			l.active.Add(-1)
			l.refusedConns.Add(1)
			refuse(c)
			continue
		}
		return &conn{Conn: c, l: l}, nil
	}
}

// AcceptRetry accepts from ln; an error other than ln's closing (EMFILE,
// ENFILE, ENOBUFS, ECONNABORTED...) is handed to onError with the number
// of retries so far and retried after a backoff, so a listener never stops
// while it is open. It returns net.ErrClosed once ln is closed or done is,
// and how many errors it retried before the connection it returns.
func AcceptRetry(ln net.Listener, done <-chan struct{}, onError func(err error, retry int)) (net.Conn, int, error) {
	var delay time.Duration
	for retry := 0; ; retry++ {
		c, err := ln.Accept()
		if err == nil {
			return c, retry, nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, retry, net.ErrClosed
		}
		select {
		case <-done:
			return nil, retry, net.ErrClosed
		default:
		}
		onError(err, retry)
		delay = min(max(2*delay, minBackoff), maxBackoff)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-done:
			t.Stop()
			return nil, retry, net.ErrClosed
		}
	}
}

// Close closes the inner listener and wakes an Accept in backoff.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	return Stats{RefusedSource: l.refusedSource.Load(), RefusedConns: l.refusedConns.Load(),
		AcceptErrors: l.acceptErrors.Load(), Active: l.active.Load()}
}

// refuse drops a connection with a reset, leaving no TIME_WAIT behind.
func refuse(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// conn gives its slot back on the first Close.
type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() { c.l.active.Add(-1) })
	return c.Conn.Close()
}

// addrOf is a connection's source address, unmapped; the zero Addr (on
// no allow list) when it is not an IP address.
func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return v.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap()
}
