package sipload

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

const (
	rtpSize     = 172 // 12-byte header + 160 bytes of G.711 at 20 ms
	rtpEvery    = 20 * time.Millisecond
	srEvery     = 5 * time.Second
	maxCatchUp  = 5 // packets one call may send at once after a late tick
	payloadByte = 0xFF
)

// stream is the caller's RTP for one call.
type stream struct {
	ssrc              uint32
	peerRTP, peerRTCP netip.AddrPort
	start             time.Time // packet i is due at start + i*20ms
	next              uint64    // index of the next packet to send
	sending           bool
	tx, rx, skipped   uint64
	rtcpTX, rtcpRX    uint64
	seen              seenSet
	jit               jitter
	nextSR            time.Time
	rttSum, rttMax    time.Duration
	rttN              int
}

// streamTotals is what a finished stream contributes to the result.
type streamTotals struct {
	tx, rx, skipped, rtcpTX, rtcpRX uint64
	loss                            float64
	jitter, rttAvg, rttMax          time.Duration
	rttN                            int
}

func (s *stream) totals() streamTotals {
	t := streamTotals{tx: s.tx, rx: s.rx, skipped: s.skipped, rtcpTX: s.rtcpTX, rtcpRX: s.rtcpRX,
		loss: lossFraction(s.tx, s.seen.count()), jitter: s.jit.duration(), rttMax: s.rttMax, rttN: s.rttN}
	if s.rttN > 0 {
		t.rttAvg = s.rttSum / time.Duration(s.rttN)
	}
	return t
}

// uacShard is one pair's calls. The media clock and the pair's two readers
// are the only goroutines touching its packets; mu guards the streams.
type uacShard struct {
	p       *pair
	mu      sync.Mutex
	streams map[uint32]*stream
	base    time.Time // origin of arrival times for jitter
	hdr     rtp.Header
	// Owned by the media clock.
	rtpOut, rtcpOut *batch
	owners          []*stream
	// Datagrams that matched no live call (late echoes after a call ended,
	// or garbage); counted so nothing goes unaccounted.
	strayRTP, strayRTCP uint64
}

type uacMedia struct {
	shards []*uacShard
}

func newUACMedia(ps []*pair) *uacMedia {
	m := &uacMedia{}
	base := time.Now()
	for _, p := range ps {
		m.shards = append(m.shards, &uacShard{p: p, streams: map[uint32]*stream{}, base: base,
			rtpOut: newBatch(batchSize, rxBufSize), rtcpOut: newBatch(8, rxBufSize)})
	}
	return m
}

// run starts the media clock and the readers; they end when ctx is done
// and the pairs are closed.
func (m *uacMedia) run(ctx context.Context, wg *sync.WaitGroup) {
	wg.Go(func() { m.clock(ctx) })
	for _, sh := range m.shards {
		wg.Go(sh.readRTP)
		wg.Go(sh.readRTCP)
	}
}

// add starts a call's RTP to peer (its RTP address from the SDP answer).
func (m *uacMedia) add(pairIdx int, ssrc uint32, peer netip.AddrPort, now time.Time) {
	sh := m.shards[pairIdx]
	// The first SR goes about a second in, spread so that calls answered
	// together do not report together.
	first := 500*time.Millisecond + rand.N(time.Second)
	s := &stream{ssrc: ssrc, peerRTP: peer, peerRTCP: netip.AddrPortFrom(peer.Addr(), peer.Port()+1),
		start: now, sending: true, nextSR: now.Add(first)}
	sh.mu.Lock()
	sh.streams[ssrc] = s
	sh.mu.Unlock()
}

// stop ends a call's sending; its echoes are still counted.
func (m *uacMedia) stop(pairIdx int, ssrc uint32) {
	sh := m.shards[pairIdx]
	sh.mu.Lock()
	if s := sh.streams[ssrc]; s != nil {
		s.sending = false
	}
	sh.mu.Unlock()
}

// remove ends a call's stream and returns its totals.
func (m *uacMedia) remove(pairIdx int, ssrc uint32) (streamTotals, bool) {
	sh := m.shards[pairIdx]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.streams[ssrc]
	if s == nil {
		return streamTotals{}, false
	}
	delete(sh.streams, ssrc)
	return s.totals(), true
}

// live sums the packets of streams still running, plus strays.
func (m *uacMedia) live() (tx, rx, rtcpTX, rtcpRX uint64) {
	for _, sh := range m.shards {
		sh.mu.Lock()
		for _, s := range sh.streams {
			tx += s.tx
			rx += s.rx
			rtcpTX += s.rtcpTX
			rtcpRX += s.rtcpRX
		}
		rx += sh.strayRTP
		rtcpRX += sh.strayRTCP
		sh.mu.Unlock()
	}
	return
}

// clock is the single media clock. Packets are due by elapsed time, not
// by tick, so a tick the runtime delivers late is made up by sending what
// fell due meanwhile (up to maxCatchUp per call; beyond that the packets
// are counted as skipped rather than sent in a burst).
func (m *uacMedia) clock(ctx context.Context) {
	every(ctx, rtpEvery, func(time.Time) {
		for _, sh := range m.shards {
			sh.tick(time.Now())
		}
	})
}

func (sh *uacShard) tick(now time.Time) {
	sh.mu.Lock()
	sh.owners = sh.owners[:0]
	for _, s := range sh.streams {
		if !s.sending {
			continue
		}
		for due := s.catchUp(now); s.next < due; s.next++ {
			i := sh.rtpOut.grow(rxBufSize)
			n, err := s.marshalRTP(sh.rtpOut.bufs[i])
			if err != nil {
				sh.rtpOut.n--
				break
			}
			sh.rtpOut.setMsg(i, n, s.peerRTP)
			sh.owners = append(sh.owners, s)
			s.tx++
		}
		if sr, ok := s.senderReport(now); ok {
			sh.rtcpOut.add(sr, s.peerRTCP)
			s.rtcpTX++
		}
	}
	sh.mu.Unlock()
	// Sent outside the lock, so the readers are not held up by the send.
	if failed := sh.rtpOut.flushReport(sh.p.rtpRC); len(failed) > 0 {
		sh.mu.Lock()
		for _, i := range failed {
			sh.owners[i].tx--
		}
		sh.mu.Unlock()
	}
	sh.rtcpOut.flush(sh.p.rtcpRC)
}

// catchUp returns the index after the last packet due by now, first
// skipping what lies more than maxCatchUp packets behind.
func (s *stream) catchUp(now time.Time) uint64 {
	due := uint64(now.Sub(s.start)/rtpEvery) + 1
	if due > s.next+maxCatchUp {
		s.skipped += due - maxCatchUp - s.next
		s.next = due - maxCatchUp
	}
	return due
}

// marshalRTP writes packet s.next, header and G.711-sized payload, into
// buf and returns its length.
func (s *stream) marshalRTP(buf []byte) (int, error) {
	h := rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(s.next),
		Timestamp: uint32(s.next * 160), SSRC: s.ssrc}
	n, err := h.MarshalTo(buf)
	if err != nil {
		return 0, err
	}
	for k := n; k < rtpSize; k++ {
		buf[k] = payloadByte
	}
	return rtpSize, nil
}

// senderReport is s's sender report when one is due by now; the next one
// is then due srEvery later, whether or not this one is sent.
func (s *stream) senderReport(now time.Time) ([]byte, bool) {
	if now.Before(s.nextSR) {
		return nil, false
	}
	s.nextSR = s.nextSR.Add(srEvery)
	sr := rtcp.SenderReport{SSRC: s.ssrc, NTPTime: ntpTime(now),
		RTPTime:     uint32(now.Sub(s.start) * clockRate / time.Second),
		PacketCount: uint32(s.tx), OctetCount: uint32(s.tx * (rtpSize - 12))}
	b, err := sr.Marshal()
	return b, err == nil
}

// readRTP counts each echo against its call, by SSRC.
func (sh *uacShard) readRTP() {
	b := newBatch(batchSize, rxBufSize)
	for {
		n, err := b.recv(sh.p.rtpRC)
		if err != nil {
			return
		}
		now := time.Now()
		sh.mu.Lock()
		for i := range n {
			sh.onRTP(b.data(i), now)
		}
		sh.mu.Unlock()
	}
}

// onRTP accounts one datagram from the RTP socket; mu is held.
func (sh *uacShard) onRTP(data []byte, now time.Time) {
	s := sh.demux(data)
	if s == nil {
		sh.strayRTP++
		return
	}
	s.echoed(&sh.hdr, now)
}

// echoed accounts one of s's packets coming back, by its header.
func (s *stream) echoed(h *rtp.Header, now time.Time) {
	s.rx++
	if s.next == 0 {
		return
	}
	idx, ok := extend(s.next-1, h.SequenceNumber)
	if !ok || idx >= s.next {
		return // not a packet this call sent
	}
	s.seen.add(idx)
	// Arrival time is when the packet was read; the reader's own delay
	// shows up as jitter, which errs on the side of reporting more.
	s.jit.update(arrivalUnits(now, s.start), h.Timestamp)
}

// demux parses an RTP header and finds its call; mu is held.
func (sh *uacShard) demux(data []byte) *stream {
	if len(data) < 12 || data[0]>>6 != 2 {
		return nil
	}
	if _, err := sh.hdr.Unmarshal(data); err != nil {
		return nil
	}
	return sh.streams[sh.hdr.SSRC]
}

// readRTCP takes the callee's receiver reports and computes round trips.
func (sh *uacShard) readRTCP() {
	b := newBatch(batchSize, rxBufSize)
	for {
		n, err := b.recv(sh.p.rtcpRC)
		if err != nil {
			return
		}
		now := time.Now()
		sh.mu.Lock()
		for i := range n {
			sh.onRTCP(b.data(i), now)
		}
		sh.mu.Unlock()
	}
}

// onRTCP accounts one datagram from the RTCP socket; mu is held.
func (sh *uacShard) onRTCP(data []byte, now time.Time) {
	pkts, err := rtcp.Unmarshal(data)
	if err != nil {
		sh.strayRTCP++
		return
	}
	matched := false
	for _, p := range pkts {
		var reports []rtcp.ReceptionReport
		switch r := p.(type) {
		case *rtcp.ReceiverReport:
			reports = r.Reports
		case *rtcp.SenderReport:
			reports = r.Reports
		}
		for _, rr := range reports {
			s := sh.streams[rr.SSRC]
			if s == nil {
				continue
			}
			if !matched {
				s.rtcpRX++
				matched = true
			}
			s.report(rr, now)
		}
	}
	if !matched {
		sh.strayRTCP++
	}
}

// report takes the round trip from a reception report about s.
func (s *stream) report(rr rtcp.ReceptionReport, now time.Time) {
	if rtt, ok := rttFrom(now, rr.LastSenderReport, rr.Delay); ok {
		s.rttSum += rtt
		s.rttN++
		s.rttMax = max(s.rttMax, rtt)
	}
}
