package security

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"sipxdp/internal/conntest"
	"sipxdp/internal/netns"
	"sipxdp/internal/sipua"
	"sipxdp/internal/testcert"
	"sipxdp/sipd"
	"sipxdp/sipd/sipconf"
)

// Attacks on sipd's TCP and TLS listeners: too many connections, slow
// messages, stalled handshakes, idle connections.

// refused reads one reason of the counters of connections refused at
// accept (the caps) or closed later (timeouts, failed handshakes).
func (e *env) refused(reason string) float64 {
	e.t.Helper()
	series := fmt.Sprintf("sipxdp_sip_connections_closed_total{reason=%q}", reason)
	switch reason {
	case "total_cap", "per_source_cap":
		series = fmt.Sprintf("sipxdp_sip_connections_refused_total{reason=%q}", reason)
	case "accept_error":
		series = "sipxdp_sip_accept_errors_total"
	}
	v, ok := e.sipd.Metric(series)
	if !ok {
		e.t.Fatalf("no series %s", series)
	}
	return v
}

// alive fails the test if sipd has exited.
func (e *env) alive(when string) {
	e.t.Helper()
	select {
	case <-e.sipd.Exited():
		log := e.sipd.Log()
		if len(log) > 3000 {
			log = log[len(log)-3000:]
		}
		e.t.Fatalf("sipd exited %s; its log ends:\n%s", when, log)
	default:
	}
}

// keepalive sends an OPTIONS keep-alive over UDP and fails unless it is
// answered 200.
func (e *env) keepalive(u *sipua.UA, n int) {
	e.t.Helper()
	u.Send(u.Request(sipua.Msg{Method: "OPTIONS", RURI: "sip:" + e.SIP.String(), From: "sip:alice@" + domain,
		To: "sip:" + e.SIP.String(), CallID: fmt.Sprintf("ka-%d", n), CSeq: 1}))
	r := u.Response(3 * time.Second)
	if r == nil || r.StatusCode != 200 {
		e.alive("while UDP went unanswered")
		e.t.Fatalf("UDP keep-alive %d: %v, want 200", n, r)
	}
}

// flood opens n connections to dst from the sources in turn, 64 dials at
// a time, each bounded by 2 s, and returns those that connected (sipd may
// close them at once: that is for the caller to find out).
func flood(ns *netns.NS, sources []netip.Addr, dst netip.AddrPort, n int) (conns []net.Conn, failed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := ns.DialFrom("tcp", sources[i%len(sources)], dst.String(), 2*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			conns = append(conns, c)
		}()
	}
	wg.Wait()
	return conns, failed
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// closedAll waits for every connection, all at once, and returns when each
// was closed (zero: still open at until).
func closedAll(conns []net.Conn, until time.Time) []time.Time {
	out := make([]time.Time, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], _ = conntest.ClosedAt(c, until)
		}()
	}
	wg.Wait()
	return out
}

// waitOpen polls the open-connection gauge until it is at most n.
func (e *env) waitOpen(n float64, within time.Duration) float64 {
	e.t.Helper()
	end := time.Now().Add(within)
	for {
		v, _ := e.sipd.Metric("sipxdp_sip_connections")
		if v <= n || time.Now().After(end) {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestConnFloodEMFILE: an attacker opens more TCP connections than sipd
// has file descriptors (RLIMIT_NOFILE lowered to 1,024 for the test).
// Before the fix the accept error ended sipgo's Serve and sipd exited,
// taking UDP and media with it. Now the per-source cap stops one address
// early, the total cap stops many addresses below the descriptor limit,
// and when the limit is reached anyway (a total cap configured above it)
// accept backs off and retries: sipd answers UDP throughout, the API
// while it has descriptors, counts every refusal, and serves TCP again
// once the flood ends.
func TestConnFloodEMFILE(t *testing.T) {
	const nofile = 1024
	cases := []struct {
		name    string
		sources int // attacker addresses
		conns   int
		edit    func(*sipconf.Connections)
		reason  string
		// duringAPI: /health answers while the flood holds its connections
		// (not when they hold every descriptor). duringTCP: a subscriber
		// registers over TCP meanwhile (not when the total cap is full).
		duringAPI, duringTCP bool
	}{
		{name: "per_source", sources: 1, conns: 1200, reason: "per_source_cap", duringAPI: true, duringTCP: true},
		{name: "total", sources: 8, conns: 1200, edit: func(c *sipconf.Connections) { c.PerSource = 1000 },
			reason: "total_cap", duringAPI: true},
		{name: "emfile", sources: 8, conns: 1200, edit: func(c *sipconf.Connections) { c.Max, c.PerSource = 4000, 4000 },
			reason: "accept_error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *sipd.Config) {
				if tc.edit != nil {
					tc.edit(&c.SIP.Connections)
				}
			}, withNoFile(nofile))
			sources := []netip.Addr{e.attacker.V4}
			if tc.sources > 1 {
				sources = append(sources, e.attacker.AddV4(t, 3, tc.sources-1)...)
			}
			caller := e.caller()
			e.keepalive(caller, 0)

			start := time.Now()
			type result struct {
				conns  []net.Conn
				failed int
			}
			done := make(chan result, 1)
			go func() {
				c, f := flood(e.attacker.NS, sources, e.SIP, tc.conns)
				done <- result{c, f}
			}()
			// UDP is answered while the flood comes in.
			var res result
			for i := 1; ; i++ {
				select {
				case res = <-done:
				case <-time.After(200 * time.Millisecond):
					e.keepalive(caller, i)
					continue
				}
				break
			}
			defer closeAll(res.conns)
			t.Logf("flood: %d connections made, %d dials failed (reset at once, or timed out), in %v", len(res.conns), res.failed, time.Since(start).Round(time.Millisecond))
			time.Sleep(500 * time.Millisecond)
			e.alive("during the flood")
			// And while it holds its connections.
			for i := range 3 {
				e.keepalive(caller, 100+i)
				time.Sleep(200 * time.Millisecond)
			}
			e.alive("while the flood held its connections")
			if tc.duringAPI {
				if h := e.sipd.Health(); h.Status != "ok" {
					t.Errorf("health during the flood: %q", h.Status)
				}
				open, _ := e.sipd.Metric("sipxdp_sip_connections")
				max, _ := e.sipd.Metric("sipxdp_sip_connections_max")
				if max <= 0 || max >= nofile || open > max {
					t.Errorf("open connections %v, max %v (limit %d)", open, max, nofile)
				}
				if per, _ := e.sipd.Metric("sipxdp_sip_connections_per_source_max"); tc.sources == 1 && open > per {
					t.Errorf("open connections %v from one source, over its cap %v", open, per)
				}
				t.Logf("open %v of max %v; refused: %s %v", open, max, tc.reason, e.refused(tc.reason))
			}
			if tc.duringTCP {
				s := e.streamUA(e.tp.Caller, netns.V4.Caller, "TCP")
				s.Register("alice", domain, password)
				s.StreamConn().Close()
			}
			t.Logf("checks during the flood done at %v", time.Since(start).Round(time.Millisecond))

			closeAll(res.conns)
			if open := e.waitOpen(0, 5*time.Second); open > 0 {
				t.Errorf("%v connections still open after the flood ended", open)
			}
			t.Logf("flood connections gone at %v", time.Since(start).Round(time.Millisecond))
			e.alive("after the flood")
			if n := e.refused(tc.reason); n == 0 {
				t.Errorf("no refusal counted as %s", tc.reason)
			}
			e.keepalive(caller, 200)
			s := e.streamUA(e.tp.Caller, netns.V4.Caller, "TCP")
			s.Register("alice", domain, password)
			t.Logf("TCP register done at %v", time.Since(start).Round(time.Millisecond))
			e.legitCall()
			t.Logf("legit call done at %v", time.Since(start).Round(time.Millisecond))
			if !strings.Contains(e.sipd.Log(), fmt.Sprintf("rlimit_nofile=%d", nofile)) {
				t.Errorf("the start log does not say which limit the caps came from")
			}
			if os.Getenv("SIPD_TEST_DEBUG") != "" {
				t.Log(e.sipd.Log())
			}
		})
	}
}

// slowClient is one attacker connection that sent part of a message.
type slowClient struct {
	c     net.Conn
	first time.Time // its first byte went out
}

// TestSlowlorisHeaders: many connections each send part of a message and
// then nothing. Before the fix sipd held each one, with what it had
// parsed, for ever. Now each is closed once the message timeout has run
// from its first byte, the closures are counted, and the memory, file
// descriptors and goroutines go back to what they were. A subscriber who
// sends a message in slow pieces within the timeout is still served.
func TestSlowlorisHeaders(t *testing.T) {
	const (
		n       = 200
		timeout = 2 * time.Second
	)
	// About 40 kB of headers, below sipgo's 64 kB message limit.
	var bulk strings.Builder
	for i := 0; bulk.Len() < 40000; i++ {
		fmt.Fprintf(&bulk, "X-Pad-%d: %s\r\n", i, strings.Repeat("a", 100))
	}
	inviteHead := "INVITE sip:bob@" + domain + " SIP/2.0\r\nVia: SIP/2.0/TCP 10.252.3.2:5999;branch=z9hG4bKslow%d\r\n" +
		"From: <sip:x@" + domain + ">;tag=x%d\r\nTo: <sip:bob@" + domain + ">\r\nCall-ID: slow-%d\r\nCSeq: 1 INVITE\r\n"
	cases := []struct {
		name string
		part func(i int) string
	}{
		// Headers without the blank line that ends them.
		{"headers", func(i int) string { return fmt.Sprintf(inviteHead, i, i, i) + bulk.String() }},
		// Whole headers, a part of the body they announce.
		{"body", func(i int) string {
			return fmt.Sprintf(inviteHead, i, i, i) + "Content-Type: application/sdp\r\nContent-Length: 60000\r\n\r\n" + bulk.String()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *sipd.Config) {
				c.HTTP.Pprof = true
				c.SIP.Connections.MessageTimeout = sipconf.Duration(timeout)
				// A slow attacker stays under any rate limit; the flood
				// ban would close these connections here only because
				// the test opens them all at once.
				c.SIP.Protect.Limit = 0
			})
			heap0, gr0 := e.sipd.GoMem()
			fd0 := e.sipd.OpenFiles()
			conns, failed := flood(e.attacker.NS, []netip.Addr{e.attacker.V4}, e.SIP, n)
			if failed > 0 {
				t.Fatalf("%d of %d connections failed", failed, n)
			}
			slow := make([]slowClient, len(conns))
			for i, c := range conns {
				slow[i] = slowClient{c: c, first: time.Now()}
				if _, err := c.Write([]byte(tc.part(i))); err != nil {
					t.Fatalf("send part %d: %v", i, err)
				}
			}
			defer closeAll(conns)
			time.Sleep(timeout / 2)
			heap1, gr1 := e.sipd.GoMem()
			fd1 := e.sipd.OpenFiles()
			t.Logf("%d half-sent messages held: heap %d -> %d kB, goroutines %d -> %d, fds %d -> %d",
				n, heap0>>10, heap1>>10, gr0, gr1, fd0, fd1)

			// A subscriber's REGISTER in three pieces over a second is not cut.
			s := e.streamUA(e.tp.Caller, netns.V4.Caller, "TCP")
			reg := s.Request(sipua.Msg{Method: "REGISTER", RURI: "sip:" + domain, From: "sip:alice@" + domain,
				To: "sip:alice@" + domain, CallID: "slow-legit", CSeq: 1})
			third := len(reg) / 3
			for _, piece := range []string{reg[:third], reg[third : 2*third], reg[2*third:]} {
				// Raw: SendTo would take a piece's leading LF for a blank line.
				if _, err := s.StreamConn().Write([]byte(piece)); err != nil {
					t.Fatal(err)
				}
				time.Sleep(400 * time.Millisecond)
			}
			if r := s.Response(3 * time.Second); r == nil || r.StatusCode != 401 {
				t.Errorf("a REGISTER sent slowly within the timeout: %v, want 401", r)
			}

			slack := 1500 * time.Millisecond
			at := closedAll(conns, slow[len(slow)-1].first.Add(timeout+slack))
			open, early, late := 0, 0, time.Duration(0)
			for i, a := range at {
				if a.IsZero() {
					open++
					continue
				}
				took := a.Sub(slow[i].first)
				if took < timeout-100*time.Millisecond {
					early++
				}
				late = max(late, took)
			}
			heap2, gr2 := e.sipd.GoMem()
			fd2 := e.sipd.OpenFiles()
			if open > 0 {
				t.Fatalf("%d of %d connections with a half-sent message still open %v after it began "+
					"(sipd: heap %d kB, %d goroutines, %d fds; before the attack %d kB, %d, %d)",
					open, n, timeout+slack, heap2>>10, gr2, fd2, heap0>>10, gr0, fd0)
			}
			if early > 0 {
				t.Errorf("%d connections closed before the message timeout", early)
			}
			t.Logf("all %d closed, the last %v after its first byte", n, late.Round(time.Millisecond))
			if v := e.refused("message_timeout"); v < n {
				t.Errorf("message_timeout closures counted: %v, want at least %d", v, n)
			}
			if fd2 > fd0+5 {
				t.Errorf("sipd holds %d descriptors after the attack, %d before", fd2, fd0)
			}
			if grown := heap1 - heap0; heap2 > heap0+grown/4+(1<<20) {
				t.Errorf("heap %d kB after the attack: before %d kB, during %d kB", heap2>>10, heap0>>10, heap1>>10)
			}
			if gr2 > gr0+10 {
				t.Errorf("%d goroutines after the attack, %d before", gr2, gr0)
			}
			t.Logf("after: heap %d kB, goroutines %d, fds %d", heap2>>10, gr2, fd2)
			e.legitCall()
		})
	}
}

// TestTLSHandshakeStall: connections to the TLS listener that never send
// a ClientHello, or only part of one. Before the fix the handshake waited
// for ever. Now each is closed when the handshake timeout runs out, and
// counted; a subscriber still registers over TLS.
func TestTLSHandshakeStall(t *testing.T) {
	const (
		n       = 50
		timeout = time.Second
	)
	cases := []struct {
		name string
		send []byte
	}{
		{"silent", nil},
		{"partial hello", []byte{0x16, 0x03, 0x01, 0x02}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var tlsAddr netip.AddrPort
			e := newEnv(t, func(c *sipd.Config) {
				cert, key := testcert.Write(t, netns.V4.RelayA)
				tlsAddr = netip.AddrPortFrom(netns.V4.RelayA, 5061)
				c.SIP.Listen = append(c.SIP.Listen, sipconf.Listen{Transport: "tls", Addr: tlsAddr.String(), Cert: cert, Key: key})
				c.SIP.Connections.TLSHandshakeTimeout = sipconf.Duration(timeout)
			})
			conns, failed := flood(e.attacker.NS, []netip.Addr{e.attacker.V4}, tlsAddr, n)
			if failed > 0 {
				t.Fatalf("%d of %d connections failed", failed, n)
			}
			defer closeAll(conns)
			start := time.Now()
			for _, c := range conns {
				if tc.send != nil {
					c.Write(tc.send)
				}
			}
			slack := 1500 * time.Millisecond
			at := closedAll(conns, start.Add(timeout+slack))
			open := 0
			for _, a := range at {
				if a.IsZero() {
					open++
				}
			}
			if open > 0 {
				t.Fatalf("%d of %d stalled handshakes still open after %v (sipd holds %d descriptors)",
					open, n, timeout+slack, e.sipd.OpenFiles())
			}
			if v := e.refused("handshake_timeout"); v < n {
				t.Errorf("handshake_timeout closures counted: %v, want at least %d", v, n)
			}
			s := e.streamUA(e.tp.Caller, netns.V4.Caller, "TLS")
			s.Register("alice", domain, password)
			e.legitCall()
		})
	}
}

// TestIdleConnectionsReaped: connections that carry nothing. Before the
// fix an idle connection was held for ever, so idle connections alone
// could use up sipd's descriptors. Now a connection that carries no
// message for the idle timeout is closed (CRLF keep-alives do not keep an
// unregistered one), except one over which a REGISTER succeeded: that one
// is how sipd reaches the phone, and stays open until the registration
// expires.
func TestIdleConnectionsReaped(t *testing.T) {
	const (
		idle    = 2 * time.Second
		expires = 5 // seconds, the registered connection's REGISTER
	)
	e := newEnv(t, func(c *sipd.Config) {
		c.SIP.Connections.IdleTimeout = sipconf.Duration(idle)
		c.SIP.Registrar.MinExpires = sipconf.Duration(time.Second)
	})
	x := e.attacker
	dial := func() net.Conn {
		c, err := x.DialFrom("tcp", x.V4, e.SIP.String(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	start := time.Now()
	silent := dial()
	// One OPTIONS, answered, then nothing.
	options := sipua.NewStream(t, dial(), "TCP")
	options.Send(options.Request(sipua.Msg{Method: "OPTIONS", RURI: "sip:" + e.SIP.String(), From: "sip:x@" + domain,
		To: "sip:" + e.SIP.String(), CallID: "idle-options", CSeq: 1}))
	options.Expect(200)
	optionsDone := time.Now()
	// CRLF keep-alives only.
	pinger := dial()
	stopPing := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopPing:
				return
			case <-time.After(400 * time.Millisecond):
				pinger.Write([]byte("\r\n\r\n"))
			}
		}
	}()
	defer close(stopPing)
	// A phone registered over its connection.
	phone := e.streamUA(e.tp.Caller, netns.V4.Caller, "TCP")
	phone.RegisterFor("alice", domain, password, expires)
	registered := time.Now()

	slack := 1500 * time.Millisecond
	check := func(name string, c net.Conn, from time.Time) {
		at, ok := conntest.ClosedAt(c, from.Add(idle+slack))
		switch {
		case !ok:
			t.Errorf("%s: still open %v after its last message", name, idle+slack)
		case at.Sub(from) < idle-200*time.Millisecond:
			t.Errorf("%s: closed after %v, before the idle timeout", name, at.Sub(from))
		default:
			t.Logf("%s: closed %v after its last message", name, at.Sub(from).Round(time.Millisecond))
		}
	}
	var wg sync.WaitGroup
	for _, c := range []struct {
		name string
		c    net.Conn
		from time.Time
	}{{"silent", silent, start}, {"after OPTIONS", options.StreamConn(), optionsDone}, {"CRLF pings", pinger, start}} {
		wg.Add(1)
		go func() { defer wg.Done(); check(c.name, c.c, c.from) }()
	}
	// The registered phone's connection outlives the idle timeout...
	if at, ok := conntest.ClosedAt(phone.StreamConn(), registered.Add(idle+slack)); ok {
		t.Errorf("registered connection closed %v after the REGISTER, before the registration expired", at.Sub(registered))
	}
	wg.Wait()
	// ... and sipd still reaches the phone over it.
	bob := e.callee()
	bob.Register("bob", domain, password)
	inv := sipua.Msg{Method: "INVITE", RURI: "sip:alice@" + domain, From: "sip:bob@" + domain,
		To: "sip:alice@" + domain, CallID: "idle-call", CSeq: 1, Body: sipua.SDP(netip.AddrPortFrom(netns.V4.Callee, 40010))}
	if r := bob.Authenticated(inv, "bob", password); r != nil && r.StatusCode >= 300 {
		t.Fatalf("bob's call to the registered phone: %d %s", r.StatusCode, r.Reason)
	}
	if r := phone.WaitRequest("INVITE", 3*time.Second); r == nil {
		t.Errorf("the call did not reach the registered phone over its connection")
	} else {
		phone.Respond(r, 486, "Busy Here", "ph", "")
		bob.Expect(486)
	}
	// After the registration it is an idle connection like any other.
	last := time.Now()
	if at, ok := conntest.ClosedAt(phone.StreamConn(), registered.Add(expires*time.Second).Add(idle+slack)); !ok {
		t.Errorf("registered connection still open %v after the registration expired", idle+slack)
	} else {
		t.Logf("registered connection closed %v after the REGISTER, %v after its last message",
			at.Sub(registered).Round(time.Millisecond), at.Sub(last).Round(time.Millisecond))
	}
	if v := e.refused("idle_timeout"); v < 4 {
		t.Errorf("idle_timeout closures counted: %v, want 4", v)
	}
	if os.Getenv("SIPD_TEST_DEBUG") != "" {
		t.Log(e.sipd.Log())
	}
}
