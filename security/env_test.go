package security

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/netns"
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
	tp       *netns.Topo
	attacker *netns.Host
	sipd     *sipdtest.Sipd
	// SIP is sipd's UDP (and TCP) address.
	SIP netip.AddrPort
}

const (
	domain   = "example.com"
	password = "s3cret-pw"
)

var pinSeq atomic.Uint64

// envOpt adjusts how newEnv starts sipd.
type envOpt func(*sipdtest.Options)

// withNoFile runs sipd under RLIMIT_NOFILE n.
func withNoFile(n uint64) envOpt { return func(o *sipdtest.Options) { o.NoFile = n } }

// newEnv builds the namespaces and starts sipd in the middle one with
// users alice and bob, media relayed on the userspace path unless edit
// says otherwise.
func newEnv(t *testing.T, edit func(*sipd.Config), opts ...envOpt) *env {
	t.Helper()
	return newEnvArgs(t, nil, edit, opts...)
}

// newEnvArgs is newEnv with extra sipd arguments, such as -relay-only.
func newEnvArgs(t *testing.T, args []string, edit func(*sipd.Config), opts ...envOpt) *env {
	t.Helper()
	testenv.RequireRoot(t)
	tp := netns.New(t, netns.Config{Prefix: "sxsec-"})
	e := &env{t: t, tp: tp, attacker: tp.AddHost(t, "x", 3)}
	e.SIP = netip.AddrPortFrom(netns.V4.RelayA, 5060)
	cfg := sipdtest.Config(t)
	cfg.Log.Level = "debug"
	cfg.HTTP.Listen = "127.0.0.1:8080" // the namespace's own loopback
	cfg.SIP.Domains = []string{domain}
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: e.SIP.String()}, {Transport: "tcp", Addr: e.SIP.String()}}
	cfg.Media.Datapath = "userspace"
	cfg.Media.PinPath = fmt.Sprintf("/sys/fs/bpf/sipxdp-sec-%d-%d", os.Getpid(), pinSeq.Add(1))
	cfg.Media.Addresses = []sipd.AddressConfig{
		{Name: "a", Local: netns.V4.RelayA.String(), PortMin: 30000, PortMax: 30999},
		{Name: "b", Local: netns.V4.RelayB.String(), PortMin: 31000, PortMax: 31999},
	}
	if edit != nil {
		edit(cfg)
	}
	if cfg.Media.Datapath != "userspace" && len(cfg.Media.Interfaces) == 0 {
		// A kernel hook on every link into sipd's namespace, the
		// attacker's included, so the attacker's packets meet it too.
		cfg.Media.Interfaces = []string{netns.RelayA, netns.RelayB, e.attacker.RelayIf}
	}
	o := sipdtest.Options{NS: tp.Relay, Args: args, Users: map[string]string{"alice": password, "bob": password}}
	for _, f := range opts {
		f(&o)
	}
	e.sipd = sipdtest.Start(t, cfg, o)
	return e
}

// ua opens a SIP socket in ns at addr (port chosen by the kernel).
func (e *env) ua(ns *netns.NS, addr netip.Addr) *sipua.UA {
	e.t.Helper()
	c, err := ns.ListenUDP(netip.AddrPortFrom(addr, 0))
	if err != nil {
		e.t.Fatal(err)
	}
	return sipua.New(e.t, c, e.SIP)
}

// streamUA connects from local in ns to sipd's listener of transport
// (TCP or TLS; TLS does not verify sipd's certificate).
func (e *env) streamUA(ns *netns.NS, local netip.Addr, transport string) *sipua.UA {
	e.t.Helper()
	srv := e.sipd.SIPAddr(transport)
	c, err := ns.DialFrom("tcp", local, srv.String(), 3*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	if transport == "TLS" {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(3 * time.Second))
		if err := tc.Handshake(); err != nil {
			c.Close()
			e.t.Fatalf("tls handshake with %s: %v", srv, err)
		}
		tc.SetDeadline(time.Time{})
		c = tc
	}
	return sipua.NewStream(e.t, c, transport)
}

// caller, callee and attacker are SIP sockets on each side.
func (e *env) caller() *sipua.UA { return e.ua(e.tp.Caller, netns.V4.Caller) }
func (e *env) callee() *sipua.UA { return e.ua(e.tp.Callee, netns.V4.Callee) }
func (e *env) attackerUA() *sipua.UA {
	return e.ua(e.attacker.NS, e.attacker.V4)
}

var callSeq atomic.Uint64

// call is an answered call from alice (caller side) to bob (callee side)
// as the phones saw it.
type call struct {
	e          *env
	alice, bob *sipua.UA
	ID         string
	Invite     sipua.Msg // alice's INVITE
	CallerTag  string
	CalleeTag  string
	// Routes are the caller's Route lines, from the 2xx's Record-Route.
	Routes []string
	// CalleeContact is bob's Contact as alice saw it: the Request-URI of
	// her in-dialog requests.
	CalleeContact string
}

// answeredCall has alice (registered or not, she authenticates) call bob
// (registered), bob answer and alice ACK, with SDP both ways.
func (e *env) answeredCall(a, b *sipua.UA) *call {
	e.t.Helper()
	id := fmt.Sprintf("call-%d", callSeq.Add(1))
	inv := sipua.Msg{Method: "INVITE", RURI: "sip:bob@" + domain, From: "sip:alice@" + domain, To: "sip:bob@" + domain,
		CallID: id, CSeq: 1, Body: sipua.SDP(netip.AddrPortFrom(netns.V4.Caller, 40000))}
	if r := a.Authenticated(inv, "alice", password); r != nil && r.StatusCode >= 300 {
		e.t.Fatalf("alice's call: %d %s", r.StatusCode, r.Reason)
	}
	req := b.ExpectRequest("INVITE")
	b.Respond(req, 200, "OK", "bob-"+id, sipua.SDP(netip.AddrPortFrom(netns.V4.Callee, 40002)))
	ok := a.Expect(200)
	c := &call{e: e, alice: a, bob: b, ID: id, Invite: inv, CallerTag: "ft-" + id,
		CalleeTag: ok.To().Params.GetOr("tag", ""), Routes: recordRoute(ok), CalleeContact: contactURI(e.t, ok)}
	a.Send(a.Request(c.inDialog("ACK", 2)))
	b.ExpectRequest("ACK")
	return c
}

// inDialog is alice's request in the call, through its route set.
func (c *call) inDialog(method string, cseq int) sipua.Msg {
	return sipua.Msg{Method: method, RURI: c.CalleeContact, From: c.Invite.From, FromTag: c.CallerTag, To: c.Invite.To,
		ToTag: c.CalleeTag, CallID: c.ID, CSeq: cseq, Headers: c.Routes}
}

// hangUp is alice's BYE, answered by bob.
func (c *call) hangUp() {
	c.e.t.Helper()
	c.alice.Send(c.alice.Request(c.inDialog("BYE", 3)))
	c.bob.Respond(c.bob.ExpectRequest("BYE"), 200, "OK", "", "")
	c.alice.Expect(200)
}

// legitCall checks that a subscriber is still served: alice and bob
// register (with digest), alice calls bob, bob answers, alice hangs up,
// and every step gets the right answer. It returns the two phones.
func (e *env) legitCall() (alice, bob *sipua.UA) {
	e.t.Helper()
	a, b := e.caller(), e.callee()
	a.Register("alice", domain, password)
	b.Register("bob", domain, password)
	e.answeredCall(a, b).hangUp()
	return a, b
}

// call has alice (registered on a) call bob (registered on b): INVITE
// with digest, 200, ACK, BYE from alice, 200. It returns the Call-ID.
func (e *env) call(a, b *sipua.UA) string {
	e.t.Helper()
	c := e.answeredCall(a, b)
	c.hangUp()
	return c.ID
}

// flows lists the relay flows of a call.
func (e *env) flows(callID string) []sipd.FlowJSON {
	e.t.Helper()
	var fs []sipd.FlowJSON
	e.sipd.GetJSON("/flows?call_id="+callID, &fs)
	return fs
}

// callUp reports whether /calls lists the call.
func (e *env) callUp(callID string) bool {
	e.t.Helper()
	var cs []struct {
		CallID string `json:"call_id"`
	}
	e.sipd.GetJSON("/calls", &cs)
	for _, c := range cs {
		if c.CallID == callID {
			return true
		}
	}
	return false
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
