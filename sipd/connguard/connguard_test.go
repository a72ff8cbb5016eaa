package connguard

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"sipxdp/internal/conntest"
	"sipxdp/internal/testcert"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a guarded listener on loopback whose accepted connections are
// read to the end, as sipgo reads them, each by one goroutine.
type server struct {
	g    *Guard
	l    net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	ends map[netip.AddrPort]end // by remote address
	all  []*Conn
	conn chan *Conn // each accepted connection
}

// end is how a server-side read loop ended.
type end struct {
	err  error
	at   time.Time
	read []byte
}

func newServer(t *testing.T, cfg Config, tlsConf *tls.Config) *server {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsConf != nil {
		raw = tls.NewListener(raw, tlsConf)
	}
	s := &server{g: g, l: g.Listen(raw), ends: map[netip.AddrPort]end{}, conn: make(chan *Conn, 100)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.l.Accept()
			if err != nil {
				return
			}
			gc := c.(*Conn)
			s.mu.Lock()
			s.all = append(s.all, gc)
			s.mu.Unlock()
			s.conn <- gc
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				var got []byte
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					got = append(got, buf[:n]...)
					if err != nil {
						s.mu.Lock()
						s.ends[gc.remote] = end{err: err, at: time.Now(), read: got}
						s.mu.Unlock()
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		s.l.Close()
		s.mu.Lock()
		for _, c := range s.all {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *server) addr() string { return s.l.Addr().String() }

// dialFrom connects from a loopback address of its own (127.0.0.0/8 is
// all local). A connection reset at once (refused) is nil.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ended waits for the reader of the connection from remote to end.
func (s *server) ended(t *testing.T, remote netip.AddrPort) end {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		s.mu.Lock()
		e, ok := s.ends[remote]
		s.mu.Unlock()
		if ok {
			return e
		}
	}
	t.Fatalf("the reader of %s did not end", remote)
	return end{}
}

func waitOpen(t *testing.T, g *Guard, n int) {
	t.Helper()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if g.Stats().Open == n {
			return
		}
	}
	t.Fatalf("open connections %d, want %d", g.Stats().Open, n)
}

func TestCaps(t *testing.T) {
	exempt := func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.9") }
	cases := []struct {
		name      string
		max, per  int
		sources   []string // one connection each, in order
		refused   []bool   // whether each is refused
		perReason uint64
		total     uint64
	}{
		{"per source", 10, 2, []string{"127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3"},
			[]bool{false, false, true, false}, 1, 0},
		{"total", 3, 0, []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"},
			[]bool{false, false, false, true}, 0, 1},
		{"exempt source has no per-source cap", 4, 1, []string{"127.0.0.9", "127.0.0.9", "127.0.0.9", "127.0.0.2", "127.0.0.9"},
			[]bool{false, false, false, false, true}, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newServer(t, Config{Max: c.max, PerSource: c.per, Exempt: exempt}, nil)
			open := 0
			for i, src := range c.sources {
				conn := dialFrom(t, src, s.addr())
				if got := conn == nil || conntest.ClosedWithin(conn, 200*time.Millisecond); got != c.refused[i] {
					t.Fatalf("connection %d from %s: closed %v, want %v", i, src, got, c.refused[i])
				}
				if !c.refused[i] {
					open++
				}
				waitOpen(t, s.g, open)
			}
			if got := s.g.Refused(PerSourceCap); got != c.perReason {
				t.Errorf("per-source refusals %d, want %d", got, c.perReason)
			}
			if got := s.g.Refused(TotalCap); got != c.total {
				t.Errorf("total refusals %d, want %d", got, c.total)
			}
			// A connection closed makes room again.
			(<-s.conn).Close()
			waitOpen(t, s.g, open-1)
		})
	}
}

func TestSourceKey(t *testing.T) {
	cases := []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::"},
	}
	for _, c := range cases {
		if got := sourceKey(netip.MustParseAddr(c.in)); got != netip.MustParseAddr(c.want) {
			t.Errorf("sourceKey(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}

const msg = "OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 2\r\n\r\nab"

func TestTimeouts(t *testing.T) {
	const (
		message = 300 * time.Millisecond
		idle    = 400 * time.Millisecond
	)
	type step struct {
		after time.Duration // since the previous step
		send  string        // from the client
		write string        // from the server, over the accepted connection
		keep  time.Duration // Keep the connection this long from now
	}
	cases := []struct {
		name   string
		steps  []step
		reason Reason
		// closed within [min, max] after the last step; max 0: not closed
		// within a second.
		min, max time.Duration
	}{
		{"silent is idle", nil, IdleTimeout, idle - 20*time.Millisecond, idle + 200*time.Millisecond},
		{"half a message", []step{{send: msg[:20]}}, MessageTimeout, message - 20*time.Millisecond, message + 200*time.Millisecond},
		{"headers without their body", []step{{send: msg[:len(msg)-1]}}, MessageTimeout, message - 20*time.Millisecond, message + 200*time.Millisecond},
		{"slow message within the timeout, then idle", []step{{send: msg[:10]}, {after: 100 * time.Millisecond, send: msg[10:30]},
			{after: 100 * time.Millisecond, send: msg[30:]}}, IdleTimeout, idle - 20*time.Millisecond, idle + 200*time.Millisecond},
		{"keep-alives keep nothing", []step{{send: "\r\n\r\n"}, {after: 200 * time.Millisecond, send: "\r\n\r\n"},
			{after: 200 * time.Millisecond, send: "\r\n\r\n"}}, IdleTimeout, 0, 300 * time.Millisecond},
		{"a write is activity", []step{{after: 250 * time.Millisecond, write: "SIP/2.0 200 OK\r\n\r\n"}},
			IdleTimeout, idle - 20*time.Millisecond, idle + 200*time.Millisecond},
		{"a keep-alive answer is not", []step{{after: 250 * time.Millisecond, write: "\r\n"}},
			IdleTimeout, 0, 300 * time.Millisecond},
		{"kept open", []step{{send: msg, keep: 900 * time.Millisecond}}, IdleTimeout, 850 * time.Millisecond, 1100 * time.Millisecond},
		{"kept, shorter than idle", []step{{send: msg, keep: 100 * time.Millisecond}}, IdleTimeout, idle - 20*time.Millisecond, idle + 200*time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, Config{Max: 10, PerSource: 10, MessageTimeout: message, IdleTimeout: idle}, nil)
			conn := dialFrom(t, "127.0.0.1", s.addr())
			sc := <-s.conn
			for _, st := range c.steps {
				time.Sleep(st.after)
				if st.send != "" {
					conn.Write([]byte(st.send))
				}
				if st.write != "" {
					sc.Write([]byte(st.write))
				}
				if st.keep > 0 {
					if !s.g.Keep(netip.MustParseAddrPort(conn.LocalAddr().String()), time.Now().Add(st.keep)) {
						t.Fatal("Keep found no connection")
					}
				}
			}
			last := time.Now()
			limit := c.max
			if limit == 0 {
				limit = time.Second
			}
			closed := conntest.ClosedWithin(conn, limit)
			took := time.Since(last)
			if !closed {
				t.Fatalf("not closed %v after the last step", limit)
			}
			if took < c.min {
				t.Fatalf("closed %v after the last step, before %v", took, c.min)
			}
			if s.g.Refused(c.reason) != 1 {
				t.Errorf("refusals: %v, want one %s", s.g.Stats().Refused, c.reason)
			}
			waitOpen(t, s.g, 0)
			e := s.ended(t, sc.remote)
			want := ErrIdleTimeout
			if c.reason == MessageTimeout {
				want = ErrMessageTimeout
			}
			if !errors.Is(e.err, want) || !errors.Is(e.err, net.ErrClosed) {
				t.Errorf("the reader got %v, want %v and net.ErrClosed", e.err, want)
			}
		})
	}
}

// The caller's own read deadline still works, and times out without
// closing anything.
func TestCallerDeadline(t *testing.T) {
	g, err := New(Config{Max: 1, IdleTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := g.Listen(raw)
	defer l.Close()
	client := dialFrom(t, "127.0.0.1", l.Addr().String())
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err = c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("read with the caller's deadline: %v after %v", err, time.Since(start))
	}
	c.SetReadDeadline(time.Time{})
	client.Write([]byte(msg))
	buf := make([]byte, 100)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != msg {
		t.Fatalf("read after the deadline: %q %v", buf[:n], err)
	}
	if st := g.Stats(); st.Open != 1 || st.Refused["idle_timeout"] != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTLS(t *testing.T) {
	cert, key := testcert.Write(t, netip.MustParseAddr("127.0.0.1"))
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{pair}}
	const hs = 300 * time.Millisecond
	cases := []struct {
		name   string
		client func(c net.Conn) // what the client does after connecting
		reason Reason
		closed bool
	}{
		{"silent", func(net.Conn) {}, HandshakeTimeout, true},
		{"part of a ClientHello", func(c net.Conn) { c.Write([]byte{0x16, 0x03, 0x01, 0x02}) }, HandshakeTimeout, true},
		{"not TLS", func(c net.Conn) { c.Write([]byte("OPTIONS sip:a SIP/2.0\r\n\r\n")) }, HandshakeFailed, true},
		{"a handshake, then half a message", func(c net.Conn) {
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
			tc.Handshake()
			tc.Write([]byte(msg[:20]))
		}, MessageTimeout, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newServer(t, Config{Max: 10, HandshakeTimeout: hs, MessageTimeout: 2 * hs, IdleTimeout: 10 * time.Second}, conf)
			conn := dialFrom(t, "127.0.0.1", s.addr())
			c.client(conn)
			if got := conntest.ClosedWithin(conn, 3*hs); got != c.closed {
				t.Fatalf("closed %v, want %v", got, c.closed)
			}
			waitOpen(t, s.g, 0)
			if s.g.Refused(c.reason) != 1 {
				t.Errorf("refusals %v, want one %s", s.g.Stats().Refused, c.reason)
			}
		})
	}
	// A good client's message gets through.
	s := newServer(t, Config{Max: 10, HandshakeTimeout: hs, MessageTimeout: hs, IdleTimeout: time.Second}, conf)
	tc, err := tls.Dial("tcp", s.addr(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	time.Sleep(2 * hs) // longer than the handshake timeout: it no longer applies
	tc.Write([]byte(msg))
	sc := <-s.conn
	tc.Close()
	e := s.ended(t, sc.remote)
	if string(e.read) != msg || !errors.Is(e.err, io.EOF) {
		t.Fatalf("server read %q, %v", e.read, e.err)
	}
}

// fakeListener returns the errors in errs, one per Accept, then blocks
// until closed.
type fakeListener struct {
	mu     sync.Mutex
	errs   []error
	closed chan struct{}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Unlock()
	<-f.closed
	return nil, net.ErrClosed
}

func (f *fakeListener) Close() error   { close(f.closed); return nil }
func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func TestAcceptErrorsRetried(t *testing.T) {
	errs := []error{
		&net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE},
		&net.OpError{Op: "accept", Net: "tcp", Err: syscall.ENFILE},
		&net.OpError{Op: "accept", Net: "tcp", Err: syscall.ECONNABORTED},
		errors.New("something else"),
	}
	g, err := New(Config{Max: 1})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeListener{errs: errs, closed: make(chan struct{})}
	l := g.Listen(f)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	// 5 + 10 + 20 + 40 ms of backoff, then it waits for a connection.
	for g.Refused(AcceptError) < uint64(len(errs)) {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("accept errors counted: %d", g.Refused(AcceptError))
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("Accept returned %v while the listener is open", err)
	case <-time.After(100 * time.Millisecond):
	}
	l.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// Close ends a backoff at once.
func TestCloseDuringBackoff(t *testing.T) {
	g, _ := New(Config{Max: 1})
	var errs []error
	for range 20 {
		errs = append(errs, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE})
	}
	l := g.Listen(&fakeListener{errs: errs, closed: make(chan struct{})})
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	time.Sleep(300 * time.Millisecond) // into the longer waits
	start := time.Now()
	l.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("Accept after Close: %v after %v", err, time.Since(start))
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, c := range []Config{{}, {Max: -1}, {Max: 1, PerSource: -1}, {Max: 1, IdleTimeout: -time.Second}} {
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v): %v", c, err)
		}
	}
}

func TestDerive(t *testing.T) {
	cases := []struct {
		nofile         uint64
		relay          int
		max, perSource int
	}{
		{20000, 0, 18622, 256},        // bench conns: media none
		{20000, 10000, 8622, 256},     // the default relay range
		{1024, 2000, 320, 20},         // the flood test
		{1024, 0, 832, 52},            // no relay
		{256, 0, 112, 8},              // small
		{64, 0, 8, 8},                 // tiny: an eighth of the limit
		{1 << 40, 0, maxDerived, 256}, // no real limit
	}
	for _, c := range cases {
		b := Derive(c.nofile, c.relay)
		if b.Max != c.max || b.PerSource != c.perSource {
			t.Errorf("Derive(%d, %d) = max %d per source %d, want %d %d", c.nofile, c.relay, b.Max, b.PerSource, c.max, c.perSource)
		}
	}
}
