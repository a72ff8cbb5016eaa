package connload

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"sipxdp/internal/childproc"
)

const (
	domain   = "localhost"
	password = "connpw"
	// ChildRole is the role of the client children (see package
	// childproc).
	ChildRole = "_connclient"
)

func init() { childproc.Register(ChildRole, clientChild) }

// clientParams are a client child's parameters.
type clientParams struct {
	Addr      string  `json:"addr"`      // sipd host:port
	Transport string  `json:"transport"` // TCP or TLS
	Prefix    string  `json:"prefix"`    // user name prefix
	First     int     `json:"first"`     // index of the first user
	N         int     `json:"n"`         // connections
	Rate      float64 `json:"rate"`      // new connections per second
}

// childReport is what a client child reports, in the result of each
// phase's event: ready, load or answer.
type childReport struct {
	OK     int              `json:"ok"`
	Failed int              `json:"failed"`
	Errors []string         `json:"errors,omitempty"` // the first few
	LatUS  map[string][]int `json:"lat_us"`           // per request class
}

// childCmd is what the parent writes to a child's stdin.
type childCmd struct {
	Cmd      string  `json:"cmd"` // load or answer; EOF ends the child
	Rate     float64 `json:"rate"`
	Duration string  `json:"duration"`
	// RegisterEvery: every Nth request is a REGISTER refresh, the rest
	// OPTIONS keep-alives. 0: OPTIONS only.
	RegisterEvery int `json:"register_every"`
}

type errList struct {
	mu   sync.Mutex
	errs []string
	n    atomic.Int64
}

func (e *errList) add(err error) {
	e.n.Add(1)
	e.mu.Lock()
	if len(e.errs) < 5 {
		e.errs = append(e.errs, err.Error())
	}
	e.mu.Unlock()
}

type latencies struct {
	mu sync.Mutex
	m  map[string][]int
}

func (l *latencies) add(class string, d time.Duration) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string][]int{}
	}
	l.m[class] = append(l.m[class], int(d.Microseconds()))
	l.mu.Unlock()
}

// dialer opens one client connection of the given transport.
func dialer(transport string) func(ctx context.Context, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if transport == "TLS" {
		// No session cache: every connection is a full handshake, as in
		// the reference. The certificate is the bench's own, self-signed.
		conf := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
		td := &tls.Dialer{NetDialer: d, Config: conf}
		return func(ctx context.Context, addr string) (net.Conn, error) { return td.DialContext(ctx, "tcp", addr) }
	}
	return func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

// clientChild is a client child: it opens N connections at Rate per
// second, registers one user on each (digest), reports "ready", then
// serves commands from stdin until EOF.
func clientChild() int {
	var p clientParams
	if err := childproc.Params(&p); err != nil {
		childproc.Emit("ready", nil, err)
		return 2
	}
	dial := dialer(p.Transport)
	conns := make([]*sipConn, p.N)
	var errs errList
	var lat latencies
	var wg sync.WaitGroup
	start := time.Now()
	for i := range p.N {
		if d := time.Until(start.Add(time.Duration(float64(i) / p.Rate * float64(time.Second)))); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			c, err := dial(context.Background(), p.Addr)
			if err != nil {
				errs.add(fmt.Errorf("dial: %w", err))
				return
			}
			user := fmt.Sprintf("%s%d", p.Prefix, p.First+i)
			contact := fmt.Sprintf("<sip:%s@%s;transport=%s>", user, c.LocalAddr(), p.Transport)
			s := newSipConn(c, user, p.Transport, p.Addr, contact)
			if err := s.register(password, 10*time.Second); err != nil {
				errs.add(fmt.Errorf("%s: %w", user, err))
				c.Close()
				return
			}
			lat.add("REGISTER", time.Since(t0))
			conns[i] = s
		}()
	}
	wg.Wait()
	var live []*sipConn
	for _, c := range conns {
		if c != nil {
			live = append(live, c)
		}
	}
	childproc.Emit("ready", childReport{OK: len(live), Failed: int(errs.n.Load()), Errors: errs.errs, LatUS: lat.m}, nil)

	var cmd childCmd
	for childproc.Next(&cmd) {
		switch cmd.Cmd {
		case "load":
			d, _ := time.ParseDuration(cmd.Duration)
			childproc.Emit("load", runLoad(live, cmd.Rate, d, cmd.RegisterEvery), nil)
		case "answer":
			// From now on the connections only answer calls.
			for _, c := range live {
				go c.answer()
			}
			childproc.Emit("answer", childReport{OK: len(live)}, nil)
		}
	}
	for _, c := range live {
		c.c.Close()
	}
	return 0
}

// runLoad sends rate requests per second for d, round-robin over the
// connections, one request in flight per connection at a time.
func runLoad(conns []*sipConn, rate float64, d time.Duration, registerEvery int) childReport {
	var errs errList
	var lat latencies
	var ok atomic.Int64
	if len(conns) == 0 || rate <= 0 {
		return childReport{}
	}
	busy := make([]sync.Mutex, len(conns))
	total := int(rate * d.Seconds())
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		if w := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); w > 0 {
			time.Sleep(w)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := i % len(conns)
			busy[k].Lock()
			defer busy[k].Unlock()
			c := conns[k]
			class := "OPTIONS"
			if registerEvery > 0 && i%registerEvery == registerEvery-1 {
				class = "REGISTER"
			}
			t0 := time.Now()
			var err error
			if class == "REGISTER" {
				err = c.register(password, 10*time.Second)
			} else {
				err = c.options(10 * time.Second)
			}
			if err != nil {
				errs.add(fmt.Errorf("%s %s: %w", class, c.user, err))
				return
			}
			lat.add(class, time.Since(t0))
			ok.Add(1)
		}()
	}
	wg.Wait()
	return childReport{OK: int(ok.Load()), Failed: int(errs.n.Load()), Errors: errs.errs, LatUS: lat.m}
}
