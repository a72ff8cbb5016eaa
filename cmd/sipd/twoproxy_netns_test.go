package main

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/netns"
	"sipxdp/internal/redistest"
	"sipxdp/internal/rtpphone"
	"sipxdp/internal/sipdtest"
	"sipxdp/internal/sipua"
	"sipxdp/sipd"
	"sipxdp/sipd/registrar"
	"sipxdp/sipd/sdprewrite"
	"sipxdp/sipd/sipconf"
)

// The hosts of the two-proxy tests, each a network namespace: the
// netns line's relay namespace is the network they all hang off (a
// router, standing for the LAN or the internet between them), its
// caller is bob, its callee alice when she is on TCP, and the others are
// hosts of their own. alice behind NAT sits on a private link behind a
// masquerading NAT host.
//
//	bob (caller) ─┐               ┌─ redis (link 3)
//	alice tcp ────┤── network ────┼─ proxy A (link 4), proxy B (link 5)
//	(callee)      │               └─ nat (link 6) ── alice (link 7, private)
var twoProxyNet = netip.MustParsePrefix("10.246.0.0/16")

const (
	sipPort  = 5060
	bobRTP   = 8000
	aliceRTP = 6000
	uaPort   = 5062
	// talkTime is how long a call's RTP flows before it is counted: 75
	// packets each way.
	talkTime = 1500 * time.Millisecond
)

// twoProxies is the running set: redis-server and two sipd, each with
// its own embedded relay (userspace datapath), sharing the location
// table and the secrets.
type twoProxies struct {
	tp       *netns.Topo
	rds      *redistest.Server
	a, b     *sipdtest.Sipd
	aIP, bIP netip.Addr
	nat      *netns.Host // alice's NAT router
	natted   *netns.Host // alice's host behind it
	bobSIP   *sipua.UA
	bobMedia *net.UDPConn
	aliceUDP *sipua.UA // alice behind NAT, once connected
	aliceTCP *sipua.UA // alice on TCP, her latest connection
}

func newTwoProxies(t *testing.T) *twoProxies {
	t.Helper()
	tp := netns.New(t, netns.Config{Prefix: "sx2p-", Net4: twoProxyNet})
	redisHost, aHost, bHost := tp.AddHost(t, "redis", 3), tp.AddHost(t, "pa", 4), tp.AddHost(t, "pb", 5)
	e := &twoProxies{tp: tp, aIP: aHost.V4, bIP: bHost.V4}
	e.nat = tp.AddHost(t, "nat", 6)
	e.natted = tp.AddBehindNAT(t, e.nat, "alice", 7)
	e.rds = redistest.StartIn(t, redisHost.NS, netip.AddrPortFrom(redisHost.V4, 6379))
	nodes := []netip.Addr{e.aIP, e.bIP}
	e.a, e.b = startProxyIn(t, aHost, e.rds.URL, nodes), startProxyIn(t, bHost, e.rds.URL, nodes)
	e.bobSIP = sipua.New(t, listenIn(t, tp.Caller, tp.V4.Caller, uaPort), e.sip(e.bIP))
	e.bobMedia = listenIn(t, tp.Caller, tp.V4.Caller, bobRTP)
	e.bobSIP.Register("bob", "localhost", "bobpw")
	return e
}

// startProxyIn runs sipd on host h: SIP on UDP and TCP on its address,
// its relay there too, the API on the namespace's own loopback. It is
// configured as README's "Running on several hosts" says: the shared
// store and secrets, and the nodes exempt from flood bans.
func startProxyIn(t *testing.T, h *netns.Host, store string, nodes []netip.Addr) *sipdtest.Sipd {
	t.Helper()
	cfg := sipdtest.Config(t)
	cfg.HTTP.Listen = "127.0.0.1:8080"
	addr := netip.AddrPortFrom(h.V4, sipPort).String()
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: addr}, {Transport: "tcp", Addr: addr}}
	cfg.SIP.Registrar.Store = store
	cfg.SIP.Secret, cfg.SIP.Auth.Secret = "shared-node-secret-0123456789abcdef", "shared-nonce-secret-0123456789abcdef"
	for _, n := range nodes {
		cfg.SIP.Protect.Exempt = append(cfg.SIP.Protect.Exempt, netip.PrefixFrom(n, 32).String())
	}
	cfg.Media.Mode, cfg.Media.Datapath = sipd.MediaAll, "userspace"
	cfg.Media.Addresses = []sipd.AddressConfig{{Name: "default", Local: h.V4.String(), PortMin: 40000, PortMax: 40099}}
	return sipdtest.Start(t, cfg, sipdtest.Options{NS: h.NS, Users: map[string]string{"alice": "alicepw", "bob": "bobpw"}})
}

func (e *twoProxies) sip(ip netip.Addr) netip.AddrPort { return netip.AddrPortFrom(ip, sipPort) }

func listenIn(t *testing.T, ns *netns.NS, a netip.Addr, port uint16) *net.UDPConn {
	t.Helper()
	c, err := ns.ListenUDP(netip.AddrPortFrom(a, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// phone is one of the two kinds of alice the tests cover: behind NAT on
// UDP, or on TCP from her own public address. host is where she runs;
// connect gives her SIP UA talking to the proxy at server. sameContact
// says her Contact survives a failover, so her new binding replaces the
// old one. connsAtA is how many connections A holds after her calls
// through it: hers and B's one to A when her Path is TCP, reused by
// every call.
type phone struct {
	name        string
	sameContact bool
	connsAtA    float64
	host        func(e *twoProxies) (*netns.NS, netip.Addr)
	connect     func(t *testing.T, e *twoProxies, server netip.AddrPort) *sipua.UA
}

var phones = []phone{
	{name: "nat-udp", sameContact: true,
		host: func(e *twoProxies) (*netns.NS, netip.Addr) { return e.natted.NS, e.natted.V4 },
		connect: func(t *testing.T, e *twoProxies, server netip.AddrPort) *sipua.UA {
			// One socket for her whole life, as a phone keeps its port:
			// her Contact (a private address) stays the same when she
			// fails over, and so does her binding.
			if e.aliceUDP == nil {
				e.aliceUDP = sipua.New(t, listenIn(t, e.natted.NS, e.natted.V4, uaPort), server)
			}
			e.aliceUDP.Server = server
			return e.aliceUDP
		}},
	{name: "tcp", connsAtA: 2,
		host: func(e *twoProxies) (*netns.NS, netip.Addr) { return e.tp.Callee, e.tp.V4.Callee },
		connect: func(t *testing.T, e *twoProxies, server netip.AddrPort) *sipua.UA {
			// A phone moving to another proxy drops its connection to
			// the last one (a dead node's is gone already).
			if e.aliceTCP != nil {
				e.aliceTCP.StreamConn().Close()
			}
			c, err := e.tp.Callee.DialFrom("tcp", e.tp.V4.Callee, server.String(), 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			ua := sipua.NewStream(t, c, "TCP")
			ua.ContactTransport = "tcp" // in her answers too, as a TCP phone writes it
			e.aliceTCP = ua
			return ua
		}},
}

// registerAlice registers alice with the Call-ID a phone keeps across
// refreshes, at cseq (and cseq+1 once challenged).
func registerAlice(t *testing.T, ua *sipua.UA, cseq int) {
	t.Helper()
	m := sipua.Msg{Method: "REGISTER", RURI: "sip:localhost", From: "sip:alice@localhost", To: "sip:alice@localhost",
		CallID: "reg-alice-phone", CSeq: cseq, Headers: []string{"Expires: 600"}}
	if r := ua.Authenticated(m, "alice", "alicepw"); r.StatusCode != 200 {
		t.Fatalf("alice's REGISTER (cseq %d) to %s: %d %s", cseq, ua.Server, r.StatusCode, r.Reason)
	}
}

// aliceBinding fails the test unless proxy s lists a binding of alice's
// with a Path through via, and returns how many she has. Others may be
// left: a TCP phone that fails over writes its new connection's port in
// its Contact, so the binding through the dead node stays until it
// expires.
func aliceBinding(t *testing.T, s *sipdtest.Sipd, via netip.AddrPort) int {
	t.Helper()
	var regs []registrar.Binding
	s.GetJSON("/registrations", &regs)
	n, found := 0, false
	for _, r := range regs {
		if r.AoR == "alice" {
			n++
			found = found || strings.Contains(r.Path, "@"+via.String()) && strings.Contains(r.Path, ";lr")
		}
	}
	if !found {
		t.Fatalf("bindings: %+v; want one of alice's with a Path through %s", regs, via)
	}
	return n
}

// party is one end of a call: a user, the SIP UA it calls or answers
// on, its RTP socket, and the proxy whose relay it must be told to send
// its media to.
type party struct {
	user, password string
	ua             *sipua.UA
	media          *net.UDPConn
	relay          netip.Addr
}

func (e *twoProxies) bob() party {
	return party{user: "bob", password: "bobpw", ua: e.bobSIP, media: e.bobMedia, relay: e.bIP}
}

func alicePart(ua *sipua.UA, media *net.UDPConn, relay netip.Addr) party {
	return party{user: "alice", password: "alicepw", ua: ua, media: media, relay: relay}
}

// call sets up a call from caller to callee through the proxy the
// caller talks to, checks that each side was told to send its media to
// its relay, starts RTP both ways and returns the dialog, up.
func call(t *testing.T, caller, callee party) (*sipua.Dialog, *talk) {
	t.Helper()
	d := sipua.Establish(caller.ua, callee.ua, sipua.Call{From: caller.user, To: callee.user, Domain: "localhost",
		Password: caller.password, CallID: fmt.Sprintf("call-%d@%s", time.Now().UnixNano(), caller.user),
		Offer: sipua.SDP(localAddr(caller.media)), Answer: sipua.SDP(localAddr(callee.media))})
	k := &talk{}
	for i, c := range []struct {
		p   party
		sdp []byte
	}{{caller, d.Answer.Body()}, {callee, d.Received.Body()}} {
		dst := audioOf(t, c.sdp)
		if dst.Addr() != c.p.relay {
			t.Fatalf("%s was told to send RTP to %s, want the relay on %s", c.p.user, dst, c.p.relay)
		}
		k.ends[i] = talker{who: c.p.user, relay: dst, phone: rtpphone.Start(c.p.media, dst, float64(400+600*i))}
	}
	return d, k
}

func localAddr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func audioOf(t *testing.T, body []byte) netip.AddrPort {
	t.Helper()
	ms, err := sdprewrite.Parse(body)
	if err != nil || len(ms) != 1 {
		t.Fatalf("sdp: %v\n%s", err, body)
	}
	return netip.AddrPortFrom(ms[0].Addr, ms[0].Port)
}

// talk is RTP both ways, a tone from each end: caller, callee.
type talk struct{ ends [2]talker }

type talker struct {
	who   string
	relay netip.AddrPort // where it sends, and the only source it should hear
	phone *rtpphone.Phone
}

// heard is what caller and callee have received so far.
func (k *talk) heard() (caller, callee int) {
	return k.ends[0].phone.Recording().Packets, k.ends[1].phone.Recording().Packets
}

// stop ends the talk and fails the test unless each side heard most of
// what the other sent (the first packets may go before the relays
// latched), all of it from its own relay.
func (k *talk) stop(t *testing.T) {
	t.Helper()
	var recs [2]rtpphone.Recording
	for i, end := range k.ends {
		var err error
		if recs[i], err = end.phone.Stop(); err != nil {
			t.Fatalf("%s sending RTP: %v", end.who, err)
		}
		t.Logf("%s: %v", end.who, recs[i])
	}
	for i, end := range k.ends {
		got, sent := recs[i], recs[1-i].Sent
		if sent < 50 || got.Packets < sent*3/4 {
			t.Errorf("%s heard %d of %d RTP packets", end.who, got.Packets, sent)
		}
		if len(got.Sources) != 1 || got.Sources[end.relay] == 0 {
			t.Errorf("%s heard RTP from %v, want only the relay it sends to (%s)", end.who, got.Sources, end.relay)
		}
	}
}

// TestTwoProxiesSharedLocation: proxies A and B, each on a host of its
// own with its own relay, share the location table in redis-server on a
// third. alice registers through A, behind NAT whose pinhole is open to A
// only, or over TCP to A: A stores her binding with a Path through
// itself. bob calls her through B; the call goes B, A, alice, and RTP
// crosses both ways; she calls him through A, which reaches him through
// B; each side hangs up in turn. Then A is killed: alice's next refresh goes to B
// (as a phone fails over to the next DNS SRV target), and bob's calls
// reach her through B alone, RTP both ways. Last, A is back and she
// moves back to it.
func TestTwoProxiesSharedLocation(t *testing.T) {
	for _, ph := range phones {
		t.Run(ph.name, func(t *testing.T) {
			e := newTwoProxies(t)
			ns, ip := ph.host(e)
			media := listenIn(t, ns, ip, aliceRTP)
			alice := ph.connect(t, e, e.sip(e.aIP))
			registerAlice(t, alice, 1)
			aliceBinding(t, e.b, e.sip(e.aIP))

			// Both ways, and each side hangs up: in-dialog requests take
			// the recorded route through both proxies either way. alice
			// calling reaches bob through A and B: his binding has a Path
			// through B too (his address is private).
			for _, c := range []struct {
				bobCalls, byCallee bool
			}{{true, false}, {true, true}, {false, false}, {false, true}} {
				caller, callee := e.bob(), alicePart(alice, media, e.aIP)
				if !c.bobCalls {
					caller, callee = callee, caller
				}
				d, k := call(t, caller, callee)
				rr := recordRoutes(d.Received)
				if !strings.Contains(rr, e.sip(e.aIP).String()) || !strings.Contains(rr, e.sip(e.bIP).String()) {
					t.Fatalf("%s's INVITE was record-routed by %s, want A and B", callee.user, rr)
				}
				time.Sleep(talkTime)
				k.stop(t)
				d.Hangup(c.byCallee)
			}

			if v, _ := e.a.Metric("sipxdp_sip_connections"); v != ph.connsAtA {
				t.Errorf("A holds %v connections after four calls, want %v", v, ph.connsAtA)
			}
			e.a.Kill()
			alice = ph.connect(t, e, e.sip(e.bIP))
			registerAlice(t, alice, 3)
			if n := aliceBinding(t, e.b, e.sip(e.bIP)); ph.sameContact && n != 1 {
				t.Fatalf("alice has %d bindings after failing over with the same Contact, want B's alone", n)
			}
			d, k := call(t, e.bob(), alicePart(alice, media, e.bIP))
			if rr := recordRoutes(d.Received); strings.Contains(rr, e.aIP.String()) {
				t.Fatalf("with A dead, alice's INVITE was record-routed by %s", rr)
			}
			time.Sleep(talkTime)
			k.stop(t)
			d.Hangup(true)

			// A comes back on the same address and alice moves back to
			// it: B reaches her through A again, over a new connection
			// to A when the Path is TCP (the old one died with A).
			e.a.Restart()
			alice = ph.connect(t, e, e.sip(e.aIP))
			registerAlice(t, alice, 5)
			if n := aliceBinding(t, e.b, e.sip(e.aIP)); ph.sameContact && n != 1 {
				t.Fatalf("alice has %d bindings after moving back to A with the same Contact, want A's alone", n)
			}
			d, k = call(t, e.bob(), alicePart(alice, media, e.aIP))
			time.Sleep(talkTime)
			k.stop(t)
			d.Hangup(false)
		})
	}
}

func recordRoutes(req interface{ GetHeaders(string) []sip.Header }) string {
	var rr []string
	for _, h := range req.GetHeaders("Record-Route") {
		rr = append(rr, h.Value())
	}
	return strings.Join(rr, ",")
}

// TestTwoProxiesRedisDown: with a call up (bob through B, A, to alice
// behind NAT), redis-server is killed. The call keeps its RTP and ends
// cleanly; a REGISTER gets 500 with Retry-After, B counts the error and
// reports the store down on /metrics. Once redis-server is back on the
// same address (empty: it persists nothing), the phones register again,
// calls work and B reports the store up.
func TestTwoProxiesRedisDown(t *testing.T) {
	e := newTwoProxies(t)
	ph := phones[0]
	ns, ip := ph.host(e)
	media := listenIn(t, ns, ip, aliceRTP)
	alice := ph.connect(t, e, e.sip(e.aIP))
	registerAlice(t, alice, 1)
	d, k := call(t, e.bob(), alicePart(alice, media, e.aIP))
	time.Sleep(talkTime)
	if v, _ := e.b.Metric("sipxdp_location_store_down"); v != 0 {
		t.Fatalf("sipxdp_location_store_down = %v with Redis up", v)
	}
	errs0, _ := e.b.Metric("sipxdp_location_store_errors_total")

	e.rds.Stop()
	bob0, alice0 := k.heard()
	m := sipua.Msg{Method: "REGISTER", RURI: "sip:localhost", From: "sip:bob@localhost", To: "sip:bob@localhost",
		CallID: "reg-bob-down", CSeq: 1, Headers: []string{"Expires: 600"}}
	if r := e.bobSIP.Authenticated(m, "bob", "bobpw"); r.StatusCode != 500 || r.GetHeader("Retry-After") == nil {
		t.Fatalf("REGISTER with Redis down: %d %s, Retry-After %v", r.StatusCode, r.Reason, r.GetHeader("Retry-After"))
	}
	if v, _ := e.b.Metric("sipxdp_location_store_down"); v != 1 {
		t.Errorf("sipxdp_location_store_down = %v with Redis killed", v)
	}
	if v, _ := e.b.Metric("sipxdp_location_store_errors_total"); v <= errs0 {
		t.Errorf("sipxdp_location_store_errors_total = %v, was %v before Redis died", v, errs0)
	}
	if v, _ := e.b.Metric(`sipxdp_sip_register_refused_total{reason="store_unavailable"}`); v != 1 {
		t.Errorf(`sipxdp_sip_register_refused_total{reason="store_unavailable"} = %v, want 1`, v)
	}
	if h := e.b.Health(); h.Status != "degraded" || !strings.Contains(strings.Join(h.Problems, " "), "location store (redis)") {
		t.Errorf("B's health with Redis down: %s %v", h.Status, h.Problems)
	}
	time.Sleep(time.Second)
	if bob1, alice1 := k.heard(); bob1-bob0 < 40 || alice1-alice0 < 40 {
		t.Errorf("with Redis down, bob heard %d and alice %d more RTP packets, want about 50 a second", bob1-bob0, alice1-alice0)
	}
	k.stop(t)
	for _, p := range []*sipdtest.Sipd{e.a, e.b} {
		if n := callsListed(p); n != 1 {
			t.Errorf("%s lists %d calls with Redis down, want the one up", p.SIP, n)
		}
	}
	d.Hangup(false)
	for _, p := range []*sipdtest.Sipd{e.a, e.b} {
		for end := time.Now().Add(2 * time.Second); callsListed(p) != 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s still lists the call 2 s after its BYE", p.SIP)
			}
		}
	}

	e.rds.Restart(t)
	registerAlice(t, alice, 3)
	e.bobSIP.Register("bob", "localhost", "bobpw")
	d, k = call(t, e.bob(), alicePart(alice, media, e.aIP))
	time.Sleep(talkTime)
	k.stop(t)
	d.Hangup(false)
	for _, p := range []*sipdtest.Sipd{e.a, e.b} {
		if v, _ := p.Metric("sipxdp_location_store_down"); v != 0 {
			t.Errorf("%s: sipxdp_location_store_down = %v with Redis back", p.SIP, v)
		}
		if h := p.Health(); h.Status != "ok" {
			t.Errorf("%s: health with Redis back: %s %v", p.SIP, h.Status, h.Problems)
		}
	}
}

// callsListed is the number of calls proxy p's /calls lists.
func callsListed(p *sipdtest.Sipd) int {
	var cs []struct {
		CallID string `json:"call_id"`
	}
	p.GetJSON("/calls", &cs)
	return len(cs)
}
