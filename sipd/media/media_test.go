package media

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/sipua"
	"sipxdp/relay"
	"sipxdp/sipd/sdprewrite"
)

type peer struct {
	rtp, rtcp netip.AddrPort
	mux       bool
}

type peerKey struct {
	call  string
	index int
	side  relay.Side
}

// fakeEngine hands out ports 40000, 40002, ... and remembers what it was
// told.
type fakeEngine struct {
	mu        sync.Mutex
	sessions  map[string]map[int]relay.StreamPorts
	peers     map[peerKey]peer
	setPeers  int
	next      uint16
	draining  bool
	exhausted bool
	deleted   []string
	removed   []int
	families  [][2]relay.Family
	specs     [][2]relay.LegSpec // every AddStream's, in order
	// signals records SetSignal calls as "call side addr" (addr "-" when
	// invalid).
	signals []string
	// restoredSince is the since of the last RestoreStream.
	restoredSince time.Time
	// security is the last SetSecurity per leg.
	security map[peerKey]relay.LegSecurity
	// sideOpts and tos are the last SetSideOptions and SetTOS per call.
	sideOpts map[string][2]relay.SideOptions
	tos      map[string]relay.TOS
	drop     map[string]bool // the last SetDrop per call
}

func (f *fakeEngine) SetSideOptions(id string, side relay.Side, o relay.SideOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[id]; !ok {
		return relay.ErrSessionNotFound
	}
	if f.sideOpts == nil {
		f.sideOpts = map[string][2]relay.SideOptions{}
	}
	so := f.sideOpts[id]
	so[side] = o
	f.sideOpts[id] = so
	return nil
}

func (f *fakeEngine) SetDrop(id string, drop bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[id]; !ok {
		return relay.ErrSessionNotFound
	}
	if f.drop == nil {
		f.drop = map[string]bool{}
	}
	f.drop[id] = drop
	return nil
}

func (f *fakeEngine) SetTOS(id string, tos relay.TOS) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[id]; !ok {
		return relay.ErrSessionNotFound
	}
	if f.tos == nil {
		f.tos = map[string]relay.TOS{}
	}
	f.tos[id] = tos
	return nil
}

func (f *fakeEngine) SetSecurity(id string, index int, side relay.Side, sec relay.LegSecurity) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[id][index]; !ok {
		return relay.ErrStreamNotFound
	}
	if f.security == nil {
		f.security = map[peerKey]relay.LegSecurity{}
	}
	f.security[peerKey{id, index, side}] = sec
	return nil
}

// fakeCert stands for the relay's DTLS certificate: only its fingerprint
// reaches the SDP.
var fakeCert = []byte("relay certificate")

func (f *fakeEngine) CertificateDER() []byte { return fakeCert }

func newFake() *fakeEngine {
	return &fakeEngine{sessions: map[string]map[int]relay.StreamPorts{}, peers: map[peerKey]peer{}, next: 40000}
}

var relayAddr = netip.MustParseAddr("203.0.113.1")

func (f *fakeEngine) CreateSession(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.draining {
		return fmt.Errorf("create session %q: %w", id, relay.ErrDraining)
	}
	if _, ok := f.sessions[id]; ok {
		return relay.ErrSessionExists
	}
	f.sessions[id] = map[int]relay.StreamPorts{}
	return nil
}

func (f *fakeEngine) AddStream(id string, index int, a, b relay.LegSpec) (relay.StreamPorts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[id]
	if !ok {
		return relay.StreamPorts{}, relay.ErrSessionNotFound
	}
	if sp, ok := s[index]; ok {
		return sp, nil
	}
	if f.exhausted {
		return relay.StreamPorts{}, fmt.Errorf("add stream: %w", relay.ErrPortsExhausted)
	}
	leg := func() relay.LegPorts {
		p := f.next
		f.next += 2
		return relay.LegPorts{Local: netip.MustParseAddr("10.0.0.1"), Advertised: relayAddr, RTP: p, RTCP: p + 1}
	}
	sp := relay.StreamPorts{A: leg(), B: leg()}
	s[index] = sp
	f.families = append(f.families, [2]relay.Family{a.Family, b.Family})
	f.specs = append(f.specs, [2]relay.LegSpec{a, b})
	return sp, nil
}

func (f *fakeEngine) SetPeer(id string, index int, side relay.Side, rtp, rtcp netip.AddrPort, mux bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[id]
	if !ok {
		return relay.ErrSessionNotFound
	}
	if _, ok := s[index]; !ok {
		return relay.ErrStreamNotFound
	}
	f.setPeers++
	f.peers[peerKey{id, index, side}] = peer{rtp, rtcp, mux}
	return nil
}

func (f *fakeEngine) SetSignal(id string, side relay.Side, addr netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[id]; !ok {
		return relay.ErrSessionNotFound
	}
	a := "-"
	if addr.IsValid() {
		a = addr.String()
	}
	f.signals = append(f.signals, id+" "+side.String()+" "+a)
	return nil
}

// RestoreStream takes the stream's ports as given and its peers as
// announced, and remembers since.
func (f *fakeEngine) RestoreStream(id string, index int, legs [2]relay.RestoreLeg, since time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[id]
	if !ok {
		return relay.ErrSessionNotFound
	}
	if _, ok := s[index]; ok {
		return fmt.Errorf("restore stream %d: exists", index)
	}
	s[index] = relay.StreamPorts{A: legs[0].Ports, B: legs[1].Ports}
	for side, l := range legs {
		if l.Set {
			f.peers[peerKey{id, index, relay.Side(side)}] = peer{l.RTP, l.RTCP, l.Mux}
		}
	}
	f.restoredSince = since
	return nil
}

func (f *fakeEngine) signaled() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.signals...)
}

func (f *fakeEngine) RemoveStream(id string, index int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[id]
	if !ok {
		return relay.ErrSessionNotFound
	}
	if _, ok := s[index]; !ok {
		return relay.ErrStreamNotFound
	}
	delete(s, index)
	delete(f.peers, peerKey{id, index, relay.SideA})
	delete(f.peers, peerKey{id, index, relay.SideB})
	f.removed = append(f.removed, index)
	return nil
}

func (f *fakeEngine) DeleteSession(id string) (relay.SessionInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[id]; !ok {
		return relay.SessionInfo{}, relay.ErrSessionNotFound
	}
	delete(f.sessions, id)
	f.deleted = append(f.deleted, id)
	return relay.SessionInfo{}, nil
}

func (f *fakeEngine) peer(id string, index int, side relay.Side) (peer, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.peers[peerKey{id, index, side}]
	return p, ok
}

func (f *fakeEngine) ports(id string, index int) (relay.StreamPorts, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sp, ok := f.sessions[id][index]
	return sp, ok
}

func sdp(ip string, v int, media ...string) string {
	fam := "IP4"
	if strings.Contains(ip, ":") {
		fam = "IP6"
	}
	s := fmt.Sprintf("v=0\r\no=- 1 %d IN %s %s\r\ns=-\r\nc=IN %s %s\r\nt=0 0\r\n", v, fam, ip, fam, ip)
	for _, m := range media {
		s += m
	}
	return s
}

func audio(port int, attrs ...string) string {
	s := fmt.Sprintf("m=audio %d RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n", port)
	for _, a := range attrs {
		s += "a=" + a + "\r\n"
	}
	return s
}

func video(port int) string {
	return fmt.Sprintf("m=video %d RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n", port)
}

const (
	callerTag = "ctag"
	calleeTag = "etag"
	cid       = "call-1@test"
)

func build(t *testing.T, first string, fromTag, toTag string, cseq string, body string) sip.Message {
	t.Helper()
	return sipua.Message(t, first, fromTag, toTag, cid, cseq, body, "Contact: <sip:alice@192.0.2.10:5060>")
}

func invite(t *testing.T, body string) *sip.Request {
	return build(t, "INVITE sip:bob@example.com SIP/2.0", callerTag, "", "1 INVITE", body).(*sip.Request)
}

// inDialog is a request from the caller (fromCaller) or the callee.
func inDialog(t *testing.T, method string, fromCaller bool, seq int, body string) *sip.Request {
	from, to := callerTag, calleeTag
	if !fromCaller {
		from, to = calleeTag, callerTag
	}
	return build(t, method+" sip:x@192.0.2.20 SIP/2.0", from, to, fmt.Sprintf("%d %s", seq, method), body).(*sip.Request)
}

// response to a request the caller sent (or the callee, when !toCaller).
func response(t *testing.T, code int, toCaller bool, method string, body string) *sip.Response {
	from, to := callerTag, calleeTag
	if !toCaller {
		from, to = calleeTag, callerTag
	}
	return build(t, fmt.Sprintf("SIP/2.0 %d X", code), from, to, "1 "+method, body).(*sip.Response)
}

func parse(t *testing.T, m interface{ Body() []byte }) []sdprewrite.Media {
	t.Helper()
	ms, err := sdprewrite.Parse(m.Body())
	if err != nil {
		t.Fatalf("rewritten sdp does not parse: %v\n%s", err, m.Body())
	}
	return ms
}

// checkPoints checks that stream index of the SDP in m points at leg.
func checkPoints(t *testing.T, m interface {
	Body() []byte
	ContentLength() *sip.ContentLengthHeader
}, index int, leg relay.LegPorts) {
	t.Helper()
	if cl := m.ContentLength(); cl == nil || int(*cl) != len(m.Body()) {
		t.Errorf("Content-Length %v, body %d bytes", cl, len(m.Body()))
	}
	ms := parse(t, m)
	if index >= len(ms) {
		t.Fatalf("no m-line %d in\n%s", index, m.Body())
	}
	got := ms[index]
	if got.Addr != leg.Advertised || got.Port != leg.RTP {
		t.Errorf("m-line %d points at %v:%d, want the relay %v:%d\n%s", index, got.Addr, got.Port, leg.Advertised, leg.RTP, m.Body())
	}
}

func newCtl(mode string) (*Controller, *fakeEngine) {
	f := newFake()
	return New(Config{Mode: mode, Engine: f}), f
}

func TestOfferAnswerInInviteAnd200(t *testing.T) {
	c, f := newCtl(ModeAll)
	inv := invite(t, sdp("192.0.2.10", 1, audio(10000)))
	if err := c.Invite(inv, netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	sp, ok := f.ports(cid, 0)
	if !ok {
		t.Fatal("no stream created for the offer")
	}
	checkPoints(t, inv, 0, sp.B)
	if p, ok := f.peer(cid, 0, relay.SideA); !ok || p.rtp != netip.MustParseAddrPort("192.0.2.10:10000") || p.rtcp != netip.MustParseAddrPort("192.0.2.10:10001") || p.mux {
		t.Errorf("side A peer %+v %v", p, ok)
	}
	if f.families[0] != [2]relay.Family{relay.IPv4, relay.IPv4} {
		t.Errorf("leg families %v, want IPv4 both", f.families[0])
	}
	ring := response(t, 183, true, "INVITE", sdp("192.0.2.20", 1, audio(20000)))
	c.Response(ring)
	checkPoints(t, ring, 0, sp.A)
	ok200 := response(t, 200, true, "INVITE", sdp("192.0.2.20", 2, audio(20002)))
	c.Response(ok200)
	checkPoints(t, ok200, 0, sp.A)
	if p, _ := f.peer(cid, 0, relay.SideB); p.rtp != netip.MustParseAddrPort("192.0.2.20:20002") {
		t.Errorf("side B peer %v, want the 200's address", p.rtp)
	}
	// A retransmitted 200 gets the same bytes (same o= version).
	again := response(t, 200, true, "INVITE", sdp("192.0.2.20", 2, audio(20002)))
	c.Response(again)
	if string(again.Body()) != string(ok200.Body()) {
		t.Errorf("retransmission rewritten differently:\n%s\nvs\n%s", again.Body(), ok200.Body())
	}
	if c.Active() != 1 {
		t.Errorf("active %d", c.Active())
	}
	bye := inDialog(t, "BYE", false, 1, "")
	if err := c.Request(bye); err != nil {
		t.Fatal(err)
	}
	if len(f.deleted) != 1 || c.Active() != 0 {
		t.Errorf("after BYE: deleted %v, active %d", f.deleted, c.Active())
	}
}

func TestLateOffer(t *testing.T) {
	c, f := newCtl(ModeAll)
	inv := invite(t, "")
	if err := c.Invite(inv, netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	if len(inv.Body()) != 0 {
		t.Fatal("empty INVITE got a body")
	}
	ok200 := response(t, 200, true, "INVITE", sdp("192.0.2.20", 1, audio(20000)))
	c.Response(ok200)
	sp, ok := f.ports(cid, 0)
	if !ok {
		t.Fatal("offer in 200 created no stream")
	}
	checkPoints(t, ok200, 0, sp.A)
	if p, ok := f.peer(cid, 0, relay.SideB); !ok || p.rtp != netip.MustParseAddrPort("192.0.2.20:20000") {
		t.Errorf("side B peer %+v", p)
	}
	ack := inDialog(t, "ACK", true, 1, sdp("192.0.2.10", 1, audio(10000)))
	if err := c.Request(ack); err != nil {
		t.Fatal(err)
	}
	checkPoints(t, ack, 0, sp.B)
	if p, ok := f.peer(cid, 0, relay.SideA); !ok || p.rtp != netip.MustParseAddrPort("192.0.2.10:10000") {
		t.Errorf("side A peer %+v", p)
	}
}

func setup(t *testing.T, c *Controller, offer, answer string) {
	t.Helper()
	if err := c.Invite(invite(t, offer), netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	c.Response(response(t, 200, true, "INVITE", answer))
}

func TestReinviteHoldAndChangedPort(t *testing.T) {
	c, f := newCtl(ModeAll)
	setup(t, c, sdp("192.0.2.10", 1, audio(10000)), sdp("192.0.2.20", 1, audio(20000)))
	sp, _ := f.ports(cid, 0)
	// The callee puts the caller on hold, from a new port.
	hold := inDialog(t, "INVITE", false, 2, sdp("192.0.2.20", 2, audio(20010, "sendonly")))
	if err := c.Request(hold); err != nil {
		t.Fatal(err)
	}
	checkPoints(t, hold, 0, sp.A)
	if d := parse(t, hold)[0].Direction; d != "sendonly" {
		t.Errorf("direction %q after rewrite, want sendonly kept", d)
	}
	if p, _ := f.peer(cid, 0, relay.SideB); p.rtp != netip.MustParseAddrPort("192.0.2.20:20010") {
		t.Errorf("side B peer %v after re-INVITE, want the new port", p.rtp)
	}
	res := response(t, 200, false, "INVITE", sdp("192.0.2.10", 2, audio(10000, "recvonly")))
	c.Response(res)
	checkPoints(t, res, 0, sp.B)
	if sp2, _ := f.ports(cid, 0); sp2 != sp {
		t.Errorf("re-INVITE changed the relay ports: %+v -> %+v", sp, sp2)
	}
	// Resume from the caller: UPDATE this time.
	up := inDialog(t, "UPDATE", true, 3, sdp("192.0.2.11", 3, audio(10004)))
	if err := c.Request(up); err != nil {
		t.Fatal(err)
	}
	checkPoints(t, up, 0, sp.B)
	if p, _ := f.peer(cid, 0, relay.SideA); p.rtp != netip.MustParseAddrPort("192.0.2.11:10004") {
		t.Errorf("side A peer %v after UPDATE, want the new address", p.rtp)
	}
}

func TestRTCPMuxAndExplicitRTCP(t *testing.T) {
	c, f := newCtl(ModeAll)
	setup(t, c, sdp("192.0.2.10", 1, audio(10000, "rtcp-mux")), sdp("192.0.2.20", 1, audio(20000, "rtcp:20005")))
	if p, _ := f.peer(cid, 0, relay.SideA); !p.mux {
		t.Errorf("side A peer %+v, want rtcp-mux", p)
	}
	if p, _ := f.peer(cid, 0, relay.SideB); p.mux || p.rtcp != netip.MustParseAddrPort("192.0.2.20:20005") {
		t.Errorf("side B peer %+v, want RTCP at 20005", p)
	}
}

func TestRejectedStream(t *testing.T) {
	c, f := newCtl(ModeAll)
	inv := invite(t, sdp("192.0.2.10", 1, audio(10000), video(0), video(10002)))
	if err := c.Invite(inv, netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.ports(cid, 1); ok {
		t.Error("a stream was created for a port-0 m-line")
	}
	if ms := parse(t, inv); ms[1].Port != 0 {
		t.Errorf("rejected stream got port %d", ms[1].Port)
	}
	if _, ok := f.ports(cid, 2); !ok {
		t.Fatal("no stream for the video m-line")
	}
	// The callee rejects the video.
	res := response(t, 200, true, "INVITE", sdp("192.0.2.20", 1, audio(20000), video(0), video(0)))
	c.Response(res)
	if ms := parse(t, res); ms[2].Port != 0 || ms[1].Port != 0 {
		t.Errorf("rejected streams not kept rejected: %+v", ms)
	}
	if _, ok := f.ports(cid, 2); ok || len(f.removed) != 1 || f.removed[0] != 2 {
		t.Errorf("rejected video stream not removed: removed %v", f.removed)
	}
	sp, _ := f.ports(cid, 0)
	checkPoints(t, res, 0, sp.A)
}

// TestLegAddressPerSide: each leg's relay address follows the side it
// faces: the caller's media address, and the callee's signaling address
// until its SDP arrives (IPv6 caller, IPv4 callee here).
func TestLegAddressPerSide(t *testing.T) {
	f := newFake()
	var picked []netip.Addr
	c := New(Config{Mode: ModeAll, Engine: f, Pick: func(p netip.Addr) relay.LegSpec {
		picked = append(picked, p)
		return relay.LegSpec{Address: "if-" + p.String(), Family: familyOf(p)}
	}})
	if err := c.Invite(invite(t, sdp("2001:db8::10", 1, audio(10000))), netip.MustParseAddr("192.0.2.20"), ""); err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("192.0.2.20")}
	if len(picked) != 2 || picked[0] != want[0] || picked[1] != want[1] {
		t.Errorf("picked %v, want %v", picked, want)
	}
	if f.families[0] != [2]relay.Family{relay.IPv6, relay.IPv4} {
		t.Errorf("leg families %v, want IPv6 then IPv4", f.families[0])
	}
}

func TestIPv6Leg(t *testing.T) {
	c, f := newCtl(ModeAll)
	if err := c.Invite(invite(t, sdp("2001:db8::10", 1, audio(10000))), netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	if f.families[0][0] != relay.IPv6 {
		t.Errorf("leg A family %v, want IPv6", f.families[0][0])
	}
}

func TestCleanup(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, c *Controller)
	}{
		{"bye-from-caller", func(t *testing.T, c *Controller) { answer(t, c); c.Request(inDialog(t, "BYE", true, 2, "")) }},
		{"bye-from-callee", func(t *testing.T, c *Controller) { answer(t, c); c.Request(inDialog(t, "BYE", false, 1, "")) }},
		{"cancel-or-failure", func(t *testing.T, c *Controller) { c.End(cid, "failed") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := newCtl(ModeAll)
			if err := c.Invite(invite(t, sdp("192.0.2.10", 1, audio(10000))), netip.Addr{}, ""); err != nil {
				t.Fatal(err)
			}
			tc.end(t, c)
			if len(f.deleted) != 1 || f.deleted[0] != cid || c.Active() != 0 {
				t.Errorf("deleted %v, active %d", f.deleted, c.Active())
			}
			// A late response finds no call and is left alone.
			res := response(t, 200, true, "INVITE", sdp("192.0.2.20", 1, audio(20000)))
			c.Response(res)
			if ms := parse(t, res); ms[0].Port != 20000 {
				t.Errorf("response of an ended call rewritten")
			}
		})
	}
}

// answer is the callee's 2xx with SDP to the call set up by invite.
func answer(t *testing.T, c *Controller) {
	c.Response(response(t, 200, true, "INVITE", sdp("192.0.2.20", 1, audio(20000))))
}

// TestRequestOutsideTheDialog: in-dialog requests move or end the media
// only in the dialog the relay follows (the caller's tag and the
// answering branch's); anything else leaves the call as it was.
func TestRequestOutsideTheDialog(t *testing.T) {
	retag := func(r *sip.Request, from, to string) *sip.Request {
		r.From().Params.Add("tag", from)
		r.To().Params.Add("tag", to)
		return r
	}
	for _, tc := range []struct {
		name   string
		answer bool
		from   string
		to     string
	}{
		{"made-up tags", true, "evil1", "evil2"},
		{"caller's tag, made-up callee tag", true, callerTag, "evil"},
		{"made-up tag, callee's tag", true, "evil", calleeTag},
		{"callee's tag, made-up caller tag", true, calleeTag, "evil"},
		{"another fork's dialog", true, callerTag, "fork2"},
		{"early dialog", false, callerTag, calleeTag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := newCtl(ModeAll)
			setupCall := func() {
				if err := c.Invite(invite(t, sdp("192.0.2.10", 1, audio(10000))), netip.Addr{}, ""); err != nil {
					t.Fatal(err)
				}
				if tc.answer {
					answer(t, c)
				}
			}
			setupCall()
			before, _ := f.peer(cid, 0, relay.SideA)
			beforeB, _ := f.peer(cid, 0, relay.SideB)
			if err := c.Request(retag(inDialog(t, "BYE", true, 5, ""), tc.from, tc.to)); err != nil {
				t.Fatal(err)
			}
			if len(f.deleted) != 0 || c.Active() != 1 {
				t.Fatalf("BYE ended the call: deleted %v", f.deleted)
			}
			sets := f.setPeers
			for _, m := range []string{"INVITE", "UPDATE"} {
				req := retag(inDialog(t, m, true, 6, sdp("198.51.100.66", 9, audio(6666))), tc.from, tc.to)
				c.Request(req)
			}
			if tc.answer && f.setPeers != sets {
				t.Errorf("re-INVITE or UPDATE moved a side (%d peer changes)", f.setPeers-sets)
			}
			if a, _ := f.peer(cid, 0, relay.SideA); tc.answer && a != before {
				t.Errorf("side A moved to %v", a)
			}
			if b, _ := f.peer(cid, 0, relay.SideB); b != beforeB {
				t.Errorf("side B moved to %v", b)
			}
		})
	}
	// The real dialog, from either side, still ends it.
	for _, fromCaller := range []bool{true, false} {
		c, f := newCtl(ModeAll)
		setup(t, c, sdp("192.0.2.10", 1, audio(10000)), sdp("192.0.2.20", 1, audio(20000)))
		c.Request(inDialog(t, "BYE", fromCaller, 5, ""))
		if len(f.deleted) != 1 {
			t.Errorf("BYE from caller %v did not end the call", fromCaller)
		}
	}
}

// TestAnswerInReliableProvisional: with 100rel the answer comes in a 183
// and the 2xx has no SDP; the 2xx still confirms its branch, so the BYE
// of that dialog ends the call and another branch's does not.
func TestAnswerInReliableProvisional(t *testing.T) {
	c, f := newCtl(ModeAll)
	if err := c.Invite(invite(t, sdp("192.0.2.10", 1, audio(10000))), netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	c.Response(response(t, 183, true, "INVITE", sdp("192.0.2.20", 1, audio(20000))))
	ok := response(t, 200, true, "INVITE", "")
	c.Response(ok)
	if len(ok.Body()) != 0 {
		t.Fatalf("2xx without SDP got a body: %s", ok.Body())
	}
	other := inDialog(t, "BYE", true, 2, "")
	other.To().Params.Add("tag", "fork2")
	c.Request(other)
	if len(f.deleted) != 0 {
		t.Fatal("another branch's BYE ended the call")
	}
	c.Request(inDialog(t, "BYE", false, 1, ""))
	if len(f.deleted) != 1 || c.Active() != 0 {
		t.Fatalf("the answered dialog's BYE left the call: deleted %v", f.deleted)
	}
}

// TestForkDialogSDP: a re-INVITE in another fork's dialog has its SDP
// pointed at the relay but moves nothing; one with unknown tags is
// refused.
func TestForkDialogSDP(t *testing.T) {
	c, f := newCtl(ModeAll)
	setup(t, c, sdp("192.0.2.10", 1, audio(10000)), sdp("192.0.2.20", 1, audio(20000)))
	sp, _ := f.ports(cid, 0)
	req := inDialog(t, "INVITE", true, 3, sdp("192.0.2.11", 2, audio(10010)))
	req.To().Params.Add("tag", "fork2")
	if err := c.Request(req); err != nil {
		t.Fatal(err)
	}
	checkPoints(t, req, 0, sp.B)
	if p, _ := f.peer(cid, 0, relay.SideA); p.rtp != netip.MustParseAddrPort("192.0.2.10:10000") {
		t.Errorf("side A moved to %v", p.rtp)
	}
	bad := inDialog(t, "INVITE", true, 4, sdp("192.0.2.11", 2, audio(10010)))
	bad.From().Params.Add("tag", "evil")
	if err := c.Request(bad); !errors.Is(err, ErrUnknownTag) {
		t.Errorf("unknown tags: error %v, want ErrUnknownTag", err)
	}
}

func TestModeDecision(t *testing.T) {
	inv := invite(t, "")
	for _, tc := range []struct {
		mode   string
		nated  bool
		header string
		want   bool
	}{
		{ModeAll, false, "", true},
		{ModeNAT, false, "", false},
		{ModeNAT, true, "", true},
		{ModeNone, true, "", false},
		{ModeNAT, false, "relay", true},
		{ModeAll, true, "none", false},
	} {
		c, _ := newCtl(tc.mode)
		req := inv.Clone()
		if tc.header != "" {
			req.AppendHeader(sip.NewHeader(OverrideHeader, tc.header))
		}
		if got := c.Relays(req, tc.nated); got != tc.want {
			t.Errorf("mode %s nated %v header %q: relays %v, want %v", tc.mode, tc.nated, tc.header, got, tc.want)
		}
	}
}

func TestUnavailable(t *testing.T) {
	t.Run("draining", func(t *testing.T) {
		c, f := newCtl(ModeAll)
		f.draining = true
		err := c.Invite(invite(t, sdp("192.0.2.10", 1, audio(10000))), netip.Addr{}, "")
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, relay.ErrDraining) {
			t.Fatalf("error %v, want ErrUnavailable wrapping ErrDraining", err)
		}
		if c.Active() != 0 {
			t.Error("a refused call is tracked")
		}
	})
	t.Run("ports exhausted", func(t *testing.T) {
		c, f := newCtl(ModeAll)
		f.exhausted = true
		err := c.Invite(invite(t, sdp("192.0.2.10", 1, audio(10000))), netip.Addr{}, "")
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, relay.ErrPortsExhausted) {
			t.Fatalf("error %v, want ErrUnavailable wrapping ErrPortsExhausted", err)
		}
		if c.Active() != 0 || len(f.deleted) != 1 {
			t.Errorf("refused call left behind: active %d, deleted %v", c.Active(), f.deleted)
		}
	})
}

func TestForkFirstAnswerThen2xxWins(t *testing.T) {
	c, f := newCtl(ModeAll)
	if err := c.Invite(invite(t, sdp("192.0.2.10", 1, audio(10000))), netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	mk := func(code int, tag, ip string, port int) *sip.Response {
		r := response(t, code, true, "INVITE", sdp(ip, 1, audio(port)))
		r.To().Params.Add("tag", tag) // replace the callee tag
		return r
	}
	c.Response(mk(183, "fork1", "192.0.2.21", 21000))
	c.Response(mk(183, "fork2", "192.0.2.22", 22000))
	if p, _ := f.peer(cid, 0, relay.SideB); p.rtp.Port() != 21000 {
		t.Errorf("early media follows %v, want the first fork", p.rtp)
	}
	c.Response(mk(200, "fork2", "192.0.2.22", 22000))
	if p, _ := f.peer(cid, 0, relay.SideB); p.rtp.Port() != 22000 {
		t.Errorf("after 200 media follows %v, want the answering fork", p.rtp)
	}
	late := mk(200, "fork1", "192.0.2.21", 21000)
	c.Response(late)
	if p, _ := f.peer(cid, 0, relay.SideB); p.rtp.Port() != 22000 {
		t.Errorf("a second 2xx moved the media to %v", p.rtp)
	}
}

func TestMediaTimeoutEvent(t *testing.T) {
	c, f := newCtl(ModeAll)
	setup(t, c, sdp("192.0.2.10", 1, audio(10000)), sdp("192.0.2.20", 1, audio(20000)))
	got := make(chan Ended, 1)
	c.OnTimeout(func(e Ended) { got <- e })
	events := make(chan relay.Event, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx, events); close(done) }()
	events <- relay.Event{CallID: cid, Reason: relay.ReasonMediaTimeout}
	select {
	case e := <-got:
		if e.CallerTag != callerTag || e.Reason != relay.ReasonMediaTimeout || e.Dialog.Invite == nil || e.Dialog.OK == nil {
			t.Errorf("ended %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no timeout callback")
	}
	cancel()
	<-done
	if len(f.deleted) != 1 || c.Active() != 0 {
		t.Errorf("timed-out call not deleted: %v", f.deleted)
	}
}

// TestSpiral: an INVITE that comes back through the proxy carries SDP
// already pointing at the relay; it must not become the relay's peer, and
// neither must the answer on its way back through the outer pass.
func TestSpiral(t *testing.T) {
	c, f := newCtl(ModeAll)
	inv := invite(t, sdp("192.0.2.10", 1, audio(10000)))
	if err := c.Invite(inv, netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	again := invite(t, string(inv.Body()))
	if err := c.Invite(again, netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.peer(cid, 0, relay.SideA); p.rtp != netip.MustParseAddrPort("192.0.2.10:10000") {
		t.Errorf("spiral moved side A to %v", p.rtp)
	}
	sp, _ := f.ports(cid, 0)
	inner := response(t, 200, true, "INVITE", sdp("192.0.2.20", 1, audio(20000)))
	c.Response(inner)
	checkPoints(t, inner, 0, sp.A)
	outer := response(t, 200, true, "INVITE", string(inner.Body()))
	c.Response(outer)
	checkPoints(t, outer, 0, sp.A)
	if p, _ := f.peer(cid, 0, relay.SideB); p.rtp != netip.MustParseAddrPort("192.0.2.20:20000") {
		t.Errorf("outer pass moved side B to %v", p.rtp)
	}
}

// TestDialogSlim: what a call keeps for its media-timeout BYEs is the
// dialog's headers, source and transport, not the whole INVITE and 2xx.
func TestDialogSlim(t *testing.T) {
	inv := build(t, "INVITE sip:bob@example.com SIP/2.0", callerTag, "", "7 INVITE", sdp("192.0.2.10", 1, audio(10000))).(*sip.Request)
	inv.AppendHeader(sip.NewHeader("Record-Route", "<sip:192.0.2.1;lr>"))
	inv.AppendHeader(sip.NewHeader("Record-Route", "<sip:192.0.2.2;lr>"))
	inv.AppendHeader(sip.NewHeader("User-Agent", "phone"))
	inv.SetSource("192.0.2.10:5060")
	inv.SetTransport("TCP")
	res := response(t, 200, true, "INVITE", sdp("192.0.2.20", 1, audio(20000)))
	res.SetSource("192.0.2.20:5070")
	type message interface {
		Body() []byte
		GetHeader(string) sip.Header
		GetHeaders(string) []sip.Header
		Source() string
		Transport() string
		String() string
	}
	for _, c := range []struct {
		name       string
		full, slim message
	}{{"invite", inv, slimRequest(inv)}, {"2xx", res, slimResponse(res)}} {
		if len(c.slim.Body()) != 0 || c.slim.GetHeader("Via") != nil || c.slim.GetHeader("User-Agent") != nil {
			t.Errorf("%s: slim copy keeps more than the dialog:\n%s", c.name, c.slim)
		}
		for _, name := range dialogHeaders {
			full, slim := c.full.GetHeaders(name), c.slim.GetHeaders(name)
			if len(full) != len(slim) {
				t.Errorf("%s: %d %s headers, want %d", c.name, len(slim), name, len(full))
				continue
			}
			for i := range full {
				if full[i].Value() != slim[i].Value() {
					t.Errorf("%s: %s %q, want %q", c.name, name, slim[i].Value(), full[i].Value())
				}
			}
		}
		if c.slim.Source() != c.full.Source() || c.slim.Transport() != c.full.Transport() {
			t.Errorf("%s: source %s %s, want %s %s", c.name, c.slim.Source(), c.slim.Transport(), c.full.Source(), c.full.Transport())
		}
	}
	if r := slimRequest(inv); r.Recipient.String() != inv.Recipient.String() || r.Method != sip.INVITE || r.CSeq().SeqNo != 7 {
		t.Errorf("slim INVITE %s %s cseq %v", r.Method, r.Recipient.String(), r.CSeq())
	}
}

func TestOfferPairs(t *testing.T) {
	c, _ := newCtl(ModeAll)
	cases := []struct {
		name string
		body string
		want int
	}{
		{"late offer", "", 2},
		{"audio", sdp("192.0.2.10", 1, audio(4000)), 2},
		{"audio and video", sdp("192.0.2.10", 1, audio(4000), video(4002)), 4},
		{"a rejected stream takes nothing", sdp("192.0.2.10", 1, audio(4000), video(0)), 2},
		{"unreadable", "not sdp", 2},
	}
	for _, k := range cases {
		if got := c.OfferPairs(invite(t, k.body)); got != k.want {
			t.Errorf("%s: %d pairs, want %d", k.name, got, k.want)
		}
	}
}

// The engine hears where each side signals from, a latching hint, and
// every message that starts a side's media (SDP, a 2xx to the INVITE)
// opens the learning windows again.
func TestSignalingAddresses(t *testing.T) {
	c, f := newCtl(ModeAll)
	inv := invite(t, sdp("10.1.1.10", 1, audio(10000))) // a NATed caller's private address
	inv.SetSource("198.51.100.10:5060")
	if err := c.Invite(inv, netip.MustParseAddr("203.0.113.20"), ""); err != nil {
		t.Fatal(err)
	}
	ring := response(t, 183, true, "INVITE", sdp("192.0.2.20", 1, audio(20000)))
	ring.SetSource("203.0.113.21:5060")
	c.Response(ring)
	ok200 := response(t, 200, true, "INVITE", "") // the answer came in the 183
	ok200.SetSource("203.0.113.21:5060")
	c.Response(ok200)
	reinv := inDialog(t, "INVITE", true, 2, sdp("10.1.1.10", 2, audio(10002)))
	reinv.SetSource("198.51.100.11:5060")
	if err := c.Request(reinv); err != nil {
		t.Fatal(err)
	}
	// A provisional response without SDP is no signaling of media.
	c.Response(response(t, 180, true, "INVITE", ""))
	want := []string{
		cid + " A 198.51.100.10", cid + " B 203.0.113.20", // the INVITE: its source and where it goes
		cid + " B 203.0.113.21",  // the 183 with the answer
		cid + " B -",             // the 200 without SDP
		cid + " A 198.51.100.11", // the re-INVITE
	}
	if got := f.signaled(); !slices.Equal(got, want) {
		t.Fatalf("SetSignal calls\n got %q\nwant %q", got, want)
	}
}
