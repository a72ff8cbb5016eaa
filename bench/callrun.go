package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"sipxdp/bench/callreport"
	"sipxdp/bench/cpu"
	"sipxdp/bench/procsample"
	"sipxdp/bench/sipload"
	"sipxdp/bpf"
	"sipxdp/internal/childproc"
	"sipxdp/internal/netns"
	"sipxdp/internal/redistest"
	"sipxdp/internal/sipdrun"
)

const (
	callsPassword = "bench-secret"
	// The load generator's RTP ports, inside its own namespaces.
	uacRTPPort = 40000
	uasRTPPort = 40000
)

// callRun is one scenario's state while it runs.
type callRun struct {
	o     *CallsOptions
	sc    callScenario
	level callLevel
	tag   string // scenario-level, for file names and progress

	line *netns.Topo
	sipd *sipdrun.Sipd
	uac  *childproc.Proc
	uas  *childproc.Proc
	pin  string
	// passes are the XDP_PASS programs on the end hosts' veths.
	passes []io.Closer
	// relays are the NG relay nodes of a scenario with Relays.
	relays []*relayNode
	// proxies are the sipd nodes of a scenario with Proxies (the first
	// is also sipd), and redis the server they share.
	proxies []*proxyNode
	redis   *redistest.Server
	// steadyNodes is each proxy node's confirmed calls over the steady
	// window, averaged.
	steadyNodes []float64
	// windowProcs is each process's CPU (cores) in the steady window.
	windowProcs map[string]float64

	mu       sync.Mutex
	samples  []runSample
	progress sipload.Progress
}

// runSample is read once a second while the calls run.
type runSample struct {
	procsample.Reading
	active    int
	nodes     []int // each proxy node's confirmed calls
	healthOK  bool
	relayPkts uint64
	uacTXRX   uint64
	started   int
}

// windowSnap is the reading at each edge of the steady window.
type windowSnap struct {
	snap     cpu.Snapshot
	progTime time.Duration
	progRuns uint64
	progErr  error
}

func runCallScenario(ctx context.Context, o *CallsOptions, sc callScenario, l callLevel) (res callreport.Result, err error) {
	r := &callRun{o: o, sc: sc, level: l, tag: fmt.Sprintf("%s-%d", sc.Name, l.Total)}
	res = callreport.Result{Scenario: sc.Name, Level: l.Total, Time: time.Now().UTC(), Mode: sc.Mode, Datapath: sc.Datapath,
		Total: l.Total, CPS: l.CPS, DurationS: o.Duration.Seconds(), UASCount: o.UASCount}
	if sc.Note != "" {
		res.Notes = append(res.Notes, sc.Note)
	}
	fmt.Fprintf(os.Stderr, "== %s: %d calls at %g/s, held %s\n", r.tag, l.Total, l.CPS, o.Duration)

	if r.line, err = netns.Create(ctx, sc.network()); err != nil {
		return callreport.Result{}, fmt.Errorf("topology: %w", err)
	}
	defer func() {
		if cerr := r.line.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("remove topology: %w", cerr))
		}
	}()
	defer func() {
		for _, p := range r.passes {
			p.Close()
		}
	}()
	if err := r.prepareEndpoints(&res); err != nil {
		return callreport.Result{}, err
	}
	r.pin = filepath.Join(bpffsRoot, fmt.Sprintf("%s%d-calls-%s", pinPrefix, os.Getpid(), sc.Name))
	defer func() {
		// sipd -uninstall removes its pins; anything left is from a failure
		// and must not keep forwarding into a namespace that is gone.
		if rerr := os.RemoveAll(r.pin); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove pins: %w", rerr))
		}
	}()
	sipdPath := sc.Datapath
	if sc.Relays > 0 {
		defer joinStop(&err, r.stopRelays)
		if err := r.startRelays(ctx); err != nil {
			return callreport.Result{}, fmt.Errorf("relays: %w", err)
		}
		// sipd relays nothing itself: keep it off the kernel.
		sipdPath = "userspace"
	}
	if sc.Proxies > 0 {
		defer joinStop(&err, r.stopProxies)
		if err := r.startProxies(ctx); err != nil {
			return callreport.Result{}, fmt.Errorf("proxies: %w", err)
		}
	} else {
		r.sipd, err = startSipdInNS(ctx, sipdSetup{Binary: o.Sipd, Dir: o.Out, Name: r.tag, Mode: sc.Mode, Datapath: sipdPath,
			PinPath: r.pin, Line: r.line, UASCount: o.UASCount, Password: callsPassword, PortMin: o.PortMin, PortMax: o.PortMax,
			Exempt: []string{sc.network().Net4.String()}, Relays: r.relaySet()})
		if err != nil {
			return callreport.Result{}, err
		}
		defer joinStop(&err, r.sipd.Stop)
	}
	h0, err := r.sipd.Health(ctx)
	if err != nil {
		return callreport.Result{}, err
	}
	res.Path = h0.Media.Path
	var relayPkts0 uint64
	if len(r.mediaNodes()) > 0 {
		// startRelays and startProxies checked each node's path.
		res.Path = sc.Path
		if relayPkts0, err = r.relayPackets(ctx); err != nil {
			return callreport.Result{}, err
		}
	} else if sc.Path != "" && h0.Media.Path != sc.Path {
		return callreport.Result{}, fmt.Errorf("sipd runs media path %q, not %q: the scenario cannot be measured here (see %s)",
			h0.Media.Path, sc.Path, r.sipd.LogPath)
	}

	uasProxy := netip.AddrPortFrom(r.line.V4.RelayB, 5060)
	if len(r.proxies) > 0 {
		// The callees register through the last node; calls placed
		// through the others find them in the shared location table.
		uasProxy = r.proxies[len(r.proxies)-1].sip
	}
	r.uas, err = startChild(r.line.Callee, "uas", "_uas", uasChildConfig{
		Proxy: uasProxy, Domain: benchDomain, Password: callsPassword,
		Count: o.UASCount, Addr: r.line.V4.Callee, RTPPort: uasRTPPort, RTPSockets: o.RTPSockets})
	if err != nil {
		return callreport.Result{}, err
	}
	defer r.uas.Kill()
	if _, err := r.uas.Await(ctx, "ready", childReadyTimeout); err != nil {
		return callreport.Result{}, fmt.Errorf("callees: %w", err)
	}
	// Idle memory: sipd with its relay up and every callee registered
	// (every node's, summed, with proxies).
	idle := procsample.Read(r.sipd.PID())
	if len(r.proxies) > 0 {
		r.addPeers(&idle)
	}
	if idle.RSS == 0 {
		return callreport.Result{}, fmt.Errorf("sipd memory: cannot read RSS of %d", r.sipd.PID())
	}
	res.RSSIdleMB = float64(idle.RSS) / (1 << 20)

	if sc.Path != "" && sc.Path != "userspace" {
		// Per-program run time is kept only while asked for; the fd turns
		// it off again when this process ends, however it ends.
		stats, err := bpf.EnableRunStats()
		if err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("%s: no BPF run-time stats: %v", sc.Name, err))
		} else {
			defer stats.Close()
		}
	}

	r.uac, err = startChild(r.line.Caller, "uac", "_uac", uacChildConfig{
		Proxy: netip.AddrPortFrom(r.line.V4.RelayA, 5060), Domain: benchDomain, Password: callsPassword,
		UASCount: o.UASCount, Total: l.Total, CPS: l.CPS, Duration: o.Duration, Addr: r.line.V4.Caller,
		RTPPort: uacRTPPort, RTPSockets: o.RTPSockets, SRTP: sc.SRTP, Proxies: r.proxySIP()})
	if err != nil {
		return callreport.Result{}, err
	}
	defer r.uac.Kill()
	if _, err := r.uac.Await(ctx, "ready", childReadyTimeout); err != nil {
		return callreport.Result{}, fmt.Errorf("caller: %w", err)
	}
	t0 := time.Now()
	from, to, _ := steadyWindow(l, o.Duration)

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var wg sync.WaitGroup
	wg.Go(func() { r.sample(runCtx, t0) })
	var win [2]windowSnap
	var winOK [2]bool
	wg.Go(func() {
		for i, at := range []time.Duration{from, to} {
			select {
			case <-runCtx.Done():
				return
			case <-time.After(time.Until(t0.Add(at))):
			}
			s, err := r.windowSnap()
			if err != nil {
				continue
			}
			win[i], winOK[i] = s, true
		}
	})

	uacRes, uacErr := r.awaitCaller(ctx)
	stopRun()
	wg.Wait()
	var uasRes sipload.UASResult
	if m, err := r.uas.Stop(ctx, childResultTimeout); err != nil {
		uacErr = errors.Join(uacErr, fmt.Errorf("callees: %w", err))
	} else if err := json.Unmarshal(m.Result, &uasRes); err != nil {
		uacErr = errors.Join(uacErr, fmt.Errorf("callees' result: %w", err))
	}
	hEnd, herr := r.sipd.Health(ctx)
	if uacErr != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("%s at %d: %v", sc.Name, l.Total, uacErr))
	}

	fillCalls(&res, uacRes, uasRes)
	r.fillSamples(&res, t0, from, to)
	if herr == nil {
		res.RelayPkts = hEnd.Media.Packets - h0.Media.Packets
	}
	if len(r.mediaNodes()) > 0 {
		if n, err := r.relayPackets(ctx); err == nil {
			res.RelayPkts = n - relayPkts0
		}
	}
	if winOK[0] && winOK[1] {
		r.fillWindow(&res, win[0], win[1])
	} else {
		res.Notes = append(res.Notes, fmt.Sprintf("%s at %d: the steady window was not sampled; no system CPU", sc.Name, l.Total))
	}
	if sc.Relays > 0 && herr == nil {
		r.fillRelayNodes(ctx, &res, hEnd, r.windowProcs)
	}
	if sc.Proxies > 0 {
		r.fillProxyNodes(ctx, &res, r.steadyNodes, r.windowProcs)
	}
	return res, uacErr
}

// prepareEndpoints makes the caller and callee stand in for hosts behind a
// NIC: packets that local sockets send over veth carry a partial UDP
// checksum, which an XDP program cannot see (docs/ARCHITECTURE.md, "The
// kernel hooks on these machines"), so the end hosts compute checksums in
// software, in every scenario alike. Native XDP on veth also needs an XDP
// program on the peer end to redirect into; those stay attached until the
// scenario ends.
func (r *callRun) prepareEndpoints(res *callreport.Result) error {
	for _, e := range []struct {
		ns  *netns.NS
		ifc string
	}{
		{r.line.Caller, netns.CallerIf}, {r.line.Caller, netns.CallerDirectIf},
		{r.line.Callee, netns.CalleeIf}, {r.line.Callee, netns.CalleeDirectIf},
	} {
		if err := e.ns.SetTxChecksum(e.ifc, false); err != nil {
			return fmt.Errorf("tx checksum offload off: %w", err)
		}
	}
	res.Notes = append(res.Notes, "tx checksum offload is off on the caller's and callee's veths in every scenario, "+
		"so packets carry full UDP checksums as from a NIC (XDP cannot fix CHECKSUM_PARTIAL)")
	if r.sc.Datapath == "xdp" {
		for _, e := range []struct {
			ns  *netns.NS
			ifc string
		}{{r.line.Caller, netns.CallerIf}, {r.line.Callee, netns.CalleeIf}} {
			pass, err := bpf.AttachPassXDP(e.ns, e.ifc)
			if err != nil {
				return fmt.Errorf("xdp pass on %s: %w", e.ifc, err)
			}
			r.passes = append(r.passes, pass)
		}
	}
	return nil
}

// awaitCaller follows the caller's progress events until its result.
func (r *callRun) awaitCaller(ctx context.Context) (sipload.Result, error) {
	var res sipload.Result
	// The ramp, the hold, the answer timeout and a margin for the BYEs.
	limit := time.NewTimer(time.Duration(float64(r.level.Total)/r.level.CPS*float64(time.Second)) + r.o.Duration + 60*time.Second)
	defer limit.Stop()
	for {
		select {
		case <-ctx.Done():
			// Ask the caller for what it has so far; it reports it with
			// the cancellation as its error.
			if m, _ := r.uac.Stop(context.Background(), childResultTimeout); len(m.Result) > 0 {
				json.Unmarshal(m.Result, &res)
			}
			return res, fmt.Errorf("interrupted; the figures are partial: %w", ctx.Err())
		case <-limit.C:
			if m, _ := r.uac.Stop(context.Background(), childResultTimeout); len(m.Result) > 0 {
				json.Unmarshal(m.Result, &res)
			}
			return res, errors.New("caller did not finish in time; the figures are partial")
		case m, ok := <-r.uac.Msgs():
			if !ok {
				return res, fmt.Errorf("caller exited without a result: %v", r.uac.Wait())
			}
			switch m.Event {
			case "progress":
				var p sipload.Progress
				if json.Unmarshal(m.Result, &p) == nil {
					r.mu.Lock()
					r.progress = p
					r.mu.Unlock()
				}
			case "result":
				if err := json.Unmarshal(m.Result, &res); err != nil {
					return res, fmt.Errorf("caller's result: %w", err)
				}
				if m.Error != "" {
					return res, fmt.Errorf("caller: %s", m.Error)
				}
				return res, nil
			}
		}
	}
}

// sample reads sipd's CPU, memory and /health once a second and prints
// the progress line.
func (r *callRun) sample(ctx context.Context, t0 time.Time) {
	fi, _ := os.Stderr.Stat()
	tty := fi != nil && fi.Mode()&os.ModeCharDevice != 0
	var prev runSample
	procsample.Every(ctx, nil, time.Second, r.sipd.PID(), func(n int, _ *procsample.Reading, cur procsample.Reading) {
		s := runSample{Reading: cur}
		if len(r.proxies) > 0 {
			// Every node's calls, CPU and memory together.
			r.addPeers(&s.Reading)
			if s.nodes, s.healthOK = r.proxiesActive(ctx); s.healthOK {
				for _, a := range s.nodes {
					s.active += a
				}
			}
		} else if h, err := r.sipd.Health(ctx); err == nil && h.SIP != nil {
			s.active, s.relayPkts, s.healthOK = h.SIP.ActiveCalls, h.Media.Packets, true
		}
		if len(r.mediaNodes()) > 0 {
			// The progress line shows the packets of every node that relays.
			s.relayPkts, _ = r.relayPackets(ctx)
		}
		r.mu.Lock()
		p := r.progress
		s.uacTXRX, s.started = p.TXPackets+p.RXPackets, p.Started
		r.samples = append(r.samples, s)
		r.mu.Unlock()
		if n > 0 && (tty || n%5 == 0) {
			r.printProgress(tty, t0, prev, s, p)
		}
		prev = s
	})
	if tty {
		fmt.Fprintln(os.Stderr)
	}
}

func (r *callRun) printProgress(tty bool, t0 time.Time, a, b runSample, p sipload.Progress) {
	wall := b.At.Sub(a.At)
	if wall <= 0 {
		return
	}
	phase := "hold"
	switch {
	case p.Started < r.level.Total:
		phase = "ramp"
	case p.Completed+p.Failed > 0:
		phase = "hangup"
	}
	cps := float64(b.started-a.started) / wall.Seconds()
	pps := float64(b.uacTXRX-a.uacTXRX) / wall.Seconds()
	sipdCPU := 0.0
	if a.ProcOK && b.ProcOK {
		sipdCPU = 100 * cpu.ProcCores(a.Proc, b.Proc, wall)
	}
	sys := 100 * cpu.BusyCores(a.Sys, b.Sys, wall)
	line := fmt.Sprintf("[%s %5.1fs] %-6s active %5d (sipd %5d)  %6.1f calls/s  caller rtp %7.0f pps  relay %7.0f pps  sipd cpu %5.1f%%  system %5.1f%%",
		r.tag, time.Since(t0).Seconds(), phase, p.Active, b.active, cps, pps,
		float64(b.relayPkts-a.relayPkts)/wall.Seconds(), sipdCPU, sys)
	if tty {
		fmt.Fprintf(os.Stderr, "\r%s\x1b[K", line)
	} else {
		fmt.Fprintln(os.Stderr, line)
	}
}

func (r *callRun) windowSnap() (windowSnap, error) {
	var w windowSnap
	pids := map[string]int{"sipd": r.sipd.PID(), "uac": r.uac.PID(), "uas": r.uas.PID()}
	for _, n := range r.relays {
		pids[n.name] = n.sipd.PID()
	}
	for _, n := range r.proxies {
		pids[n.name] = n.sipd.PID()
	}
	if r.redis != nil {
		pids["redis"] = r.redis.PID()
	}
	s, err := cpu.Take(pids)
	if err != nil {
		return w, err
	}
	all, err := cpu.ScanProcs()
	if err != nil {
		return w, err
	}
	s.All = all
	w.snap = s
	if r.sc.Path != "" && r.sc.Path != "userspace" {
		// The programs of every node that relays, summed: one ns/packet over the set.
		for _, pin := range r.kernelPins() {
			t, runs, err := bpf.PinnedRunStats(pin)
			w.progTime, w.progRuns, w.progErr = w.progTime+t, w.progRuns+runs, errors.Join(w.progErr, err)
		}
	}
	return w, nil
}

// fillWindow computes the steady window's CPU figures.
func (r *callRun) fillWindow(res *callreport.Result, a, b windowSnap) {
	u := cpu.Between(a.snap, b.snap)
	ours := map[int]bool{os.Getpid(): true, r.sipd.PID(): true, r.uac.PID(): true, r.uas.PID(): true}
	for _, n := range r.mediaNodes() {
		ours[n.PID()] = true
	}
	if r.redis != nil {
		ours[r.redis.PID()] = true
	}
	r.windowProcs = u.Procs
	other := cpu.OtherCores(a.snap.All, b.snap.All, func(pid int, _ cpu.ProcTimes) bool { return ours[pid] }, u.Wall)
	res.SteadyS = round2(u.Wall.Seconds())
	res.OtherCPUSteady = round2(100 * other)
	res.SystemCPU = round2(100 * (u.Busy - other))
	res.SipdCPUSteady = round2(100 * u.Procs["sipd"])
	res.LoadCPUSteady = round2(100 * (u.Procs["uac"] + u.Procs["uas"]))
	if a.progErr == nil && b.progErr == nil && r.sc.Path != "" && r.sc.Path != "userspace" {
		if runs := b.progRuns - a.progRuns; runs > 0 {
			ns := round2(float64(b.progTime-a.progTime) / float64(runs))
			res.BPFNsPerPkt, res.BPFRuns = &ns, runs
		}
	} else if b.progErr != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("%s: BPF program stats: %v", r.sc.Name, b.progErr))
	}
	if cpus := runtime.NumCPU(); u.Busy > 0.97*float64(cpus) {
		res.Notes = append(res.Notes, fmt.Sprintf("%s at %d: the machine was saturated in the steady window (%.0f%% of %d CPUs busy)",
			r.sc.Name, r.level.Total, 100*u.Busy, cpus))
	}
}

// fillSamples turns the per-second samples into sipd's CPU and memory
// (over the whole run, like the reference's ps sampling) and concurrency.
func (r *callRun) fillSamples(res *callreport.Result, t0 time.Time, from, to time.Duration) {
	r.mu.Lock()
	ss := slices.Clone(r.samples)
	r.mu.Unlock()
	var cpus, rss, act, steady []float64
	r.steadyNodes = make([]float64, len(r.proxies))
	var nodeSamples int
	for i := 1; i < len(ss); i++ {
		a, b := ss[i-1], ss[i]
		if wall := b.At.Sub(a.At); wall > 0 && a.ProcOK && b.ProcOK {
			cpus = append(cpus, 100*cpu.ProcCores(a.Proc, b.Proc, wall))
		}
	}
	for _, s := range ss {
		if s.RSS > 0 {
			rss = append(rss, float64(s.RSS)/(1<<20))
		}
		if s.healthOK {
			act = append(act, float64(s.active))
			if d := s.At.Sub(t0); d >= from && d <= to {
				steady = append(steady, float64(s.active))
				if len(s.nodes) == len(r.proxies) && len(s.nodes) > 0 {
					nodeSamples++
					for i, a := range s.nodes {
						r.steadyNodes[i] += float64(a)
					}
				}
			}
		}
	}
	res.SipdCPUAvg, res.SipdCPUPeak = round2(mean(cpus)), round2(maxOf(cpus))
	res.RSSAvgMB, res.RSSPeakMB = round2(mean(rss)), round2(maxOf(rss))
	res.CallsAvg, res.CallsPeak = round2(mean(act)), int(maxOf(act))
	res.SteadyCalls = round2(mean(steady))
	for i := range r.steadyNodes {
		if nodeSamples > 0 {
			r.steadyNodes[i] /= float64(nodeSamples)
		}
	}
}

// fillCalls copies the load generator's figures.
func fillCalls(res *callreport.Result, c sipload.Result, s sipload.UASResult) {
	res.Attempted, res.Completed, res.Failed = c.Attempted, c.Completed, c.Failed
	res.StatusCodes = map[string]int{}
	for code, n := range c.CallCodes {
		k := strconv.Itoa(code)
		switch code {
		case 0:
			k = "timeout"
		case -1:
			k = "no-sdp"
		}
		res.StatusCodes[k] = n
	}
	res.SetupAvgMs = round3(float64(c.SetupAvg) / 1e6)
	res.SetupP99Ms = round3(float64(c.SetupP99) / 1e6)
	res.LossAvgPct = round3(100 * c.LossAvg)
	res.LossMaxPct = round3(100 * c.LossMax)
	res.JitterAvgMs = round3(float64(c.JitterAvg) / 1e6)
	res.JitterMaxMs = round3(float64(c.JitterMax) / 1e6)
	res.RTTAvgMs = round3(float64(c.RTTAvg) / 1e6)
	res.RTTMaxMs = round3(float64(c.RTTMax) / 1e6)
	res.UACTX, res.UACRX = c.UACTX, c.UACRX
	res.TXPackets = c.UACTX + s.RTPTX
	res.RXPackets = c.UACRX + s.RTPRX
	res.RTCPTX = c.RTCPTX + s.RTCPTX
	res.RTCPRX = c.RTCPRX + s.RTCPRX
	if c.Completed > 0 && res.DurationS > 0 {
		res.PerCallPPS = round2(float64(c.UACTX) / float64(c.Completed) / res.DurationS)
	}
	if d := c.DTLS; d != nil {
		res.DTLSHandshakes, res.DTLSFailed = d.Completed, d.Failed
		res.DTLSMedianMs = round3(float64(d.Median) / 1e6)
		res.DTLSP99Ms = round3(float64(d.P99) / 1e6)
		res.DTLSMaxMs = round3(float64(d.Max) / 1e6)
		res.DTLSPerSec = round2(d.PerSec)
		res.DTLSPeakPerSec = d.PeakPerSec
		res.DTLSErrors = d.Errors
		if d.DecryptFailures > 0 || d.QueueDrops > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("%s at %d: the callers dropped %d SRTP/SRTCP packets that did not decrypt "+
				"and %d decrypted ones their readers were too slow for (counted as loss)", res.Scenario, res.Level, d.DecryptFailures, d.QueueDrops))
		}
		if d.FirstError != "" {
			res.Notes = append(res.Notes, fmt.Sprintf("%s at %d: %d DTLS handshakes failed; the first: %s",
				res.Scenario, res.Level, d.Failed, d.FirstError))
		}
	}
}

func hostInfo() callreport.Host {
	h := callreport.Host{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		h.MemGB = round2(float64(si.Totalram) * float64(si.Unit) / (1 << 30))
	}
	return h
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func maxOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }
