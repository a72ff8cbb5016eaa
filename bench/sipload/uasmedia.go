package sipload

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// rxStream is what a callee knows of one incoming SSRC: enough for the
// report block of a Receiver Report (RFC 3550 6.4.2, A.3).
type rxStream struct {
	base, maxExt   uint64 // extended sequence numbers, offset by 1<<16 so early reordering cannot underflow
	received       uint64
	expPrior, rcvd uint64 // at the last report, for the fraction lost
	jit            jitter
	lastSeen       time.Time
}

// uasShard is one pair on the callee side. It echoes without knowing the
// calls: SSRCs are learnt from the packets and forgotten when idle.
type uasShard struct {
	p       *pair
	mu      sync.Mutex
	streams map[uint32]*rxStream
	base    time.Time
	hdr     rtp.Header
	out     *batch // RTCP replies, owned by the RTCP reader
}

type uasMedia struct {
	shards                       []*uasShard
	rtpRX, rtpTX, rtcpRX, rtcpTX atomic.Uint64
}

// uasIdle is how long an SSRC may be silent before the callee forgets it.
const uasIdle = 30 * time.Second

func newUASMedia(ps []*pair) *uasMedia {
	m := &uasMedia{}
	base := time.Now()
	for _, p := range ps {
		m.shards = append(m.shards, &uasShard{p: p, streams: map[uint32]*rxStream{}, base: base,
			out: newBatch(8, rxBufSize)})
	}
	return m
}

func (m *uasMedia) run(ctx context.Context, wg *sync.WaitGroup) {
	for _, sh := range m.shards {
		wg.Go(func() { m.echo(sh) })
		wg.Go(func() { m.readRTCP(sh) })
	}
	wg.Go(func() {
		every(ctx, uasIdle/3, func(now time.Time) {
			for _, sh := range m.shards {
				sh.expire(now)
			}
		})
	})
}

func (sh *uasShard) expire(now time.Time) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for k, s := range sh.streams {
		if now.Sub(s.lastSeen) > uasIdle {
			delete(sh.streams, k)
		}
	}
}

// echo sends every datagram back to its source, like sipbot --echo. The
// received batch is sent as it is: recvmmsg left each source address in
// its header, so only the lengths need setting.
func (m *uasMedia) echo(sh *uasShard) {
	b := newBatch(batchSize, rxBufSize)
	for {
		n, err := b.recv(sh.p.rtpRC)
		if err != nil {
			return
		}
		if n == 0 {
			continue
		}
		m.rtpRX.Add(uint64(n))
		now := time.Now()
		sh.mu.Lock()
		for i := range n {
			sh.onRTP(b.data(i), now)
		}
		sh.mu.Unlock()
		for i := range n {
			b.iovs[i].SetLen(int(b.msgs[i].Len))
		}
		b.n = n
		m.rtpTX.Add(uint64(b.flush(sh.p.rtpRC)))
	}
}

// onRTP updates the statistics of the packet's SSRC; mu is held.
func (sh *uasShard) onRTP(data []byte, now time.Time) {
	if len(data) < 12 || data[0]>>6 != 2 {
		return
	}
	if _, err := sh.hdr.Unmarshal(data); err != nil {
		return
	}
	s := sh.streams[sh.hdr.SSRC]
	seq := uint64(sh.hdr.SequenceNumber) + 1<<16
	if s == nil {
		s = &rxStream{base: seq, maxExt: seq}
		sh.streams[sh.hdr.SSRC] = s
	} else if ext, ok := extend(s.maxExt, sh.hdr.SequenceNumber); ok {
		s.maxExt = max(s.maxExt, ext)
	}
	s.received++
	s.lastSeen = now
	s.jit.update(arrivalUnits(now, sh.base), sh.hdr.Timestamp)
}

// report builds the report block on ssrc, answering an SR whose NTP time
// was ntp and which arrived at got; mu is held.
func (sh *uasShard) report(ssrc uint32, ntp uint64, got, now time.Time) rtcp.ReceptionReport {
	rr := rtcp.ReceptionReport{SSRC: ssrc, LastSenderReport: ntpMid(ntp), Delay: dlsrSince(now.Sub(got))}
	s := sh.streams[ssrc]
	if s == nil {
		return rr
	}
	expected := s.maxExt - s.base + 1
	lost := int64(expected) - int64(s.received)
	// Duplicates can make it negative; the field is 24 bits.
	rr.TotalLost = uint32(min(max(lost, 0), 0x7FFFFF))
	expInt, rcvInt := expected-s.expPrior, s.received-s.rcvd
	if lostInt := int64(expInt) - int64(rcvInt); expInt > 0 && lostInt > 0 {
		rr.FractionLost = uint8(min(lostInt<<8/int64(expInt), 255))
	}
	s.expPrior, s.rcvd = expected, s.received
	rr.LastSequenceNumber = uint32(s.maxExt - 1<<16)
	rr.Jitter = uint32(s.jit.j)
	return rr
}

// readRTCP answers each Sender Report with a Receiver Report to its source.
func (m *uasMedia) readRTCP(sh *uasShard) {
	b := newBatch(batchSize, rxBufSize)
	for {
		n, err := b.recv(sh.p.rtcpRC)
		if err != nil {
			return
		}
		if n == 0 {
			continue
		}
		m.rtcpRX.Add(uint64(n))
		got := time.Now()
		sh.mu.Lock()
		for i := range n {
			sh.onRTCP(b.data(i), b.from(i), got, time.Now())
		}
		sh.mu.Unlock()
		if sh.out.n > 0 {
			m.rtcpTX.Add(uint64(sh.out.flush(sh.p.rtcpRC)))
		}
	}
}

// onRTCP queues a reply to every SR in data; mu is held.
func (sh *uasShard) onRTCP(data []byte, from netip.AddrPort, got, now time.Time) {
	pkts, err := rtcp.Unmarshal(data)
	if err != nil {
		return
	}
	for _, p := range pkts {
		sr, ok := p.(*rtcp.SenderReport)
		if !ok {
			continue
		}
		rr := rtcp.ReceiverReport{SSRC: ^sr.SSRC, Reports: []rtcp.ReceptionReport{sh.report(sr.SSRC, sr.NTPTime, got, now)}}
		if out, err := rr.Marshal(); err == nil {
			sh.out.add(out, from)
		}
	}
}
