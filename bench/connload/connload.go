// Package connload measures sipd over connection-oriented transports:
// many permanent TCP connections, and TLS with a new connection per
// registration and call, after docs/reference.md [R2].
package connload

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"sipxdp/bench/cpu"
	"sipxdp/bench/mem"
	"sipxdp/internal/childproc"
	"sipxdp/internal/sipdrun"
)

// Config is one "bench conns" run.
type Config struct {
	Mode     string        // tcp, tls or both
	Conns    int           // TCP: permanent connections held
	Rate     float64       // new connections per second (TCP ramp, TLS churn)
	Requests float64       // TCP: requests per second while all are held
	Duration time.Duration // measured load (TCP) or churn (TLS) period
	Procs    int           // client child processes
	IdleTLS  int           // TLS: idle connections held for the memory figure
	TLSCalls float64       // TLS: calls per second, each over a new connection, to the idle ones
	Out      string
	Sipd     string // sipd binary; empty: build it
	Log      *slog.Logger
}

// Main runs "bench conns".
func Main(args []string) int {
	fs := flag.NewFlagSet("conns", flag.ContinueOnError)
	cfg := Config{}
	fs.StringVar(&cfg.Mode, "mode", "tcp", "tcp, tls or both")
	fs.IntVar(&cfg.Conns, "conns", 15000, "TCP: permanent connections to hold")
	fs.Float64Var(&cfg.Rate, "rate", 1000, "new connections per second (TCP ramp; TLS: handshakes per second)")
	fs.Float64Var(&cfg.Requests, "requests", 1000, "TCP: requests per second while all connections are held")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "measured period (TCP load, TLS churn)")
	fs.IntVar(&cfg.Procs, "procs", 4, "client child processes")
	fs.IntVar(&cfg.IdleTLS, "idle-tls", 2000, "TLS: idle connections held to measure memory")
	fs.Float64Var(&cfg.TLSCalls, "tls-calls", 100, "TLS: calls per second for --duration, each from a new TLS connection to an idle registered one")
	fs.StringVar(&cfg.Out, "out", "out/conns", "output directory")
	fs.StringVar(&cfg.Sipd, "sipd", "", "sipd binary (default: build it)")
	quick := fs.Bool("quick", false, "tiny run: 200 TCP connections, 50 TLS, 3 s")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *quick {
		cfg = QuickConfig(cfg)
	}
	cfg.Log = slog.Default()
	ctx, stop := signalContext()
	defer stop()
	rs, err := Run(ctx, cfg)
	for _, r := range rs {
		fmt.Println(r.Summary())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench conns:", err)
		return 1
	}
	fmt.Printf("wrote %s\n", filepath.Join(cfg.Out, "report.md"))
	return 0
}

// QuickConfig shrinks a configuration to a smoke run.
func QuickConfig(c Config) Config {
	c.Conns, c.IdleTLS, c.Procs = 200, 50, 2
	c.Rate, c.Requests, c.Duration = 200, 100, 2*time.Second
	c.TLSCalls = 5
	return c
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Run runs the modes and writes the outputs; it returns the results so
// far even on error.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Procs < 1 {
		cfg.Procs = 1
	}
	modes := []string{cfg.Mode}
	if cfg.Mode == "both" {
		modes = []string{"tcp", "tls"}
	}
	for _, m := range modes {
		if m != "tcp" && m != "tls" {
			return nil, fmt.Errorf("--mode %q: want tcp, tls or both", cfg.Mode)
		}
	}
	var err error
	if cfg.Out, cfg.Sipd, err = sipdrun.Workdir(ctx, cfg.Out, "bench-conns-", cfg.Sipd); err != nil {
		return nil, err
	}
	var results []Result
	for _, m := range modes {
		dir := filepath.Join(cfg.Out, m)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return results, err
		}
		var r Result
		if m == "tcp" {
			r, err = runTCP(ctx, cfg, dir)
		} else {
			r, err = runTLS(ctx, cfg, dir)
		}
		if err != nil {
			return results, fmt.Errorf("%s: %w", m, err)
		}
		results = append(results, r)
	}
	all, err := mergeResults(filepath.Join(cfg.Out, "results.jsonl"), results)
	if err != nil {
		return results, err
	}
	return results, writeOutputs(cfg.Out, all)
}

// clients are the client children that together hold the connections.
type clients struct {
	cs   []*childproc.Proc
	logs []*os.File
}

// startClients starts procs children that together open n connections at
// rate.
func startClients(cfg Config, dir, addr, transport, prefix string, n int, rate float64) (*clients, error) {
	cl := &clients{}
	procs := min(cfg.Procs, n)
	first := 0
	for i := range procs {
		k := n / procs
		if i < n%procs {
			k++
		}
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("client%d.log", i)))
		if err != nil {
			cl.stop()
			return nil, err
		}
		cl.logs = append(cl.logs, logf)
		c, err := childproc.Start(childproc.Spec{Role: ChildRole, Name: fmt.Sprintf("client%d", i), Stderr: logf,
			Params: clientParams{Addr: addr, Transport: transport, Prefix: prefix, First: first, N: k, Rate: rate / float64(procs)}})
		if err != nil {
			cl.stop()
			return nil, err
		}
		cl.cs = append(cl.cs, c)
		first += k
	}
	return cl, nil
}

// collect reads the report of phase (ready, load or answer) from every
// child and merges them.
func (cl *clients) collect(phase string) (childReport, error) {
	sum := childReport{LatUS: map[string][]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	for _, c := range cl.cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r childReport
			m, err := c.Await(context.Background(), phase, 0)
			if err == nil {
				err = m.Decode(&r)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				firstErr = cmp(firstErr, err)
				return
			}
			sum.OK += r.OK
			sum.Failed += r.Failed
			if len(sum.Errors) < 5 {
				sum.Errors = append(sum.Errors, r.Errors...)
			}
			for k, v := range r.LatUS {
				sum.LatUS[k] = append(sum.LatUS[k], v...)
			}
		}()
	}
	wg.Wait()
	return sum, firstErr
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (cl *clients) send(cmd childCmd) error {
	for _, c := range cl.cs {
		if err := c.Send(cmd); err != nil {
			return err
		}
	}
	return nil
}

// stop ends the children's stdin, which makes them close their
// connections and exit, and gives them 20 s to.
func (cl *clients) stop() {
	var wg sync.WaitGroup
	for _, c := range cl.cs {
		wg.Add(1)
		go func() { defer wg.Done(); c.Close(20 * time.Second) }()
	}
	wg.Wait()
	for _, f := range cl.logs {
		f.Close()
	}
}

// memPoint is sipd's memory at one moment.
type memPoint struct {
	RSS int64
	goMem
	FDs int
}

func measure(s *sipd) (memPoint, error) {
	rss, err := mem.RSS(s.d.PID())
	if err != nil {
		return memPoint{}, err
	}
	gm, err := s.goMem()
	return memPoint{RSS: int64(rss), goMem: gm, FDs: s.d.OpenFiles()}, err
}

// settle waits for sipd's memory to stop moving after a change.
func settle(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func procCPU(pid int) cpu.ProcTimes {
	t, _ := cpu.ReadPID(pid)
	return t
}

// runTCP: permanent TCP connections, then requests across them.
func runTCP(ctx context.Context, cfg Config, dir string) (Result, error) {
	r := Result{Mode: "tcp", Conns: cfg.Conns, ConnRate: cfg.Rate, ReqRate: cfg.Requests,
		Duration: cfg.Duration.Seconds(), Procs: cfg.Procs, TargetPerConn: 8 * 1024}
	s, before, err := startSipd(ctx, cfg.Sipd, dir, "TCP", map[string]int{"c": cfg.Conns})
	if err != nil {
		return r, err
	}
	defer s.d.Stop()
	cfg.Log.Info("tcp: opening connections", "conns", cfg.Conns, "rate", cfg.Rate, "procs", cfg.Procs)
	c0, t0 := procCPU(s.d.PID()), time.Now()
	cl, err := startClients(cfg, dir, s.sip, "TCP", "c", cfg.Conns, cfg.Rate)
	if err != nil {
		return r, err
	}
	defer cl.stop()
	ready, err := cl.collect("ready")
	if err != nil {
		return r, err
	}
	rampWall := time.Since(t0)
	r.RampSeconds = rampWall.Seconds()
	r.RampCPU = cpu.ProcCores(c0, procCPU(s.d.PID()), rampWall)
	r.Held, r.ConnectFailed, r.Errors = ready.OK, ready.Failed, ready.Errors
	r.RegP50, r.RegP99 = percentiles(ready.LatUS["REGISTER"])
	cfg.Log.Info("tcp: connections held", "held", r.Held, "failed", r.ConnectFailed, "ramp", rampWall.Round(time.Millisecond))
	settle(ctx, 3*time.Second)
	held, err := measure(s)
	if err != nil {
		return r, err
	}
	r.setMemory(before, held, r.Held)
	if err := s.saveHeap(filepath.Join(dir, "heap-held.pb.gz")); err != nil {
		return r, err
	}

	cfg.Log.Info("tcp: load", "requests", cfg.Requests, "duration", cfg.Duration)
	c1, t1 := procCPU(s.d.PID()), time.Now()
	if err := cl.send(childCmd{Cmd: "load", Rate: cfg.Requests / float64(len(cl.cs)),
		Duration: cfg.Duration.String(), RegisterEvery: 10}); err != nil {
		return r, err
	}
	load, err := cl.collect("load")
	if err != nil {
		return r, err
	}
	wall := time.Since(t1)
	r.LoadCPU = cpu.ProcCores(c1, procCPU(s.d.PID()), wall)
	r.ReqOK, r.ReqFailed = load.OK, load.Failed
	r.ReqAchieved = float64(load.OK+load.Failed) / wall.Seconds()
	var all []int
	for _, v := range load.LatUS {
		all = append(all, v...)
	}
	r.ReqP50, r.ReqP99 = percentiles(all)
	r.OptP50, r.OptP99 = percentiles(load.LatUS["OPTIONS"])
	r.RefP50, r.RefP99 = percentiles(load.LatUS["REGISTER"])
	r.Errors = append(r.Errors, load.Errors...)
	after, err := measure(s)
	if err == nil {
		r.RSSAfterLoadMB = mb(after.RSS)
	}
	return r, nil
}

// runTLS: idle TLS connections for memory, then one new TLS connection
// per registration at the target rate.
func runTLS(ctx context.Context, cfg Config, dir string) (Result, error) {
	r := Result{Mode: "tls", Conns: cfg.IdleTLS, ConnRate: cfg.Rate, Duration: cfg.Duration.Seconds(),
		Procs: cfg.Procs, TargetPerConn: 40 * 1024}
	churnUsers := max(1, min(1000, int(cfg.Rate)))
	s, before, err := startSipd(ctx, cfg.Sipd, dir, "TLS", map[string]int{"i": cfg.IdleTLS, "t": churnUsers})
	if err != nil {
		return r, err
	}
	defer s.d.Stop()
	cfg.Log.Info("tls: opening idle connections", "conns", cfg.IdleTLS)
	t0 := time.Now()
	cl, err := startClients(cfg, dir, s.sip, "TLS", "i", cfg.IdleTLS, min(cfg.Rate, 500))
	if err != nil {
		return r, err
	}
	ready, err := cl.collect("ready")
	if err != nil {
		cl.stop()
		return r, err
	}
	r.RampSeconds = time.Since(t0).Seconds()
	r.Held, r.ConnectFailed, r.Errors = ready.OK, ready.Failed, ready.Errors
	settle(ctx, 3*time.Second)
	held, err := measure(s)
	if err != nil {
		cl.stop()
		return r, err
	}
	r.setMemory(before, held, r.Held)
	if err := s.saveHeap(filepath.Join(dir, "heap-held.pb.gz")); err != nil {
		cl.stop()
		return r, err
	}
	if cfg.TLSCalls > 0 {
		if err := tlsCalls(ctx, cfg, s, cl, &r); err != nil {
			cl.stop()
			return r, err
		}
	}
	cl.stop()
	settle(ctx, 2*time.Second)

	cfg.Log.Info("tls: churn, a new connection per REGISTER", "rate", cfg.Rate, "duration", cfg.Duration)
	c1, t1 := procCPU(s.d.PID()), time.Now()
	ok, failed, lat, errs := churn(ctx, s.sip, cfg.Rate, cfg.Duration, churnUsers)
	wall := time.Since(t1)
	r.ChurnCPU = cpu.ProcCores(c1, procCPU(s.d.PID()), wall)
	r.ChurnOK, r.ChurnFailed = ok, failed
	r.Handshakes = float64(ok) / wall.Seconds()
	r.ReqP50, r.ReqP99 = percentiles(lat)
	r.Errors = append(r.Errors, errs...)
	return r, nil
}

// tlsCalls has the children's idle connections answer calls and places
// cfg.TLSCalls calls per second for cfg.Duration, each over a new TLS
// connection.
func tlsCalls(ctx context.Context, cfg Config, s *sipd, cl *clients, r *Result) error {
	if err := cl.send(childCmd{Cmd: "answer"}); err != nil {
		return err
	}
	if _, err := cl.collect("answer"); err != nil {
		return err
	}
	callers := max(1, min(1000, int(cfg.Rate)))
	cfg.Log.Info("tls: calls, a new connection per call", "rate", cfg.TLSCalls, "duration", cfg.Duration)
	r.CallRate = cfg.TLSCalls
	c1, t1 := procCPU(s.d.PID()), time.Now()
	ok, failed, lat, errs := calls(ctx, s.sip, cfg.TLSCalls, cfg.Duration, callers, cfg.IdleTLS)
	wall := time.Since(t1)
	r.CallCPU = cpu.ProcCores(c1, procCPU(s.d.PID()), wall)
	r.CallOK, r.CallFailed = ok, failed
	r.CallsPerS = float64(ok) / wall.Seconds()
	r.CallP50, r.CallP99 = percentiles(lat)
	r.Errors = append(r.Errors, errs...)
	return nil
}

// churn registers over a fresh TLS connection each time, at rate per
// second for d: handshake, REGISTER, 401, REGISTER, 200, close.
func churn(ctx context.Context, addr string, rate float64, d time.Duration, users int) (ok, failed int, lat []int, errs []string) {
	dial := dialer("TLS")
	return paced(ctx, rate, d, func(i int) (time.Duration, error) {
		t0 := time.Now()
		c, err := dial(ctx, addr)
		if err != nil {
			return 0, fmt.Errorf("handshake: %w", err)
		}
		defer c.Close()
		user := fmt.Sprintf("t%d", i%users)
		s := newSipConn(c, user, "TLS", addr, fmt.Sprintf("<sip:%s@127.0.0.1:5999;transport=TLS>", user))
		if err := s.register(password, 10*time.Second); err != nil {
			return 0, err
		}
		return time.Since(t0), nil
	})
}

// paced runs rate×d jobs, started on schedule (not in bursts), each on its
// own goroutine, at most 2,000 at once (each holds a connection and a
// file). It returns how many succeeded and failed, the successes' latency
// in microseconds, and a sample of the errors.
func paced(ctx context.Context, rate float64, d time.Duration, job func(i int) (time.Duration, error)) (ok, failed int, lat []int, errs []string) {
	total := int(rate * d.Seconds())
	var nok, nfail atomic.Int64
	var el errList
	var ll latencies
	sem := make(chan struct{}, 2000)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		if ctx.Err() != nil {
			break
		}
		if w := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); w > 0 {
			time.Sleep(w)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			took, err := job(i)
			if err != nil {
				nfail.Add(1)
				el.add(err)
				return
			}
			nok.Add(1)
			ll.add("job", took)
		}()
	}
	wg.Wait()
	return int(nok.Load()), int(nfail.Load()), ll.m["job"], el.errs
}

// percentiles returns p50 and p99 in milliseconds of microsecond samples.
func percentiles(us []int) (p50, p99 float64) {
	if len(us) == 0 {
		return 0, 0
	}
	s := slices.Clone(us)
	slices.Sort(s)
	at := func(q float64) float64 { return float64(s[min(len(s)-1, int(q*float64(len(s))))]) / 1000 }
	return at(0.50), at(0.99)
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
