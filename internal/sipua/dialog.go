package sipua

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Call describes a call for Establish.
type Call struct {
	From, To string // user names, both at Domain
	Domain   string
	Password string // the caller's, for the proxy's challenge
	CallID   string // empty: a new one
	Offer    string // the INVITE's SDP; empty: none
	Answer   string // the 200's SDP; empty: none
}

// Dialog is a call Establish set up, seen from both ends.
type Dialog struct {
	Caller, Callee *UA
	Invite         Msg           // the caller's INVITE as last sent
	Received       *sip.Request  // the INVITE as the callee got it
	Answer         *sip.Response // the 200 as the caller got it
	Ack            Msg           // the caller's ACK: its Route and Request-URI serve its later requests
}

// Establish makes a call from caller to callee through the proxy both
// talk to: INVITE (answering the proxy's challenge), 200 with the callee
// tag "tt", ACK along the route set. It fails the test if a step does.
func Establish(caller, callee *UA, c Call) *Dialog {
	t := caller.t
	t.Helper()
	if c.CallID == "" {
		c.CallID = fmt.Sprintf("call-%s-%d", c.From, time.Now().UnixNano())
	}
	inv := Msg{Method: "INVITE", RURI: "sip:" + c.To + "@" + c.Domain, From: "sip:" + c.From + "@" + c.Domain,
		To: "sip:" + c.To + "@" + c.Domain, CallID: c.CallID, CSeq: 1, Body: c.Offer}
	if r := caller.Authenticated(inv, c.From, c.Password); r != nil && r.StatusCode >= 300 {
		t.Fatalf("INVITE: %d %s", r.StatusCode, r.Reason)
	}
	req := callee.ExpectRequest(sip.INVITE)
	callee.Respond(req, 200, "OK", "tt", c.Answer)
	ok := caller.ResponseTo(c.CallID, 3*time.Second)
	if ok == nil || ok.StatusCode != 200 {
		t.Fatalf("caller's answer: %v", ok)
	}
	ack := Msg{Method: "ACK", RURI: ContactURI(ok), From: inv.From, To: inv.To, ToTag: "tt", CallID: c.CallID,
		CSeq: int(ok.CSeq().SeqNo), Headers: RouteSet(ok.GetHeaders("Record-Route"), true)}
	caller.Send(caller.Request(ack))
	callee.ExpectRequest(sip.ACK)
	return &Dialog{Caller: caller, Callee: callee, Invite: inv, Received: req, Answer: ok, Ack: ack}
}

// Hangup sends BYE from the caller, or from the callee, along its route
// set, and fails the test unless the other side gets it and its 200
// comes back.
func (d *Dialog) Hangup(byCallee bool) {
	t := d.Caller.t
	t.Helper()
	bye, by, other := d.Ack, d.Caller, d.Callee
	bye.Method, bye.CSeq = "BYE", d.Ack.CSeq+1
	if byCallee {
		by, other = d.Callee, d.Caller
		bye = Msg{Method: "BYE", RURI: ContactURI(d.Received), From: d.Invite.To, FromTag: "tt", To: d.Invite.From,
			ToTag: "ft-" + d.Invite.CallID, CallID: d.Invite.CallID, CSeq: 1, Headers: RouteSet(d.Received.GetHeaders("Record-Route"), false)}
	}
	by.Send(by.Request(bye))
	got := other.ExpectRequest(sip.BYE)
	other.Respond(got, 200, "OK", "", "")
	if r := by.ResponseTo(d.Invite.CallID, 3*time.Second); r == nil || r.StatusCode != 200 {
		t.Fatalf("BYE answer: %v", r)
	}
}

// RouteSet is the Route header lines a UA uses inside the dialog, from
// the Record-Route it saw: reversed for the caller (RFC 3261 §12.1.2).
func RouteSet(rr []sip.Header, caller bool) []string {
	var out []string
	for _, h := range rr {
		for _, v := range strings.Split(h.Value(), ",") {
			out = append(out, "Route: "+strings.TrimSpace(v))
		}
	}
	if caller {
		slices.Reverse(out)
	}
	return out
}

// ContactURI is a request's or response's Contact URI; empty without one.
func ContactURI(m sip.Message) string {
	var c *sip.ContactHeader
	switch m := m.(type) {
	case *sip.Request:
		c = m.Contact()
	case *sip.Response:
		c = m.Contact()
	}
	if c == nil {
		return ""
	}
	return c.Address.String()
}
