package security

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/sipua"
	"sipxdp/sipd"
)

// byeAttack is one forged BYE against an answered call.
type byeAttack struct {
	name           string
	fromTag, toTag string
	routes         []string
}

// sendByeAttacks sends each forged BYE from the attacker's namespace, at
// the callee's Contact (which an on-path attacker has seen), and checks
// that it gets want, that the callee hears nothing, and that the call's
// flows and its /calls entry are untouched.
func sendByeAttacks(t *testing.T, e *env, c *call, want int, attacks []byeAttack) {
	t.Helper()
	x := e.attackerUA()
	before := len(e.flows(c.ID))
	if before == 0 {
		t.Fatalf("call %s has no relay flows to begin with", c.ID)
	}
	for i, a := range attacks {
		x.Send(x.Request(sipua.Msg{Method: "BYE", RURI: c.CalleeContact, From: c.Invite.From, FromTag: a.fromTag,
			To: c.Invite.To, ToTag: a.toTag, CallID: c.ID, CSeq: 100 + i, Headers: a.routes}))
		if r := x.Response(2 * time.Second); r == nil || r.StatusCode != want {
			got := "no answer"
			if r != nil {
				got = fmt.Sprintf("%d %s", r.StatusCode, r.Reason)
			}
			t.Errorf("%s: attacker got %s, want %d", a.name, got, want)
		}
		if m := c.bob.Recv(300 * time.Millisecond); m != nil {
			t.Errorf("%s: the callee received %s", a.name, sipua.FirstLine(m))
		}
		if n := len(e.flows(c.ID)); n != before {
			t.Errorf("%s: the call's relay flows went from %d to %d", a.name, before, n)
		}
		if !e.callUp(c.ID) {
			t.Errorf("%s: /calls no longer lists the call", a.name)
		}
	}
}

// endsCleanly checks that the real BYE still ends the call: flows gone,
// /calls without it, and its CDR written.
func endsCleanly(t *testing.T, e *env, c *call, cdr string) {
	t.Helper()
	c.hangUp()
	if e.callUp(c.ID) {
		t.Errorf("/calls still lists %s after its BYE", c.ID)
	}
	deadline := time.Now().Add(3 * time.Second)
	for len(e.flows(c.ID)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("flows of %s left after its BYE", c.ID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, err := os.ReadFile(cdr)
	if err != nil {
		t.Fatalf("cdr: %v", err)
	}
	if !strings.Contains(string(b), `"call_id":"`+c.ID+`"`) || !strings.Contains(string(b), `"end_reason":"bye"`) {
		t.Fatalf("no CDR for %s ended by bye:\n%s", c.ID, b)
	}
}

// registeredEnv is an env writing CDRs to the returned path, with alice
// and bob registered.
func registeredEnv(t *testing.T) (e *env, alice, bob *sipua.UA, cdr string) {
	cdr = filepath.Join(t.TempDir(), "cdr.jsonl")
	e = newEnv(t, func(c *sipd.Config) { c.SIP.Dialog.CDRFile = cdr })
	alice, bob = e.caller(), e.callee()
	alice.Register("alice", domain, password)
	bob.Register("bob", domain, password)
	return e, alice, bob, cdr
}

// An attacker who knows a call's Call-ID (on the path, or from a leak)
// sends BYEs with tags of its own, hoping sipd ends the call's relaying
// (cutting the audio while the phones think the call is up) or forwards
// the BYE to hang a phone up.
func TestForeignByeTeardown(t *testing.T) {
	e, alice, bob, cdr := registeredEnv(t)
	c := e.answeredCall(alice, bob)
	plain := []string{fmt.Sprintf("Route: <sip:%s;lr>", e.SIP)}
	sendByeAttacks(t, e, c, 481, []byeAttack{
		{"route naming sipd, tags made up", "evil-1", "evil-2", plain},
		{"the call's route, tags made up", "evil-3", "evil-4", c.Routes},
		{"the call's route, the caller's tag and a made-up callee tag", c.CallerTag, "evil-5", c.Routes},
		{"the call's route, a made-up tag and the callee's tag", "evil-6", c.CalleeTag, c.Routes},
		{"no route, tags made up", "evil-7", "evil-8", nil},
	})
	wantMetric(t, e, "dialog_mismatch", 5)
	endsCleanly(t, e, c, cdr)
	e.legitCall()
}

// wantMetric checks a sipxdp_sip_refused_total sample.
func wantMetric(t *testing.T, e *env, reason string, want float64) {
	t.Helper()
	series := `sipxdp_sip_refused_total{reason="` + reason + `"}`
	if v, ok := e.sipd.Metric(series); !ok || v != want {
		t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
	}
}

// An attacker who knows a call's Call-ID and both tags (on the path) but
// not the route token sipd put in its Record-Route sends BYEs through
// sipd: without the token, or with one forged or taken from another call.
func TestByeWithoutRouteToken(t *testing.T) {
	e, alice, bob, cdr := registeredEnv(t)
	// An earlier call hands the attacker a genuine token, for another
	// Call-ID.
	old := e.answeredCall(alice, bob)
	old.hangUp()
	c := e.answeredCall(alice, bob)
	retag := func(routes []string, from, to string) []string {
		out := make([]string, len(routes))
		for i, r := range routes {
			out[i] = strings.ReplaceAll(r, from, to)
		}
		return out
	}
	forged := make([]string, len(c.Routes))
	for i, r := range c.Routes {
		j := strings.Index(r, "sxt=")
		if j < 0 {
			forged[i] = strings.Replace(r, ";lr", ";lr;sxt=AAAAAAAAAAAAAAAAAAAAAA", 1)
			continue
		}
		forged[i] = r[:j+4] + "AAAAAAAAAAAAAAAAAAAAAA" + r[j+4+22:]
	}
	sendByeAttacks(t, e, c, 403, []byeAttack{
		{"route naming sipd without a token", c.CallerTag, c.CalleeTag, []string{fmt.Sprintf("Route: <sip:%s;lr>", e.SIP)}},
		{"route with a forged token", c.CallerTag, c.CalleeTag, forged},
		{"another call's token, its ftag made this call's", c.CallerTag, c.CalleeTag, retag(old.Routes, old.CallerTag, c.CallerTag)},
		{"route naming the callee directly", c.CallerTag, c.CalleeTag, []string{"Route: <" + c.CalleeContact + ";lr>"}},
	})
	wantMetric(t, e, "route_token_missing", 2)
	wantMetric(t, e, "route_token_invalid", 2)
	endsCleanly(t, e, c, cdr)
	e.legitCall()
}
