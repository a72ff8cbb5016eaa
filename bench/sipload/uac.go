package sipload

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/sdprewrite"
)

// UACConfig is the caller's side of a run.
type UACConfig struct {
	Proxy netip.AddrPort
	// Proxies, if set, spread the calls over several proxies sharing the
	// users: call n and its in-dialog requests go to Proxies[n%len], and
	// Proxy is then unused.
	Proxies    []netip.AddrPort
	Domain     string
	Password   string
	UASCount   int // callees uas0..; calls go round-robin
	Total      int
	CPS        float64
	Duration   time.Duration // hold time per call
	Timeout    time.Duration // answer / BYE timeout; 0: 10 s
	SIPAddr    netip.Addr
	MediaAddr  netip.Addr
	RTPPort    int
	RTPSockets int
	// SRTP makes every call a WebRTC caller: a webrtcpeer per call, bound
	// on MediaAddr, offers UDP/TLS/RTP/SAVPF, and once answered runs ICE
	// and DTLS-SRTP with the relay and sends its RTP through the SRTP
	// session. The result then has DTLS.
	SRTP     bool
	Progress func(Progress) // if set, called about once a second while running
}

// Progress is a running UAC's state.
type Progress struct {
	Elapsed                            time.Duration
	Started, Active, Completed, Failed int    // Active: calls answered and not yet ended
	TXPackets, RXPackets               uint64 // caller RTP so far
}

// After the hold time the UAC stops sending and waits this long for the
// last echoes before its BYE, so in-flight packets are not lost.
const drainWait = 100 * time.Millisecond

type callState int

const (
	stInviting callState = iota
	stUp
	stDraining
	stBye
	stDone
)

// call is the UAC's side of one call.
type call struct {
	n        int
	id       string
	callee   string
	fromTag  string
	start    time.Time
	setup    time.Duration
	state    callState
	cseq     int
	authed   bool
	answered bool
	toHdr    string
	routes   []string
	target   string
	timer    *time.Timer
	pair     int
	ssrc     uint32
	leg      *srtpLeg       // with UACConfig.SRTP
	proxy    netip.AddrPort // where its requests go
}

type uac struct {
	cfg       UACConfig
	domain    string
	mediaAddr netip.Addr
	ua        *ua
	media     *uacMedia
	srtp      *srtpMedia // with UACConfig.SRTP
	ports     []uint16
	ssrcBase  uint32

	mu                    sync.Mutex
	calls                 map[string]*call
	codes                 map[int]int
	callCodes             map[int]int // each call's outcome: the final answer to its (authorized) INVITE
	setups                []time.Duration
	losses                []float64
	jitters, rtts         []time.Duration
	rttMax                time.Duration
	tx, rx, skipped       uint64
	rtcpTX, rtcpRX        uint64
	started, done, failed int
	active                int
	dtls                  dtlsLog
	allDone               chan struct{}
}

// RunUAC places cfg.Total calls at cfg.CPS to uas0.. through the proxy,
// holds each for cfg.Duration with RTP and RTCP, and returns when every
// call has ended or ctx is done. UASRX in the result stays zero: the
// callees are another process.
func RunUAC(ctx context.Context, cfg UACConfig) (Result, error) {
	if cfg.UASCount < 1 || cfg.Total < 1 || cfg.CPS <= 0 {
		return Result{}, errors.New("sipload: uas count, total and cps must be positive")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.RTPSockets <= 0 {
		cfg.RTPSockets = 32
	}
	sipAddr := defaultAddr(cfg.SIPAddr, loopback)
	u := &uac{cfg: cfg, domain: cfg.Domain, mediaAddr: defaultAddr(cfg.MediaAddr, sipAddr),
		calls: map[string]*call{}, codes: map[int]int{}, callCodes: map[int]int{}, allDone: make(chan struct{}), ssrcBase: rand.Uint32()}
	if u.domain == "" {
		u.domain = u.proxyFor(0).Addr().String()
	}
	// The fixed RTP ports first: the SIP socket takes an ephemeral port on
	// the same address, which could otherwise be one of them.
	pairs, err := bindPairs(u.mediaAddr, cfg.RTPPort, cfg.RTPSockets)
	if err != nil {
		return Result{}, err
	}
	defer closePairs(pairs)
	if u.ua, err = newUA(UACUser, sipAddr); err != nil {
		return Result{}, err
	}
	defer u.ua.conn.Close()
	for _, p := range pairs {
		u.ports = append(u.ports, p.port)
	}
	u.media = newUACMedia(pairs)
	bgCtx, stopBG := context.WithCancel(ctx)
	if cfg.SRTP {
		u.srtp = newSRTPMedia(bgCtx, u.mediaAddr)
	}

	var wg sync.WaitGroup
	wg.Go(func() { readLoop(&u.mu, u.ua, u.onMessage) })
	u.media.run(bgCtx, &wg)
	if u.srtp != nil {
		wg.Go(func() { u.srtp.clock(bgCtx) })
	}
	begin := time.Now()
	if cfg.Progress != nil {
		wg.Go(func() { u.progress(bgCtx, begin) })
	}
	defer func() {
		stopBG()
		u.ua.conn.Close()
		closePairs(pairs)
		wg.Wait()
		u.stopTimers()
		u.closeLegs()
	}()

	// Calls start on a schedule, not one per tick: a ticker drops ticks
	// when the process is busy, which would quietly lower the rate, so
	// each wake-up starts every call that is due by now.
	interval := time.Duration(float64(time.Second) / cfg.CPS)
	tick := time.NewTicker(min(interval, 10*time.Millisecond))
	defer tick.Stop()
	for next := 0; next < cfg.Total; {
		due := min(cfg.Total, int(time.Since(begin)/interval)+1)
		for ; next < due; next++ {
			if err := u.startCall(next); err != nil {
				return u.result(begin), err
			}
		}
		if next == cfg.Total {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return u.result(begin), ctx.Err()
		}
	}
	select {
	case <-u.allDone:
	case <-ctx.Done():
		return u.result(begin), ctx.Err()
	}
	return u.result(begin), nil
}

// live sums the packets of the calls still running.
func (u *uac) live() (tx, rx, rtcpTX, rtcpRX uint64) {
	tx, rx, rtcpTX, rtcpRX = u.media.live()
	if u.srtp != nil {
		t, r, ct, cr := u.srtp.live()
		tx, rx, rtcpTX, rtcpRX = tx+t, rx+r, rtcpTX+ct, rtcpRX+cr
	}
	return tx, rx, rtcpTX, rtcpRX
}

func (u *uac) progress(ctx context.Context, begin time.Time) {
	every(ctx, time.Second, func(time.Time) {
		tx, rx, _, _ := u.live()
		u.mu.Lock()
		p := Progress{Elapsed: time.Since(begin), Started: u.started, Active: u.active,
			Completed: u.done - u.failed, Failed: u.failed, TXPackets: u.tx + tx, RXPackets: u.rx + rx}
		u.mu.Unlock()
		u.cfg.Progress(p)
	})
}

// closeLegs closes the peers of calls that did not end, when the run does,
// and waits for their readers and handshakes.
func (u *uac) closeLegs() {
	if u.srtp == nil {
		return
	}
	u.mu.Lock()
	for _, c := range u.calls {
		if c.leg != nil {
			c.leg.peer.Close()
		}
	}
	u.mu.Unlock()
	u.srtp.wg.Wait()
}

func (u *uac) stopTimers() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.calls {
		if c.timer != nil {
			c.timer.Stop()
		}
	}
}

// proxyFor is the proxy call n goes through.
func (u *uac) proxyFor(n int) netip.AddrPort {
	if len(u.cfg.Proxies) > 0 {
		return u.cfg.Proxies[n%len(u.cfg.Proxies)]
	}
	return u.cfg.Proxy
}

func (u *uac) startCall(n int) error {
	c := &call{n: n, id: fmt.Sprintf("c%d-%s@sipload", n, randHex(4)), callee: UASUser(n % u.cfg.UASCount),
		fromTag: randHex(4), cseq: 1, pair: n % len(u.ports), ssrc: u.ssrcBase + uint32(n), proxy: u.proxyFor(n)}
	if u.srtp != nil {
		// Outside the lock: a peer makes its certificate and binds.
		leg, err := u.srtp.newLeg(c.ssrc)
		if err != nil {
			return fmt.Errorf("webrtc caller: %w", err)
		}
		c.leg = leg
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls[c.id] = c
	u.started++
	c.start = time.Now()
	c.timer = time.AfterFunc(u.cfg.Timeout, func() { u.timeout(c, stInviting) })
	return u.sendInvite(c, "")
}

func (u *uac) inviteURI(c *call) string { return fmt.Sprintf("sip:%s@%s", c.callee, u.domain) }

func (u *uac) sendInvite(c *call, auth string) error {
	var body string
	if c.leg != nil {
		body = string(c.leg.offer)
	} else {
		body = sdp(UACUser, u.mediaAddr, u.ports[c.pair])
	}
	msg := fmt.Sprintf("INVITE %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%d;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s\r\nTo: <sip:%s@%s>\r\nCall-ID: %s\r\n"+
		"CSeq: %d INVITE\r\nContact: %s\r\n%sContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		u.inviteURI(c), u.ua.addr, c.id, c.cseq, UACUser, u.domain, c.fromTag, c.callee, u.domain, c.id,
		c.cseq, u.ua.contact(), auth, len(body), body)
	if err := u.ua.send(c.proxy, msg); err != nil {
		return fmt.Errorf("send invite: %w", err)
	}
	return nil
}

// timeout fails a call still in state st when its timer fires.
func (u *uac) timeout(c *call, st callState) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if c.state == st {
		u.codes[0]++
		if st == stInviting {
			u.callCodes[0]++
		}
		u.finish(c, false)
	}
}

// finish ends a call and accounts for it; mu is held.
func (u *uac) finish(c *call, ok bool) {
	if c.state == stDone {
		return
	}
	c.state = stDone
	if c.timer != nil {
		c.timer.Stop()
	}
	delete(u.calls, c.id)
	if c.answered {
		u.active--
	}
	var t streamTotals
	var had bool
	if c.leg != nil {
		t, had = u.srtp.remove(c.leg)
	} else {
		t, had = u.media.remove(c.pair, c.ssrc)
	}
	if had {
		u.tx += t.tx
		u.rx += t.rx
		u.skipped += t.skipped
		u.rtcpTX += t.rtcpTX
		u.rtcpRX += t.rtcpRX
		if ok {
			u.losses = append(u.losses, t.loss)
			u.jitters = append(u.jitters, t.jitter)
			if t.rttN > 0 {
				u.rtts = append(u.rtts, t.rttAvg)
				u.rttMax = max(u.rttMax, t.rttMax)
			}
		}
	}
	if ok {
		u.setups = append(u.setups, c.setup)
	} else {
		u.failed++
	}
	u.done++
	if u.done == u.cfg.Total {
		close(u.allDone)
	}
}

// onMessage handles what the caller receives: responses to its INVITEs
// and BYEs.
func (u *uac) onMessage(_ *ua, m sip.Message, from netip.AddrPort) {
	res, ok := m.(*sip.Response)
	if !ok {
		// In-dialog requests to the caller are not expected; answer so the
		// proxy does not retransmit them.
		if req, ok := m.(*sip.Request); ok && req.Method != sip.ACK {
			u.ua.send(from, sip.NewResponseFromRequest(req, 200, "OK", nil).String())
		}
		return
	}
	c := u.calls[res.CallID().Value()]
	cs := res.CSeq()
	if c == nil || cs == nil || res.StatusCode < 200 {
		return
	}
	switch cs.MethodName {
	case sip.INVITE:
		u.onInviteFinal(c, res)
	case sip.BYE:
		if c.state == stBye {
			u.codes[res.StatusCode]++
			u.finish(c, res.StatusCode == 200)
		}
	}
}

func (u *uac) onInviteFinal(c *call, res *sip.Response) {
	code := res.StatusCode
	if code >= 300 {
		// A non-2xx final is acknowledged in its own transaction (same branch).
		u.ua.send(c.proxy, fmt.Sprintf("ACK %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%d;rport\r\n"+
			"Max-Forwards: 70\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d ACK\r\nContent-Length: 0\r\n\r\n",
			u.inviteURI(c), u.ua.addr, c.id, cseqOf(res), res.From().Value(), res.To().Value(), c.id, cseqOf(res)))
		if c.state != stInviting || cseqOf(res) != c.cseq {
			return
		}
		u.codes[code]++
		if code == 407 && !c.authed {
			v, err := authorize(res, "Proxy-Authenticate", UACUser, u.cfg.Password, "INVITE", u.inviteURI(c))
			if err == nil {
				c.authed = true
				c.cseq++
				if u.sendInvite(c, "Proxy-Authorization: "+v+"\r\n") == nil {
					return
				}
			}
		}
		u.callCodes[code]++
		u.finish(c, false)
		return
	}
	if c.state == stInviting {
		now := time.Now()
		c.setup = now.Sub(c.start)
		u.codes[code]++
		c.toHdr = res.To().Value()
		c.routes = nil
		for _, h := range res.GetHeaders("Record-Route") {
			c.routes = append(c.routes, h.Value())
		}
		slices.Reverse(c.routes)
		if ct := res.Contact(); ct != nil {
			c.target = ct.Address.String()
		} else {
			c.target = u.inviteURI(c)
		}
		ms, err := sdprewrite.Parse(res.Body())
		if err != nil || len(ms) == 0 || !ms[0].Addr.Is4() || ms[0].Port == 0 || ms[0].Port == 65535 {
			u.codes[-1]++ // answered without usable SDP
			u.callCodes[-1]++
			u.inDialog(c, "ACK", cseqOf(res))
			u.finish(c, false)
			return
		}
		u.callCodes[code]++
		c.state = stUp
		c.answered = true
		u.active++
		if c.leg != nil {
			u.connect(c, res.Body(), now)
		} else {
			u.media.add(c.pair, c.ssrc, netip.AddrPortFrom(ms[0].Addr, ms[0].Port), now)
		}
		c.timer.Stop()
		c.timer = time.AfterFunc(u.cfg.Duration, func() { u.hangup(c) })
	}
	// ACK every 2xx, retransmissions too, so the callee stops resending.
	u.inDialog(c, "ACK", cseqOf(res))
}

func cseqOf(res *sip.Response) int {
	if h := res.CSeq(); h != nil {
		return int(h.SeqNo)
	}
	return 0
}

// inDialog sends a request in c's dialog, along its route set.
func (u *uac) inDialog(c *call, method string, cseq int) {
	var routes string
	for _, r := range c.routes {
		routes += "Route: " + r + "\r\n"
	}
	u.ua.send(c.proxy, fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%s-%d;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n%s"+
		"Contact: %s\r\nContent-Length: 0\r\n\r\n",
		method, c.target, u.ua.addr, strings.ToLower(method), c.id, cseq, UACUser, u.domain, c.fromTag,
		c.toHdr, c.id, cseq, method, routes, u.ua.contact()))
}

// hangup stops the caller's RTP, waits for the last echoes, then sends BYE.
func (u *uac) hangup(c *call) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if c.state != stUp {
		return
	}
	c.state = stDraining
	if c.leg != nil {
		u.srtp.stop(c.leg)
	} else {
		u.media.stop(c.pair, c.ssrc)
	}
	c.timer = time.AfterFunc(drainWait, func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		if c.state != stDraining {
			return
		}
		c.state = stBye
		c.cseq++
		u.inDialog(c, "BYE", c.cseq)
		c.timer = time.AfterFunc(u.cfg.Timeout, func() { u.timeout(c, stBye) })
	})
}

func (u *uac) result(begin time.Time) Result {
	tx, rx, rtcpTX, rtcpRX := u.live()
	u.mu.Lock()
	defer u.mu.Unlock()
	r := Result{Attempted: u.started, Completed: u.done - u.failed, Failed: u.failed, Codes: map[int]int{},
		TXPackets: u.tx + tx, RXPackets: u.rx + rx, UACRX: u.rx + rx, UACTX: u.tx + tx, TXSkipped: u.skipped,
		RTCPTX: u.rtcpTX + rtcpTX, RTCPRX: u.rtcpRX + rtcpRX, RTTMax: u.rttMax, RTTCalls: len(u.rtts),
		Elapsed: time.Since(begin)}
	// Calls still running when the context ended count as failed, and
	// their packets so far still count.
	r.Failed += u.started - u.done
	for k, v := range u.codes {
		r.Codes[k] = v
	}
	r.CallCodes = maps.Clone(u.callCodes)
	if len(u.setups) > 0 {
		s := slices.Clone(u.setups)
		slices.Sort(s)
		r.SetupAvg = avg(s)
		r.SetupP99 = s[min(len(s)-1, len(s)*99/100)]
	}
	if len(u.losses) > 0 {
		var sum float64
		for _, x := range u.losses {
			sum += x
			r.LossMax = max(r.LossMax, x)
		}
		r.LossAvg = sum / float64(len(u.losses))
	}
	if len(u.jitters) > 0 {
		r.JitterAvg, r.JitterMax = avg(u.jitters), slices.Max(u.jitters)
	}
	if len(u.rtts) > 0 {
		r.RTTAvg = avg(u.rtts)
	}
	if u.srtp != nil {
		r.DTLS = u.dtls.stats(begin)
		r.DTLS.DecryptFailures, r.DTLS.QueueDrops = u.srtp.decryptFailures.Load(), u.srtp.queueDrops.Load()
	}
	return r
}

func avg(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

// connect runs a WebRTC call's ICE and DTLS-SRTP against the relay's
// answer, then starts its RTP; mu is held. A call whose handshake fails
// is failed and hung up, as a browser would.
func (u *uac) connect(c *call, answer []byte, answeredAt time.Time) {
	u.srtp.wg.Go(func() {
		err := c.leg.peer.Connect(u.srtp.ctx, answer)
		done := time.Now()
		u.mu.Lock()
		defer u.mu.Unlock()
		u.dtls.add(done.Sub(answeredAt), done, err)
		if c.state != stUp {
			return
		}
		if err != nil {
			c.cseq++
			u.inDialog(c, "BYE", c.cseq)
			u.finish(c, false)
			return
		}
		u.srtp.start(c.leg, done)
	})
}
