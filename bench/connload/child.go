package connload

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	domain   = "localhost"
	password = "connpw"
	// ChildCommand is the internal subcommand a bench process runs in its
	// client children: "bench conns _connclient ...".
	ChildCommand = "_connclient"
)

// childReport is what a client child prints, one JSON line per phase.
type childReport struct {
	Phase  string           `json:"phase"` // ready or load
	OK     int              `json:"ok"`
	Failed int              `json:"failed"`
	Errors []string         `json:"errors,omitempty"` // the first few
	LatUS  map[string][]int `json:"lat_us"`           // per request class
}

// childCmd is what the parent writes to a child's stdin.
type childCmd struct {
	Cmd      string  `json:"cmd"` // load, answer or exit
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

// ChildMain is a client child: it opens -n connections at -rate per
// second, registers one user on each (digest), reports "ready", then
// serves load commands from stdin until "exit" or EOF.
func ChildMain(args []string) int {
	fs := flag.NewFlagSet(ChildCommand, flag.ContinueOnError)
	addr := fs.String("addr", "", "sipd host:port")
	transport := fs.String("transport", "TCP", "TCP or TLS")
	first := fs.Int("first", 0, "index of the first user")
	n := fs.Int("n", 0, "connections")
	rate := fs.Float64("rate", 250, "new connections per second")
	prefix := fs.String("prefix", "c", "user name prefix")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	out := json.NewEncoder(os.Stdout)
	dial := dialer(*transport)
	conns := make([]*sipConn, *n)
	var errs errList
	var lat latencies
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *n {
		if d := time.Until(start.Add(time.Duration(float64(i) / *rate * float64(time.Second)))); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			c, err := dial(context.Background(), *addr)
			if err != nil {
				errs.add(fmt.Errorf("dial: %w", err))
				return
			}
			user := fmt.Sprintf("%s%d", *prefix, *first+i)
			contact := fmt.Sprintf("<sip:%s@%s;transport=%s>", user, c.LocalAddr(), *transport)
			s := newSipConn(c, user, *transport, *addr, contact)
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
	out.Encode(childReport{Phase: "ready", OK: len(live), Failed: int(errs.n.Load()), Errors: errs.errs, LatUS: lat.m})

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var cmd childCmd
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil || cmd.Cmd == "exit" {
			break
		}
		if cmd.Cmd == "load" {
			d, _ := time.ParseDuration(cmd.Duration)
			out.Encode(runLoad(live, cmd.Rate, d, cmd.RegisterEvery))
		}
		if cmd.Cmd == "answer" {
			// From now on the connections only answer calls.
			for _, c := range live {
				go c.answer()
			}
			out.Encode(childReport{Phase: "answer", OK: len(live)})
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
		return childReport{Phase: "load"}
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
	return childReport{Phase: "load", OK: int(ok.Load()), Failed: int(errs.n.Load()), Errors: errs.errs, LatUS: lat.m}
}
