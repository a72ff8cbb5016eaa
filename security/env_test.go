package security

import (
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/netnstest"
	"sipxdp/internal/sipdtest"
	"sipxdp/internal/sipua"
	"sipxdp/internal/testenv"
	"sipxdp/sipd"
	"sipxdp/sipd/sipconf"
)

// The network every test builds: sipd in the middle namespace, a
// subscriber's phone on the caller side, the callee (a phone or a PSTN
// gateway) on the other, and the attacker on a link of its own. Nothing
// is exempt from flood limits: the exempt list holds loopback only.
//
//	caller 10.252.1.2 ── 10.252.1.1 sipd 10.252.2.1 ── 10.252.2.2 callee
//	                               10.252.3.1
//	                                   │
//	                          attacker 10.252.3.2
type env struct {
	t        *testing.T
	tp       *netnstest.Topo
	attacker *netnstest.Host
	sipd     *sipdtest.Sipd
	// SIP is sipd's UDP (and TCP) address.
	SIP netip.AddrPort
}

const (
	domain   = "example.com"
	password = "s3cret-pw"
)

var pinSeq atomic.Uint64

// newEnv builds the namespaces and starts sipd in the middle one with
// users alice and bob, media relayed on the userspace path unless edit
// says otherwise.
func newEnv(t *testing.T, edit func(*sipd.Config)) *env {
	t.Helper()
	return newEnvArgs(t, nil, edit)
}

// newEnvArgs is newEnv with extra sipd arguments, such as -relay-only.
func newEnvArgs(t *testing.T, args []string, edit func(*sipd.Config)) *env {
	t.Helper()
	testenv.RequireRoot(t)
	tp := netnstest.New(t, "sxsec-")
	e := &env{t: t, tp: tp, attacker: tp.AddHost(t, "x", 3)}
	e.SIP = netip.AddrPortFrom(netnstest.V4.RelayA, 5060)
	cfg := sipdtest.Config(t)
	cfg.Log.Level = "debug"
	cfg.HTTP.Listen = "127.0.0.1:8080" // the namespace's own loopback
	cfg.SIP.Domains = []string{domain}
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: e.SIP.String()}, {Transport: "tcp", Addr: e.SIP.String()}}
	cfg.Media.Datapath = "userspace"
	cfg.Media.PinPath = fmt.Sprintf("/sys/fs/bpf/sipxdp-sec-%d-%d", os.Getpid(), pinSeq.Add(1))
	cfg.Media.Addresses = []sipd.AddressConfig{
		{Name: "a", Local: netnstest.V4.RelayA.String(), PortMin: 30000, PortMax: 30999},
		{Name: "b", Local: netnstest.V4.RelayB.String(), PortMin: 31000, PortMax: 31999},
	}
	if edit != nil {
		edit(cfg)
	}
	e.sipd = sipdtest.Start(t, cfg, sipdtest.Options{NS: tp.Relay, Args: args,
		Users: map[string]string{"alice": password, "bob": password}})
	return e
}

// ua opens a SIP socket in ns at addr (port chosen by the kernel).
func (e *env) ua(ns *netnstest.NS, addr netip.Addr) *sipua.UA {
	e.t.Helper()
	c, err := ns.ListenUDP(netip.AddrPortFrom(addr, 0))
	if err != nil {
		e.t.Fatal(err)
	}
	return sipua.New(e.t, c, e.SIP)
}

// caller, callee and attacker are SIP sockets on each side.
func (e *env) caller() *sipua.UA { return e.ua(e.tp.Caller, netnstest.V4.Caller) }
func (e *env) callee() *sipua.UA { return e.ua(e.tp.Callee, netnstest.V4.Callee) }
func (e *env) attackerUA() *sipua.UA {
	return e.ua(e.attacker.NS, e.attacker.V4)
}

var callSeq atomic.Uint64

// legitCall checks that a subscriber is still served: alice and bob
// register (with digest), alice calls bob, bob answers, alice hangs up,
// and every step gets the right answer. It returns the two phones.
func (e *env) legitCall() (alice, bob *sipua.UA) {
	e.t.Helper()
	a, b := e.caller(), e.callee()
	a.Register("alice", domain, password)
	b.Register("bob", domain, password)
	callID := fmt.Sprintf("legit-%d", callSeq.Add(1))
	inv := sipua.Msg{Method: "INVITE", RURI: "sip:bob@" + domain, From: "sip:alice@" + domain, To: "sip:bob@" + domain,
		CallID: callID, CSeq: 1, Body: sipua.SDP(netip.AddrPortFrom(netnstest.V4.Caller, 40000))}
	if r := a.Authenticated(inv, "alice", password); r != nil && r.StatusCode >= 300 {
		e.t.Fatalf("alice's call: %d %s", r.StatusCode, r.Reason)
	}
	req := b.ExpectRequest("INVITE")
	b.Respond(req, 200, "OK", "bob-"+callID, sipua.SDP(netip.AddrPortFrom(netnstest.V4.Callee, 40002)))
	ok := a.Expect(200)
	routes := recordRoute(ok)
	ack := sipua.Msg{Method: "ACK", RURI: contactURI(e.t, ok), From: inv.From, FromTag: "ft-" + callID, To: inv.To,
		ToTag: ok.To().Params.GetOr("tag", ""), CallID: callID, CSeq: 2, Headers: routes}
	a.Send(a.Request(ack))
	b.ExpectRequest("ACK")
	bye := ack
	bye.Method, bye.CSeq = "BYE", 3
	a.Send(a.Request(bye))
	b.Respond(b.ExpectRequest("BYE"), 200, "OK", "", "")
	a.Expect(200)
	return a, b
}

// recordRoute turns a 2xx's Record-Route into the caller's Route lines.
func recordRoute(r *sip.Response) []string {
	var out []string
	for _, h := range r.GetHeaders("Record-Route") {
		out = append(out, "Route: "+h.Value())
	}
	return out
}

func contactURI(t *testing.T, r *sip.Response) string {
	t.Helper()
	c, ok := r.GetHeader("Contact").(*sip.ContactHeader)
	if !ok {
		t.Fatalf("%d without Contact", r.StatusCode)
	}
	return c.Address.String()
}

// The topology itself: the attacker's link reaches sipd (a keep-alive is
// answered), and a subscriber registers and completes a call.
func TestEnvServesSubscribers(t *testing.T) {
	e := newEnv(t, nil)
	x := e.attackerUA()
	x.Send(x.Request(sipua.Msg{Method: "OPTIONS", RURI: "sip:" + e.SIP.String(), From: "sip:x@" + domain,
		To: "sip:" + e.SIP.String(), CallID: "ka-1", CSeq: 1}))
	x.Expect(200)
	e.legitCall()
}
