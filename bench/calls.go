package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"sipxdp/bench/sipload"
)

// CallsMain runs "bench calls": sipd as a child on loopback, loaded with
// calls by bench/sipload, and a summary of what the calls and sipd's
// /health showed. It is the skeleton of the per-scenario benchmark.
func CallsMain(args []string) int {
	fs := flag.NewFlagSet("bench calls", flag.ContinueOnError)
	mode := fs.String("mode", "all", "media.mode for sipd: none or all")
	datapath := fs.String("datapath", "userspace", "media.datapath for sipd: userspace or auto")
	total := fs.Int("total", 100, "calls to place")
	cps := fs.Float64("cps", 10, "new calls per second")
	duration := fs.Duration("duration", 10*time.Second, "hold time of each call")
	uasCount := fs.Int("uas-count", 4, "callee instances, each registered with digest auth")
	sipdBin := fs.String("sipd", "", "sipd binary (default: go build sipxdp/cmd/sipd into a temp dir)")
	portMin := fs.Int("port-min", 20000, "first relay port (keep below 32768, the ephemeral range)")
	portMax := fs.Int("port-max", 32767, "last relay port")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *mode != "none" && *mode != "all" {
		fmt.Fprintf(os.Stderr, "bench calls: --mode must be none or all\n")
		return 2
	}
	if *datapath != "userspace" && *datapath != "auto" {
		fmt.Fprintf(os.Stderr, "bench calls: --datapath must be userspace or auto\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runCalls(ctx, os.Stdout, callsOpts{mode: *mode, datapath: *datapath, total: *total, cps: *cps,
		duration: *duration, uasCount: *uasCount, sipd: *sipdBin, portMin: *portMin, portMax: *portMax}); err != nil {
		fmt.Fprintf(os.Stderr, "bench calls: %v\n", err)
		return 1
	}
	return 0
}

type callsOpts struct {
	mode, datapath   string
	total            int
	cps              float64
	duration         time.Duration
	uasCount         int
	sipd             string
	portMin, portMax int
}

func runCalls(ctx context.Context, w io.Writer, o callsOpts) error {
	dir, err := os.MkdirTemp("", "bench-calls-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	bin := o.sipd
	if bin == "" {
		if bin, err = sipload.BuildSipd(ctx, dir); err != nil {
			return err
		}
	}
	const password = "bench-secret"
	d, err := sipload.StartDaemon(ctx, sipload.DaemonConfig{Binary: bin, Dir: dir, Mode: o.mode,
		Datapath: o.datapath, UASCount: o.uasCount, Password: password, PortMin: o.portMin, PortMax: o.portMax})
	if err != nil {
		return err
	}
	defer d.Stop()
	before, err := d.Health(ctx)
	if err != nil {
		return err
	}

	// Sample /health while the calls run: concurrency as sipd sees it.
	var (
		mu      sync.Mutex
		samples []int
		last    sipload.Health
	)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		n := 0
		for {
			select {
			case <-sampleCtx.Done():
				return
			case <-t.C:
			}
			h, err := d.Health(sampleCtx)
			if err != nil || h.SIP == nil {
				continue
			}
			mu.Lock()
			samples = append(samples, h.SIP.ActiveCalls)
			last = h
			mu.Unlock()
			if n++; n%4 == 0 {
				fmt.Fprintf(os.Stderr, "active %d, in setup %d, completed %d, relay packets %d\n",
					h.SIP.ActiveCalls, h.SIP.CallsInSetup, h.SIP.CallsCompleted, h.Media.Packets-before.Media.Packets)
			}
		}
	})
	res, runErr := sipload.Run(ctx, sipload.Config{Proxy: d.SIP, Password: password, UASCount: o.uasCount,
		Total: o.total, CPS: o.cps, Duration: o.duration})
	stopSampling()
	wg.Wait()
	after, err := d.Health(ctx)
	if err != nil {
		after = last
	}
	stopErr := d.Stop()

	peak, avg := 0, 0.0
	if len(samples) > 0 {
		peak = slices.Max(samples)
		sum := 0
		for _, s := range samples {
			sum += s
		}
		avg = float64(sum) / float64(len(samples))
	}
	fmt.Fprintf(w, "scenario        mode=%s datapath=%s path=%s\n", o.mode, o.datapath, after.Media.Path)
	fmt.Fprintf(w, "calls           attempted %d, completed %d, failed %d in %v\n", res.Attempted, res.Completed,
		res.Failed, res.Elapsed.Round(time.Millisecond))
	codes := slices.Sorted(func(yield func(int) bool) {
		for k := range res.Codes {
			if !yield(k) {
				return
			}
		}
	})
	fmt.Fprintf(w, "status codes   ")
	for _, k := range codes {
		fmt.Fprintf(w, " %d:%d", k, res.Codes[k])
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "setup latency   avg %v, p99 %v\n", res.SetupAvg.Round(time.Microsecond), res.SetupP99.Round(time.Microsecond))
	fmt.Fprintf(w, "loss            avg %.4f %%, max %.4f %%\n", 100*res.LossAvg, 100*res.LossMax)
	fmt.Fprintf(w, "rtp packets     tx %d, rx %d (caller %d, callee %d)\n", res.TXPackets, res.RXPackets, res.UACRX, res.UASRX)
	// The media clock skips ticks when the machine is saturated; show how
	// much of the nominal 50 pps per call the caller really sent.
	if nominal := uint64(res.Completed) * uint64(o.duration/(20*time.Millisecond)); nominal > 0 {
		fmt.Fprintf(w, "rtp pacing      caller sent %d of nominal %d (%.1f %%)\n", res.UACTX, nominal,
			100*float64(res.UACTX)/float64(nominal))
	}
	fmt.Fprintf(w, "concurrent      peak %d, avg %.1f (sipd /health, %d samples)\n", peak, avg, len(samples))
	fmt.Fprintf(w, "relay           %d packets, %d bytes\n", after.Media.Packets-before.Media.Packets,
		after.Media.Bytes-before.Media.Bytes)
	if runErr != nil {
		return fmt.Errorf("load: %w", runErr)
	}
	if stopErr != nil {
		return stopErr
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d of %d calls failed", res.Failed, res.Attempted)
	}
	return nil
}
