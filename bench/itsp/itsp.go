// Package itsp is the ITSP capacity benchmark: the traffic of a
// subscriber population (keep-alives, registration refreshes with digest,
// calls) against sipd, after the traffic model in docs/reference.md [R2].
//
// sipd and the generator run on loopback. The generator is a few UDP
// sockets, each hosting many subscribers and driven by one goroutine with
// recvmmsg/sendmmsg, pre-built messages and a pacing schedule.
package itsp

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sipxdp/bench/cpu"
	"sipxdp/bench/mem"
	"sipxdp/internal/sipdrun"
	"sipxdp/sipd"
	"sipxdp/sipd/sipconf"
)

// Options of one "bench itsp" invocation.
type Options struct {
	Subscribers  []int
	Duration     time.Duration
	RegisterRate float64
	Media        string // none or nat
	Sipd         string
	Out          string
	Shards       int
	Profile      bool // capture a 10 s CPU profile of sipd during the hold
	Quick        bool
	CallRate     float64 // calls per second; 0: the model's N/5000
	// Proxies is how many sipd share the subscribers (default 1); the
	// generator's sockets are spread over them. More than one needs
	// Store "redis".
	Proxies int
	// Store is the location table: "file" (the default, sipd's own
	// journal) or "redis" (a redis-server the bench starts on loopback,
	// shared by every proxy).
	Store    string
	Progress io.Writer
}

// Main runs "bench itsp".
func Main(args []string) int {
	fs := flag.NewFlagSet("bench itsp", flag.ContinueOnError)
	subs := fs.String("subscribers", "100000", "subscriber counts, comma separated (sipd restarted per count)")
	quick := fs.Bool("quick", false, "tiny scale for CI: 2,000 subscribers, 10 s hold")
	out := fs.String("out", "", "output directory (default: a new temporary one)")
	dur := fs.Duration("duration", 60*time.Second, "measured hold with the full mix")
	rate := fs.Float64("register-rate", 5000, "initial registrations per second")
	media := fs.String("media", "none", "sipd media.mode: none or nat")
	sipd := fs.String("sipd", "", "sipd binary (default: build it)")
	shards := fs.Int("shards", 0, "generator sockets (default: 4)")
	profile := fs.Bool("profile", true, "capture a 10 s CPU profile of sipd during the hold (not with --quick)")
	proxies := fs.Int("proxies", 1, "sipd nodes sharing the subscribers (more than 1 needs --store redis)")
	store := fs.String("store", "file", "location table: file (sipd's journal) or redis (a redis-server on loopback, shared)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o := Options{Duration: *dur, RegisterRate: *rate, Media: *media, Sipd: *sipd, Out: *out, Shards: *shards,
		Profile: *profile && !*quick, Quick: *quick, Progress: os.Stderr, Proxies: *proxies, Store: *store}
	if *quick {
		o.Subscribers = []int{2000}
		o.Duration = 10 * time.Second
		// The model's 0.4 calls/s would hardly exercise the call path.
		o.CallRate = 10
	} else {
		for _, f := range strings.Split(*subs, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 2 {
				fmt.Fprintf(os.Stderr, "bench itsp: bad --subscribers %q\n", f)
				return 2
			}
			o.Subscribers = append(o.Subscribers, n)
		}
	}
	if o.Media != "none" && o.Media != "nat" {
		fmt.Fprintln(os.Stderr, "bench itsp: --media is none or nat")
		return 2
	}
	if err := o.checkNodes(); err != nil {
		fmt.Fprintln(os.Stderr, "bench itsp:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rs, err := Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench itsp:", err)
		return 1
	}
	for _, r := range rs {
		fmt.Printf("%d subscribers: failures %d, notify %.0f/s, calls %.1f/s, sipd CPU avg %.2f cores, %.0f B per contact\n",
			r.Subscribers, r.Failures(), r.Class("notify").Achieved, r.Class("call").Achieved, r.SipdCPUAvg, r.BytesPerContact)
		if x := r.Redis; x != nil {
			ramp := r.Class("register-ramp")
			fmt.Printf("  %d sipd on redis: registrations %.0f/s (p50 %.2f ms, p99 %.2f ms), %d cross-node calls; "+
				"redis %.0f B per contact, %.1f µs CPU per registration\n",
				r.Proxies, r.Ramp.Rate, ramp.P50ms, ramp.P99ms, r.CrossNodeCalls, x.BytesPerContact, x.CPUUsPerRegistration)
		}
	}
	fmt.Println("report:", filepath.Join(o.Out, "report.md"))
	return 0
}

// Run runs every size in o.Subscribers, writes the outputs and returns
// the results of this invocation.
func Run(ctx context.Context, o Options) ([]Result, error) {
	if err := o.checkNodes(); err != nil {
		return nil, err
	}
	var err error
	if o.Out, o.Sipd, err = sipdrun.Workdir(ctx, o.Out, "bench-itsp-", o.Sipd); err != nil {
		return nil, err
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	var rs []Result
	for _, n := range o.Subscribers {
		r, err := runOne(ctx, o, n)
		if err != nil {
			return rs, fmt.Errorf("%d subscribers: %w", n, err)
		}
		rs = append(rs, r)
		if err := WriteAll(o.Out, []Result{r}); err != nil {
			return rs, err
		}
	}
	return rs, nil
}

// sipdConfig is sipd's config for the run: the embedded default with one
// UDP listener, pprof on and the given media mode. The generator's model
// depends on digest for REGISTER and INVITE, a persistent location store
// and an hour's maximum expiry; they are set here rather than trusted to
// stay the defaults.
func sipdConfig(media string) (*sipd.Config, error) {
	cfg, err := sipdrun.Loopback(sipconf.Listen{Transport: "udp", Addr: "127.0.0.1:0"}, media)
	if err != nil {
		return nil, err
	}
	cfg.SIP.Auth.Register, cfg.SIP.Auth.Invite = true, true
	cfg.SIP.Registrar.Store = "location.json"
	cfg.SIP.Registrar.MaxExpires = sipconf.Duration(time.Hour)
	// The generator's sources, 127.0.0.1-8, must never be banned.
	if !slices.Contains(cfg.SIP.Protect.Exempt, "127.0.0.0/8") {
		cfg.SIP.Protect.Exempt = append(cfg.SIP.Protect.Exempt, "127.0.0.0/8")
	}
	return cfg, nil
}

// rssBytes is 0 when sipd has gone: the sample then shows the gap.
func rssBytes(pid int) uint64 {
	v, _ := mem.RSS(pid)
	return v
}

func runOne(ctx context.Context, o Options, n int) (Result, error) {
	r := Result{Time: time.Now().UTC(), Subscribers: n, Users: max(n, 1000000), Duration: o.Duration.Seconds(),
		RegisterRate: o.RegisterRate, Media: o.Media, Transport: "udp", CPUs: runtime.NumCPU(), Host: hostName()}
	if o.Quick {
		r.Users = max(n, 10000)
	}
	dir := filepath.Join(o.Out, fmt.Sprintf("run-%d-%d", n, time.Now().Unix()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	var ub strings.Builder
	ub.Grow(r.Users * 32)
	for i := range r.Users {
		fmt.Fprintf(&ub, "%s password=%s\n", user(i), password)
	}
	// Written here, not by Start: StartSeconds is sipd's own start.
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte(ub.String()), 0o600); err != nil {
		return r, err
	}
	r.Proxies, r.Store = max(o.Proxies, 1), cmp.Or(o.Store, "file")
	var rds *redisNode
	if r.Store == "redis" {
		var err error
		if rds, err = startRedis(dir); err != nil {
			return r, err
		}
		defer rds.stop()
	}
	t0 := time.Now()
	nodes, err := startNodes(ctx, o, dir, users, rds, r.Proxies)
	defer func() {
		for _, d := range nodes {
			d.Stop()
		}
	}()
	if err != nil {
		return r, err
	}
	d := nodes[0]
	var proxies []netip.AddrPort
	for _, nd := range nodes {
		proxies = append(proxies, nd.SIP)
	}
	r.StartSeconds = time.Since(t0).Seconds()
	time.Sleep(time.Second)
	r.RSSIdle = nodesRSS(nodes)
	if rds != nil {
		if r.Redis, err = rds.before(ctx); err != nil {
			return r, err
		}
	}

	st := &stats{}
	c := &control{base: time.Now(), n: n, proxies: proxies, domain: "127.0.0.1", st: st}
	c.rates[clsRamp] = o.RegisterRate
	c.rates[clsNotify] = float64(n) / 15
	c.rates[clsRegister] = float64(n) / 3000
	c.rates[clsCall] = float64(n) / 5000
	if o.CallRate > 0 {
		c.rates[clsCall] = o.CallRate
	}
	k := o.Shards
	if k <= 0 {
		// One socket per core is enough: each is read and written in
		// batches, and more goroutines only add wake-ups.
		k = 4
	}
	r.Shards = k
	var shards []*shard
	for i := range k {
		// Sources spread over 127.0.0.1-127.0.0.8.
		local := netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i%8)})
		sh, err := newShard(c, i, k, local)
		if err != nil {
			return r, err
		}
		shards = append(shards, sh)
	}
	done := make(chan struct{})
	for _, sh := range shards {
		go func() { sh.run(); done <- struct{}{} }()
	}
	defer func() {
		c.phase.Store(phStop)
		for range shards {
			<-done
		}
	}()
	smp := newSampler(nodes, rds.pid(), o.Progress, st, n)
	go smp.loop(ctx)
	defer smp.stop()

	// Phase 1: the registration ramp.
	setPhase := func(p int32) {
		c.start.Store(c.now())
		c.phase.Store(p)
		smp.setPhase(p)
	}
	// The ramp's CPU per process over its exact span: at 5,000/s a
	// small ramp is over before the once-a-second sampler has looked.
	procs := rampProcs(nodes, rds)
	rampCPU0, rampCPUErr := cpu.Take(procs)
	rampStart := time.Now()
	setPhase(phRamp)
	limit := time.Duration(float64(n)/o.RegisterRate*2*float64(time.Second)) + 40*time.Second
	for st.rampDone.Load() < int64(n) {
		if time.Since(rampStart) > limit {
			return r, fmt.Errorf("registration ramp: %d of %d done after %s", st.rampDone.Load(), n, limit)
		}
		if err := ctx.Err(); err != nil {
			return r, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Ramp.Seconds = time.Since(rampStart).Seconds()
	r.Ramp.Rate = float64(n) / r.Ramp.Seconds
	r.Ramp.CPUAvg = smp.cpuSince(rampStart)
	rampCPU := map[string]float64{}
	if rampCPU1, err := cpu.Take(procs); err == nil && rampCPUErr == nil {
		rampCPU = cpu.Between(rampCPU0, rampCPU1).Procs
		r.Ramp.CPUAvg = 0
		for i := range nodes {
			r.Ramp.CPUAvg += rampCPU[nodeName(i)]
		}
	}
	time.Sleep(2 * time.Second)
	r.RSSRegistered = nodesRSS(nodes)
	if rds != nil {
		if err := rds.registered(ctx, r.Redis, n, r.Ramp.Seconds, rampCPU["redis"]); err != nil {
			return r, err
		}
	}
	if h, err := health(ctx, d); err == nil {
		r.HealthAfterRamp = h
	}
	if r.RSSRegistered > r.RSSIdle {
		r.BytesPerContact = float64(r.RSSRegistered-r.RSSIdle) / float64(n)
	}

	// Phase 2: the hold with the full mix.
	holdStart := time.Now()
	smp.markHold()
	pkts0 := st.pktsIn.Load() + st.pktsOut.Load()
	genProf := startGenProfile(dir)
	setPhase(phHold)
	var prof chan string
	if o.Profile && o.Duration >= 20*time.Second {
		prof = make(chan string, 1)
		go func() {
			time.Sleep(o.Duration / 3)
			prof <- captureProfile(ctx, d.HTTP, o.Sipd, dir)
		}()
	}
	select {
	case <-time.After(o.Duration):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	holdEnd := time.Now()
	smp.markHoldEnd()
	pkts := st.pktsIn.Load() + st.pktsOut.Load() - pkts0
	r.GenProfileTop = genProf(ctx)
	setPhase(phDrain)
	drainLimit := time.Now().Add(timerB + ringTime + 5*time.Second)
	for time.Now().Before(drainLimit) {
		var act int64
		for _, sh := range shards {
			act += sh.active.Load()
		}
		if act == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if prof != nil {
		r.ProfileTop = <-prof
	}
	hold := holdEnd.Sub(holdStart).Seconds()
	for cls := range nClasses {
		cc := &st.c[cls]
		cr := ClassResult{Name: classNames[cls], Offered: cc.offered.Load(), Completed: cc.completed.Load(),
			Timeouts: cc.timeouts.Load(), Non2xx: cc.non2xx.Load(), Retrans: cc.retrans.Load(), Dups: cc.dups.Load(),
			Sent: cc.sent.Load(), P50ms: cc.lat.quantile(0.5), P99ms: cc.lat.quantile(0.99), OfferedRate: c.rates[cls]}
		secs := hold
		if cls == clsRamp {
			secs = r.Ramp.Seconds
			cr.OfferedRate = o.RegisterRate
		}
		if cls == clsBye {
			cr.OfferedRate = c.rates[clsCall]
		}
		if secs > 0 {
			cr.Achieved = float64(cr.Completed) / secs
		}
		if cr.Sent > 0 {
			cr.RetransPct = 100 * float64(cr.Retrans) / float64(cr.Sent)
		}
		r.Classes = append(r.Classes, cr)
	}
	r.SendDrops = st.sendDrops.Load()
	r.CrossNodeCalls = st.crossNode.Load()
	smp.fill(&r)
	if len(nodes) > 1 {
		r.Nodes = smp.nodeResults(rampCPU)
	}
	if hold > 0 {
		r.GenMsgRate = float64(pkts) / hold
	}
	if r.GenMsgRate > 0 {
		r.GenUsPerMsg = 1e6 * r.GenCPUAvg / r.GenMsgRate
	}
	if h, err := health(ctx, d); err == nil {
		r.HealthAfterHold = h
	}
	return r, nil
}

func hostName() string {
	h, _ := os.Hostname()
	k, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return h + " (Linux " + strings.TrimSpace(string(k)) + ")"
}

// startGenProfile starts a CPU profile of this process (the generator)
// into dir/gen-cpu.pprof; the function it returns stops it and returns
// pprof's top.
func startGenProfile(dir string) func(context.Context) string {
	p := filepath.Join(dir, "gen-cpu.pprof")
	f, err := os.Create(p)
	if err != nil {
		return func(context.Context) string { return err.Error() }
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func(context.Context) string { return "generator profile: " + err.Error() }
	}
	return func(ctx context.Context) string {
		pprof.StopCPUProfile()
		f.Close()
		exe, _ := os.Executable()
		out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", exe, p).CombinedOutput()
		if err != nil {
			return "pprof: " + err.Error()
		}
		return string(out)
	}
}

// captureProfile takes 10 s of sipd CPU profile and returns pprof's top.
func captureProfile(ctx context.Context, base, bin, dir string) string {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/debug/pprof/profile?seconds=10", nil)
	if err != nil {
		return err.Error()
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return "profile: " + err.Error()
	}
	defer resp.Body.Close()
	p := filepath.Join(dir, "sipd-cpu.pprof")
	f, err := os.Create(p)
	if err != nil {
		return err.Error()
	}
	io.Copy(f, resp.Body)
	f.Close()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=15", bin, p).CombinedOutput()
	if err != nil {
		return "pprof: " + err.Error()
	}
	return string(out)
}

// cpuSample is one second of the sampler.
type cpuSample struct {
	at       time.Time
	sipd     float64 // cores
	self     float64
	busy     float64
	rss      uint64
	phase    int32
	inHold   bool
	trans    int64
	regs     int
	calls    int
	hasTrans bool
	nodes    []float64 // each sipd's cores, with several
	redis    float64   // redis-server's cores
}
