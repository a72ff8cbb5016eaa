package security

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/netns"
	"sipxdp/internal/sipua"
	"sipxdp/sipd"
	"sipxdp/sipd/sdprewrite"
)

// Media helpers for the attack tests on the relay: a call that stays up
// with real RTP sockets at the addresses its SDP announces, and a sprayer
// that sends to every relay port from the attacker's namespace.

// withDatapath puts the relay on datapath: "userspace" or a kernel hook
// (newEnv then attaches it to every link into sipd's namespace).
func withDatapath(dp string) func(*sipd.Config) {
	return func(c *sipd.Config) { c.Media.Datapath = dp }
}

// SSRCs mark whose packet is whose.
const (
	ssrcCaller   = 0x0a11ce00
	ssrcCallee   = 0x0b0b0000
	ssrcAttacker = 0xbad0bad0
)

func rtpPacket(ssrc uint32, seq uint16) []byte {
	p := make([]byte, 12+160)
	p[0] = 0x80
	binary.BigEndian.PutUint16(p[2:4], seq)
	binary.BigEndian.PutUint32(p[4:8], uint32(seq)*160)
	binary.BigEndian.PutUint32(p[8:12], ssrc)
	return p
}

// receiver counts what arrives on a socket, by SSRC and by source.
type receiver struct {
	mu     sync.Mutex
	bySSRC map[uint32]int
	bySrc  map[netip.AddrPort]int
}

func newReceiver() *receiver {
	return &receiver{bySSRC: map[uint32]int{}, bySrc: map[netip.AddrPort]int{}}
}

// run reads conn until it is closed.
func (r *receiver) run(conn *net.UDPConn, wg *sync.WaitGroup) {
	defer wg.Done()
	buf := make([]byte, 2048)
	for {
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		var ssrc uint32
		if n >= 12 {
			ssrc = binary.BigEndian.Uint32(buf[8:12])
		}
		r.mu.Lock()
		r.bySSRC[ssrc]++
		r.bySrc[src]++
		r.mu.Unlock()
	}
}

func (r *receiver) count(ssrc uint32) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bySSRC[ssrc]
}

func (r *receiver) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.bySSRC {
		n += v
	}
	return n
}

func (r *receiver) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("by ssrc %x, by source %v", r.bySSRC, r.bySrc)
}

// rtpPhone is a phone's media socket: it sends one packet every 20 ms to
// the relay address its SDP answer or offer named, and counts what it
// receives.
type rtpPhone struct {
	t        *testing.T
	conn     *net.UDPConn
	ssrc     uint32
	rx       *receiver
	sent     atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
}

func newRTPPhone(t *testing.T, ns *netns.NS, bind netip.AddrPort, ssrc uint32) *rtpPhone {
	t.Helper()
	c, err := ns.ListenUDP(bind)
	if err != nil {
		t.Fatal(err)
	}
	p := &rtpPhone{t: t, conn: c, ssrc: ssrc, rx: newReceiver(), stop: make(chan struct{})}
	p.wg.Add(1)
	go p.rx.run(c, &p.wg)
	t.Cleanup(p.close)
	return p
}

// talk sends to dst at 50 packets/s until stop or for at most d.
func (p *rtpPhone) talk(dst netip.AddrPort, d time.Duration) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		end := time.After(d)
		for seq := uint16(0); ; seq++ {
			if _, err := p.conn.WriteToUDPAddrPort(rtpPacket(p.ssrc, seq), dst); err == nil {
				p.sent.Add(1)
			}
			select {
			case <-p.stop:
				return
			case <-end:
				return
			case <-tick.C:
			}
		}
	}()
}

// hush stops sending (receiving goes on).
func (p *rtpPhone) hush() {
	p.stopOnce.Do(func() { close(p.stop) })
}

func (p *rtpPhone) close() {
	p.hush()
	p.conn.Close()
	p.wg.Wait()
}

// sprayer sends RTP from the attacker's namespace to every port of both
// relay ranges, one sweep every period, and counts what comes back: a
// relay that latched to it sends it the call's audio.
type sprayer struct {
	conn     *net.UDPConn
	rx       *receiver
	sent     atomic.Int64
	sweeps   atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// Relay port ranges of newEnv's configuration.
var sprayRanges = []struct {
	addr   netip.Addr
	lo, hi uint16
}{
	{netns.V4.RelayA, 30000, 30999},
	{netns.V4.RelayB, 31000, 31999},
}

// spray starts the attacker. The load is bounded: period is at least
// 50 ms (2,000 packets a sweep, so at most 40,000 packets/s) and the
// sprayer stops by itself after maxDur.
func (e *env) spray(period, maxDur time.Duration) *sprayer {
	e.t.Helper()
	if period < 50*time.Millisecond {
		period = 50 * time.Millisecond
	}
	c, err := e.attacker.ListenUDP(netip.AddrPortFrom(e.attacker.V4, 0))
	if err != nil {
		e.t.Fatal(err)
	}
	var targets []netip.AddrPort
	for _, r := range sprayRanges {
		for p := uint32(r.lo); p <= uint32(r.hi); p++ {
			targets = append(targets, netip.AddrPortFrom(r.addr, uint16(p)))
		}
	}
	s := &sprayer{conn: c, rx: newReceiver(), stop: make(chan struct{})}
	s.wg.Add(2)
	go s.rx.run(c, &s.wg)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(period)
		defer tick.Stop()
		end := time.After(maxDur)
		for seq := uint16(0); ; {
			for _, dst := range targets {
				if _, err := c.WriteToUDPAddrPort(rtpPacket(ssrcAttacker, seq), dst); err == nil {
					s.sent.Add(1)
				}
			}
			seq++
			s.sweeps.Add(1)
			select {
			case <-s.stop:
				return
			case <-end:
				return
			case <-tick.C:
			}
		}
	}()
	e.t.Cleanup(s.close)
	return s
}

// halt stops sending; what is still in flight is counted until close.
func (s *sprayer) halt() { s.stopOnce.Do(func() { close(s.stop) }) }

func (s *sprayer) close() {
	s.halt()
	s.conn.Close()
	s.wg.Wait()
}

// liveCall is an answered call between alice (caller) and bob (callee)
// that stays up until hangup.
type liveCall struct {
	e      *env
	a, b   *sipua.UA
	callID string
	inv    sipua.Msg
	ack    sipua.Msg
	// Where each phone sends its RTP: the relay leg its SDP names.
	callerRelay, calleeRelay netip.AddrPort
}

var liveSeq atomic.Uint64

// mediaTarget is the RTP address of the first m-line of a message's SDP.
func mediaTarget(t *testing.T, body []byte) netip.AddrPort {
	t.Helper()
	ms, err := sdprewrite.Parse(body)
	if err != nil || len(ms) == 0 {
		t.Fatalf("sdp %q: %v", body, err)
	}
	return netip.AddrPortFrom(ms[0].Addr.Unmap(), ms[0].Port)
}

// relayedCall registers alice and bob, and sets up a call from alice,
// whose SDP announces callerMedia, to bob, who rings for ring and answers
// announcing calleeMedia.
func (e *env) relayedCall(callerMedia, calleeMedia netip.AddrPort, ring time.Duration) *liveCall {
	e.t.Helper()
	t := e.t
	c := &liveCall{e: e, a: e.caller(), b: e.callee(), callID: fmt.Sprintf("live-%d", liveSeq.Add(1))}
	c.a.Register("alice", domain, password)
	c.b.Register("bob", domain, password)
	c.inv = sipua.Msg{Method: "INVITE", RURI: "sip:bob@" + domain, From: "sip:alice@" + domain, To: "sip:bob@" + domain,
		CallID: c.callID, CSeq: 1, Body: sipua.SDP(callerMedia)}
	if r := c.a.Authenticated(c.inv, "alice", password); r != nil && r.StatusCode >= 300 {
		t.Fatalf("alice's call: %d %s", r.StatusCode, r.Reason)
	}
	req := c.b.ExpectRequest("INVITE")
	c.calleeRelay = mediaTarget(t, req.Body())
	c.b.Respond(req, 180, "Ringing", "bob-"+c.callID, "")
	time.Sleep(ring)
	c.b.Respond(req, 200, "OK", "bob-"+c.callID, sipua.SDP(calleeMedia))
	var ok *sip.Response
	for ok == nil {
		r := c.a.Response(3 * time.Second)
		if r == nil {
			t.Fatal("alice: no 200 for the INVITE")
		}
		if r.StatusCode == 200 {
			ok = r
		} else if r.StatusCode >= 300 {
			t.Fatalf("alice's call: %d %s", r.StatusCode, r.Reason)
		}
	}
	c.callerRelay = mediaTarget(t, ok.Body())
	c.ack = sipua.Msg{Method: "ACK", RURI: contactURI(t, ok), From: c.inv.From, FromTag: "ft-" + c.callID, To: c.inv.To,
		ToTag: ok.To().Params.GetOr("tag", ""), CallID: c.callID, CSeq: 2, Headers: recordRoute(ok)}
	c.a.Send(c.a.Request(c.ack))
	c.b.ExpectRequest("ACK")
	return c
}

// hangup sends alice's BYE and checks it is answered.
func (c *liveCall) hangup() {
	c.e.t.Helper()
	bye := c.ack
	bye.Method, bye.CSeq = "BYE", 3
	c.a.Send(c.a.Request(bye))
	c.b.Respond(c.b.ExpectRequest("BYE"), 200, "OK", "", "")
	c.a.Expect(200)
}

// phones opens alice's and bob's media sockets at the addresses their SDP
// announces (relayedCall's callerMedia and calleeMedia).
func (e *env) phones() (callerMedia, calleeMedia netip.AddrPort, alice, bob *rtpPhone) {
	callerMedia = netip.AddrPortFrom(netns.V4.Caller, 40000)
	calleeMedia = netip.AddrPortFrom(netns.V4.Callee, 40002)
	return callerMedia, calleeMedia, newRTPPhone(e.t, e.tp.Caller, callerMedia, ssrcCaller),
		newRTPPhone(e.t, e.tp.Callee, calleeMedia, ssrcCallee)
}

// checkAudio fails unless each phone heard at least 90 % of what the
// other sent, and every RTP flow of the call is locked (after the
// learning window); when names the moment for the messages.
func (c *liveCall) checkAudio(alice, bob *rtpPhone, when string) {
	t := c.e.t
	t.Helper()
	if got, sent := alice.rx.count(ssrcCallee), bob.sent.Load(); int64(got) < sent*9/10 {
		t.Errorf("%s: alice heard %d of bob's %d packets (%v)", when, got, sent, alice.rx)
	}
	if got, sent := bob.rx.count(ssrcCaller), alice.sent.Load(); int64(got) < sent*9/10 {
		t.Errorf("%s: bob heard %d of alice's %d packets (%v)", when, got, sent, bob.rx)
	}
	for _, f := range c.flows() {
		if f.Component == "rtp" && f.Latch != "locked" {
			t.Errorf("%s: flow %s (leg %s) is %q after the learning window, want locked", when, f.Local, f.Leg, f.Latch)
		}
	}
}

// flows reads the call's relay flows from the API.
func (c *liveCall) flows() []sipd.FlowJSON {
	c.e.t.Helper()
	var fs []sipd.FlowJSON
	c.e.sipd.GetJSON("/flows?call_id="+c.callID, &fs)
	return fs
}
