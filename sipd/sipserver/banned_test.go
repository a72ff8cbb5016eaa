package sipserver

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/sipua"
	"sipxdp/relay"
	"sipxdp/sipd/media"
	"sipxdp/sipd/sipconf"
)

// newRawUAAt is newRawUA on another loopback address, for a source of
// its own.
func newRawUAAt(t *testing.T, ip string) *rawUA {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	return wrapUDP(t, c)
}

// silent reads for d and fails on anything but 100 Trying.
func (u *rawUA) silent(d time.Duration, what string) {
	u.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); {
		m := u.recv(time.Until(end))
		if m == nil {
			return
		}
		if r, ok := m.(*sip.Response); ok && r.StatusCode == 100 {
			continue
		}
		u.t.Fatalf("%s: got %q, want no answer", what, strings.SplitN(m.String(), "\r\n", 2)[0])
	}
}

// registerDigest registers user from ua with digest and returns the
// challenge it answered.
func registerDigest(t *testing.T, ua *rawUA, srv netip.AddrPort, user, callID string) string {
	t.Helper()
	reg := func(cseq int, extra ...string) string {
		return ua.request("REGISTER", "sip:example.org", "sip:"+user+"@example.org", "sip:"+user+"@example.org", callID, cseq,
			append([]string{"Expires: 600"}, extra...)...)
	}
	ua.send(srv, reg(1))
	ch := ua.expect(401).GetHeader("WWW-Authenticate").Value()
	ua.send(srv, reg(2, "Authorization: "+sipua.Authorization(ch, user, user+"pw", "REGISTER", "sip:example.org", "00000001")))
	ua.expect(200)
	return ch
}

// A banned source (the flood filter's ban) is served only for what a
// forger of its address cannot send; anything else gets no answer, but
// for a challenge now and then.
func TestBannedSourceNeedsProof(t *testing.T) {
	s := testServer(t, func(c *sipconf.Config) {
		c.Protect.Limit = 5
		c.Protect.Exempt = nil
		c.Protect.BannedChallengeInterval = sipconf.Duration(time.Second)
	})
	srv := serverAddr(t, s, "udp")
	ua := newRawUA(t)
	ch := registerDigest(t, ua, srv, "alice", "bp")
	if sipua.Param(ch, "opaque") == "" {
		t.Fatalf("challenge without opaque: %s", ch)
	}
	// Every loopback client shares 127.0.0.1: flood from it, and wait out
	// the challenge turn the flood itself took.
	for i := 0; i < 10; i++ {
		ua.send(srv, ua.request("OPTIONS", "sip:nobody@example.org", "sip:x@far.net", "sip:nobody@example.org", fmt.Sprint("bf", i), 1))
	}
	for ua.recv(300*time.Millisecond) != nil {
	}
	if st := s.Stats(); st.BannedSources != 1 {
		t.Fatalf("not banned: %+v", st)
	}
	time.Sleep(1100 * time.Millisecond)

	reg := func(callID string, cseq int, extra ...string) string {
		return ua.request("REGISTER", "sip:example.org", "sip:alice@example.org", "sip:alice@example.org", callID, cseq,
			append([]string{"Expires: 600"}, extra...)...)
	}
	authz := func(nc, pw string) string {
		return "Authorization: " + sipua.Authorization(ch, "alice", pw, "REGISTER", "sip:example.org", nc)
	}
	noOpaque := strings.Replace(authz("00000003", "alicepw"), `, opaque="`+sipua.Param(ch, "opaque")+`"`, "", 1)
	cases := []struct {
		name string
		msg  string
		want int // 0: no answer
	}{
		{"credentials for a nonce issued to this address", reg("bp", 3, authz("00000002", "alicepw")), 200},
		{"credentials without the opaque", reg("bp", 4, noOpaque), 0},
		{"wrong password", reg("bp", 5, authz("00000004", "wrong")), 0},
		{"replayed nonce count: challenged", reg("bp", 6, authz("00000002", "alicepw")), 401},
		{"keep-alive", ua.request("OPTIONS", "sip:"+srv.String(), "sip:alice@example.org", "sip:"+srv.String(), "bk", 1), 0},
		{"in-dialog request of no live call", strings.Replace(ua.request("BYE", "sip:bob@example.org", "sip:alice@example.org",
			"sip:bob@example.org", "bd", 1, "Route: <sip:"+srv.String()+";lr>"), "To: <sip:bob@example.org>", "To: <sip:bob@example.org>;tag=x", 1), 0},
		{"no credentials: the challenge turn", reg("b2", 1), 401},
		{"no credentials, turn taken", reg("b3", 1), 0},
	}
	// The flood's own challenge turn was dropped in the core: count from here.
	base := s.Stats()
	for _, c := range cases {
		ua.send(srv, c.msg)
		if c.want == 0 {
			ua.silent(500*time.Millisecond, c.name)
			continue
		}
		r := ua.expect(c.want)
		if c.want == 401 && sipua.Param(r.GetHeader("WWW-Authenticate").Value(), "opaque") == "" {
			t.Fatalf("%s: challenge without opaque", c.name)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	ua.send(srv, reg("b4", 1))
	ua.expect(401)

	st := s.Stats()
	b, b0 := st.Core.Banned, base.Core.Banned
	got := [4]uint64{b.ServedCredentials - b0.ServedCredentials, b.Challenged - b0.Challenged, b.Dropped - b0.Dropped,
		st.BannedPassed.Credentials - base.BannedPassed.Credentials}
	// Served: the good credentials; challenged: the replay and two turns;
	// dropped by the core: the wrong password; passed the filter for
	// credentials: the good ones, the wrong password, the replay.
	if want := [4]uint64{1, 3, 1, 3}; got != want {
		t.Fatalf("served, challenged, dropped, passed: %v, want %v", got, want)
	}
	// Filtered: no opaque, keep-alive, the in-dialog request, the turn taken.
	if n := st.DroppedFlood - base.DroppedFlood; n != 4 {
		t.Fatalf("%d dropped by the filter, want 4", n)
	}
}

// A challenged non-INVITE leaves no transaction: its retransmission is
// challenged anew (another nonce). An INVITE's stays to absorb the ACK,
// so its retransmission gets the same challenge back.
func TestChallengeTransactions(t *testing.T) {
	s := testServer(t, nil)
	srv := serverAddr(t, s, "udp")
	ua := newRawUA(t)
	for _, c := range []struct {
		method, hdr string
		code        int
		same        bool
	}{{"REGISTER", "WWW-Authenticate", 401, false}, {"INVITE", "Proxy-Authenticate", 407, true}} {
		ruri := "sip:example.org"
		if c.method == "INVITE" {
			ruri = "sip:bob@example.org"
		}
		msg := ua.request(c.method, ruri, "sip:alice@example.org", "sip:bob@example.org", "ct-"+c.method, 1)
		ua.send(srv, msg)
		first := sipua.Param(ua.expect(c.code).GetHeader(c.hdr).Value(), "nonce")
		time.Sleep(50 * time.Millisecond)
		ua.send(srv, msg) // the same bytes: a retransmission
		r := ua.expect(c.code)
		second := sipua.Param(r.GetHeader(c.hdr).Value(), "nonce")
		if c.method == "INVITE" {
			// The challenge's ACK, on the INVITE's branch, ends its
			// retransmissions.
			ack := strings.Replace(strings.Replace(msg, "INVITE sip:", "ACK sip:", 1), "1 INVITE", "1 ACK", 1)
			ua.send(srv, strings.Replace(ack, "To: <sip:bob@example.org>", "To: "+r.To().Value(), 1))
		}
		if (first == second) != c.same {
			t.Fatalf("%s retransmission: nonce %q then %q, want same %v", c.method, first, second, c.same)
		}
	}
}

// countingEngine is a relay that hands out ports and counts sessions.
type countingEngine struct {
	mu       sync.Mutex
	sessions map[string]bool
	created  int
	next     uint16
}

func (e *countingEngine) SetSecurity(string, int, relay.Side, relay.LegSecurity) error { return nil }
func (e *countingEngine) CertificateDER() []byte                                       { return nil }

func (e *countingEngine) CreateSession(id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sessions[id] {
		return relay.ErrSessionExists
	}
	e.sessions[id] = true
	e.created++
	return nil
}

func (e *countingEngine) AddStream(id string, index int, a, b relay.LegSpec) (relay.StreamPorts, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	leg := func() relay.LegPorts {
		e.next += 2
		return relay.LegPorts{Local: netip.MustParseAddr("127.0.0.1"), RTP: 40000 + e.next, RTCP: 40001 + e.next}
	}
	return relay.StreamPorts{A: leg(), B: leg()}, nil
}

func (e *countingEngine) SetPeer(string, int, relay.Side, netip.AddrPort, netip.AddrPort, bool) error {
	return nil
}
func (e *countingEngine) SetSignal(string, relay.Side, netip.Addr) error { return nil }
func (e *countingEngine) SetSideOptions(string, relay.Side, relay.SideOptions) error {
	return nil
}
func (e *countingEngine) SetTOS(string, relay.TOS) error { return nil }
func (e *countingEngine) SetDrop(string, bool) error     { return nil }
func (e *countingEngine) RestoreStream(string, int, [2]relay.RestoreLeg, time.Time) error {
	return nil
}
func (e *countingEngine) RemoveStream(string, int) error { return nil }
func (e *countingEngine) DeleteSession(id string) (relay.SessionInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.sessions, id)
	return relay.SessionInfo{}, nil
}

func (e *countingEngine) counts() (live, created int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sessions), e.created
}

// inviteSDP is an INVITE from ua with an audio offer.
func inviteSDP(ua *rawUA, from, callID string, extra ...string) string {
	sdp := fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\n", 30000+ua.addr().Port()%1000*2)
	msg := ua.request("INVITE", "sip:bob@example.org", from, "sip:bob@example.org", callID, 1, extra...)
	msg = strings.Replace(crlf(msg), "Content-Length: 0\r\n\r\n", fmt.Sprintf("Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", len(sdp), sdp), 1)
	return msg
}

// Relay ports, the transaction towards the callee and the call's entry
// come after authentication; relayed calls in setup from strangers are
// capped per source and, together, to a share of the relay.
func TestSetupAllocationsAndCaps(t *testing.T) {
	eng := &countingEngine{sessions: map[string]bool{}}
	ctrl := media.New(media.Config{Mode: media.ModeAll, Engine: eng})
	s := testServerWith(t, func(c *sipconf.Config) {
		c.Protect.Exempt = nil
		c.Protect.SetupPerSource = 2
		c.Protect.SetupUnauthenticatedShare = 50
	}, Options{Media: ctrl, RelayPairs: 12}) // 6 pairs: 3 calls of one stream
	srv := serverAddr(t, s, "udp")
	bob := newRawUA(t)
	registerDigest(t, bob, srv, "bob", "sb")

	// A local user's INVITE without credentials: challenged, nothing else.
	alice := newRawUAAt(t, "127.0.0.3")
	ua := alice
	ua.send(srv, inviteSDP(ua, "sip:alice@example.org", "sa1"))
	ch := ua.expect(407).GetHeader("Proxy-Authenticate").Value()
	if live, created := eng.counts(); created != 0 || live != 0 {
		t.Fatalf("challenged INVITE: %d relay sessions created", created)
	}
	if st := s.Stats(); st.CallsInSetup != 0 || st.Core.Forwarded != 0 {
		t.Fatalf("challenged INVITE: %d calls in setup, %d forwarded", st.CallsInSetup, st.Core.Forwarded)
	}
	bob.silent(300*time.Millisecond, "challenged INVITE")

	// Strangers: two from one source, one from another; then both caps.
	x1, x2 := newRawUAAt(t, "127.0.0.4"), newRawUAAt(t, "127.0.0.5")
	steps := []struct {
		ua     *rawUA
		callID string
		want   int // 0: forwarded (bob rings)
		reason string
	}{
		{x1, "sx1", 0, ""}, {x1, "sx2", 0, ""}, {x1, "sx3", 503, "your address"},
		{x2, "sx4", 0, ""}, {x2, "sx5", 503, "unauthenticated"},
	}
	rung := map[string]*sip.Request{}
	// Bob answers nothing, so the proxy retransmits each INVITE it
	// forwarded (Timer A); on a busy machine a retransmission can come
	// before the next call's INVITE.
	nextInvite := func() *sip.Request {
		t.Helper()
		for {
			inv := bob.expectRequest(sip.INVITE)
			if _, again := rung[inv.CallID().Value()]; !again {
				return inv
			}
		}
	}
	for _, st := range steps {
		st.ua.send(srv, inviteSDP(st.ua, "sip:mallory@far.net", st.callID))
		if st.want == 0 {
			inv := nextInvite()
			if inv.CallID().Value() != st.callID {
				t.Fatalf("bob got %s, want %s", inv.CallID().Value(), st.callID)
			}
			rung[st.callID] = inv
			continue
		}
		r := st.ua.expect(st.want)
		if r.GetHeader("Retry-After") == nil || !strings.Contains(r.GetHeader("Warning").Value(), st.reason) {
			t.Fatalf("%s: refusal without Retry-After or reason: %s", st.callID, r.String())
		}
	}
	if live, _ := eng.counts(); live != 3 {
		t.Fatalf("%d relay sessions, want 3", live)
	}
	// Alice with credentials is not capped.
	ua.send(srv, inviteSDP(ua, "sip:alice@example.org", "sa1", "Proxy-Authorization: "+
		sipua.Authorization(ch, "alice", "alicepw", "INVITE", "sip:bob@example.org", "00000001")))
	if inv := nextInvite(); inv.CallID().Value() != "sa1" {
		t.Fatalf("bob got %s, want alice's call", inv.CallID().Value())
	} else {
		rung["sa1"] = inv
	}
	st := s.Stats()
	if st.Setup.Calls != 3 || st.Setup.Pairs != 6 || st.Setup.RefusedPerSource != 1 || st.Setup.RefusedShare != 1 {
		t.Fatalf("setup stats %+v", st.Setup)
	}
	// A final answer ends the setup: the stranger's source may call again.
	bob.respond(rung["sx1"], 486, "Busy Here", "b1")
	x1.expect(486)
	x1.send(srv, inviteSDP(x1, "sip:mallory@far.net", "sx6"))
	if inv := nextInvite(); inv.CallID().Value() != "sx6" {
		t.Fatalf("bob got %s, want sx6", inv.CallID().Value())
	}
	if st := s.Stats(); st.Setup.Calls != 3 {
		t.Fatalf("setup stats after one ended and one began: %+v", st.Setup)
	}
}
