package ng

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// lossyConn drops the first drop datagrams it reads, as a lossy network
// would.
type lossyConn struct {
	net.PacketConn
	drop atomic.Int32
}

func (l *lossyConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := l.PacketConn.ReadFrom(b)
		if err != nil || l.drop.Add(-1) < 0 {
			return n, a, err
		}
	}
}

// serve runs an NG server for b on a loopback socket that loses the
// first drop datagrams, and returns its address.
func serve(t *testing.T, b Backend, drop int32) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lc := &lossyConn{PacketConn: pc}
	lc.drop.Store(drop)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = NewServer(b, Options{}).ServeUDP(ctx, lc); close(done) }()
	t.Cleanup(func() { cancel(); <-done; pc.Close() })
	return pc.LocalAddr().String()
}

// rawRelay answers every command with reply (no reply when nil).
func rawRelay(t *testing.T, reply map[string]any) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, MaxMessageSize)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply == nil {
				continue
			}
			cookie, _, ok := splitCookie(buf[:n])
			if !ok {
				continue
			}
			body, _ := Encode(reply)
			_, _ = pc.WriteTo(append([]byte(cookie+" "), body...), a)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().String()
}

func dial(t *testing.T, addr string, o ClientOptions) *Client {
	t.Helper()
	if o.RetryInterval == 0 {
		o.RetryInterval = 50 * time.Millisecond
	}
	c, err := Dial(addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientCommands(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // first registered, so run after the others
	fb := &fakeBackend{stats: CallStats{
		Created: time.Unix(1700000000, 0),
		Tags: []TagStats{{Tag: "ft", Medias: []MediaStats{{Index: 1, Type: "audio", Streams: []StreamStats{
			{LocalPort: 30000, Packets: 10, Bytes: 1720},
			{LocalPort: 30001, RTCP: true, Packets: 2, Bytes: 100},
		}}}}},
	}}
	c := dial(t, serve(t, fb, 0), ClientOptions{})
	ctx := context.Background()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	cmd := &Command{CallID: "c1", FromTag: "ft", SDP: []byte("v=0"),
		Flags: []string{"ICE=remove"}, Replace: []string{"origin", "session-connection"}}
	sdp, err := c.Offer(ctx, cmd)
	if err != nil || string(sdp) != "v=0 offer c1" {
		t.Fatalf("offer: %q, %v", sdp, err)
	}
	cmd.ToTag = "tt"
	if sdp, err = c.Answer(ctx, cmd); err != nil || string(sdp) != "v=0 answer c1" {
		t.Fatalf("answer: %q, %v", sdp, err)
	}
	ci, err := c.Query(ctx, &Command{CallID: "c1"})
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	if !ci.Created.Equal(time.Unix(1700000000, 0)) || ci.RTP.Packets != 10 || ci.RTCP.Bytes != 100 ||
		len(ci.Tags) != 1 || ci.Tags[0] != "ft" {
		t.Errorf("query: %+v", ci)
	}
	if _, err := c.Delete(ctx, &Command{CallID: "c1", FromTag: "ft"}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	reqs := fb.requests()
	if len(reqs) != 4 {
		t.Fatalf("backend saw %d commands, want 4", len(reqs))
	}
	off := reqs[0]
	if off.Command != "offer" || off.ICE != "remove" || len(off.Replace) != 2 || off.FromTag != "ft" {
		t.Errorf("offer as the server parsed it: %+v", off)
	}
	if !off.SupportsLoadLimit() {
		t.Errorf("offer without supports: [load limit]: flags %v", off.Flags)
	}
	if reqs[1].ToTag != "tt" || reqs[3].Command != "delete" {
		t.Errorf("answer/delete as parsed: %+v %+v", reqs[1], reqs[3])
	}
}

func TestClientErrors(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // first registered, so run after the others
	tests := []struct {
		name       string
		addr       func(t *testing.T) string
		overloaded bool
		timeout    bool
		reason     string
	}{
		{"error reply", func(t *testing.T) string {
			return serve(t, &fakeBackend{err: errors.New("unknown call")}, 0)
		}, false, false, "unknown call"},
		{"out of ports", func(t *testing.T) string {
			return serve(t, &fakeBackend{err: errors.New(ReasonOutOfPorts)}, 0)
		}, true, false, ReasonOutOfPorts},
		{"session limit", func(t *testing.T) string {
			return rawRelay(t, map[string]any{"result": "error", "error-reason": ReasonSessionLimit})
		}, true, false, ReasonSessionLimit},
		{"load limit", func(t *testing.T) string {
			return rawRelay(t, map[string]any{"result": "load limit", "message": "draining"})
		}, true, false, "draining"},
		{"never answers", func(t *testing.T) string { return rawRelay(t, nil) }, false, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, tt.addr(t), ClientOptions{Retries: 3, RetryInterval: 30 * time.Millisecond})
			start := time.Now()
			_, err := c.Offer(context.Background(), &Command{CallID: "c", FromTag: "f", SDP: []byte("v=0")})
			if err == nil {
				t.Fatal("offer succeeded")
			}
			if got := IsOverloaded(err); got != tt.overloaded {
				t.Errorf("IsOverloaded(%v) = %v, want %v", err, got, tt.overloaded)
			}
			if got := errors.Is(err, ErrTimeout); got != tt.timeout {
				t.Errorf("errors.Is(%v, ErrTimeout) = %v, want %v", err, got, tt.timeout)
			}
			if tt.timeout {
				if d := time.Since(start); d < 80*time.Millisecond || d > 2*time.Second {
					t.Errorf("gave up after %v, want about 3 tries of 30ms", d)
				}
				return
			}
			var re *ReplyError
			if !errors.As(err, &re) || re.Reason != tt.reason {
				t.Errorf("err %v: want a ReplyError with reason %q", err, tt.reason)
			}
		})
	}
}

// TestClientRetransmits: the first two datagrams are lost; the third try
// gets through, and the server executes the command once.
func TestClientRetransmits(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // first registered, so run after the others
	fb := &fakeBackend{}
	c := dial(t, serve(t, fb, 2), ClientOptions{Retries: 5, RetryInterval: 30 * time.Millisecond})
	sdp, err := c.Offer(context.Background(), &Command{CallID: "c", FromTag: "f", SDP: []byte("v=0")})
	if err != nil || string(sdp) != "v=0 offer c" {
		t.Fatalf("offer: %q, %v", sdp, err)
	}
	if n := len(fb.requests()); n != 1 {
		t.Errorf("backend ran the offer %d times, want 1", n)
	}
	// Lost more often than the client tries: a timeout.
	c2 := dial(t, serve(t, fb, 10), ClientOptions{Retries: 3, RetryInterval: 20 * time.Millisecond})
	if err := c2.Ping(context.Background()); !errors.Is(err, ErrTimeout) {
		t.Errorf("ping through 10 losses with 3 tries: %v, want ErrTimeout", err)
	}
}

func TestClientContext(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // first registered, so run after the others
	c := dial(t, rawRelay(t, nil), ClientOptions{Retries: 100, RetryInterval: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Ping(ctx)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ping: %v, want ErrTimeout and DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("ping returned after %v, want the context's 50ms", d)
	}
}

// TestClientOutstanding: with one slot taken by a command the relay is
// slow to answer, a second waits and times out on its context.
func TestClientOutstanding(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // first registered, so run after the others
	fb := &fakeBackend{block: make(chan struct{})}
	c := dial(t, serve(t, fb, 0), ClientOptions{MaxOutstanding: 1, RetryInterval: time.Second})
	first := make(chan error, 1)
	go func() {
		_, err := c.Offer(context.Background(), &Command{CallID: "a", FromTag: "f", SDP: []byte("v=0")})
		first <- err
	}()
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Ping(ctx); !errors.Is(err, ErrTimeout) {
		t.Errorf("second command with the slot taken: %v, want ErrTimeout", err)
	}
	close(fb.block)
	if err := <-first; err != nil {
		t.Errorf("first command: %v", err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Errorf("ping once the slot is free: %v", err)
	}
}

func TestClientClosed(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // first registered, so run after the others
	c := dial(t, rawRelay(t, nil), ClientOptions{})
	errc := make(chan error, 1)
	go func() { errc <- c.Ping(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("ping across Close: %v, want ErrClosed", err)
	}
	if err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("ping after Close: %v, want ErrClosed", err)
	}
}

// FuzzParseClientReply: whatever a relay sends back, the client returns
// a reply or an error, never panics.
func FuzzParseClientReply(f *testing.F) {
	f.Add([]byte("d6:result4:ponge"))
	f.Add([]byte("d6:result10:load limit7:message8:draininge"))
	f.Add([]byte("d6:result5:error12:error-reason16:Ran out of portse"))
	f.Add([]byte("d6:result2:ok7:createdi1700000000e6:totalsd3:RTPd7:packetsi5eeee"))
	f.Add([]byte("d6:result2:ok4:tagsd2:ftd3:tag2:ftee6:totals3:xyze"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseClientReply("query", b)
		if err == nil {
			_ = ParseCallInfo(d)
			if r := d["result"]; r != "ok" && r != "pong" {
				t.Fatalf("result %v accepted", r)
			}
		}
	})
}
