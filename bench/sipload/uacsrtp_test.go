package sipload

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pion/rtcp"

	"sipxdp/internal/webrtcpeer"
)

func TestDTLSStats(t *testing.T) {
	begin := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var d dtlsLog
	// 100 handshakes of 1..100 ms, done 10 ms apart from 1 s in: 99
	// intervals over 990 ms is 100/s, and no second holds more than 100.
	for i := range 100 {
		d.add(time.Duration(i+1)*time.Millisecond, begin.Add(time.Second+time.Duration(i)*10*time.Millisecond), nil)
	}
	d.add(0, begin, fmt.Errorf("x: %w", webrtcpeer.ErrHandshakeTimeout))
	d.add(0, begin, fmt.Errorf("x: %w", webrtcpeer.ErrICE))
	d.add(0, begin, fmt.Errorf("x: %w", webrtcpeer.ErrHandshakeTimeout))
	st := d.stats(begin)
	if st.Completed != 100 || st.Failed != 3 {
		t.Errorf("completed %d failed %d, want 100 and 3", st.Completed, st.Failed)
	}
	if st.Median != 51*time.Millisecond || st.P99 != 100*time.Millisecond || st.Max != 100*time.Millisecond {
		t.Errorf("median %v p99 %v max %v, want 51ms 100ms 100ms", st.Median, st.P99, st.Max)
	}
	if st.PerSec < 99.9 || st.PerSec > 100.1 || st.PeakPerSec != 100 {
		t.Errorf("rate %.2f/s peak %d, want 100/s and 100", st.PerSec, st.PeakPerSec)
	}
	if st.Errors["timeout"] != 2 || st.Errors["ice"] != 1 || len(st.Errors) != 2 {
		t.Errorf("errors %v", st.Errors)
	}
	if st.FirstError != "x: "+webrtcpeer.ErrHandshakeTimeout.Error() {
		t.Errorf("first error %q", st.FirstError)
	}

	var one dtlsLog
	one.add(time.Millisecond, begin, nil)
	if st := one.stats(begin); st.PerSec != 0 || st.PeakPerSec != 1 || st.Median != time.Millisecond {
		t.Errorf("one handshake: %+v, want no rate, a peak of 1", st)
	}
	if st := (&dtlsLog{}).stats(begin); st.Completed != 0 || st.Median != 0 || st.Errors != nil {
		t.Errorf("no handshakes: %+v", st)
	}
}

func TestHandshakeError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{webrtcpeer.ErrICE, "ice"},
		{fmt.Errorf("a: %w", webrtcpeer.ErrHandshakeTimeout), "timeout"},
		{webrtcpeer.ErrFingerprint, "fingerprint"},
		{webrtcpeer.ErrRemoteAlert, "alert"},
		{webrtcpeer.ErrClosed, "ended"},
		{fmt.Errorf("b: %w", context.Canceled), "ended"},
		{errors.New("something else"), "other"},
	} {
		if got := handshakeError(tc.err); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestSRTPLegAccounting: a leg counts its own stream's echoes and
// reports, and nothing before it is connected or of another SSRC.
func TestSRTPLegAccounting(t *testing.T) {
	m := &srtpMedia{}
	now := time.Now()
	l := &srtpLeg{s: stream{ssrc: 7}}
	m.onRTP(l, rtpPacket(7, 0), now) // before start
	l.started, l.s.start, l.s.next, l.s.tx = true, now.Add(-time.Second), 4, 4
	for seq := range uint16(4) {
		if seq != 2 {
			m.onRTP(l, rtpPacket(7, seq), now)
		}
	}
	m.onRTP(l, rtpPacket(8, 1), now)
	m.onRTP(l, []byte{0x80}, now)
	rr, _ := (&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 7, LastSenderReport: ntpMid(ntpTime(now))}}}).Marshal()
	m.onRTCP(l, rr, now.Add(time.Millisecond))
	other, _ := (&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 9}}}).Marshal()
	m.onRTCP(l, other, now)
	tot := l.s.totals()
	if tot.rx != 3 || tot.loss != 0.25 || tot.rtcpRX != 1 || tot.rttN != 1 {
		t.Errorf("totals %+v: want 3 echoes, a quarter lost, one report with a round trip", tot)
	}
	if m.strayRTP.Load() != 3 || m.strayRTCP.Load() != 1 {
		t.Errorf("strays rtp %d rtcp %d, want 3 and 1", m.strayRTP.Load(), m.strayRTCP.Load())
	}
}
