package ng

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Two sources on loopback: Linux answers on all of 127.0.0.0/8.
var (
	friend     = netip.MustParseAddr("127.0.0.1")
	stranger   = netip.MustParseAddr("127.0.0.2")
	onlyFriend = []netip.Prefix{netip.PrefixFrom(friend, 32)}
)

// serving runs f (ServeUDP or ServeTCP) until the test ends.
func serving(t *testing.T, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("server did not stop after cancel")
		}
	})
}

// dialFrom connects from src to addr.
func dialFrom(t *testing.T, network string, src netip.Addr, addr net.Addr) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	if network == "udp" {
		d.LocalAddr = &net.UDPAddr{IP: src.AsSlice()}
	} else {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	c, err := d.Dial(network, addr.String())
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// exchange writes m on c and returns what comes back within wait (nil
// when nothing or the connection ended).
func exchange(c net.Conn, m []byte, wait time.Duration) []byte {
	if _, err := c.Write(m); err != nil {
		return nil
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	n, _ := c.Read(buf)
	if n == 0 {
		return nil
	}
	return buf[:n]
}

const ping = "p1 d7:command4:pinge"

// TestServeUDPAllow: a datagram from a source off the allow list gets no
// reply, never reaches the backend, and is counted.
func TestServeUDPAllow(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after serving's cleanup
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	fb := &fakeBackend{calls: []string{"secret-call"}}
	s := NewServer(fb, Options{Allow: onlyFriend})
	serving(t, func(ctx context.Context) error { return s.ServeUDP(ctx, pc) })

	x, err := dialFrom(t, "udp", stranger, pc.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{ping, "p2 d7:command4:liste", "p3 d7:command6:delete7:call-id11:secret-calle"} {
		if r := exchange(x, []byte(m), 300*time.Millisecond); r != nil {
			t.Errorf("stranger's %q answered %q", m, r)
		}
	}
	if n := len(fb.requests()); n != 0 {
		t.Errorf("backend saw %d of the stranger's commands", n)
	}
	f, err := dialFrom(t, "udp", friend, pc.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	if r := exchange(f, []byte(ping), 3*time.Second); string(r) != "p1 d6:result4:ponge" {
		t.Errorf("friend's ping answered %q", r)
	}
	if st := s.Stats(); st["refused.source"] != 3 {
		t.Errorf("refused.source %d, want 3", st["refused.source"])
	}
}

// TestServeTCPLimits: over TCP, a stranger's connection is closed at
// once, connections beyond the cap are closed at once, a silent
// connection is closed after the idle timeout, a message left unfinished
// is cut off after the message timeout even while it trickles in, and a
// busy connection is not cut off by either.
func TestServeTCPLimits(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after serving's cleanup
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(&fakeBackend{}, Options{Allow: onlyFriend, MaxConns: 2,
		IdleTimeout: 400 * time.Millisecond, MessageTimeout: 600 * time.Millisecond})
	serving(t, func(ctx context.Context) error { return s.ServeTCP(ctx, ln) })
	addr := ln.Addr()
	waitStat := func(key string, want uint64) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for s.Stats()[key] != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s = %d, want %d", key, s.Stats()[key], want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// A stranger: reset at accept (the dial itself may fail).
	if x, err := dialFrom(t, "tcp", stranger, addr); err == nil {
		if r := exchange(x, []byte(ping), time.Second); r != nil {
			t.Errorf("stranger's ping answered %q", r)
		}
	}
	waitStat("refused.source", 1)

	// Silent: closed after the idle timeout, not before.
	idle, err := dialFrom(t, "tcp", friend, addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = idle.SetReadDeadline(start.Add(3 * time.Second))
	if _, err := io.Copy(io.Discard, idle); err != nil {
		t.Fatalf("idle connection: %v (not closed within 3 s)", err)
	}
	if d := time.Since(start); d < 350*time.Millisecond {
		t.Errorf("idle connection closed after %v, before the idle timeout", d)
	}
	waitStat("tcp.idle_closed", 1)

	// Busy: a ping every 200 ms for 1.2 s outlives both timeouts.
	busy, err := dialFrom(t, "tcp", friend, addr)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if r := exchange(busy, []byte(ping), time.Second); string(r) != "p1 d6:result4:ponge" {
			t.Fatalf("busy connection, ping %d: %q", i, r)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Trickling: a byte every 100 ms never finishes the message; cut off
	// about 600 ms after its first byte although it is never silent
	// for the idle timeout.
	slow, err := dialFrom(t, "tcp", friend, addr)
	if err != nil {
		t.Fatal(err)
	}
	trickle := "p2 d7:command500:" + strings.Repeat("a", 100)
	start = time.Now()
	cut := false
	for i := 0; i < 30 && !cut; i++ {
		if _, err := slow.Write([]byte{trickle[i]}); err != nil {
			cut = true
		}
		_ = slow.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := slow.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			cut = true
		}
	}
	if !cut {
		t.Fatal("a message trickling in for 3 s was never cut off")
	}
	if d := time.Since(start); d < 550*time.Millisecond || d > 2*time.Second {
		t.Errorf("trickling message cut off after %v, want about 600 ms", d)
	}
	waitStat("tcp.message_timeouts", 1)

	// The cap: two connections hold both slots (for less than the idle
	// timeout); a third is reset.
	busy.Close()
	waitStat("tcp.connections", 0)
	var hold [2]net.Conn
	for i := range hold {
		if hold[i], err = dialFrom(t, "tcp", friend, addr); err != nil {
			t.Fatal(err)
		}
		if r := exchange(hold[i], []byte(ping), time.Second); r == nil {
			t.Fatalf("connection %d not served", i)
		}
	}
	waitStat("tcp.connections", 2)
	if over, err := dialFrom(t, "tcp", friend, addr); err == nil {
		if r := exchange(over, []byte(ping), time.Second); r != nil {
			t.Errorf("connection over the cap answered %q", r)
		}
	}
	waitStat("refused.connections", 1)
	hold[0].Close()
	hold[1].Close()
	waitStat("tcp.connections", 0)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// failingListener fails Accept n times with EMFILE, then delegates.
type failingListener struct {
	net.Listener
	mu sync.Mutex
	n  int
}

func (f *failingListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	if f.n > 0 {
		f.n--
		f.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

// TestServeTCPAcceptErrors: running out of file descriptors does not
// end ServeTCP (before, any accept error but a timeout did); it backs
// off, counts, and serves once accept works again.
func TestServeTCPAcceptErrors(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after serving's cleanup
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(&fakeBackend{}, Options{})
	serving(t, func(ctx context.Context) error { return s.ServeTCP(ctx, &failingListener{Listener: ln, n: 5}) })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r := exchange(c, []byte(ping), 5*time.Second); string(r) != "p1 d6:result4:ponge" {
		t.Fatalf("ping after accept errors: %q", r)
	}
	if n := s.Stats()["accept_errors"]; n != 5 {
		t.Errorf("accept_errors %d, want 5", n)
	}
}
