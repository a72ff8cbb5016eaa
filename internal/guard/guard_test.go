package guard

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParsePrefixes(t *testing.T) {
	cases := []struct {
		in      []string
		want    []string
		wantErr bool
	}{
		{nil, []string{}, false},
		{[]string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"},
			[]string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"}, false},
		{[]string{" 10.1.2.3/24 "}, []string{"10.1.2.0/24"}, false},           // masked
		{[]string{"::ffff:10.0.0.0/104"}, []string{"10.0.0.0/8"}, false},      // unmapped
		{[]string{"::ffff:192.0.2.1"}, []string{"192.0.2.1/32"}, false},       // unmapped
		{[]string{"10.0.0.0/33"}, nil, true},                                  // bad length
		{[]string{"example.com"}, nil, true},                                  // a name
		{[]string{"fe80::1%eth0"}, nil, true},                                 // a zone
		{[]string{"10.0.0.1", "nonsense", "10.0.0.0/8"}, nil, true},           // one bad entry
		{[]string{""}, nil, true},                                             // empty entry
		{[]string{"0.0.0.0/0", "::/0"}, []string{"0.0.0.0/0", "::/0"}, false}, // explicit everyone
	}
	for _, c := range cases {
		got, err := ParsePrefixes(c.in)
		if (err != nil) != c.wantErr {
			t.Errorf("ParsePrefixes(%q): error %v, want error %v", c.in, err, c.wantErr)
			continue
		}
		if c.wantErr {
			continue
		}
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if !slices.Equal(s, c.want) && !(len(s) == 0 && len(c.want) == 0) {
			t.Errorf("ParsePrefixes(%q) = %v, want %v", c.in, s, c.want)
		}
	}
}

func TestContainsAndLoopbackOnly(t *testing.T) {
	ps := func(s ...string) []netip.Prefix {
		p, err := ParsePrefixes(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	allow := ps("10.0.0.0/8", "2001:db8::/32")
	for _, c := range []struct {
		addr string
		want bool
	}{
		{"10.1.2.3", true}, {"::ffff:10.1.2.3", true}, {"11.0.0.1", false},
		{"2001:db8::5", true}, {"2001:db9::5", false}, {"127.0.0.1", false},
	} {
		if got := Contains(allow, netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("Contains(%v, %s) = %v", allow, c.addr, got)
		}
	}
	if Contains(nil, netip.MustParseAddr("127.0.0.1")) {
		t.Error("an empty list contains an address")
	}
	for _, c := range []struct {
		list []string
		want bool
	}{
		{nil, false},
		{[]string{"127.0.0.0/8", "::1/128"}, true},
		{[]string{"127.0.0.1"}, true},
		{[]string{"127.0.0.0/7"}, false}, // reaches 126/8
		{[]string{"127.0.0.1", "10.0.0.1"}, false},
		{[]string{"::/0"}, false},
		{[]string{"::1/127"}, false},
	} {
		if got := LoopbackOnly(ps(c.list...)); got != c.want {
			t.Errorf("LoopbackOnly(%v) = %v, want %v", c.list, got, c.want)
		}
	}
	if !LoopbackOnly(Loopback()) {
		t.Error("Loopback() is not loopback only")
	}
}

// serve accepts on l until it fails and hands each connection to keep.
func serve(l *Listener, keep chan<- net.Conn) chan error {
	done := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				done <- err
				return
			}
			keep <- c
		}
	}()
	return done
}

// refused reports whether the server ended c at once without a byte.
func refused(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	return n == 0 && err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestListenerAllowAndCap(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(inner, Config{Allow: Loopback(), MaxConns: 2})
	accepted := make(chan net.Conn, 10)
	done := serve(l, accepted)
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := dial(), dial()
	sa, sb := <-accepted, <-accepted
	if st := l.Stats(); st.Active != 2 {
		t.Fatalf("active %d, want 2", st.Active)
	}
	// The third is over the cap: reset, counted, not handed out.
	if c, err := net.Dial("tcp", inner.Addr().String()); err == nil {
		defer c.Close()
		if !refused(t, c) {
			t.Error("a connection over the cap was kept open")
		}
	}
	if st := l.Stats(); st.RefusedConns != 1 || st.Active != 2 {
		t.Errorf("stats %+v, want 1 refused over the cap and 2 active", st)
	}
	// A slot given back (twice: Close is idempotent for the count) admits
	// the next one.
	sa.Close()
	sa.Close()
	c := dial()
	select {
	case sc := <-accepted:
		sc.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("a connection within the cap was not accepted")
	}
	c.Close()
	sb.Close()
	a.Close()
	b.Close()
	l.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if st := l.Stats(); st.Active != 0 {
		t.Errorf("active %d after every connection closed", st.Active)
	}
}

func TestListenerRefusesSource(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(inner, Config{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	accepted := make(chan net.Conn, 1)
	done := serve(l, accepted)
	// The reset can come before the dial returns; either way it fails.
	if c, err := net.Dial("tcp", inner.Addr().String()); err == nil {
		defer c.Close()
		if !refused(t, c) {
			t.Error("a connection from outside the allow list was kept open")
		}
	}
	select {
	case <-accepted:
		t.Error("a connection from outside the allow list was handed to the server")
	default:
	}
	if st := l.Stats(); st.RefusedSource != 1 || st.Active != 0 {
		t.Errorf("stats %+v, want 1 refused by source", st)
	}
	l.Close()
	<-done
}

// failing is a listener whose Accept fails n times with err, then
// delegates.
type failing struct {
	net.Listener
	mu    sync.Mutex
	n     int
	err   error
	times []time.Time
}

func (f *failing) Accept() (net.Conn, error) {
	f.mu.Lock()
	f.times = append(f.times, time.Now())
	if f.n > 0 {
		f.n--
		f.mu.Unlock()
		return nil, f.err
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

// TestListenerBackoff: EMFILE (and any other error) is retried after a
// growing pause instead of ending the server, and the listener serves
// again once it clears.
func TestListenerBackoff(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &failing{Listener: inner, n: 6, err: &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}}
	l := New(f, Config{})
	accepted := make(chan net.Conn, 1)
	done := serve(l, accepted)
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case sc := <-accepted:
		sc.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted after the errors cleared")
	}
	if st := l.Stats(); st.AcceptErrors != 6 {
		t.Errorf("accept errors %d, want 6", st.AcceptErrors)
	}
	f.mu.Lock()
	times := f.times
	f.mu.Unlock()
	// Pauses 5, 10, 20, 40, 80, 160 ms: the retries take about 315 ms
	// and each pause is longer than the one before.
	if total := times[6].Sub(times[0]); total < 300*time.Millisecond {
		t.Errorf("six retries took %v: no backoff", total)
	}
	for i := 2; i < 7; i++ {
		if times[i].Sub(times[i-1]) < times[i-1].Sub(times[i-2]) {
			t.Errorf("pause %d (%v) shorter than pause %d (%v)", i, times[i].Sub(times[i-1]), i-1, times[i-1].Sub(times[i-2]))
		}
	}
	l.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
}

// TestListenerCloseDuringBackoff: Close wakes an Accept that is waiting
// out a backoff.
func TestListenerCloseDuringBackoff(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &failing{Listener: inner, n: 1 << 30, err: errors.New("accept: no buffer space")}
	l := New(f, Config{})
	done := serve(l, make(chan net.Conn))
	time.Sleep(1500 * time.Millisecond) // into the 1 s pauses
	start := time.Now()
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v", err)
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("Accept returned %v after Close", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Accept still waiting after Close")
	}
}
