package main

import (
	"net"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/redistest"
	"sipxdp/internal/sipdtest"
	"sipxdp/internal/sipua"
	"sipxdp/sipd/registrar"
	"sipxdp/sipd/sipconf"
)

// startShared runs a built sipd on loopback whose location store is the
// Redis at url, with the secrets every node of the set shares.
func startShared(t *testing.T, url string) *sipdtest.Sipd {
	t.Helper()
	cfg := sipdtest.Config(t)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}, {Transport: "tcp", Addr: "127.0.0.1:0"}}
	cfg.SIP.Registrar.Store = url
	// Record-Route tokens and nonces verify on any node.
	cfg.SIP.Secret, cfg.SIP.Auth.Secret = "shared-node-secret-0123456789abcdef", "shared-nonce-secret-0123456789abcdef"
	cfg.Media.Mode = "none"
	return sipdtest.Start(t, cfg, sipdtest.Options{Users: map[string]string{"alice": "alicepw", "bob": "bobpw"}})
}

func udpUA(t *testing.T, server *sipdtest.Sipd) *sipua.UA {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return sipua.New(t, c, server.SIPAddr("udp"))
}

// TestSharedLocation: two sipd share one redis-server as their location
// store. alice registers through A; bob, registered through B, calls her
// through B, which finds her binding (stored by A) and the call is set up
// and torn down. With Redis gone, B refuses REGISTER and the call with
// 500 and Retry-After, counts it and reports itself degraded; once Redis
// is back (empty: it persists nothing), registrations work again.
func TestSharedLocation(t *testing.T) {
	rds := redistest.Start(t)
	a, b := startShared(t, rds.URL), startShared(t, rds.URL)
	alice, bob := udpUA(t, a), udpUA(t, b)
	alice.Register("alice", "localhost", "alicepw")
	bob.Register("bob", "localhost", "bobpw")

	var regs []registrar.Binding
	b.GetJSON("/registrations", &regs)
	if len(regs) != 2 {
		t.Fatalf("B lists %d registrations, want alice's and bob's: %+v", len(regs), regs)
	}
	for _, r := range regs {
		want := a.SIPAddr("udp").String()
		if r.AoR == "bob" {
			want = b.SIPAddr("udp").String()
		}
		if !strings.HasSuffix(r.Node, "/"+want) {
			t.Fatalf("%s's binding owned by %q, want the node on %s", r.AoR, r.Node, want)
		}
	}

	call := sipua.Call{From: "bob", To: "alice", Domain: "localhost", Password: "bobpw"}
	d := sipua.Establish(bob, alice, call)
	if src := d.Received.Source(); src != b.SIPAddr("udp").String() {
		t.Fatalf("alice got the INVITE from %s, want B (%s)", src, b.SIPAddr("udp"))
	}
	d.Hangup(false)
	// And the other way: alice calls bob through A.
	sipua.Establish(alice, bob, sipua.Call{From: "alice", To: "bob", Domain: "localhost", Password: "alicepw"}).Hangup(false)

	rds.Stop()
	m := sipua.Msg{Method: "REGISTER", RURI: "sip:localhost", From: "sip:bob@localhost", To: "sip:bob@localhost",
		CallID: "reg-down", CSeq: 1, Headers: []string{"Expires: 600"}}
	if r := bob.Authenticated(m, "bob", "bobpw"); r.StatusCode != 500 || r.GetHeader("Retry-After") == nil {
		t.Fatalf("REGISTER with Redis down: %d %s, Retry-After %v", r.StatusCode, r.Reason, r.GetHeader("Retry-After"))
	}
	inv := sipua.Msg{Method: "INVITE", RURI: "sip:alice@localhost", From: "sip:bob@localhost", To: "sip:alice@localhost",
		CallID: "call-down", CSeq: 1}
	// From a UA of its own: the 500 is retransmitted until ACKed, and
	// Authenticated does not tell the ACK its branch.
	caller := udpUA(t, b)
	r := caller.Authenticated(inv, "bob", "bobpw")
	if r == nil || r.StatusCode == 100 { // the lookup waits out its timeout
		r = caller.ResponseTo("call-down", 3*time.Second)
	}
	if r == nil || r.StatusCode != 500 || r.GetHeader("Retry-After") == nil {
		t.Fatalf("INVITE with Redis down: %v", r)
	}
	if v, _ := b.Metric(`sipxdp_sip_refused_total{reason="location_unavailable"}`); v != 1 {
		t.Fatalf("refused location_unavailable = %v, want 1", v)
	}
	if v, _ := b.Metric("sipxdp_location_store_down"); v != 1 {
		t.Fatalf("sipxdp_location_store_down = %v with Redis stopped", v)
	}
	if v, _ := b.Metric("sipxdp_location_store_errors_total"); v < 2 {
		t.Fatalf("sipxdp_location_store_errors_total = %v, want the REGISTER's and the lookup's", v)
	}
	if h := b.Health(); h.Status != "degraded" || !strings.Contains(strings.Join(h.Problems, " "), "location store (redis)") {
		t.Fatalf("health with Redis down: %s %v", h.Status, h.Problems)
	}

	rds.Restart(t)
	alice.Register("alice", "localhost", "alicepw")
	d = sipua.Establish(bob, alice, call)
	d.Hangup(false)
	if v, _ := b.Metric("sipxdp_location_store_down"); v != 0 {
		t.Fatalf("sipxdp_location_store_down = %v with Redis back", v)
	}
	if h := b.Health(); h.Status != "ok" {
		t.Fatalf("health once Redis is back: %s %v", h.Status, h.Problems)
	}
}

// TestSharedLocationPath: alice registers over TCP through A, so only A
// reaches her (her connection is there). A stores her binding with a
// Path naming itself; bob calls her through B, which sends the INVITE to
// A along that Path, and A over her connection. The BYE takes the
// recorded route, B then A.
func TestSharedLocationPath(t *testing.T) {
	rds := redistest.Start(t)
	a, b := startShared(t, rds.URL), startShared(t, rds.URL)
	conn, err := net.Dial("tcp", a.SIPAddr("tcp").String())
	if err != nil {
		t.Fatal(err)
	}
	alice, bob := sipua.NewStream(t, conn, "TCP"), udpUA(t, b)
	alice.ContactTransport = "tcp" // in her answers too, as a TCP phone writes it
	alice.Register("alice", "localhost", "alicepw")

	var regs []registrar.Binding
	b.GetJSON("/registrations", &regs)
	if len(regs) != 1 || !strings.Contains(regs[0].Path, "@"+a.SIPAddr("tcp").String()) || !strings.Contains(regs[0].Path, ";lr") {
		t.Fatalf("alice's binding, seen from B: %+v; want a Path through A (%s)", regs, a.SIPAddr("tcp"))
	}
	d := sipua.Establish(bob, alice, sipua.Call{From: "bob", To: "alice", Domain: "localhost", Password: "bobpw"})
	var rr []string
	for _, h := range d.Received.GetHeaders("Record-Route") {
		rr = append(rr, h.Value())
	}
	if len(rr) < 2 || !strings.Contains(strings.Join(rr, ","), b.SIPAddr("udp").String()) {
		t.Fatalf("alice's INVITE was record-routed by %v, want A and B", rr)
	}
	if d.Received.GetHeader("Route") != nil {
		t.Fatalf("A left a Route in alice's INVITE: %v", d.Received.GetHeader("Route"))
	}
	d.Hangup(false)
}

// TestSharedLocationPathNAT: alice, behind NAT over UDP (her Contact is a
// private address), registers through A, whose address her NAT's pinhole
// is open to. bob calls her through B: the INVITE reaches her from A,
// along the Path, not from B. Then A is killed, her refresh goes to B,
// and B's calls reach her from B.
func TestSharedLocationPathNAT(t *testing.T) {
	rds := redistest.Start(t)
	a, b := startShared(t, rds.URL), startShared(t, rds.URL)
	alice, bob := udpUA(t, a), udpUA(t, b)
	registerBehindNAT(t, alice, 1)
	var regs []registrar.Binding
	b.GetJSON("/registrations", &regs)
	if len(regs) != 1 || !regs[0].NATed || !strings.Contains(regs[0].Path, "@"+a.SIPAddr("udp").String()) {
		t.Fatalf("alice's binding, seen from B: %+v; want NATed with a Path through A (%s)", regs, a.SIPAddr("udp"))
	}
	d := sipua.Establish(bob, alice, sipua.Call{From: "bob", To: "alice", Domain: "localhost", Password: "bobpw"})
	if src := d.Received.Source(); src != a.SIPAddr("udp").String() {
		t.Fatalf("alice got the INVITE from %s, want A (%s), whose address her NAT lets in", src, a.SIPAddr("udp"))
	}
	d.Hangup(false)

	// A dies; alice's next refresh goes to B, which then reaches her
	// itself.
	a.Kill()
	alice.Server = b.SIPAddr("udp")
	registerBehindNAT(t, alice, 3)
	d = sipua.Establish(bob, alice, sipua.Call{From: "bob", To: "alice", Domain: "localhost", Password: "bobpw"})
	if src := d.Received.Source(); src != b.SIPAddr("udp").String() {
		t.Fatalf("after A died, alice got the INVITE from %s, want B (%s)", src, b.SIPAddr("udp"))
	}
	d.Hangup(false)
}

// registerBehindNAT registers alice with a private Contact, as a phone
// behind NAT writes it, starting at cseq. Replies still reach her by her
// Via; nothing is ever sent to the private address: a proxy sends a NATed
// phone's requests to where its REGISTER came from.
func registerBehindNAT(t *testing.T, alice *sipua.UA, cseq int) {
	t.Helper()
	own := "Contact: <sip:ua@" + alice.Addr().String() + ">"
	private := "Contact: <sip:ua@192.168.1.2:5060>"
	m := sipua.Msg{Method: "REGISTER", RURI: "sip:localhost", From: "sip:alice@localhost", To: "sip:alice@localhost",
		CallID: "reg-nat", CSeq: cseq, Headers: []string{"Expires: 600"}}
	alice.Send(strings.Replace(alice.Request(m), own, private, 1))
	r := alice.Response(3 * time.Second)
	if r == nil || r.StatusCode != 401 {
		t.Fatalf("REGISTER: %v", r)
	}
	m.CSeq++
	m.Headers = append(m.Headers, "Authorization: "+sipua.Authorization(r.GetHeader("WWW-Authenticate").Value(), "alice", "alicepw", "REGISTER", m.RURI, "00000001"))
	alice.Send(strings.Replace(alice.Request(m), own, private, 1))
	if r := alice.Response(3 * time.Second); r == nil || r.StatusCode != 200 {
		t.Fatalf("REGISTER with credentials: %v", r)
	}
}
