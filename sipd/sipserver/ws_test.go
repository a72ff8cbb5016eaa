package sipserver

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/conntest"
	"sipxdp/internal/sipua"
	"sipxdp/internal/testcert"
	"sipxdp/sipd/sipconf"
)

// wsSetup is a server with a UDP and a WebSocket listener on one
// loopback, a browser-like UA registered as alice over ws or wss, and a
// UDP UA registered as bob, both with digest.
type wsSetup struct {
	s         *Server
	ws, udp   *sipua.UA
	transport string
}

func newWSSetup(t *testing.T, transport string, loop netip.Addr) wsSetup {
	t.Helper()
	if loop.Is6() {
		if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		} else {
			c.Close()
		}
	}
	any0 := netip.AddrPortFrom(loop, 0).String()
	var tlsConf *tls.Config
	s := testServer(t, func(c *sipconf.Config) {
		l := sipconf.Listen{Transport: transport, Addr: any0}
		if transport == "wss" {
			l.Cert, l.Key = testcert.Write(t, loop)
			tlsConf = &tls.Config{InsecureSkipVerify: true}
		}
		c.Listen = []sipconf.Listen{{Transport: "udp", Addr: any0}, l}
		if loop.Is6() {
			c.Domains = append(c.Domains, "::1")
		}
	})
	ws := sipua.DialWS(t, serverAddr(t, s, transport).String(), tlsConf)
	ws.Register("alice", "example.org", "alicepw")
	network := "udp4"
	if loop.Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, &net.UDPAddr{IP: loop.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	udp := sipua.New(t, c, serverAddr(t, s, "udp"))
	udp.Register("bob", "example.org", "bobpw")
	return wsSetup{s: s, ws: ws, udp: udp, transport: transport}
}

// TestWSCalls: a WebSocket UA (a browser's view of SIP: .invalid Contact,
// no address of its own) calls and is called by a UDP UA through sipd,
// over ws and wss, IPv4 and IPv6, and the in-dialog requests of either
// side find the other.
func TestWSCalls(t *testing.T) {
	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	cases := []struct {
		transport   string
		loop        netip.Addr
		wsCalls     bool // the ws UA calls; else the UDP UA does
		calleeHangs bool // the callee sends the BYE
		// jssip: the ws UA's Contact says transport=ws whatever the
		// transport, as JsSIP's does.
		jssip bool
	}{
		{"ws", v4, true, false, false},
		{"ws", v4, false, false, false},
		{"ws", v4, true, true, false},
		{"ws", v4, false, true, false},
		{"wss", v4, true, false, false},
		{"wss", v4, false, true, false},
		{"ws", v6, true, true, false},
		{"wss", v6, false, false, false},
		{"wss", v4, true, true, true},
		{"wss", v4, true, false, true},
		{"wss", v4, false, true, true},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("%s/%s/wsCalls=%v/calleeHangs=%v/jssip=%v", tc.transport, tc.loop, tc.wsCalls, tc.calleeHangs, tc.jssip)
		t.Run(name, func(t *testing.T) {
			w := newWSSetup(t, tc.transport, tc.loop)
			if tc.jssip {
				w.ws.ContactTransport = "ws"
			}
			caller, callee, from, to, pw := w.udp, w.ws, "bob", "alice", "bobpw"
			if tc.wsCalls {
				caller, callee, from, to, pw = w.ws, w.udp, "alice", "bob", "alicepw"
			}
			call(t, tc.transport, caller, callee, from, to, pw, tc.calleeHangs)
			if b := regs(t, w.s); len(b) != 2 {
				t.Fatalf("bindings %+v", b)
			}
		})
	}
}

// call makes one call from caller to callee and ends it, and checks the
// double Record-Route across the transport change.
func call(t *testing.T, wsTransport string, caller, callee *sipua.UA, from, to, pw string, calleeHangs bool) {
	t.Helper()
	d := sipua.Establish(caller, callee, sipua.Call{From: from, To: to, Domain: "example.org", Password: pw})
	rr := strings.Join(sipua.RouteSet(d.Received.GetHeaders("Record-Route"), false), "\n")
	if !strings.Contains(rr, "transport="+wsTransport+";") || !strings.Contains(rr, "transport=udp;") {
		t.Fatalf("INVITE's Record-Route lacks a %s or udp entry:\n%s", wsTransport, rr)
	}
	d.Hangup(calleeHangs)
}

// TestWSChallengeMD5: over ws and wss a REGISTER and an INVITE are
// challenged with MD5 alone (browsers' stacks know only MD5 and JsSIP
// answers only the last challenge), over UDP with every configured
// algorithm; each client then gets in.
func TestWSChallengeMD5(t *testing.T) {
	w := newWSSetup(t, "wss", netip.MustParseAddr("127.0.0.1"))
	algs := func(r *sip.Response, hdr string) []string {
		var out []string
		for _, h := range r.GetHeaders(hdr) {
			out = append(out, sipua.Param(h.Value(), "algorithm"))
		}
		return out
	}
	for _, c := range []struct {
		name string
		ua   *sipua.UA
		user string
		want string
	}{{"wss", w.ws, "alice", "MD5"}, {"udp", w.udp, "bob", "MD5 SHA-256"}} {
		reg := sipua.Msg{Method: "REGISTER", RURI: "sip:example.org", From: "sip:" + c.user + "@example.org",
			To: "sip:" + c.user + "@example.org", CallID: "md5-reg-" + c.name, CSeq: 1}
		c.ua.Send(c.ua.Request(reg))
		if got := strings.Join(algs(c.ua.Expect(401), "WWW-Authenticate"), " "); got != c.want {
			t.Errorf("%s REGISTER challenged with %q, want %q", c.name, got, c.want)
		}
		inv := sipua.Msg{Method: "INVITE", RURI: "sip:nobody@example.org", From: "sip:" + c.user + "@example.org",
			To: "sip:nobody@example.org", CallID: "md5-inv-" + c.name, CSeq: 1}
		c.ua.Send(c.ua.Request(inv))
		r := c.ua.Expect(407)
		c.ua.Send(c.ua.Ack(inv, r))
		if got := strings.Join(algs(r, "Proxy-Authenticate"), " "); got != c.want {
			t.Errorf("%s INVITE challenged with %q, want %q", c.name, got, c.want)
		}
	}
}

// TestWSInDialogFlowGone: a BYE towards a ws callee whose connection
// closed mid-call gets 480 at once; sipd does not dial the browser.
func TestWSInDialogFlowGone(t *testing.T) {
	w := newWSSetup(t, "ws", netip.MustParseAddr("127.0.0.1"))
	ack := sipua.Establish(w.udp, w.ws, sipua.Call{From: "bob", To: "alice", Domain: "example.org", Password: "bobpw"}).Ack
	w.ws.StreamConn().Close()
	time.Sleep(100 * time.Millisecond)
	bye := ack
	bye.Method, bye.CSeq = "BYE", 3
	start := time.Now()
	w.udp.Send(w.udp.Request(bye))
	if r := w.udp.ResponseTo(ack.CallID, 3*time.Second); r == nil || r.StatusCode != 480 {
		t.Fatalf("BYE answer %v, want 480", r)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("answer took %v", d)
	}
}

// TestWSConnectionGuard: WebSocket connections are under the same caps
// and timeouts as TCP and TLS ones, counted in the same stats; and a
// client that sends its upgrade request slowly holds nobody else back.
func TestWSConnectionGuard(t *testing.T) {
	const (
		msgTimeout = time.Second
		idle       = 600 * time.Millisecond
		handshake  = 300 * time.Millisecond
	)
	cases := []struct {
		name      string
		transport string
		send      string // raw bytes on a fresh connection; "upgrade": a full ws upgrade
		within    time.Duration
		reason    string
	}{
		{"slow upgrade", "ws", "GET / HTTP/1.1\r\nHost: x\r\n", 3 * msgTimeout, "message_timeout"},
		{"idle after upgrade", "ws", "upgrade", 3 * idle, "idle_timeout"},
		{"idle before upgrade", "ws", "", 3 * idle, "idle_timeout"},
		{"wss handshake", "wss", "", 3 * handshake, "handshake_timeout"},
		{"per-source cap", "ws", "", time.Second, "per_source_cap"},
		{"total cap", "ws", "", time.Second, "total_cap"},
	}
	loop := netip.MustParseAddr("127.0.0.1")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := testServer(t, func(c *sipconf.Config) {
				noAuth(c)
				l := sipconf.Listen{Transport: tc.transport, Addr: "127.0.0.1:0"}
				if tc.transport == "wss" {
					l.Cert, l.Key = testcert.Write(t, loop)
				}
				c.Listen = append(c.Listen, l)
				c.Connections.MessageTimeout = sipconf.Duration(msgTimeout)
				c.Connections.IdleTimeout = sipconf.Duration(idle)
				c.Connections.TLSHandshakeTimeout = sipconf.Duration(handshake)
				switch tc.reason {
				case "per_source_cap":
					c.Protect.Exempt = nil
					c.Connections.PerSource = 2
				case "total_cap":
					c.Connections.Max, c.Connections.PerSource = 2, 2
				}
			})
			addr := serverAddr(t, s, tc.transport).String()
			dial := func() net.Conn {
				c, err := net.DialTimeout("tcp", addr, 3*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			var victim net.Conn
			switch {
			case strings.HasSuffix(tc.reason, "_cap"):
				dial()
				dial()
				// The third is reset as soon as it is accepted, at times
				// before connect returns on loopback.
				c, err := net.DialTimeout("tcp", addr, 3*time.Second)
				if err != nil {
					if n := s.Stats().Connections.Refused[tc.reason]; n != 1 {
						t.Fatalf("connect failed (%v) but %s counted %d times", err, tc.reason, n)
					}
					return
				}
				t.Cleanup(func() { c.Close() })
				victim = c
			case tc.send == "upgrade":
				victim = sipua.DialWS(t, addr, nil).StreamConn()
			default:
				victim = dial()
				if tc.send != "" {
					victim.Write([]byte(tc.send))
				}
			}
			if tc.reason == "message_timeout" {
				// The slow client holds no other back: a second one
				// upgrades and registers meanwhile.
				ws := sipua.DialWS(t, addr, nil)
				ws.Register("alice", "example.org", "alicepw")
				if conntest.ClosedWithin(victim, 10*time.Millisecond) {
					t.Fatal("the other client registered only after the slow one was closed: it waited behind it")
				}
			}
			if !conntest.ClosedWithin(victim, tc.within) {
				t.Fatalf("connection not closed within %v", tc.within)
			}
			if n := s.Stats().Connections.Refused[tc.reason]; n != 1 {
				t.Fatalf("%s counted %d times, want 1: %+v", tc.reason, n, s.Stats().Connections)
			}
		})
	}
}

// TestWSPendingUpgradeAtShutdown: a connection whose upgrade request is
// still coming when the server stops is closed with it; no goroutine is
// left reading it (testServer's cleanup checks for leaks, and runs
// before the client side closes).
func TestWSPendingUpgradeAtShutdown(t *testing.T) {
	var slow net.Conn
	t.Cleanup(func() {
		if slow != nil {
			slow.Close()
		}
	})
	s := testServer(t, func(c *sipconf.Config) {
		noAuth(c)
		c.Listen = append(c.Listen, sipconf.Listen{Transport: "ws", Addr: "127.0.0.1:0"})
	})
	var err error
	slow, err = net.Dial("tcp", serverAddr(t, s, "ws").String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if open := s.Stats().Connections.Open; open != 1 {
		t.Fatalf("%d connections open, want the slow one", open)
	}
}
