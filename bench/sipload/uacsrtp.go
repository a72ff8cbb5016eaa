package sipload

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"sipxdp/internal/webrtcpeer"
)

// The caller's WebRTC media (UACConfig.SRTP): each call is a browser-like
// endpoint, a webrtcpeer.Peer with its own socket, that offers
// UDP/TLS/RTP/SAVPF, runs ICE and DTLS-SRTP against the relay once
// answered, then sends the same RTP stream as a plain call (172 bytes
// every 20 ms, an SR every 5 s) through the SRTP session, muxed with RTCP
// on the one port, and counts the decrypted echoes. Unlike the plain path
// this costs a socket, a reader goroutine in the peer and two of its own
// per call, and a send per packet: it is what a browser does, and the
// plain path's batching stays as it is.

// srtpLeg is one call's peer and its stream.
type srtpLeg struct {
	peer  *webrtcpeer.Peer
	offer []byte

	mu      sync.Mutex // guards s and sending, between the clock and the readers
	s       stream
	started bool // connected: the clock sends, the readers account
	closed  bool
}

type srtpMedia struct {
	local netip.Addr
	ctx   context.Context // ends every Connect still running when the run ends

	mu   sync.Mutex
	legs []*srtpLeg // connected legs, which the clock serves

	wg                  sync.WaitGroup // readers and handshakes
	strayRTP, strayRTCP atomic.Uint64  // decrypted packets of no stream of ours
	// From the peers' counters as their calls end: SRTP/SRTCP that did
	// not decrypt, and decrypted packets our readers were too slow for.
	// Either shows up as loss; these say why.
	decryptFailures, queueDrops atomic.Uint64
}

func newSRTPMedia(ctx context.Context, local netip.Addr) *srtpMedia {
	return &srtpMedia{local: local, ctx: ctx}
}

// newLeg makes a call's peer, bound on the media address, and starts its
// readers; they end when the peer is closed.
func (m *srtpMedia) newLeg(ssrc uint32) (*srtpLeg, error) {
	p, err := webrtcpeer.New(webrtcpeer.Config{Local: netip.AddrPortFrom(m.local, 0)})
	if err != nil {
		return nil, err
	}
	l := &srtpLeg{peer: p, offer: p.Offer(), s: stream{ssrc: ssrc}}
	m.wg.Go(func() { m.readRTP(l) })
	m.wg.Go(func() { m.readRTCP(l) })
	return l, nil
}

// start begins a connected leg's stream.
func (m *srtpMedia) start(l *srtpLeg, now time.Time) {
	l.mu.Lock()
	l.s.start, l.s.sending, l.started = now, true, true
	l.s.nextSR = now.Add(500*time.Millisecond + rand.N(time.Second))
	l.mu.Unlock()
	m.mu.Lock()
	m.legs = append(m.legs, l)
	m.mu.Unlock()
}

// stop ends a leg's sending; its echoes are still counted.
func (m *srtpMedia) stop(l *srtpLeg) {
	l.mu.Lock()
	l.s.sending = false
	l.mu.Unlock()
}

// remove closes a leg's peer and returns its stream's totals; had is
// false when it never connected.
func (m *srtpMedia) remove(l *srtpLeg) (t streamTotals, had bool) {
	l.peer.Close()
	ps := l.peer.Stats()
	m.decryptFailures.Add(ps.DecryptFailures)
	m.queueDrops.Add(ps.QueueDrops)
	l.mu.Lock()
	l.closed = true
	if l.started {
		t, had = l.s.totals(), true
	}
	l.mu.Unlock()
	if had {
		m.mu.Lock()
		if i := slices.Index(m.legs, l); i >= 0 {
			m.legs = slices.Delete(m.legs, i, i+1)
		}
		m.mu.Unlock()
	}
	return t, had
}

// live sums the packets of the connected legs, plus strays.
func (m *srtpMedia) live() (tx, rx, rtcpTX, rtcpRX uint64) {
	m.mu.Lock()
	legs := slices.Clone(m.legs)
	m.mu.Unlock()
	for _, l := range legs {
		l.mu.Lock()
		tx += l.s.tx
		rx += l.s.rx
		rtcpTX += l.s.rtcpTX
		rtcpRX += l.s.rtcpRX
		l.mu.Unlock()
	}
	return tx, rx + m.strayRTP.Load(), rtcpTX, rtcpRX + m.strayRTCP.Load()
}

// clock sends what is due on every connected leg, every 20 ms, as the
// plain path's clock does (catching up to maxCatchUp packets).
func (m *srtpMedia) clock(ctx context.Context) {
	var legs []*srtpLeg
	buf := make([]byte, rxBufSize)
	every(ctx, rtpEvery, func(time.Time) {
		m.mu.Lock()
		legs = append(legs[:0], m.legs...)
		m.mu.Unlock()
		for _, l := range legs {
			l.tick(time.Now(), buf)
		}
	})
}

func (l *srtpLeg) tick(now time.Time, buf []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &l.s
	if !s.sending || l.closed {
		return
	}
	for due := s.catchUp(now); s.next < due; s.next++ {
		n, err := s.marshalRTP(buf)
		if err != nil {
			break
		}
		if l.peer.WriteRTP(buf[:n]) == nil {
			s.tx++
		}
	}
	if sr, ok := s.senderReport(now); ok && l.peer.WriteRTCP(sr) == nil {
		s.rtcpTX++
	}
}

// readRTP counts the decrypted echoes of l's stream.
func (m *srtpMedia) readRTP(l *srtpLeg) {
	for {
		pkt, err := l.peer.ReadRTP(context.Background())
		if err != nil {
			return
		}
		m.onRTP(l, pkt, time.Now())
	}
}

// onRTP accounts one decrypted RTP packet of l.
func (m *srtpMedia) onRTP(l *srtpLeg, pkt []byte, now time.Time) {
	var h rtp.Header
	if _, err := h.Unmarshal(pkt); err != nil {
		m.strayRTP.Add(1)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started || h.SSRC != l.s.ssrc {
		m.strayRTP.Add(1)
		return
	}
	l.s.echoed(&h, now)
}

// readRTCP takes the callee's receiver reports, which the relay sends
// muxed and encrypted, for the round trip.
func (m *srtpMedia) readRTCP(l *srtpLeg) {
	for {
		pkt, err := l.peer.ReadRTCP(context.Background())
		if err != nil {
			return
		}
		m.onRTCP(l, pkt, time.Now())
	}
}

// onRTCP accounts one decrypted RTCP packet of l.
func (m *srtpMedia) onRTCP(l *srtpLeg, pkt []byte, now time.Time) {
	pkts, err := rtcp.Unmarshal(pkt)
	if err != nil {
		m.strayRTCP.Add(1)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	matched := false
	for _, p := range pkts {
		rr, ok := p.(*rtcp.ReceiverReport)
		if !ok {
			continue
		}
		for _, r := range rr.Reports {
			if l.started && r.SSRC == l.s.ssrc {
				matched = true
				l.s.report(r, now)
			}
		}
	}
	if matched {
		l.s.rtcpRX++
	} else {
		m.strayRTCP.Add(1)
	}
}

// DTLSStats are the callers' WebRTC handshakes in an SRTP run: per call,
// from the 200 OK with the relay's answer to Connect done (the ICE check
// and the DTLS-SRTP handshake).
type DTLSStats struct {
	Completed, Failed int
	Median, P99, Max  time.Duration
	// PerSec is the rate handshakes completed at, from the first to the
	// last: what the relay kept up with during call setup, which the call
	// rate bounds from above.
	PerSec float64
	// PeakPerSec is the most handshakes done within one second of the run.
	PeakPerSec int
	// Errors counts the failures by kind: ice, timeout, fingerprint, alert,
	// ended (the call or run ended first), other.
	Errors     map[string]int `json:",omitempty"`
	FirstError string         `json:",omitempty"`
	// Of the calls that ended: SRTP and SRTCP packets the callers could not
	// decrypt (bad tag, replay), and decrypted ones their readers dropped
	// for being too slow.
	DecryptFailures, QueueDrops uint64
}

// dtlsLog collects the handshakes as they finish; its owner's lock guards it.
type dtlsLog struct {
	durations []time.Duration
	done      []time.Time
	failed    int
	errors    map[string]int
	firstErr  string
}

func (d *dtlsLog) add(took time.Duration, at time.Time, err error) {
	if err == nil {
		d.durations = append(d.durations, took)
		d.done = append(d.done, at)
		return
	}
	d.failed++
	if d.errors == nil {
		d.errors = map[string]int{}
	}
	d.errors[handshakeError(err)]++
	if d.firstErr == "" {
		d.firstErr = err.Error()
	}
}

func handshakeError(err error) string {
	switch {
	case errors.Is(err, webrtcpeer.ErrICE):
		return "ice"
	case errors.Is(err, webrtcpeer.ErrHandshakeTimeout):
		return "timeout"
	case errors.Is(err, webrtcpeer.ErrFingerprint):
		return "fingerprint"
	case errors.Is(err, webrtcpeer.ErrRemoteAlert):
		return "alert"
	case errors.Is(err, webrtcpeer.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "ended"
	}
	return "other"
}

// stats summarises the log; begin is the run's start, for the per-second
// peak.
func (d *dtlsLog) stats(begin time.Time) *DTLSStats {
	st := &DTLSStats{Completed: len(d.durations), Failed: d.failed, FirstError: d.firstErr}
	if len(d.errors) > 0 {
		st.Errors = make(map[string]int, len(d.errors))
		for k, v := range d.errors {
			st.Errors[k] = v
		}
	}
	if len(d.durations) == 0 {
		return st
	}
	s := slices.Clone(d.durations)
	slices.Sort(s)
	st.Median = s[len(s)/2]
	st.P99 = s[min(len(s)-1, len(s)*99/100)]
	st.Max = s[len(s)-1]
	cmp := func(a, b time.Time) int { return a.Compare(b) }
	if span := slices.MaxFunc(d.done, cmp).Sub(slices.MinFunc(d.done, cmp)); len(s) > 1 && span > 0 {
		st.PerSec = float64(len(s)-1) / span.Seconds()
	}
	perSec := map[int64]int{}
	for _, t := range d.done {
		k := int64(t.Sub(begin) / time.Second)
		perSec[k]++
		st.PeakPerSec = max(st.PeakPerSec, perSec[k])
	}
	return st
}
