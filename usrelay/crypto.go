package usrelay

import (
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"sipxdp/relay"
	"sipxdp/relay/cryptoleg"
	"sipxdp/relay/ice"
)

// The per-datagram path of flows the kernel cannot serve: a leg whose SRTP
// the relay terminates (STUN and DTLS on its port, decrypt on the way in,
// encrypt on the way out) and RTCP taken off a muxed port to a receiver
// that does not mux. Each datagram may go to one of two sockets and change
// length, so these flows skip the batched sendmmsg of plain flows.

// outcome is what decideSpecial made of one datagram.
type outcome struct {
	verdict Verdict
	reason  Reason
	change  latchChange
	// consumed: STUN or DTLS (dtls set), neither forwarded nor dropped.
	consumed, dtls bool
	// reply, when set, goes back to the source from the receiving port
	// (a STUN answer).
	reply []byte
	// pkt is what to send, and rtcp whether it leaves by the RTCP port.
	pkt  []byte
	rtcp bool
	// early: SRTP (pkt, SRTCP when rtcp) that came before the inbound
	// leg's keys, for serveSpecial to hand to cryptoleg's Early.
	early bool
}

// srtpTagRoom is what encrypting may add to a packet: the SRTP auth tag,
// and SRTCP's index and tag.
const srtpTagRoom = 64

// isRTCP tells RTCP from RTP on a muxed port by the payload type byte
// (RFC 5761 section 4: 192-223 are RTCP's packet types).
func isRTCP(b []byte) bool { return len(b) > 1 && b[1] >= 192 && b[1] <= 223 }

// decideSpecial runs one datagram of a special flow: pkt arrived from src.
// scratch holds the decrypted and re-encrypted packet and the STUN reply;
// each needs room for a datagram plus the SRTP tag.
func (e *flowEntry) decideSpecial(pkt []byte, src netip.AddrPort, now int64, dec, enc []byte) outcome {
	rtcp := e.rtcp
	if e.in != nil {
		switch ice.Demux(pkt) {
		case ice.KindSTUN:
			if !e.ice {
				return outcome{verdict: Drop, reason: ReasonNotMedia}
			}
			resp, nominated, ok := e.in.STUN(dec, pkt, src)
			if !ok {
				return outcome{consumed: true}
			}
			o := outcome{consumed: true, reply: resp}
			r := relay.RankIP
			if nominated {
				r = relay.RankExact
			}
			o.change = e.latchICE(src, r, now)
			if nominated {
				e.in.Nominated(src)
			}
			return o
		case ice.KindDTLS:
			if !e.accepts(src, now) {
				return outcome{verdict: Drop, reason: ReasonForeign}
			}
			e.in.DTLS(pkt, src)
			return outcome{consumed: true, dtls: true}
		case ice.KindRTP:
		default:
			return outcome{verdict: Drop, reason: ReasonNotMedia}
		}
	}
	var o outcome
	if e.ice {
		o.verdict, o.reason = e.decideLatched(src, len(pkt), now)
	} else {
		o.verdict, o.reason, o.change = e.decide(src, len(pkt), now)
	}
	if o.verdict != Forward {
		return o
	}
	if !rtcp && (e.rtcpPort != nil || e.in != nil || e.outLeg != nil) {
		// A muxed port: the payload type tells (SRTCP keeps its header in
		// the clear).
		rtcp = isRTCP(pkt)
	}
	if e.in != nil {
		out, err := e.in.Decrypt(dec, pkt, rtcp)
		if err == cryptoleg.ErrNotReady {
			return outcome{verdict: Drop, reason: ReasonSRTP, change: o.change, early: true, pkt: pkt, rtcp: rtcp}
		}
		if err != nil {
			return outcome{verdict: Drop, reason: ReasonSRTP, change: o.change}
		}
		pkt = out
	}
	if e.outLeg != nil {
		out, err := e.outLeg.Encrypt(enc, pkt, rtcp)
		if err != nil {
			return outcome{verdict: Drop, reason: ReasonSRTP, change: o.change}
		}
		pkt = out
	}
	o.pkt = pkt
	o.rtcp = rtcp && e.rtcpPort != nil
	return o
}

// latchICE takes src, which passed STUN with the leg's credentials, as the
// flow's source: a plain check latches it provisionally (RankIP), a
// nomination (USE-CANDIDATE) locks it. A locked flow stays as it is.
func (e *flowEntry) latchICE(src netip.AddrPort, r relay.Rank, now int64) latchChange {
	e.latchMu.Lock()
	defer e.latchMu.Unlock()
	if !e.learning.Load() {
		return changeNone
	}
	if e.rank >= r && (e.peer == src || e.rank == relay.RankExact) {
		return changeNone
	}
	ch := changeLatch
	if e.rank >= relay.RankIP && e.peer != src {
		ch |= changeRelatch
	}
	e.peer, e.rank = src, r
	if r == relay.RankExact || e.until != 0 && now >= e.until {
		e.lock()
		ch |= changeLock
	}
	return ch
}

// decideLatched is decide for an ICE leg: only what STUN latched is
// accepted; other packets never latch, so spraying the port with RTP or
// DTLS wins nothing.
func (e *flowEntry) decideLatched(src netip.AddrPort, n int, now int64) (Verdict, Reason) {
	if !e.accepts(src, now) {
		return Drop, ReasonForeign
	}
	e.account(n, now)
	return Forward, ReasonNone
}

// accepts reports whether src may send on the flow without changing its
// latch: its locked source, or an ICE leg's latched one. Without ICE a
// learning flow ranks the source as decide would, without taking it.
func (e *flowEntry) accepts(src netip.AddrPort, now int64) bool {
	if !e.learning.Load() && !e.handover {
		return src == e.peer
	}
	e.latchMu.Lock()
	defer e.latchMu.Unlock()
	if !e.learning.Load() || e.ice {
		return src == e.peer && e.rank >= relay.RankIP
	}
	if e.rank >= relay.RankIP && src == e.peer {
		return true
	}
	return relay.RankOf(src, e.announced, e.hints, e.strict) >= relay.RankIP
}

// serveSpecial handles n received datagrams of a special flow one by one.
func (w *worker) serveSpecial(p *port, e *flowEntry, n int, now int64) {
	w.cnt.c[cntReceived].Add(uint64(n))
	for i := 0; i < n; i++ {
		h := &w.rhdr[i]
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			w.cnt.c[ReasonOversize].Add(1)
			continue
		}
		src, ok := decodeSockaddr(&w.rname[i], h.Hdr.Namelen)
		if !ok {
			w.cnt.c[ReasonWrongSource].Add(1)
			continue
		}
		o := e.decideSpecial(w.buf[i*bufSize:i*bufSize+int(h.Len)], src, now, w.dec, w.enc)
		if o.change != changeNone {
			w.cnt.countChange(o.change)
			if cb := w.r.cfg.OnLatch; cb != nil {
				cb(e.event())
			}
		}
		switch {
		case o.consumed:
			if o.dtls {
				w.cnt.c[cntDTLS].Add(1)
			} else {
				w.cnt.c[cntSTUN].Add(1)
			}
			if o.reply != nil {
				sa, salen := encodeSockaddr(src, p.addr.Addr().Is6())
				w.sendTo(p.fd, o.reply, &sa, salen)
			}
		case o.early && w.holdEarly(e, o.pkt, o.rtcp):
		case o.verdict != Forward:
			w.cnt.c[o.reason].Add(1)
		case o.rtcp:
			if w.sendTo(e.rtcpPort.fd, o.pkt, &e.rtcpSA, e.rtcpLen) {
				w.cnt.c[cntForwarded].Add(1)
			}
		default:
			if w.sendTo(e.outPort.fd, o.pkt, &e.dstSA, e.dstLen) {
				w.cnt.c[cntForwarded].Add(1)
			}
		}
	}
}

// holdEarly gives SRTP that came before the inbound leg's keys to the leg
// to keep (cryptoleg.Leg.Early), with what the worker would have done with
// it once decrypted: encrypt it for the other leg and send it, counted as
// forwarded. The send takes the table's lock (SendFrom), as it runs on the
// handshake's goroutine, after this flow may have changed. It reports
// whether the leg kept it; if not, the caller counts the drop.
func (w *worker) holdEarly(e *flowEntry, pkt []byte, rtcp bool) bool {
	cnt, r, outLeg := &w.cnt, w.r, e.outLeg
	from, to := e.outPort.addr, e.dst
	if rtcp && e.rtcpPort != nil {
		from = e.rtcpPort.addr
		to, _ = decodeSockaddr(&e.rtcpSA, e.rtcpLen)
	}
	return e.in.Early(pkt, rtcp, func(plain []byte) {
		if outLeg != nil {
			enc, err := outLeg.Encrypt(make([]byte, 0, len(plain)+srtpTagRoom), plain, rtcp)
			if err != nil {
				cnt.c[ReasonSRTP].Add(1)
				return
			}
			plain = enc
		}
		cnt.c[cntSendCalls].Add(1)
		if err := r.SendFrom(from, to, plain); err != nil {
			cnt.c[ReasonSendError].Add(1)
			return
		}
		cnt.c[cntForwarded].Add(1)
	})
}

// sendTo sends one datagram, counting a refusal as a send error.
func (w *worker) sendTo(fd int, b []byte, sa *sockaddr, salen uint32) bool {
	if len(b) == 0 {
		return false
	}
	for {
		w.cnt.c[cntSendCalls].Add(1)
		_, errno := syscall6sendto(uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
			uintptr(unsafe.Pointer(&sa[0])), uintptr(salen))
		switch errno {
		case 0:
			return true
		case unix.EINTR:
			continue
		}
		w.cnt.c[ReasonSendError].Add(1)
		return false
	}
}

// SendFrom sends b to dst from the relay's socket on local (relay.Sender):
// a crypto leg's DTLS flights. The table's read lock is held across the
// send, so the socket cannot be closed and its descriptor reused under it.
func (r *Relay) SendFrom(local, dst netip.AddrPort, b []byte) error {
	r.table.mu.RLock()
	defer r.table.mu.RUnlock()
	p := r.table.ports[normalize(local)]
	if p == nil || p.fd < 0 {
		return fmt.Errorf("send from %s: no socket: %w", local, relay.ErrFlowNotFound)
	}
	if len(b) == 0 {
		return nil
	}
	sa, salen := encodeSockaddr(normalize(dst), p.addr.Addr().Is6())
	_, errno := syscall6sendto(uintptr(p.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		uintptr(unsafe.Pointer(&sa[0])), uintptr(salen))
	if errno != 0 {
		return fmt.Errorf("send from %s to %s: %w", local, dst, errno)
	}
	return nil
}
