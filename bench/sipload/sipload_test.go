package sipload

import (
	"context"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"sipxdp/internal/sipdrun"
	"sipxdp/sipd/sipconf"
)

// startSipd builds sipd and starts it on loopback in the given media mode
// with the userspace relay.
func startSipd(t *testing.T, ctx context.Context, mode string, uasCount int) *sipdrun.Sipd {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs sipd")
	}
	dir := t.TempDir()
	bin, err := sipdrun.Build(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := sipdrun.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Listen = "127.0.0.1:0"
	// UDP only: a free UDP port need not be free for TCP.
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}}
	cfg.Media.Mode, cfg.Media.Datapath = mode, "userspace"
	// A port range of our own below the ephemeral range, spread so that
	// packages testing in parallel rarely share one.
	pmin := 20000 + 64*(os.Getpid()%150)
	cfg.Media.Addresses[0].PortMin, cfg.Media.Addresses[0].PortMax = pmin, pmin+63
	cfg.Log.Level = "warn"
	d, err := sipdrun.Start(ctx, cfg, sipdrun.Options{Binary: bin, Dir: dir, Users: UsersFile(uasCount, "secret")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("sipd log:\n%s", d.Log())
		}
	})
	return d
}

// runCalls places calls calls of 2 s through sipd at proxy, answered by
// uas callees, and checks every call completed with RTP echoed without
// loss and RTCP round trips measured.
func runCalls(t *testing.T, ctx context.Context, proxy netip.AddrPort, uas, calls int, srtp bool) Result {
	t.Helper()
	res, err := Run(ctx, Config{Proxy: proxy, Password: "secret", UASCount: uas, Total: calls, CPS: 20,
		Duration: 2 * time.Second, Timeout: 5 * time.Second, SRTP: srtp})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if (res.DTLS != nil) != srtp {
		t.Errorf("handshake figures %+v with SRTP %v", res.DTLS, srtp)
	}
	if res.Completed != calls || res.Failed != 0 {
		t.Errorf("completed %d, failed %d of %d; codes %v", res.Completed, res.Failed, calls, res.Codes)
	}
	if res.Codes[407] != calls || res.Codes[200] != 2*calls {
		t.Errorf("codes %v, want a 407 and two 200s (INVITE, BYE) per call", res.Codes)
	}
	if len(res.CallCodes) != 1 || res.CallCodes[200] != calls {
		t.Errorf("call outcomes %v, want 200 for each of %d calls", res.CallCodes, calls)
	}
	// About 100 packets per call at 50 pps for 2 s; allow for timer slack.
	if res.UACRX < uint64(calls)*50 || res.UASRX < uint64(calls)*50 {
		t.Errorf("RTP received: caller %d, callee %d; want at least %d each", res.UACRX, res.UASRX, calls*50)
	}
	if res.LossMax != 0 {
		t.Errorf("loss avg %.4f max %.4f, want 0", res.LossAvg, res.LossMax)
	}
	if res.SetupAvg <= 0 || res.SetupP99 < res.SetupAvg {
		t.Errorf("setup avg %v p99 %v", res.SetupAvg, res.SetupP99)
	}
	if res.RTTCalls != calls || res.RTTMax < res.RTTAvg || res.RTTMax > time.Second {
		t.Errorf("rtt measured on %d of %d calls, avg %v max %v", res.RTTCalls, calls, res.RTTAvg, res.RTTMax)
	}
	if res.RTCPTX < uint64(2*calls) || res.RTCPRX < uint64(2*calls) {
		t.Errorf("rtcp tx %d rx %d, want an SR and an RR per call at least", res.RTCPTX, res.RTCPRX)
	}
	if res.JitterMax < res.JitterAvg || res.JitterMax > time.Second || res.JitterAvg < 0 {
		t.Errorf("jitter avg %v max %v", res.JitterAvg, res.JitterMax)
	}
	return res
}

// TestCallsThroughUserspaceRelay places 10 calls of 2 s through a sipd
// child in media mode all with the userspace relay, with digest auth on
// REGISTER and INVITE, and checks every call completed with RTP both ways,
// no loss, RTCP round trips, and that the relay counted packets.
func TestCallsThroughUserspaceRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := startSipd(t, ctx, "all", 2)
	before, err := d.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const calls = 10
	res := runCalls(t, ctx, d.SIP, 2, calls, false)
	after, err := d.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Media.Path != "userspace" {
		t.Errorf("media path %q, want userspace", after.Media.Path)
	}
	// Every echoed packet crosses the relay twice.
	if moved := after.Media.Packets - before.Media.Packets; moved < res.UACRX {
		t.Errorf("relay counted %d packets, fewer than the %d the caller got back", moved, res.UACRX)
	}
}

// TestSRTPCallsThroughUserspaceRelay is TestCallsThroughUserspaceRelay
// with WebRTC callers: each offers UDP/TLS/RTP/SAVPF, sipd's relay answers
// ICE and DTLS-SRTP on the callers' leg and offers the callees plain RTP.
// Every handshake must complete and be timed, the RTP must come back
// decrypted without loss, and RTCP round trips must work through the
// muxed SRTCP leg.
func TestSRTPCallsThroughUserspaceRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := startSipd(t, ctx, "all", 2)
	const calls = 10
	res := runCalls(t, ctx, d.SIP, 2, calls, true)
	h := res.DTLS
	if h == nil {
		t.Fatal("no handshake figures with SRTP callers")
	}
	t.Logf("handshakes %+v", *h)
	if h.Completed != calls || h.Failed != 0 || len(h.Errors) != 0 {
		t.Errorf("handshakes: %d done, %d failed %v (%s); want %d done", h.Completed, h.Failed, h.Errors, h.FirstError, calls)
	}
	if h.Median <= 0 || h.P99 < h.Median || h.Max < h.P99 || h.Max > 5*time.Second {
		t.Errorf("handshake times: median %v p99 %v max %v", h.Median, h.P99, h.Max)
	}
	if h.DecryptFailures != 0 || h.QueueDrops != 0 {
		t.Errorf("callers dropped %d packets that did not decrypt and %d they were too slow for", h.DecryptFailures, h.QueueDrops)
	}
	if h.PerSec <= 0 || h.PeakPerSec < 1 || h.PeakPerSec > calls {
		t.Errorf("handshake rate %.1f/s, peak %d in a second", h.PerSec, h.PeakPerSec)
	}
}

// TestCallsDirect is the same with media mode none: RTP and RTCP go
// straight between the two sides' shared socket pairs.
func TestCallsDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d := startSipd(t, ctx, "none", 3)
	const calls = 10
	runCalls(t, ctx, d.SIP, 3, calls, false)
}

// TestPerf runs 2,000 concurrent calls in media mode none and prints the
// load generator's own CPU time; it only asserts correctness. Set
// SIPLOAD_PERF=1 to run it.
func TestPerf(t *testing.T) {
	if os.Getenv("SIPLOAD_PERF") == "" {
		t.Skip("SIPLOAD_PERF not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := startSipd(t, ctx, "none", 4)
	const calls = 2000
	u0, s0 := cpuTime(t)
	res, err := Run(ctx, Config{Proxy: d.SIP, Password: "secret", UASCount: 4, Total: calls, CPS: 400,
		Duration: 20 * time.Second, Timeout: 10 * time.Second})
	u1, s1 := cpuTime(t)
	user, sys := u1-u0, s1-s0
	cpu := user + sys
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	t.Logf("load generator (both sides) CPU %v (user %v, system %v) over %v wall: %.1f %% of one core",
		cpu, user, sys, res.Elapsed.Round(time.Millisecond), 100*cpu.Seconds()/res.Elapsed.Seconds())
	if res.Completed != calls {
		t.Errorf("completed %d of %d; codes %v", res.Completed, calls, res.Codes)
	}
}

func cpuTime(t *testing.T) (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// With Proxies the calls alternate over them; without, all use Proxy.
func TestProxyFor(t *testing.T) {
	a, b := netip.MustParseAddrPort("10.0.0.1:5060"), netip.MustParseAddrPort("10.0.0.2:5060")
	for _, tt := range []struct {
		name string
		cfg  UACConfig
		want []netip.AddrPort
	}{
		{"one proxy", UACConfig{Proxy: a}, []netip.AddrPort{a, a, a}},
		{"two proxies", UACConfig{Proxy: a, Proxies: []netip.AddrPort{b, a}}, []netip.AddrPort{b, a, b}},
	} {
		u := &uac{cfg: tt.cfg}
		for n, want := range tt.want {
			if got := u.proxyFor(n); got != want {
				t.Errorf("%s: call %d through %s, want %s", tt.name, n, got, want)
			}
		}
	}
}
