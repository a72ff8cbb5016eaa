package security

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/sipua"
	"sipxdp/sipd"
)

// Calls survive a crash (issue 11, section 9): sipd keeps every call that
// is up on disk, and after kill -9 and a restart it still routes and
// rewrites the call's in-dialog requests, ends it on BYE (flows removed,
// a CDR with the real start), ends a call whose media stopped while it
// was down, and lets flows that were still learning learn.

// callInfo is a call as /calls lists it.
type callInfo struct {
	CallID   string    `json:"call_id"`
	Answered time.Time `json:"answered"`
}

func (e *env) activeCall(callID string) (callInfo, bool) {
	e.t.Helper()
	var cs []callInfo
	e.sipd.GetJSON("/calls", &cs)
	for _, c := range cs {
		if c.CallID == callID {
			return c, true
		}
	}
	return callInfo{}, false
}

// cdrOf is the call's CDR, if written.
func (e *env) cdrOf(callID string) (map[string]any, bool) {
	e.t.Helper()
	for _, c := range cdrs(e.t, filepath.Join(e.sipd.Cfg.StateDir, "cdr.jsonl")) {
		if c["call_id"] == callID {
			return c, true
		}
	}
	return nil, false
}

// reinvite sends alice's re-INVITE with an offer for media through the
// call's route set and returns what bob receives; bob answers with his
// media and alice gets the 200, which is returned too.
func (c *liveCall) reinvite(cseq int, aliceMedia, bobMedia netip.AddrPort) (*sip.Request, *sip.Response) {
	c.e.t.Helper()
	m := c.ack
	m.Method, m.CSeq, m.Body = "INVITE", cseq, sipua.SDP(aliceMedia)
	c.a.Send(c.a.Request(m))
	req := c.b.ExpectRequest("INVITE")
	c.b.Respond(req, 200, "OK", "", sipua.SDP(bobMedia))
	ok := c.a.Expect(200)
	ack := c.ack
	ack.CSeq = cseq
	c.a.Send(c.a.Request(ack))
	c.b.ExpectRequest("ACK")
	return req, ok
}

// A call that is up when sipd is killed is still sipd's call after the
// restart: listed with its real answer time, its media relayed both ways
// (on the kernel path it never stopped), a re-INVITE's offer rewritten to
// the call's own relay port, and alice's BYE ends it: forwarded, flows
// gone, CDR written with the real start.
func TestCallSurvivesSIGKILL(t *testing.T) {
	for _, dp := range []string{"tc", "userspace"} {
		t.Run(dp, func(t *testing.T) {
			e := newEnv(t, withDatapath(dp))
			callerMedia, calleeMedia, alice, bob := e.phones()
			c := e.relayedCall(callerMedia, calleeMedia, 0)
			alice.talk(c.callerRelay, 20*time.Second)
			bob.talk(c.calleeRelay, 20*time.Second)
			// Past the learning window: the flows lock (and on tc move to
			// the kernel).
			time.Sleep(4 * time.Second)
			before, ok := e.activeCall(c.callID)
			if !ok {
				t.Fatal("the call is not listed before the crash")
			}

			e.sipd.Kill()
			heard := alice.rx.count(ssrcCallee)
			time.Sleep(time.Second)
			if dp == "tc" {
				if n := alice.rx.count(ssrcCallee) - heard; n < 25 {
					t.Errorf("with sipd dead the kernel relayed %d of bob's packets in a second, want about 50", n)
				}
			}
			e.sipd.Restart()

			after, ok := e.activeCall(c.callID)
			if !ok {
				t.Fatal("after kill -9 and a restart sipd no longer lists the call")
			}
			if !after.Answered.Equal(before.Answered) {
				t.Errorf("after the restart the call was answered at %v, before at %v", after.Answered, before.Answered)
			}
			heardA, heardB := alice.rx.count(ssrcCallee), bob.rx.count(ssrcCaller)
			time.Sleep(2 * time.Second)
			if n := alice.rx.count(ssrcCallee) - heardA; n < 50 {
				t.Errorf("after the restart alice heard %d of bob's packets in 2 s, want about 100", n)
			}
			if n := bob.rx.count(ssrcCaller) - heardB; n < 50 {
				t.Errorf("after the restart bob heard %d of alice's packets in 2 s, want about 100", n)
			}
			if len(c.flows()) == 0 {
				t.Error("the call has no relay flows after the restart")
			}

			// A re-INVITE (same media): each side is told the call's own
			// relay port, not the other phone's address.
			toBob, toAlice := c.reinvite(4, callerMedia, calleeMedia)
			if got := mediaTarget(t, toBob.Body()); got != c.calleeRelay {
				t.Errorf("bob was offered %s after the restart, want the relay's %s", got, c.calleeRelay)
			}
			if got := mediaTarget(t, toAlice.Body()); got != c.callerRelay {
				t.Errorf("alice was answered %s after the restart, want the relay's %s", got, c.callerRelay)
			}

			alice.hush()
			bob.hush()
			bye := c.ack
			bye.Method, bye.CSeq = "BYE", 5
			c.a.Send(c.a.Request(bye))
			if r := c.b.WaitRequest("BYE", 3*time.Second); r == nil {
				t.Fatal("bob got no BYE after the restart")
			} else {
				c.b.Respond(r, 200, "OK", "", "")
			}
			c.a.Expect(200)
			if fs := c.flows(); len(fs) != 0 {
				t.Errorf("after the BYE the call still has %d relay flows", len(fs))
			}
			if _, ok := e.activeCall(c.callID); ok {
				t.Error("after the BYE the call is still listed")
			}
			cdr, ok := e.cdrOf(c.callID)
			if !ok {
				t.Fatal("no CDR for the call ended after the restart")
			}
			if cdr["end_reason"] != "bye" || cdr["answered"] != before.Answered.Format(time.RFC3339Nano) {
				t.Errorf("CDR %v: want end_reason bye and the real answer time %v", cdr, before.Answered)
			}
			e.legitCall()
		})
	}
}

// A call whose media stopped while sipd was down, for longer than the
// media timeout, is ended as soon as sipd is back: each phone gets a BYE
// and the CDR says why.
func TestCallTimedOutWhileDown(t *testing.T) {
	e := newEnv(t, func(c *sipd.Config) {
		withDatapath("tc")(c)
		c.Media.Timeout = sipd.Duration(2 * time.Second)
	})
	callerMedia, calleeMedia, alice, bob := e.phones()
	c := e.relayedCall(callerMedia, calleeMedia, 0)
	alice.talk(c.callerRelay, time.Second)
	bob.talk(c.calleeRelay, time.Second)
	time.Sleep(time.Second)
	e.sipd.Kill() // the phones fell silent as it died
	time.Sleep(4 * time.Second)
	e.sipd.Restart()
	for _, p := range []*sipua.UA{c.a, c.b} {
		if r := p.WaitRequest("BYE", 5*time.Second); r == nil {
			t.Errorf("%s got no BYE for the call that timed out while sipd was down", p.Addr())
		} else {
			p.Respond(r, 200, "OK", "", "")
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if cdr, ok := e.cdrOf(c.callID); ok {
			if cdr["end_reason"] != "media timeout" {
				t.Errorf("CDR %v, want end_reason media timeout", cdr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no CDR for the call that timed out while sipd was down")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fs := c.flows(); len(fs) != 0 {
		t.Errorf("the timed-out call still has %d relay flows", len(fs))
	}
	e.legitCall()
}

// A call killed with sipd before either phone sent any media: its flows
// were learning, and after the restart they learn: the phones' audio is
// relayed both ways and the flows lock.
func TestLearningFlowsKeepLearning(t *testing.T) {
	for _, dp := range []string{"tc", "userspace"} {
		t.Run(dp, func(t *testing.T) {
			e := newEnv(t, withDatapath(dp))
			callerMedia, calleeMedia, alice, bob := e.phones()
			c := e.relayedCall(callerMedia, calleeMedia, 0)
			e.sipd.Kill()
			e.sipd.Restart()
			alice.talk(c.callerRelay, 5*time.Second)
			bob.talk(c.calleeRelay, 5*time.Second)
			time.Sleep(5*time.Second + 300*time.Millisecond)
			c.checkAudio(alice, bob, "after the restart")
			c.hangup()
		})
	}
}
