// Package sipload is the project's own SIP and RTP load generator: UAS
// instances that register with digest auth and answer in echo mode, and a
// UAC that places calls at a set rate, holds them and hangs up, with
// G.711-sized RTP every 20 ms and RTCP reports on each call.
//
// The two sides can run in separate processes (RunUAS, RunUAC) or together
// on loopback (Run). It is built to stay out of the measurement: one UDP
// socket per UA for SIP with one reader each, and a fixed set of RTP/RTCP
// socket pairs per side shared by all calls (demultiplexed by SSRC), read
// with recvmmsg and written with sendmmsg from a single media clock, so
// there is no goroutine and no socket per call or per packet.
//
// With SRTP the callers are WebRTC endpoints instead (internal/webrtcpeer,
// one per call, with its own socket and goroutines, as a browser has),
// whose handshakes the result reports; the callees stay plain.
package sipload

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Config is one loopback run: callees and caller in this process.
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
	SRTP    bool // WebRTC callers (UACConfig.SRTP)
}

// Result is what a run measured.
type Result struct {
	Attempted, Completed, Failed int
	Codes                        map[int]int // final responses to INVITE and BYE seen by the UAC; 0: local timeout
	// Each call's outcome, as in the reference's status counts: the final
	// answer to its INVITE after the digest challenge; 0: no answer in
	// time, -1: answered without usable SDP.
	CallCodes            map[int]int
	SetupAvg, SetupP99   time.Duration
	LossAvg, LossMax     float64 // per call, fraction of the UAC's packets not echoed back
	TXPackets, RXPackets uint64  // RTP, all legs (RunUAC: the caller's only)
	UACRX, UASRX         uint64  // RTP received by each side
	UACTX                uint64  // RTP sent by the caller; below Duration/20ms per call when the clock fell behind
	// RTP packets the caller never sent because its clock fell more than
	// maxCatchUp packets behind; UACTX + TXSkipped is the nominal count.
	TXSkipped            uint64
	JitterAvg, JitterMax time.Duration // RFC 3550 interarrival jitter of the echoes, per call at its end
	RTTAvg, RTTMax       time.Duration // RTCP round trip: avg of per-call averages, max of any sample
	RTTCalls             int           // completed calls with at least one RTT sample
	RTCPTX, RTCPRX       uint64        // RTCP packets, all sides (RunUAC: the caller's only)
	Elapsed              time.Duration
	DTLS                 *DTLSStats `json:",omitempty"` // the callers' handshakes, with SRTP
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

// Run registers the UAS instances, places cfg.Total calls and returns when
// every call has ended or ctx is done: RunUAS and RunUAC on 127.0.0.1.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.UASCount < 1 || cfg.Total < 1 || cfg.CPS <= 0 {
		return Result{}, errors.New("sipload: uas count, total and cps must be positive")
	}
	uasCtx, stopUAS := context.WithCancel(ctx)
	defer stopUAS()
	ready := make(chan struct{})
	done := make(chan struct{})
	var ures UASResult
	var uerr error
	go func() {
		defer close(done)
		ures, uerr = RunUAS(uasCtx, UASConfig{Proxy: cfg.Proxy, Domain: cfg.Domain, Password: cfg.Password,
			Count: cfg.UASCount}, func() { close(ready) })
	}()
	select {
	case <-ready:
	case <-done:
		return Result{}, uerr
	}
	res, err := RunUAC(ctx, UACConfig{Proxy: cfg.Proxy, Domain: cfg.Domain, Password: cfg.Password,
		UASCount: cfg.UASCount, Total: cfg.Total, CPS: cfg.CPS, Duration: cfg.Duration, Timeout: cfg.Timeout, SRTP: cfg.SRTP})
	stopUAS()
	<-done
	res.UASRX = ures.RTPRX
	res.TXPackets += ures.RTPTX
	res.RXPackets += ures.RTPRX
	res.RTCPTX += ures.RTCPTX
	res.RTCPRX += ures.RTCPRX
	if err == nil {
		err = uerr
	}
	return res, err
}

// every calls fn with each tick's time, period apart, until ctx ends.
func every(ctx context.Context, period time.Duration, fn func(now time.Time)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			fn(now)
		}
	}
}
