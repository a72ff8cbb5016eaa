package security

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/netns"
	"sipxdp/internal/sipua"
)

// spoofFlood sends requests from src (an address the attacker has put on
// its own interface: someone else's) to sipd: first burst of them at once,
// then rate per second until ctx ends or max have gone. It returns how
// many were sent.
func (e *env) spoofFlood(ctx context.Context, src netip.Addr, burst, rate, max int) (*atomic.Int64, <-chan struct{}) {
	e.t.Helper()
	c, err := e.attacker.ListenUDP(netip.AddrPortFrom(src, 5099))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	var sent atomic.Int64
	done := make(chan struct{})
	send := func(i int64) bool {
		// OPTIONS to a user who does not exist: before the ban each one
		// costs a parse, a transaction and a 404 sent to the real owner
		// of src.
		msg := fmt.Sprintf("OPTIONS sip:nobody@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:5099;branch=z9hG4bKflood%d;rport\r\n"+
			"Max-Forwards: 70\r\nFrom: <sip:mallory@evil.example>;tag=f%d\r\nTo: <sip:nobody@%s>\r\n"+
			"Call-ID: flood-%d\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", domain, src, i, i, domain, i)
		_, err := c.WriteToUDPAddrPort([]byte(msg), e.SIP)
		if err == nil {
			sent.Add(1)
		}
		return err == nil
	}
	for i := 0; i < burst; i++ {
		send(int64(i))
	}
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := int64(burst); i < int64(max); i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if !send(i) {
					return
				}
			}
		}
	}()
	return &sent, done
}

// An attacker who forges a subscriber's source address and floods sipd
// gets that address banned. The ban must not lock the subscriber out:
// her requests with valid credentials (which the attacker, who never sees
// sipd's answers to her, cannot make) and her requests within her own
// calls are still served, while the flood stays dropped.
func TestSpoofedFloodBan(t *testing.T) {
	e := newEnv(t, nil)
	e.tp.Relay.AllowSpoofed(t)
	bob := e.callee()
	bob.Register("bob", domain, password)
	alice := e.caller()
	alice.Register("alice", domain, password)
	cached := alice.Challenge // her phone keeps the nonce for its next requests

	// The attacker takes alice's address on its own link and floods:
	// 600 at once (the limit is 200 in 2 s), then 100/s for at most 20 s.
	victim := netns.V4.Caller
	e.attacker.AddAddr(t, victim)
	ctx, stop := context.WithCancel(context.Background())
	sent, done := e.spoofFlood(ctx, victim, 600, 100, 2600)
	t.Cleanup(func() { stop(); <-done })

	banned := false
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && !banned; time.Sleep(100 * time.Millisecond) {
		v, _ := e.sipd.Metric("sipxdp_sip_banned_sources")
		banned = v >= 1
	}
	if !banned {
		t.Fatalf("the spoofed flood (%d sent) banned nobody: the test proves nothing", sent.Load())
	}
	// What sipd answered the flood before the ban went to alice.
	for alice.Recv(300*time.Millisecond) != nil {
	}

	// A REGISTER refresh with the cached nonce (next nonce count).
	reg := sipua.Msg{Method: "REGISTER", RURI: "sip:" + domain, From: "sip:alice@" + domain, To: "sip:alice@" + domain,
		CallID: "spoof-reg", CSeq: 2, Headers: []string{"Expires: 600",
			"Authorization: " + sipua.Authorization(cached, "alice", password, "REGISTER", "sip:"+domain, "00000002")}}
	alice.Send(alice.Request(reg))
	r := alice.ResponseTo("spoof-reg", 3*time.Second)
	if r == nil || r.StatusCode != 200 {
		t.Fatalf("alice's REGISTER refresh with valid credentials from her banned address: %v", describe(r))
	}

	// A call with the same cached nonce, then ACK and BYE in the dialog.
	callID := "spoof-call"
	inv := sipua.Msg{Method: "INVITE", RURI: "sip:bob@" + domain, From: "sip:alice@" + domain, To: "sip:bob@" + domain,
		CallID: callID, CSeq: 1, Body: sipua.SDP(netip.AddrPortFrom(victim, 40000)),
		Headers: []string{"Proxy-Authorization: " + sipua.Authorization(cached, "alice", password, "INVITE", "sip:bob@"+domain, "00000003")}}
	alice.Send(alice.Request(inv))
	got := bob.WaitRequest("INVITE", 3*time.Second)
	if got == nil {
		t.Fatal("alice's INVITE with valid credentials from her banned address was not forwarded")
	}
	bob.Respond(got, 200, "OK", "bob-"+callID, sipua.SDP(netip.AddrPortFrom(netns.V4.Callee, 40002)))
	ok := alice.ResponseTo(callID, 3*time.Second)
	if ok == nil || ok.StatusCode != 200 {
		t.Fatalf("alice's call: %v", describe(ok))
	}
	ack := sipua.Msg{Method: "ACK", RURI: contactURI(t, ok), From: inv.From, FromTag: "ft-" + callID, To: inv.To,
		ToTag: ok.To().Params.GetOr("tag", ""), CallID: callID, CSeq: 1, Headers: recordRoute(ok)}
	alice.Send(alice.Request(ack))
	if bob.WaitRequest("ACK", 3*time.Second) == nil {
		t.Fatal("alice's ACK within her call was dropped")
	}
	bye := ack
	bye.Method, bye.CSeq = "BYE", 2
	alice.Send(alice.Request(bye))
	b := bob.WaitRequest("BYE", 3*time.Second)
	if b == nil {
		t.Fatal("alice's BYE within her call was dropped")
	}
	bob.Respond(b, 200, "OK", "", "")
	if r := alice.ResponseTo(callID, 3*time.Second); r == nil || r.StatusCode != 200 {
		t.Fatalf("BYE: %v", describe(r))
	}

	// Alice can be called too: her answers (responses to sipd's requests)
	// and her BYE (her side of a live call) get through.
	in := sipua.Msg{Method: "INVITE", RURI: "sip:alice@" + domain, From: "sip:bob@" + domain, To: "sip:alice@" + domain,
		CallID: "spoof-in", CSeq: 1, Body: sipua.SDP(netip.AddrPortFrom(netns.V4.Callee, 40004))}
	if r := bob.Authenticated(in, "bob", password); r != nil && r.StatusCode >= 300 {
		t.Fatalf("bob's call to alice: %d %s", r.StatusCode, r.Reason)
	}
	ring := alice.WaitRequest("INVITE", 3*time.Second)
	if ring == nil {
		t.Fatal("bob's call did not reach alice")
	}
	alice.Respond(ring, 200, "OK", "alice-in", sipua.SDP(netip.AddrPortFrom(victim, 40006)))
	inOK := bob.ResponseTo("spoof-in", 3*time.Second)
	if inOK == nil || inOK.StatusCode != 200 {
		t.Fatalf("alice's 200 from her banned address: bob got %v", describe(inOK))
	}
	inAck := sipua.Msg{Method: "ACK", RURI: contactURI(t, inOK), From: in.From, FromTag: "ft-spoof-in", To: in.To,
		ToTag: "alice-in", CallID: "spoof-in", CSeq: 2, Headers: recordRoute(inOK)}
	bob.Send(bob.Request(inAck))
	if alice.WaitRequest("ACK", 3*time.Second) == nil {
		t.Fatal("bob's ACK did not reach alice")
	}
	// Alice hangs up: her BYE goes to bob's Contact through sipd, with
	// the route set of her INVITE (reversed; one entry here).
	var aliceRoutes []string
	for _, h := range ring.GetHeaders("Record-Route") {
		aliceRoutes = append([]string{"Route: " + h.Value()}, aliceRoutes...)
	}
	byeIn := sipua.Msg{Method: "BYE", RURI: ring.GetHeader("Contact").(*sip.ContactHeader).Address.String(),
		From: in.To, FromTag: "alice-in", To: in.From, ToTag: "ft-spoof-in", CallID: "spoof-in", CSeq: 1, Headers: aliceRoutes}
	alice.Send(alice.Request(byeIn))
	b = bob.WaitRequest("BYE", 3*time.Second)
	if b == nil {
		t.Fatal("alice's BYE to bob's call from her banned address was dropped")
	}
	bob.Respond(b, 200, "OK", "", "")
	if r := alice.ResponseTo("spoof-in", 3*time.Second); r == nil || r.StatusCode != 200 {
		t.Fatalf("alice's BYE: %v", describe(r))
	}

	// The flood is still dropped: nothing it provokes reaches alice, and
	// the drops are counted.
	before, _ := e.sipd.Metric(`sipxdp_sip_banned_requests_total{outcome="dropped"}`)
	time.Sleep(time.Second)
	after, _ := e.sipd.Metric(`sipxdp_sip_banned_requests_total{outcome="dropped"}`)
	if after <= before {
		t.Fatalf("flood drops counted %v then %v while the flood runs (%d sent)", before, after, sent.Load())
	}
	for m := alice.Recv(500 * time.Millisecond); m != nil; m = alice.Recv(500 * time.Millisecond) {
		if c := m.CallID(); c != nil && strings.HasPrefix(c.Value(), "flood-") {
			t.Fatalf("alice received %q for the flood after the ban", sipua.FirstLine(m))
		}
	}
	for _, c := range []struct {
		outcome string
		min     float64
	}{{"served_credentials", 2}, {"served_dialog", 3}, {"passed_response", 1}} {
		if v, _ := e.sipd.Metric(`sipxdp_sip_banned_requests_total{outcome="` + c.outcome + `"}`); v < c.min {
			t.Errorf("banned_requests_total{outcome=%q} = %v, want >= %v", c.outcome, v, c.min)
		}
	}
	t.Logf("flood datagrams sent: %d", sent.Load())
}

func describe(r *sip.Response) string {
	if r == nil {
		return "no answer"
	}
	return fmt.Sprintf("%d %s", r.StatusCode, r.Reason)
}
