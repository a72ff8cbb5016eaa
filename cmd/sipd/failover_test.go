package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"

	"sipxdp/internal/freeport"
	"sipxdp/internal/redistest"
	"sipxdp/internal/sipdtest"
	"sipxdp/internal/sipua"
	"sipxdp/sipd/dialog"
	"sipxdp/sipd/sipconf"
)

// relayOnly is a sipd -relay-only child: its NG port and relay ports.
type relayOnly struct {
	*sipdtest.Sipd
	ng         int
	pmin, pmax int
}

func startRelayOnly(t *testing.T) *relayOnly {
	t.Helper()
	ng, err := freeport.Loopback(freeport.UDP)
	if err != nil {
		t.Fatal(err)
	}
	r := &relayOnly{ng: ng, pmin: 20000 + 20*(ng%600)}
	r.pmax = r.pmin + 19
	cfg := sipdtest.Config(t)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.NG.Listen = fmt.Sprintf("127.0.0.1:%d", ng)
	cfg.Media.Datapath = "userspace"
	cfg.Media.Addresses[0].PortMin, cfg.Media.Addresses[0].PortMax = r.pmin, r.pmax
	r.Sipd = sipdtest.Start(t, cfg, sipdtest.Options{Args: []string{"-relay-only"}})
	return r
}

// startSharedDialogs runs a sipd sharing location, dialogs and relay
// stickiness in the Redis at url, with CDRs also in its stream "cdrs";
// relays are media.relays ("" signaling only).
func startSharedDialogs(t *testing.T, url, relays string) *sipdtest.Sipd {
	t.Helper()
	cfg := sipdtest.Config(t)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}}
	cfg.SIP.Registrar.Store, cfg.SIP.Dialog.Store = url, url
	cfg.SIP.Dialog.CDRStream, cfg.SIP.Dialog.CDRStreamKey = url, "cdrs"
	cfg.SIP.Secret, cfg.SIP.Auth.Secret = "shared-node-secret-0123456789abcdef", "shared-nonce-secret-0123456789abcdef"
	cfg.Media.Mode = "none"
	if relays != "" {
		cfg.Media.Mode, cfg.Media.Relays = "all", relays
		cfg.Media.RelayPing = sipconf.Duration(200 * time.Millisecond)
	}
	return sipdtest.Start(t, cfg, sipdtest.Options{Users: map[string]string{"alice": "alicepw", "bob": "bobpw"}})
}

// redisClient is a client of the Redis at url, closed when t ends.
func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	t.Cleanup(func() { rc.Close() })
	return rc
}

// sdpPort is the audio port an SDP body names.
func sdpPort(t *testing.T, body []byte) int {
	t.Helper()
	var port int
	for _, l := range strings.Split(string(body), "\n") {
		if _, err := fmt.Sscanf(strings.TrimSpace(l), "m=audio %d", &port); err == nil {
			return port
		}
	}
	t.Fatalf("no audio port in %q", body)
	return 0
}

// waitCDR waits for the CDR of callID in the stream "cdrs".
func waitCDR(t *testing.T, rc *redis.Client, callID string) dialog.Call {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		msgs, err := rc.XRange(context.Background(), "cdrs", "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			var c dialog.Call
			if s, _ := m.Values["cdr"].(string); json.Unmarshal([]byte(s), &c) == nil && c.CallID == callID {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CDR of %s in the stream (%d entries)", callID, len(msgs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sessions(t *testing.T, r *relayOnly) int { t.Helper(); return r.Health().Media.Sessions }

// TestSharedDialogFailover: two sipd share location, dialogs, relay
// stickiness and a CDR stream in one redis-server, and relay media
// through two sipd -relay-only nodes. Calls are set up through A; A is
// killed (SIGKILL, by its PID). Through B, which has never seen them:
// a re-INVITE from the caller gets its answer from the relay the call
// is on; the callee's BYE of one call and the caller's BYE of the other
// reach the other party, the relay deletes each call, and each CDR,
// with the real answer time, lands in the stream.
func TestSharedDialogFailover(t *testing.T) {
	rds := redistest.Start(t)
	rc := redisClient(t, rds.URL)
	r1, r2 := startRelayOnly(t), startRelayOnly(t)
	if r1.pmin == r2.pmin {
		t.Skip("both relays drew the same port range; nothing tells their calls apart")
	}
	relays := []*relayOnly{r1, r2}
	set := fmt.Sprintf("udp:127.0.0.1:%d=1 udp:127.0.0.1:%d=1", r1.ng, r2.ng)
	a, b := startSharedDialogs(t, rds.URL, set), startSharedDialogs(t, rds.URL, set)
	alice, bob := udpUA(t, a), udpUA(t, b)
	bob.Register("bob", "localhost", "bobpw")

	// Two calls through A: round robin puts them on different relays.
	type call struct {
		d     *sipua.Dialog
		relay *relayOnly
		id    string
	}
	var calls []call
	for i := range 2 {
		id := fmt.Sprintf("failover-%d@test", i)
		d := sipua.Establish(alice, bob, sipua.Call{From: "alice", To: "bob", Domain: "localhost", Password: "alicepw", CallID: id,
			Offer:  sipua.SDP(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(41000+2*i))),
			Answer: sipua.SDP(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(42000+2*i)))})
		port := sdpPort(t, d.Answer.Body())
		c := call{d: d, id: id}
		for _, r := range relays {
			if port >= r.pmin && port <= r.pmax {
				c.relay = r
			}
		}
		if c.relay == nil || sdpPort(t, d.Received.Body()) < c.relay.pmin || sdpPort(t, d.Received.Body()) > c.relay.pmax {
			t.Fatalf("%s: SDPs name ports %d and %d, not one relay's", id, port, sdpPort(t, d.Received.Body()))
		}
		calls = append(calls, c)
	}
	if calls[0].relay == calls[1].relay {
		t.Fatalf("both calls on the relay with NG port %d; want one on each", calls[0].relay.ng)
	}
	for _, r := range relays {
		if n := sessions(t, r); n != 1 {
			t.Fatalf("relay %d holds %d sessions, want 1", r.ng, n)
		}
	}

	a.Kill()
	alice.Server, bob.Server = b.SIPAddr("udp"), b.SIPAddr("udp")

	// A re-INVITE from the caller of call 0, through B: its SDP goes to
	// the relay the call is on, not to the one B's round robin is at.
	c0 := calls[0]
	re := c0.d.Ack
	re.Method, re.CSeq = "INVITE", c0.d.Ack.CSeq+1
	re.Body = sipua.SDP(netip.MustParseAddrPort("127.0.0.1:41010"))
	alice.Send(alice.Request(re))
	got := bob.ExpectRequest(sip.INVITE)
	if p := sdpPort(t, got.Body()); p < c0.relay.pmin || p > c0.relay.pmax {
		t.Fatalf("re-INVITE through B: bob is told port %d, not on the call's relay (%d-%d)", p, c0.relay.pmin, c0.relay.pmax)
	}
	bob.Respond(got, 200, "OK", "", sipua.SDP(netip.MustParseAddrPort("127.0.0.1:42010")))
	ok := alice.ResponseTo(c0.id, 3*time.Second)
	if ok == nil || ok.StatusCode != 200 {
		t.Fatalf("re-INVITE answer through B: %v", ok)
	}
	if p := sdpPort(t, ok.Body()); p < c0.relay.pmin || p > c0.relay.pmax {
		t.Fatalf("re-INVITE answer: alice is told port %d, not on the call's relay", p)
	}
	ack := re
	ack.Method = "ACK"
	ack.Body = ""
	alice.Send(alice.Request(ack))
	bob.ExpectRequest(sip.ACK)

	// Call 0 ended by the callee, call 1 by the caller, both through B.
	calls[0].d.Ack.CSeq++ // the re-INVITE used one
	calls[0].d.Hangup(true)
	calls[1].d.Hangup(false)
	for _, c := range calls {
		deadline := time.Now().Add(3 * time.Second)
		for sessions(t, c.relay) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s still on relay %d after its BYE through B", c.id, c.relay.ng)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cdr := waitCDR(t, rc, c.id)
		if cdr.EndReason != "bye" || cdr.Answered.IsZero() || cdr.Status != 200 {
			t.Fatalf("CDR of %s: %+v", c.id, cdr)
		}
		if n, _ := rc.Exists(context.Background(), dialog.StateKey(c.id, "ft-"+c.id)).Result(); n != 0 {
			t.Fatalf("%s still in the dialog store", c.id)
		}
	}
	if v, _ := b.Metric("sipxdp_dialogs_adopted_total"); v != 2 {
		t.Fatalf("sipxdp_dialogs_adopted_total = %v on B, want 2", v)
	}
	if v, _ := b.Metric(`sipxdp_cdr_stream_total{outcome="written"}`); v != 2 {
		t.Fatalf("B wrote %v CDRs to the stream, want 2", v)
	}
}

// TestSharedDialogRedisDown: with Redis gone, a call through A is still
// set up and ended (known to A only), the failures are counted and A is
// degraded; the CDR waits and reaches the stream once Redis is back, and
// calls are shared again: B ends one A set up.
func TestSharedDialogRedisDown(t *testing.T) {
	rds := redistest.Start(t)
	rc := redisClient(t, rds.URL)
	a, b := startSharedDialogs(t, rds.URL, ""), startSharedDialogs(t, rds.URL, "")
	alice, bob := udpUA(t, a), udpUA(t, b)
	bob.Register("bob", "localhost", "bobpw")
	up := sipua.Establish(alice, bob, sipua.Call{From: "alice", To: "bob", Domain: "localhost", Password: "alicepw", CallID: "up-before@test"})

	rds.Stop()
	// A call already up goes on: A holds it (its BYE through A).
	up.Hangup(false)
	if v, _ := a.Metric("sipxdp_dialog_store_down"); v != 1 {
		t.Fatalf("sipxdp_dialog_store_down = %v on A with redis stopped", v)
	}
	if v, _ := a.Metric("sipxdp_dialog_store_errors_total"); v < 1 {
		t.Fatalf("sipxdp_dialog_store_errors_total = %v on A", v)
	}
	if h := a.Health(); h.Status != "degraded" || !strings.Contains(strings.Join(h.Problems, " "), "dialog store (redis)") {
		t.Fatalf("A's health with redis down: %s %v", h.Status, h.Problems)
	}

	rds.Restart(t) // empty: bob registers again
	time.Sleep(1100 * time.Millisecond)
	bob.Register("bob", "localhost", "bobpw")
	waitCDR(t, rc, "up-before@test") // queued while redis was down
	d := sipua.Establish(alice, bob, sipua.Call{From: "alice", To: "bob", Domain: "localhost", Password: "alicepw", CallID: "after@test"})
	alice.Server = b.SIPAddr("udp") // A's route, B's socket: B takes the call over
	d.Hangup(false)
	waitCDR(t, rc, "after@test")
	if v, _ := a.Metric("sipxdp_dialog_store_down"); v != 0 {
		t.Fatalf("sipxdp_dialog_store_down = %v on A with redis back", v)
	}
	if v, _ := b.Metric("sipxdp_dialogs_adopted_total"); v != 1 {
		t.Fatalf("sipxdp_dialogs_adopted_total = %v on B, want 1", v)
	}
}

// TestRelaySetResume: a sipd relaying through a -relay-only node, with
// calls kept in the file journal (the default), is killed with SIGKILL
// and started again: the call's BYE reaches the callee and the relay
// deletes the call, since the journal named its relay.
func TestRelaySetResume(t *testing.T) {
	r := startRelayOnly(t)
	cfg := sipdtest.Config(t)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}}
	cfg.Media.Mode, cfg.Media.Relays = "all", fmt.Sprintf("udp:127.0.0.1:%d", r.ng)
	cfg.Media.RelayPing = sipconf.Duration(200 * time.Millisecond)
	s := sipdtest.Start(t, cfg, sipdtest.Options{Users: map[string]string{"alice": "alicepw", "bob": "bobpw"}})
	alice, bob := udpUA(t, s), udpUA(t, s)
	bob.Register("bob", "localhost", "bobpw")
	d := sipua.Establish(alice, bob, sipua.Call{From: "alice", To: "bob", Domain: "localhost", Password: "alicepw", CallID: "resume@test",
		Offer:  sipua.SDP(netip.MustParseAddrPort("127.0.0.1:41100")),
		Answer: sipua.SDP(netip.MustParseAddrPort("127.0.0.1:42100"))})
	if n := sessions(t, r); n != 1 {
		t.Fatalf("relay holds %d sessions, want 1", n)
	}
	s.Kill()
	s.Restart()
	d.Hangup(true)
	deadline := time.Now().Add(3 * time.Second)
	for sessions(t, r) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the call is still on the relay after its BYE through the restarted sipd")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
