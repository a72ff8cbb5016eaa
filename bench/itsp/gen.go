package itsp

import (
	"bytes"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"sipxdp/internal/digestclient"
)

// Message classes reported separately.
const (
	clsRamp = iota // initial registration
	clsNotify
	clsRegister // refresh during the hold
	clsCall     // INVITE with credentials -> 200
	clsBye
	nClasses
)

var classNames = [nClasses]string{"register-ramp", "notify", "register", "call", "bye"}

// Phases, set by the runner and read by every shard.
const (
	phIdle = iota
	phRamp
	phHold
	phDrain
	phStop
)

const (
	password = "itsp-secret"
	t1       = 500 * time.Millisecond
	t2       = 4 * time.Second
	timerB   = 32 * time.Second
	ringTime = 4 * time.Second
)

// hist is a latency histogram with 5 % wide buckets from 10 µs, safe for
// one writer and concurrent readers.
type hist struct{ b [400]atomic.Uint64 }

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us < 10 {
		return 0
	}
	i := int(math.Log(us/10)/math.Log(1.05)) + 1
	return min(i, 399)
}

func (h *hist) add(d time.Duration) { h.b[bucketOf(d)].Add(1) }

// quantile returns the upper edge of the bucket holding quantile q, in ms.
func (h *hist) quantile(q float64) float64 {
	var total uint64
	for i := range h.b {
		total += h.b[i].Load()
	}
	if total == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i := range h.b {
		seen += h.b[i].Load()
		if seen >= want {
			return 0.01 * math.Pow(1.05, float64(i))
		}
	}
	return 0
}

// counters of one message class, summed over shards by the runner.
type counters struct {
	offered, completed, timeouts, non2xx, retrans, dups, sent atomic.Uint64
	lat                                                       hist
}

// stats is shared by every shard: atomics only.
type stats struct {
	c         [nClasses]counters
	rampDone  atomic.Int64
	unexpect  atomic.Int64 // unexpected answers logged so far
	sendDrops atomic.Uint64
	// crossNode counts calls whose callee registered through another
	// proxy than the caller's: the shared location table at work.
	crossNode atomic.Uint64
	pktsOut   atomic.Uint64 // datagrams sent, retransmissions included
	pktsIn    atomic.Uint64 // datagrams received
}

func (st *stats) fail(cls int, code int, first []byte) {
	if code == 0 {
		st.c[cls].timeouts.Add(1)
	} else {
		st.c[cls].non2xx.Add(1)
	}
	if st.unexpect.Add(1) <= 5 {
		fmt.Fprintf(os.Stderr, "bench itsp: %s: failure (status %d) %q\n", classNames[cls], code, first)
	}
}

// control is how the runner drives the shards.
type control struct {
	phase atomic.Int32
	start atomic.Int64 // phase start, ns since base
	base  time.Time
	n     int // subscribers
	rates [nClasses]float64
	// proxies share one location table; shard i registers and calls
	// through proxies[i%len], and answers whichever sent it a request.
	proxies []netip.AddrPort
	domain  string // host part of AoRs and the proxy's URI
	st      *stats
}

func (c *control) now() int64 { return int64(time.Since(c.base)) }

// Transaction kinds of the client side.
const (
	kNotify = iota
	kReg1   // REGISTER without credentials, expecting 401
	kReg2
	kInv1 // INVITE without credentials, expecting 407
	kInv2
	kBye
)

type txn struct {
	id       uint64
	kind     int
	cls      int
	sub      int
	callee   int
	buf      []byte
	first    int64 // first send
	interval time.Duration
	deadline int64
	ringing  bool // INVITE: a provisional stopped retransmission
	done     bool
	gen      uint32
	// a call, after the 200
	callID  string
	fromTag string
	toTag   string
	route   string
	target  string
}

// provisional takes a 1xx: an INVITE stops retransmitting and waits for
// the callee to answer; any other request retransmits at T2 from now on.
func (t *txn) provisional(now int64) {
	if t.kind == kInv1 || t.kind == kInv2 {
		t.ringing = true
		t.deadline = now + int64(timerB) + int64(ringTime)
	} else {
		t.interval = t2
	}
}

// uasCall is the callee side of a call, by Call-ID.
type uasCall struct {
	last     []byte // last response to the INVITE
	id       string
	held     []byte // the 200, sent when the ring time ends
	from     uint8  // the proxy that sent the INVITE
	ok       []byte // the 200, once sent
	okAt     int64
	interval time.Duration
	acked    bool
	bye      bool
	gen      uint32
}

type tev struct {
	at  int64
	tx  *txn
	uc  *uasCall
	gen uint32
	ok  bool // uc: send the 200
	del bool // uc: forget the call
}

// shard is one socket and the subscribers it hosts (index shard, shard+K,
// ...), driven by one goroutine: read, answer, send what the schedule
// says is due, retransmit, flush.
type shard struct {
	c       *control
	idx, k  int
	s       *sock
	proxy   netip.AddrPort // this shard's own proxy, proxies[pi]
	pi      uint8
	from    uint8  // the proxy the datagram being handled came from
	local   string // "127.0.0.1:port"
	nLocal  int
	regCSeq []uint32
	txns    map[uint64]*txn
	uas     map[string]*uasCall
	timers  *wheel
	fireFn  func(tev)
	notifyT []byte // NOTIFY template, patched in place
	notifyO [3]int // offsets of its branch, user and Call-ID fields
	free    []*txn
	nextID  uint64
	out     [][]byte
	outTo   []uint8 // each out message's proxy
	m       msg
	phase   int32
	pStart  int64
	sentCls [nClasses]uint64 // scheduled sends in this phase
	cursor  [nClasses]int    // next local subscriber per class
	fireNow int64
	tagSeq  uint64
	unacked int          // callee calls whose 200 is not acknowledged
	active  atomic.Int64 // transactions and unacknowledged calls, for the drain
}

func newShard(c *control, idx, k int, local netip.Addr) (*shard, error) {
	s, err := openSock(local, c.proxies)
	if err != nil {
		return nil, err
	}
	n := (c.n - idx + k - 1) / k
	pi := idx % len(c.proxies)
	sh := &shard{c: c, idx: idx, k: k, s: s, proxy: c.proxies[pi], pi: uint8(pi), local: fmt.Sprintf("%s:%d", local, s.port), nLocal: n,
		regCSeq: make([]uint32, n), txns: map[uint64]*txn{}, uas: map[string]*uasCall{},
		timers: newWheel(c.now())}
	sh.fireFn = sh.fireOne
	sh.buildNotify()
	return sh, nil
}

// buildNotify prepares the NOTIFY template: fixed-width fields (16 hex
// digits of branch and Call-ID, 7 digits of user) patched per message.
func (sh *shard) buildNotify() {
	proxy := sh.proxy.String()
	b := []byte("NOTIFY sip:" + proxy + " SIP/2.0\r\nVia: SIP/2.0/UDP " + sh.local + ";branch=" + branchPrefix)
	sh.notifyO[0] = len(b)
	b = append(b, "0000000000000000;rport\r\nMax-Forwards: 70\r\nFrom: <sip:user"...)
	sh.notifyO[1] = len(b)
	b = append(b, "0000000@"+sh.c.domain+">;tag=ka\r\nTo: <sip:"+proxy+">\r\nCall-ID: ka-"...)
	sh.notifyO[2] = len(b)
	b = append(b, "0000000000000000\r\nCSeq: 1 NOTIFY\r\nEvent: keep-alive\r\nContent-Length: 0\r\n\r\n"...)
	sh.notifyT = b
}

func putHex16(b []byte, v uint64) {
	const hexd = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = hexd[v&15]
		v >>= 4
	}
}

func user(i int) string { return fmt.Sprintf("user%07d", i) }

func (sh *shard) sub(local int) int { return sh.idx + local*sh.k }

func (sh *shard) newTxn(kind, cls, sub int) *txn {
	var t *txn
	if n := len(sh.free); n > 0 {
		t = sh.free[n-1]
		sh.free = sh.free[:n-1]
		buf, gen := t.buf[:0], t.gen+1
		*t = txn{buf: buf, gen: gen}
	} else {
		t = &txn{buf: make([]byte, 0, 1024)}
	}
	sh.nextID++
	t.id = uint64(sh.idx)<<48 | sh.nextID
	t.kind, t.cls, t.sub = kind, cls, sub
	return t
}

func (sh *shard) branch(b []byte, id uint64) []byte {
	b = append(b, branchPrefix...)
	const hexd = "0123456789abcdef"
	for i := 60; i >= 0; i -= 4 {
		b = append(b, hexd[(id>>uint(i))&15])
	}
	return b
}

func (sh *shard) tag() string {
	sh.tagSeq++
	return strconv.FormatUint(uint64(sh.idx)<<40|sh.tagSeq, 36)
}

// start sends a new client transaction and arms its timers.
func (sh *shard) start(t *txn, now int64) {
	t.first = now
	t.interval = t1
	t.deadline = now + int64(timerB)
	sh.txns[t.id] = t
	sh.emit(t.buf, sh.pi)
	sh.c.st.c[t.cls].sent.Add(1)
	sh.timers.add(tev{at: now + int64(t.interval), tx: t, gen: t.gen})
}

// emit queues b for the proxy with index to.
func (sh *shard) emit(b []byte, to uint8) {
	sh.out = append(sh.out, b)
	sh.outTo = append(sh.outTo, to)
}

func (sh *shard) finish(t *txn) {
	t.done = true
	delete(sh.txns, t.id)
	t.gen++
	sh.free = append(sh.free, t)
}

// digest answers chal, the MD5 challenge; on an unanswerable one it sends
// no credentials and sipd's answer counts as the failure.
func (sh *shard) digest(sub int, method, uri string, chal []byte) string {
	v, _ := digestclient.Answer(string(chal), digestclient.Request{Method: method, URI: uri, Username: user(sub),
		Password: password, Cnonce: sh.tag()})
	return v
}

func (sh *shard) via(b []byte, id uint64) []byte {
	b = append(b, "Via: SIP/2.0/UDP "...)
	b = append(b, sh.local...)
	b = append(b, ";branch="...)
	b = sh.branch(b, id)
	return append(b, ";rport\r\nMax-Forwards: 70\r\n"...)
}

func (sh *shard) notify(now int64, sub int) {
	t := sh.newTxn(kNotify, clsNotify, sub)
	if sub < 1e7 {
		b := append(t.buf[:0], sh.notifyT...)
		putHex16(b[sh.notifyO[0]:], t.id)
		u := b[sh.notifyO[1] : sh.notifyO[1]+7]
		for i, v := 6, sub; i >= 0; i-- {
			u[i] = byte('0' + v%10)
			v /= 10
		}
		putHex16(b[sh.notifyO[2]:], t.id)
		t.buf = b
		sh.start(t, now)
		return
	}
	b := append(t.buf, "NOTIFY sip:"...)
	b = append(b, sh.proxy.String()...)
	b = append(b, " SIP/2.0\r\n"...)
	b = sh.via(b, t.id)
	b = append(b, "From: <sip:"...)
	b = append(b, user(sub)...)
	b = append(b, '@')
	b = append(b, sh.c.domain...)
	b = append(b, ">;tag=ka\r\nTo: <sip:"...)
	b = append(b, sh.proxy.String()...)
	b = append(b, ">\r\nCall-ID: ka-"...)
	b = strconv.AppendUint(b, t.id, 36)
	b = append(b, "\r\nCSeq: 1 NOTIFY\r\nEvent: keep-alive\r\nContent-Length: 0\r\n\r\n"...)
	t.buf = b
	sh.start(t, now)
}

func (sh *shard) register(now int64, cls, local int, chal []byte) {
	sub := sh.sub(local)
	kind := kReg1
	if chal != nil {
		kind = kReg2
	}
	t := sh.newTxn(kind, cls, sub)
	sh.regCSeq[local]++
	uri := "sip:" + sh.proxy.String()
	b := append(t.buf, "REGISTER "...)
	b = append(b, uri...)
	b = append(b, " SIP/2.0\r\n"...)
	b = sh.via(b, t.id)
	aor := "<sip:" + user(sub) + "@" + sh.c.domain + ">"
	b = append(b, "From: "...)
	b = append(b, aor...)
	b = append(b, ";tag=r"...)
	b = strconv.AppendInt(b, int64(sub), 36)
	b = append(b, "\r\nTo: "...)
	b = append(b, aor...)
	b = append(b, "\r\nCall-ID: reg-"...)
	b = append(b, user(sub)...)
	b = append(b, "\r\nCSeq: "...)
	b = strconv.AppendUint(b, uint64(sh.regCSeq[local]), 10)
	b = append(b, " REGISTER\r\nContact: <sip:"...)
	b = append(b, user(sub)...)
	b = append(b, '@')
	b = append(b, sh.local...)
	b = append(b, ">\r\nExpires: 3600\r\n"...)
	if chal != nil {
		b = append(b, "Authorization: "...)
		b = append(b, sh.digest(sub, "REGISTER", uri, chal)...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "Content-Length: 0\r\n\r\n"...)
	t.buf = b
	sh.start(t, now)
}

const sdpBody = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

// invite sends the first INVITE of a call (chal nil) or the one with
// credentials; prev carries the Call-ID and From tag.
func (sh *shard) invite(now int64, caller, callee int, prev *txn, chal []byte) {
	kind, cls := kInv1, clsCall
	if chal != nil {
		kind = kInv2
	}
	t := sh.newTxn(kind, cls, caller)
	t.callee = callee
	cseq := "1"
	if prev != nil {
		t.callID, t.fromTag = prev.callID, prev.fromTag
		cseq = "2"
	} else {
		t.fromTag = sh.tag()
		t.callID = "call-" + t.fromTag + "-" + strconv.Itoa(sh.idx)
		sh.c.st.c[clsCall].offered.Add(1)
	}
	uri := "sip:" + user(callee) + "@" + sh.c.domain
	b := append(t.buf, "INVITE "...)
	b = append(b, uri...)
	b = append(b, " SIP/2.0\r\n"...)
	b = sh.via(b, t.id)
	b = append(b, "From: <sip:"+user(caller)+"@"+sh.c.domain+">;tag="+t.fromTag+"\r\nTo: <"+uri+">\r\nCall-ID: "+t.callID+
		"\r\nCSeq: "+cseq+" INVITE\r\nContact: <sip:"+user(caller)+"@"+sh.local+">\r\n"...)
	if chal != nil {
		b = append(b, "Proxy-Authorization: "+sh.digest(caller, "INVITE", uri, chal)+"\r\n"...)
	}
	b = append(b, "Content-Type: application/sdp\r\nContent-Length: "+strconv.Itoa(len(sdpBody))+"\r\n\r\n"+sdpBody...)
	t.buf = b
	sh.start(t, now)
}

// ack sends the ACK for a non-2xx (same branch as the INVITE) or a 2xx
// (new branch, along the route set), without a transaction.
func (sh *shard) ack(t *txn, toTag []byte, twoXX bool) {
	var b []byte
	if !twoXX {
		uri := "sip:" + user(t.callee) + "@" + sh.c.domain
		b = append(b, "ACK "+uri+" SIP/2.0\r\n"...)
		b = sh.via(b, t.id)
		b = append(b, "From: <sip:"+user(t.sub)+"@"+sh.c.domain+">;tag="+t.fromTag+"\r\nTo: <"+uri+">;tag="...)
		b = append(b, toTag...)
		b = append(b, "\r\nCall-ID: "+t.callID+"\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"...)
	} else {
		sh.nextID++
		b = append(b, "ACK "+t.target+" SIP/2.0\r\n"...)
		b = sh.via(b, uint64(sh.idx)<<48|sh.nextID)
		b = sh.dialogHeaders(b, t, "2 ACK")
	}
	// Both ACKs go the INVITE's way: through this shard's proxy, which
	// is also the first of the route set it record-routed.
	sh.emit(b, sh.pi)
}

func (sh *shard) dialogHeaders(b []byte, t *txn, cseq string) []byte {
	if t.route != "" {
		b = append(b, "Route: "+t.route+"\r\n"...)
	}
	return append(b, "From: <sip:"+user(t.sub)+"@"+sh.c.domain+">;tag="+t.fromTag+"\r\nTo: <sip:"+user(t.callee)+"@"+sh.c.domain+">;tag="+t.toTag+
		"\r\nCall-ID: "+t.callID+"\r\nCSeq: "+cseq+"\r\nContent-Length: 0\r\n\r\n"...)
}

func (sh *shard) bye(now int64, inv *txn) {
	t := sh.newTxn(kBye, clsBye, inv.sub)
	t.callee, t.callID, t.fromTag, t.toTag, t.route, t.target = inv.callee, inv.callID, inv.fromTag, inv.toTag, inv.route, inv.target
	b := append(t.buf, "BYE "+t.target+" SIP/2.0\r\n"...)
	b = sh.via(b, t.id)
	t.buf = sh.dialogHeaders(b, t, "3 BYE")
	sh.c.st.c[clsBye].offered.Add(1)
	sh.start(t, now)
}

// response handles an answer to one of our client transactions.
func (sh *shard) response(now int64, m *msg, first []byte) {
	st := sh.c.st
	t, ok := sh.txns[m.txID]
	if !ok {
		// An answer to a finished transaction: a retransmitted final
		// response. A 2xx to an INVITE needs its ACK again, but the dialog
		// is gone; the callee's retransmission budget covers that.
		if m.status >= 200 {
			cls := clsBye
			switch string(m.cseqM) {
			case "NOTIFY":
				cls = clsNotify
			case "REGISTER":
				cls = clsRegister
				if sh.phase == phRamp {
					cls = clsRamp
				}
			case "INVITE":
				cls = clsCall
			}
			st.c[cls].dups.Add(1)
		}
		return
	}
	if m.status < 200 {
		t.provisional(now)
		return
	}
	c := &st.c[t.cls]
	switch {
	case t.kind == kReg1 && m.status == 401 && m.auth != nil:
		sh.finish(t)
		sh.register(now, t.cls, (t.sub-sh.idx)/sh.k, m.auth)
	case t.kind == kInv1 && m.status == 407 && m.auth != nil:
		sh.ack(t, m.toTag, false)
		sh.invite(now, t.sub, t.callee, t, m.auth)
		sh.finish(t)
	case m.status >= 300:
		st.fail(t.cls, m.status, first)
		if t.kind == kInv1 || t.kind == kInv2 {
			sh.ack(t, m.toTag, false)
		}
		if t.cls == clsRamp {
			st.rampDone.Add(1)
		}
		sh.finish(t)
	default: // 2xx
		c.lat.add(time.Duration(now - t.first))
		switch t.kind {
		case kInv2:
			t.toTag = string(m.toTag)
			t.route = routeSet(m.rr)
			t.target = string(uriOf(m.contact))
			sh.ack(t, nil, true)
			c.completed.Add(1)
			sh.bye(now, t)
		case kNotify, kReg2, kBye:
			c.completed.Add(1)
			if t.cls == clsRamp {
				st.rampDone.Add(1)
			}
		default:
			st.fail(t.cls, m.status, first)
		}
		sh.finish(t)
	}
}

// request handles what the proxy forwards to a callee: INVITE, ACK, BYE.
func (sh *shard) request(now int64, m *msg) {
	st := sh.c.st
	switch string(m.method) {
	case "INVITE":
		id := string(m.callID)
		if uc, ok := sh.uas[id]; ok {
			st.c[clsCall].dups.Add(1)
			if uc.ok != nil {
				sh.emit(uc.ok, uc.from)
			} else {
				sh.emit(uc.last, uc.from)
			}
			return
		}
		tag := sh.tag()
		uc := &uasCall{id: id, from: sh.from}
		sh.unacked++
		uc.last = sh.answer(m, 180, "Ringing", tag, false)
		uc.held = sh.answer(m, 200, "OK", tag, true)
		sh.uas[id] = uc
		sh.emit(uc.last, uc.from)
		sh.timers.add(tev{at: now + int64(ringTime), uc: uc, ok: true, gen: uc.gen})
	case "ACK":
		if uc, ok := sh.uas[string(m.callID)]; ok && !uc.acked && uc.ok != nil {
			uc.acked = true
			uc.gen++
			sh.unacked--
		}
	case "BYE":
		sh.emit(sh.answer(m, 200, "OK", "", false), sh.from)
		if uc, ok := sh.uas[string(m.callID)]; ok && !uc.bye {
			if !uc.acked {
				uc.acked = true
				uc.gen++
				sh.unacked--
			}
			uc.bye = true
			sh.timers.add(tev{at: now + int64(timerB), uc: uc, del: true})
		}
	default:
		sh.emit(sh.answer(m, 200, "OK", "", false), sh.from)
	}
}

// answer builds a response to a forwarded request from its headers.
func (sh *shard) answer(m *msg, code int, reason, tag string, withBody bool) []byte {
	b := make([]byte, 0, 1024)
	b = append(b, "SIP/2.0 "+strconv.Itoa(code)+" "+reason+"\r\n"...)
	for _, v := range m.vias {
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	for _, v := range m.rr {
		b = append(b, "Record-Route: "...)
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "From: "...)
	b = append(b, m.from...)
	b = append(b, "\r\nTo: "...)
	b = append(b, m.to...)
	if tag != "" && m.toTag == nil {
		b = append(b, ";tag="+tag...)
	}
	b = append(b, "\r\nCall-ID: "...)
	b = append(b, m.callID...)
	b = append(b, "\r\nCSeq: "...)
	b = append(b, m.cseq...)
	b = append(b, "\r\n"...)
	if withBody {
		b = append(b, "Contact: <"...)
		b = append(b, uriOf(m.ruri)...)
		b = append(b, ">\r\nContent-Type: application/sdp\r\nContent-Length: "+strconv.Itoa(len(sdpBody))+"\r\n\r\n"+sdpBody...)
	} else {
		b = append(b, "Content-Length: 0\r\n\r\n"...)
	}
	return b
}

// run is the shard's loop until the phase is phStop.
func (sh *shard) run() {
	defer sh.s.close()
	for {
		ph := sh.c.phase.Load()
		if ph == phStop {
			return
		}
		if ph != sh.phase {
			sh.phase, sh.pStart = ph, sh.c.start.Load()
			sh.sentCls = [nClasses]uint64{}
		}
		now := sh.c.now()
		full := false
		for range 8 {
			n := sh.s.recv()
			if n > 0 {
				now = sh.c.now()
			}
			for i := range n {
				data := sh.s.rbufs[i][:sh.s.rhdr[i].n]
				from := sh.s.from(i)
				if from < 0 {
					continue // not from a proxy
				}
				sh.from = uint8(from)
				if sh.quickResponse(now, data) {
					continue
				}
				if !sh.m.parse(data) {
					continue
				}
				if sh.m.req {
					sh.request(now, &sh.m)
				} else if sh.m.ourTx {
					first := data
					if j := indexCRLF(data); j >= 0 {
						first = data[:j]
					}
					sh.response(now, &sh.m, first)
				}
			}
			sh.c.st.pktsIn.Add(uint64(n))
			if full = n == batch; !full {
				break
			}
		}
		sh.schedule(now)
		sh.fire(now)
		if len(sh.out) > 0 {
			sh.c.st.pktsOut.Add(uint64(len(sh.out)))
			if d := sh.s.send(sh.out, sh.outTo); d > 0 {
				sh.c.st.sendDrops.Add(uint64(d))
			}
			clear(sh.out)
			sh.out, sh.outTo = sh.out[:0], sh.outTo[:0]
		}
		sh.active.Store(int64(len(sh.txns) + sh.unacked))
		if !full {
			// A fixed tick rather than a wake per datagram: the socket
			// buffers what arrives meanwhile and the next pass reads it in
			// batches. Latency is taken when a batch is read, so it
			// includes up to one tick of this wait.
			time.Sleep(tick)
		}
	}
}

// tick is the generator's pacing and polling period.
const tick = time.Millisecond

var branchTok = []byte("branch=" + branchPrefix)

// quickResponse handles, without parsing the headers, a response that
// only needs its status and transaction: a provisional, or the 2xx
// ending a NOTIFY, REGISTER with credentials or BYE. It reports whether
// it did.
func (sh *shard) quickResponse(now int64, data []byte) bool {
	if len(data) < 12 || string(data[:8]) != "SIP/2.0 " {
		return false
	}
	code := 0
	for _, c := range data[8:11] {
		if c < '0' || c > '9' {
			return false
		}
		code = code*10 + int(c-'0')
	}
	i := bytes.Index(data, branchTok)
	if i < 0 || len(data) < i+len(branchTok)+16 {
		return false
	}
	var id uint64
	for _, c := range data[i+len(branchTok) : i+len(branchTok)+16] {
		switch {
		case c >= '0' && c <= '9':
			id = id<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			id = id<<4 | uint64(c-'a'+10)
		default:
			return false
		}
	}
	t, ok := sh.txns[id]
	if !ok {
		return false
	}
	switch {
	case code < 200:
		t.provisional(now)
	case code < 300 && (t.kind == kNotify || t.kind == kReg2 || t.kind == kBye):
		c := &sh.c.st.c[t.cls]
		c.lat.add(time.Duration(now - t.first))
		c.completed.Add(1)
		if t.cls == clsRamp {
			sh.c.st.rampDone.Add(1)
		}
		sh.finish(t)
	default:
		return false
	}
	return true
}

func indexCRLF(b []byte) int {
	for i := 0; i+1 < len(b); i++ {
		if b[i] == '\r' && b[i+1] == '\n' {
			return i
		}
	}
	return -1
}

// due is how many events of a class the schedule wants sent by now.
func (sh *shard) due(cls int, now int64) uint64 {
	rate := sh.c.rates[cls] * float64(sh.nLocal) / float64(sh.c.n)
	el := float64(now-sh.pStart) / float64(time.Second)
	if el <= 0 || rate <= 0 {
		return 0
	}
	return uint64(rate * el)
}

// next returns the next local subscriber for a class, cycling.
func (sh *shard) next(cls int) int {
	l := sh.cursor[cls]
	sh.cursor[cls] = (l + 1) % sh.nLocal
	return l
}

func (sh *shard) schedule(now int64) {
	if sh.nLocal == 0 {
		return
	}
	st := sh.c.st
	switch sh.phase {
	case phRamp:
		want := min(sh.due(clsRamp, now), uint64(sh.nLocal))
		for ; sh.sentCls[clsRamp] < want; sh.sentCls[clsRamp]++ {
			st.c[clsRamp].offered.Add(1)
			sh.register(now, clsRamp, int(sh.sentCls[clsRamp]), nil)
		}
	case phHold:
		for w := sh.due(clsNotify, now); sh.sentCls[clsNotify] < w; sh.sentCls[clsNotify]++ {
			st.c[clsNotify].offered.Add(1)
			sh.notify(now, sh.sub(sh.next(clsNotify)))
		}
		for w := sh.due(clsRegister, now); sh.sentCls[clsRegister] < w; sh.sentCls[clsRegister]++ {
			st.c[clsRegister].offered.Add(1)
			sh.register(now, clsRegister, sh.next(clsRegister), nil)
		}
		for w := sh.due(clsCall, now); sh.sentCls[clsCall] < w; sh.sentCls[clsCall]++ {
			caller := sh.sub(sh.next(clsCall))
			callee := (caller + sh.c.n/2 + int(sh.sentCls[clsCall])%97) % sh.c.n
			if callee == caller {
				callee = (callee + 1) % sh.c.n
			}
			if np := len(sh.c.proxies); np > 1 && (callee%sh.k)%np != int(sh.pi) {
				st.crossNode.Add(1)
			}
			sh.invite(now, caller, callee, nil, nil)
		}
	}
}

// fire runs the timers that are due: retransmissions and timeouts of
// client transactions, the callee's 200 after the ring time and its
// retransmissions until the ACK, and forgetting finished calls.
func (sh *shard) fire(now int64) {
	sh.fireNow = now
	sh.timers.due(now, sh.fireFn)
}

func (sh *shard) fireOne(e tev) {
	st := sh.c.st
	now := sh.fireNow
	{
		switch {
		case e.tx != nil:
			t := e.tx
			if t.gen != e.gen || t.done {
				return
			}
			if now >= t.deadline {
				st.fail(t.cls, 0, nil)
				if t.cls == clsRamp {
					st.rampDone.Add(1)
				}
				sh.finish(t)
				return
			}
			invite := t.kind == kInv1 || t.kind == kInv2
			if invite && t.ringing {
				sh.timers.add(tev{at: t.deadline, tx: t, gen: t.gen})
				return
			}
			sh.emit(t.buf, sh.pi)
			st.c[t.cls].retrans.Add(1)
			if invite {
				t.interval *= 2
			} else {
				t.interval = min(2*t.interval, t2)
			}
			sh.timers.add(tev{at: min(now+int64(t.interval), t.deadline), tx: t, gen: t.gen})
		case e.del:
			if sh.uas[e.uc.id] == e.uc {
				delete(sh.uas, e.uc.id)
			}
		case e.uc != nil:
			uc := e.uc
			if uc.gen != e.gen || uc.acked {
				return
			}
			if e.ok {
				uc.ok, uc.held = uc.held, nil
				uc.okAt, uc.interval = now, t1
			} else {
				if now-uc.okAt >= int64(timerB) {
					st.fail(clsCall, 0, []byte("callee: no ACK for 200"))
					uc.acked = true
					sh.unacked--
					sh.timers.add(tev{at: now, uc: uc, del: true})
					return
				}
				st.c[clsCall].retrans.Add(1)
				uc.interval = min(2*uc.interval, t2)
			}
			sh.emit(uc.ok, uc.from)
			sh.timers.add(tev{at: now + int64(uc.interval), uc: uc, gen: uc.gen})
		}
	}
}
