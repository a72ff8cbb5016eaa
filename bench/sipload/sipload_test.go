package sipload

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestCallsThroughUserspaceRelay places 10 calls of 2 s through a sipd
// child in media mode all with the userspace relay, with digest auth on
// REGISTER and INVITE, and checks every call completed with RTP both ways,
// no loss, and that the relay counted packets.
func TestCallsThroughUserspaceRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs sipd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	bin, err := BuildSipd(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	sipPort, err := freePort("udp")
	if err != nil {
		t.Fatal(err)
	}
	// A port range of our own below the ephemeral range, spread so that
	// packages testing in parallel rarely share one.
	pmin := 20000 + 64*(sipPort%190)
	d, err := StartDaemon(ctx, DaemonConfig{Binary: bin, Dir: dir, Mode: "all", Datapath: "userspace",
		UASCount: 2, Password: "secret", PortMin: pmin, PortMax: pmin + 63})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(d.LogPath)
			t.Logf("sipd log:\n%s", b)
		}
	}()
	before, err := d.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const calls = 10
	res, err := Run(ctx, Config{Proxy: d.SIP, Password: "secret", UASCount: 2, Total: calls, CPS: 20,
		Duration: 2 * time.Second, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Completed != calls || res.Failed != 0 {
		t.Errorf("completed %d, failed %d of %d; codes %v", res.Completed, res.Failed, calls, res.Codes)
	}
	if res.Codes[407] != calls || res.Codes[200] != 2*calls {
		t.Errorf("codes %v, want a 407 and two 200s (INVITE, BYE) per call", res.Codes)
	}
	// About 100 packets per call at 50 pps for 2 s; allow for timer slack.
	if res.UACRX < calls*50 || res.UASRX < calls*50 {
		t.Errorf("RTP received: caller %d, callee %d; want at least %d each", res.UACRX, res.UASRX, calls*50)
	}
	if res.LossMax != 0 {
		t.Errorf("loss avg %.4f max %.4f, want 0", res.LossAvg, res.LossMax)
	}
	if res.SetupAvg <= 0 || res.SetupP99 < res.SetupAvg {
		t.Errorf("setup avg %v p99 %v", res.SetupAvg, res.SetupP99)
	}
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
