// Package sipload is the project's own SIP and RTP load generator: UAS
// instances that register with digest auth and answer in echo mode, and a
// UAC that places calls at a set rate, holds them and hangs up, with
// G.711-sized RTP every 20 ms on each call.
//
// It is built to stay out of the measurement: one UDP socket per UA for
// SIP, one reader goroutine per SIP socket, and a single 20 ms ticker that
// sends and drains every call's RTP socket (non-blocking), so there is no
// goroutine per packet or per RTP stream.
package sipload

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"golang.org/x/sys/unix"

	"sipxdp/sipd/digest"
	"sipxdp/sipd/sdprewrite"
)

// Config is one load run.
type Config struct {
	Proxy    netip.AddrPort // sipd's UDP listener
	Domain   string         // the users' domain; empty: the proxy's address
	Password string         // every user's password
	UASCount int            // callees uas0..uasN-1; calls go round-robin
	Total    int            // calls to place
	CPS      float64        // new calls per second
	Duration time.Duration  // hold time of each call
	// How long a call may take to be answered, and its BYE to be
	// answered, before it counts as failed. Zero: 10 s.
	Timeout time.Duration
}

// Result is what a run measured.
type Result struct {
	Attempted, Completed, Failed int
	Codes                        map[int]int // final responses to INVITE and BYE seen by the UAC; 0: local timeout
	SetupAvg, SetupP99           time.Duration
	LossAvg, LossMax             float64 // per call, fraction of the UAC's packets not echoed back
	TXPackets, RXPackets         uint64  // RTP, all legs
	UACRX, UASRX                 uint64  // RTP received by each side
	UACTX                        uint64  // RTP sent by the caller; below Duration/20ms per call when the ticker fell behind
	Elapsed                      time.Duration
}

// UACUser is the caller's user name.
const UACUser = "uac"

// UASUser is the name of callee i.
func UASUser(i int) string { return fmt.Sprintf("uas%d", i) }

// UsersFile is a sipd users file with every user the run needs.
func UsersFile(uasCount int, password string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s password=%s\n", UACUser, password)
	for i := range uasCount {
		fmt.Fprintf(&b, "%s password=%s\n", UASUser(i), password)
	}
	return b.String()
}

const (
	rtpSize  = 172 // 12-byte header + 160 bytes of G.711 at 20 ms
	rtpEvery = 20 * time.Millisecond
	// After the hold time the UAC stops sending and waits this long for
	// the last echoes before its BYE, so in-flight packets are not lost.
	drainWait = 100 * time.Millisecond
)

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
	n       int
	id      string
	callee  string
	fromTag string
	start   time.Time
	setup   time.Duration
	state   callState
	cseq    int
	authed  bool
	toHdr   string
	routes  []string
	target  string
	fd      int
	peer    unix.Sockaddr
	seq     uint16
	tx, rx  uint64
	seen    []uint64 // bitset of echoed sequence numbers (seq since start), so duplicates do not hide loss
	timer   *time.Timer
	ok      bool
	rtpPort uint16
}

// leg is a UAS's side of one call: an RTP socket that echoes.
type leg struct {
	fd      int
	port    uint16
	tx, rx  uint64
	last    *sip.Response // the 200, resent if the INVITE is
	created time.Time
}

type ua struct {
	user string
	conn *net.UDPConn
	addr netip.AddrPort
}

// load is one run's shared state; mu guards everything mutable.
type load struct {
	cfg    Config
	domain string
	uac    *ua
	uas    []*ua

	mu       sync.Mutex
	calls    map[string]*call
	legs     map[string]*leg
	codes    map[int]int
	setups   []time.Duration
	losses   []float64
	tx, uacR uint64
	uacT     uint64
	uasR     uint64
	done     int
	failed   int
	allDone  chan struct{}
	started  int
}

// Run registers the UAS instances, places cfg.Total calls and returns when
// every call has ended or ctx is done.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.UASCount < 1 || cfg.Total < 1 || cfg.CPS <= 0 {
		return Result{}, errors.New("sipload: uas count, total and cps must be positive")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	l := &load{cfg: cfg, domain: cfg.Domain, calls: map[string]*call{}, legs: map[string]*leg{},
		codes: map[int]int{}, allDone: make(chan struct{})}
	if l.domain == "" {
		l.domain = cfg.Proxy.Addr().String()
	}
	defer l.closeAll()
	var err error
	if l.uac, err = newUA(UACUser); err != nil {
		return Result{}, err
	}
	for i := range cfg.UASCount {
		u, err := newUA(UASUser(i))
		if err != nil {
			return Result{}, err
		}
		l.uas = append(l.uas, u)
		if err := l.register(u); err != nil {
			return Result{}, fmt.Errorf("register %s: %w", u.user, err)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { l.readLoop(l.uac, l.onUAC) })
	for _, u := range l.uas {
		wg.Go(func() { l.readLoop(u, l.onUAS) })
	}
	rtpCtx, stopRTP := context.WithCancel(ctx)
	wg.Go(func() { l.rtpLoop(rtpCtx) })
	defer func() { stopRTP(); l.closeSIP(); wg.Wait() }()

	// Calls start on a schedule, not one per tick: a ticker drops ticks
	// when the process is busy, which would quietly lower the rate, so
	// each wake-up starts every call that is due by now.
	begin := time.Now()
	interval := time.Duration(float64(time.Second) / cfg.CPS)
	tick := time.NewTicker(min(interval, 10*time.Millisecond))
	defer tick.Stop()
	for next := 0; next < cfg.Total; {
		due := min(cfg.Total, int(time.Since(begin)/interval)+1)
		for ; next < due; next++ {
			if err := l.startCall(next); err != nil {
				return l.result(begin), err
			}
		}
		if next == cfg.Total {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return l.result(begin), ctx.Err()
		}
	}
	select {
	case <-l.allDone:
	case <-ctx.Done():
		return l.result(begin), ctx.Err()
	}
	return l.result(begin), nil
}

func newUA(user string) (*ua, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("sip socket for %s: %w", user, err)
	}
	// Large buffers: a burst of INVITEs at a high rate must not be dropped
	// by the kernel, as nothing here retransmits.
	c.SetReadBuffer(4 << 20)
	c.SetWriteBuffer(4 << 20)
	return &ua{user: user, conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}, nil
}

func (l *load) closeSIP() {
	if l.uac != nil {
		l.uac.conn.Close()
	}
	for _, u := range l.uas {
		u.conn.Close()
	}
}

func (l *load) closeAll() {
	l.closeSIP()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.calls {
		if c.fd > 0 {
			unix.Close(c.fd)
			c.fd = -1
		}
		if c.timer != nil {
			c.timer.Stop()
		}
	}
	for id, g := range l.legs {
		unix.Close(g.fd)
		g.fd = -1
		delete(l.legs, id)
	}
}

func (u *ua) contact() string { return fmt.Sprintf("<sip:%s@%s>", u.user, u.addr) }

func (l *load) send(u *ua, text string) error {
	_, err := u.conn.WriteToUDPAddrPort([]byte(text), l.cfg.Proxy)
	return err
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// register runs REGISTER, answering one 401, before the reader starts.
func (l *load) register(u *ua) error {
	callID := "reg-" + randHex(6) + "@sipload"
	tag := randHex(4)
	uri := "sip:" + l.domain
	auth := ""
	for cseq := 1; cseq <= 2; cseq++ {
		msg := fmt.Sprintf("REGISTER %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s;rport\r\n"+
			"Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s\r\nTo: <sip:%s@%s>\r\nCall-ID: %s\r\n"+
			"CSeq: %d REGISTER\r\nContact: %s\r\n%sExpires: 3600\r\nContent-Length: 0\r\n\r\n",
			uri, u.addr, randHex(6), u.user, l.domain, tag, u.user, l.domain, callID, cseq, u.contact(), auth)
		if err := l.send(u, msg); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		res, err := readFinal(u.conn, 5*time.Second)
		if err != nil {
			return err
		}
		switch {
		case res.StatusCode == 200:
			return nil
		case res.StatusCode == 401 && cseq == 1:
			v, err := authorize(res, "WWW-Authenticate", u.user, l.cfg.Password, "REGISTER", uri)
			if err != nil {
				return err
			}
			auth = "Authorization: " + v + "\r\n"
		default:
			return fmt.Errorf("status %d", res.StatusCode)
		}
	}
	return errors.New("still challenged after authenticating")
}

// readFinal reads until a final response, for the synchronous REGISTER.
func readFinal(c *net.UDPConn, wait time.Duration) (*sip.Response, error) {
	buf := make([]byte, 65535)
	c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("no response: %w", err)
		}
		m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		if r, ok := m.(*sip.Response); ok && r.StatusCode >= 200 {
			return r, nil
		}
	}
}

// authorize answers the MD5 challenge in res's header hdr.
func authorize(res *sip.Response, hdr, user, password, method, uri string) (string, error) {
	for _, h := range res.GetHeaders(hdr) {
		p := challengeParams(h.Value())
		if alg := p["algorithm"]; alg != "" && !strings.EqualFold(alg, "MD5") {
			continue
		}
		realm, nonce := p["realm"], p["nonce"]
		ha1 := digest.HA1("MD5", user, realm, password)
		ha2 := digest.H("MD5", method+":"+uri)
		cnonce, nc := randHex(8), "00000001"
		var resp, qop string
		if strings.Contains(p["qop"], "auth") {
			qop = "auth"
			resp = digest.H("MD5", ha1+":"+nonce+":"+nc+":"+cnonce+":auth:"+ha2)
		} else {
			resp = digest.H("MD5", ha1+":"+nonce+":"+ha2)
		}
		v := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=MD5`,
			user, realm, nonce, uri, resp)
		if qop != "" {
			v += fmt.Sprintf(`, qop=auth, nc=%s, cnonce="%s"`, nc, cnonce)
		}
		if o, ok := p["opaque"]; ok {
			v += fmt.Sprintf(`, opaque="%s"`, o)
		}
		return v, nil
	}
	return "", fmt.Errorf("no MD5 challenge in %s", hdr)
}

// challengeParams reads the name=value pairs of a Digest challenge.
func challengeParams(v string) map[string]string {
	out := map[string]string{}
	_, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	for rest = strings.TrimSpace(rest); rest != ""; {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			break
		}
		key := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimSpace(rest[eq+1:])
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				break
			}
			val, rest = rest[1:end+1], rest[end+2:]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			val, rest = strings.TrimSpace(rest[:end]), rest[end:]
		}
		out[key] = val
		rest = strings.TrimPrefix(strings.TrimSpace(rest), ",")
		rest = strings.TrimSpace(rest)
	}
	return out
}

// readLoop parses every datagram on u's socket and hands it to h under mu,
// inline: no goroutine per message.
func (l *load) readLoop(u *ua, h func(*ua, sip.Message, netip.AddrPort)) {
	buf := make([]byte, 65535)
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		l.mu.Lock()
		h(u, m, from)
		l.mu.Unlock()
	}
}

// rtpSocket is a non-blocking UDP socket on loopback, polled by the ticker.
func rtpSocket() (int, uint16, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("rtp socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("bind rtp socket: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("rtp socket name: %w", err)
	}
	return fd, uint16(sa.(*unix.SockaddrInet4).Port), nil
}

func sdp(user string, port uint16) string {
	return fmt.Sprintf("v=0\r\no=%s 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", user, port)
}

func (l *load) startCall(n int) error {
	fd, port, err := rtpSocket()
	if err != nil {
		return err
	}
	c := &call{n: n, id: fmt.Sprintf("c%d-%s@sipload", n, randHex(4)), callee: UASUser(n % l.cfg.UASCount),
		fromTag: randHex(4), fd: fd, rtpPort: port, cseq: 1}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls[c.id] = c
	l.started++
	c.start = time.Now()
	c.timer = time.AfterFunc(l.cfg.Timeout, func() { l.timeout(c, stInviting) })
	return l.sendInvite(c, "")
}

func (l *load) inviteURI(c *call) string { return fmt.Sprintf("sip:%s@%s", c.callee, l.domain) }

func (l *load) sendInvite(c *call, auth string) error {
	body := sdp(UACUser, c.rtpPort)
	msg := fmt.Sprintf("INVITE %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%d;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s\r\nTo: <sip:%s@%s>\r\nCall-ID: %s\r\n"+
		"CSeq: %d INVITE\r\nContact: %s\r\n%sContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		l.inviteURI(c), l.uac.addr, c.id, c.cseq, UACUser, l.domain, c.fromTag, c.callee, l.domain, c.id,
		c.cseq, l.uac.contact(), auth, len(body), body)
	if err := l.send(l.uac, msg); err != nil {
		return fmt.Errorf("send invite: %w", err)
	}
	return nil
}

// timeout fails a call still in state st when its timer fires.
func (l *load) timeout(c *call, st callState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.state == st {
		l.codes[0]++
		l.finish(c, false)
	}
}

// finish ends a call and accounts for it; mu is held.
func (l *load) finish(c *call, ok bool) {
	if c.state == stDone {
		return
	}
	c.state = stDone
	c.ok = ok
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.fd > 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
	delete(l.calls, c.id)
	l.tx += c.tx
	l.uacT += c.tx
	l.uacR += c.rx
	if ok {
		l.setups = append(l.setups, c.setup)
		loss := 0.0
		if c.tx > 0 {
			got := 0
			for _, w := range c.seen {
				got += popcount(w)
			}
			loss = float64(c.tx-uint64(min(uint64(got), c.tx))) / float64(c.tx)
		}
		l.losses = append(l.losses, loss)
	} else {
		l.failed++
	}
	l.done++
	if l.done == l.cfg.Total {
		close(l.allDone)
	}
}

func popcount(w uint64) int {
	n := 0
	for ; w != 0; w &= w - 1 {
		n++
	}
	return n
}

// onUAC handles what the caller receives: responses to its INVITEs and BYEs.
func (l *load) onUAC(u *ua, m sip.Message, _ netip.AddrPort) {
	res, ok := m.(*sip.Response)
	if !ok {
		// In-dialog requests to the caller are not expected; answer so the
		// proxy does not retransmit them.
		if req, ok := m.(*sip.Request); ok && req.Method != sip.ACK {
			l.send(u, sip.NewResponseFromRequest(req, 200, "OK", nil).String())
		}
		return
	}
	c := l.calls[res.CallID().Value()]
	cs := res.CSeq()
	if c == nil || cs == nil || res.StatusCode < 200 {
		return
	}
	switch cs.MethodName {
	case sip.INVITE:
		l.onInviteFinal(c, res)
	case sip.BYE:
		if c.state == stBye {
			l.codes[res.StatusCode]++
			l.finish(c, res.StatusCode == 200)
		}
	}
}

func (l *load) onInviteFinal(c *call, res *sip.Response) {
	code := res.StatusCode
	if code >= 300 {
		// A non-2xx final is acknowledged in its own transaction (same branch).
		l.send(l.uac, fmt.Sprintf("ACK %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%d;rport\r\n"+
			"Max-Forwards: 70\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d ACK\r\nContent-Length: 0\r\n\r\n",
			l.inviteURI(c), l.uac.addr, c.id, cs(res), res.From().Value(), res.To().Value(), c.id, cs(res)))
		if c.state != stInviting || cs(res) != c.cseq {
			return
		}
		l.codes[code]++
		if code == 407 && !c.authed {
			v, err := authorize(res, "Proxy-Authenticate", UACUser, l.cfg.Password, "INVITE", l.inviteURI(c))
			if err == nil {
				c.authed = true
				c.cseq++
				if l.sendInvite(c, "Proxy-Authorization: "+v+"\r\n") == nil {
					return
				}
			}
		}
		l.finish(c, false)
		return
	}
	if c.state == stInviting {
		c.setup = time.Since(c.start)
		l.codes[code]++
		c.toHdr = res.To().Value()
		c.routes = nil
		for _, h := range res.GetHeaders("Record-Route") {
			c.routes = append(c.routes, h.Value())
		}
		slices.Reverse(c.routes)
		if ct := res.Contact(); ct != nil {
			c.target = ct.Address.String()
		} else {
			c.target = l.inviteURI(c)
		}
		ms, err := sdprewrite.Parse(res.Body())
		if err != nil || len(ms) == 0 || !ms[0].Addr.Is4() {
			l.codes[-1]++ // answered without usable SDP
			l.finish(c, false)
			return
		}
		a := ms[0].Addr.As4()
		c.peer = &unix.SockaddrInet4{Addr: a, Port: int(ms[0].Port)}
		c.state = stUp
		c.timer.Stop()
		c.timer = time.AfterFunc(l.cfg.Duration, func() { l.hangup(c) })
	}
	// ACK every 2xx, retransmissions too, so the callee stops resending.
	l.inDialog(c, "ACK", cs(res))
}

func cs(res *sip.Response) int {
	if h := res.CSeq(); h != nil {
		return int(h.SeqNo)
	}
	return 0
}

// inDialog sends a request in c's dialog, along its route set.
func (l *load) inDialog(c *call, method string, cseq int) {
	var routes string
	for _, r := range c.routes {
		routes += "Route: " + r + "\r\n"
	}
	l.send(l.uac, fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%s-%d;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n%s"+
		"Contact: %s\r\nContent-Length: 0\r\n\r\n",
		method, c.target, l.uac.addr, strings.ToLower(method), c.id, cseq, UACUser, l.domain, c.fromTag,
		c.toHdr, c.id, cseq, method, routes, l.uac.contact()))
}

// hangup stops the caller's RTP, waits for the last echoes, then sends BYE.
func (l *load) hangup(c *call) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.state != stUp {
		return
	}
	c.state = stDraining
	c.timer = time.AfterFunc(drainWait, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if c.state != stDraining {
			return
		}
		c.state = stBye
		c.cseq++
		l.inDialog(c, "BYE", c.cseq)
		c.timer = time.AfterFunc(l.cfg.Timeout, func() { l.timeout(c, stBye) })
	})
}

// onUAS handles what a callee receives: it answers INVITE at once with 180
// and 200 (its SDP), ACK needs nothing, and BYE ends its RTP leg.
func (l *load) onUAS(u *ua, m sip.Message, from netip.AddrPort) {
	req, ok := m.(*sip.Request)
	if !ok {
		return
	}
	id := req.CallID().Value()
	reply := func(r *sip.Response) { u.conn.WriteToUDPAddrPort([]byte(r.String()), from) }
	switch req.Method {
	case sip.INVITE:
		if g := l.legs[id]; g != nil {
			if g.last != nil {
				reply(g.last)
			}
			return
		}
		fd, port, err := rtpSocket()
		if err != nil {
			reply(sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil))
			return
		}
		g := &leg{fd: fd, port: port, created: time.Now()}
		l.legs[id] = g
		tag := randHex(4)
		mk := func(code int, reason, body string) *sip.Response {
			r := sip.NewResponseFromRequest(req, code, reason, nil)
			if !r.To().Params.Has("tag") {
				r.To().Params.Add("tag", tag)
			}
			r.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: u.user,
				Host: u.addr.Addr().String(), Port: int(u.addr.Port())}})
			if body != "" {
				r.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
				r.SetBody([]byte(body))
			}
			return r
		}
		reply(mk(180, "Ringing", ""))
		g.last = mk(200, "OK", sdp(u.user, port))
		reply(g.last)
	case sip.ACK:
	case sip.BYE:
		if g := l.legs[id]; g != nil {
			l.closeLeg(id, g)
		}
		reply(sip.NewResponseFromRequest(req, 200, "OK", nil))
	default:
		reply(sip.NewResponseFromRequest(req, 200, "OK", nil))
	}
}

// closeLeg accounts for and closes a callee's RTP leg; mu is held.
func (l *load) closeLeg(id string, g *leg) {
	l.drainLeg(g, make([]byte, 2048))
	unix.Close(g.fd)
	g.fd = -1 // the media ticker may still hold g in its snapshot
	l.tx += g.tx
	l.uasR += g.rx
	delete(l.legs, id)
}

// rtpLoop is the single media clock: each tick it echoes what every callee
// received, collects the caller's echoes and sends each live call's next
// packet.
func (l *load) rtpLoop(ctx context.Context) {
	t := time.NewTicker(rtpEvery)
	defer t.Stop()
	buf := make([]byte, 2048)
	pkt := make([]byte, rtpSize)
	pkt[0], pkt[1] = 0x80, 0 // RTP v2, PCMU
	const chunk = 64
	var legs []*leg
	var calls []*call
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Snapshot the live legs and calls, then work through them in
		// chunks, releasing mu between chunks so SIP handling is not held
		// up for a whole tick at thousands of calls. A leg or call that
		// ends meanwhile has its fd set to -1 under mu and is skipped.
		l.mu.Lock()
		legs = legs[:0]
		for _, g := range l.legs {
			legs = append(legs, g)
		}
		calls = calls[:0]
		for _, c := range l.calls {
			calls = append(calls, c)
		}
		l.mu.Unlock()
		for i := 0; i < len(legs); i += chunk {
			l.mu.Lock()
			for _, g := range legs[i:min(i+chunk, len(legs))] {
				if g.fd > 0 {
					l.drainLeg(g, buf)
				}
			}
			l.mu.Unlock()
		}
		for i := 0; i < len(calls); i += chunk {
			l.mu.Lock()
			for _, c := range calls[i:min(i+chunk, len(calls))] {
				l.tickCall(c, buf, pkt)
			}
			l.mu.Unlock()
		}
	}
}

// tickCall collects c's echoes and sends its next packet; mu is held.
func (l *load) tickCall(c *call, buf, pkt []byte) {
	if c.fd <= 0 || c.peer == nil {
		return
	}
	l.drainCall(c, buf)
	if c.state != stUp {
		return
	}
	seq := c.seq
	pkt[2], pkt[3] = byte(seq>>8), byte(seq)
	ts := uint32(seq) * 160
	pkt[4], pkt[5], pkt[6], pkt[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
	ssrc := uint32(c.n + 1)
	pkt[8], pkt[9], pkt[10], pkt[11] = byte(ssrc>>24), byte(ssrc>>16), byte(ssrc>>8), byte(ssrc)
	if unix.Sendto(c.fd, pkt, unix.MSG_DONTWAIT, c.peer) == nil {
		c.seq++
		c.tx++
	}
}

func (l *load) drainLeg(g *leg, buf []byte) {
	for {
		n, from, err := unix.Recvfrom(g.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return
		}
		g.rx++
		if unix.Sendto(g.fd, buf[:n], unix.MSG_DONTWAIT, from) == nil {
			g.tx++
		}
	}
}

func (l *load) drainCall(c *call, buf []byte) {
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return
		}
		c.rx++
		if n < 12 || uint64(c.tx) == 0 {
			continue
		}
		// Sequence numbers are 16-bit; a call longer than 21 minutes wraps,
		// and only the low 65536 are tracked.
		seq := int(uint16(buf[2])<<8 | uint16(buf[3]))
		for len(c.seen)*64 <= seq {
			c.seen = append(c.seen, 0)
		}
		c.seen[seq/64] |= 1 << (seq % 64)
	}
}

func (l *load) result(begin time.Time) Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Result{Attempted: l.started, Completed: l.done - l.failed, Failed: l.failed, Codes: map[int]int{},
		TXPackets: l.tx, RXPackets: l.uacR + l.uasR, UACRX: l.uacR, UASRX: l.uasR, UACTX: l.uacT, Elapsed: time.Since(begin)}
	// Calls still running when the context ended count as failed, and
	// their packets so far still count.
	r.Failed += l.started - l.done
	for _, c := range l.calls {
		r.TXPackets += c.tx
		r.UACTX += c.tx
		r.RXPackets += c.rx
		r.UACRX += c.rx
	}
	for _, g := range l.legs {
		r.TXPackets += g.tx
		r.RXPackets += g.rx
		r.UASRX += g.rx
	}
	for k, v := range l.codes {
		r.Codes[k] = v
	}
	if len(l.setups) > 0 {
		s := slices.Clone(l.setups)
		slices.Sort(s)
		var sum time.Duration
		for _, d := range s {
			sum += d
		}
		r.SetupAvg = sum / time.Duration(len(s))
		r.SetupP99 = s[min(len(s)-1, len(s)*99/100)]
	}
	if len(l.losses) > 0 {
		var sum float64
		for _, x := range l.losses {
			sum += x
			r.LossMax = max(r.LossMax, x)
		}
		r.LossAvg = sum / float64(len(l.losses))
	}
	return r
}
