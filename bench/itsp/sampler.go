package itsp

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"sipxdp/bench/cpu"
	"sipxdp/internal/sipdrun"
)

// SipHealth is the part of sipd's /health "sip" object the report keeps.
type SipHealth struct {
	Registrations int    `json:"registrations"`
	AoRs          int    `json:"aors"`
	ActiveCalls   int    `json:"active_calls"`
	Transactions  int64  `json:"transactions"`
	Users         int    `json:"users"`
	Malformed     uint64 `json:"malformed"`
	DroppedFlood  uint64 `json:"dropped_flood"`
}

// health keeps the report's part of sipd's /health.
func health(ctx context.Context, d *sipdrun.Sipd) (SipHealth, error) {
	h, err := d.Health(ctx)
	if err != nil || h.SIP == nil {
		return SipHealth{}, fmt.Errorf("decode health: %v", err)
	}
	st := h.SIP
	return SipHealth{Registrations: st.Registrations, AoRs: st.AoRs, ActiveCalls: st.ActiveCalls, Transactions: st.Transactions,
		Users: st.Users, Malformed: st.Malformed, DroppedFlood: st.DroppedFlood}, nil
}

// sampler reads sipd's and the generator's CPU, sipd's RSS and the
// system's busy cores each second, /health every other second, and
// prints a progress line every five.
type sampler struct {
	d       *sipdrun.Sipd
	w       io.Writer
	st      *stats
	n       int
	mu      sync.Mutex
	samples []cpuSample
	phase   int32
	inHold  bool
	quit    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

func newSampler(d *sipdrun.Sipd, w io.Writer, st *stats, n int) *sampler {
	return &sampler{d: d, w: w, st: st, n: n, quit: make(chan struct{}), stopped: make(chan struct{})}
}

func (s *sampler) setPhase(p int32) { s.mu.Lock(); s.phase = p; s.mu.Unlock() }
func (s *sampler) markHold()        { s.mu.Lock(); s.inHold = true; s.mu.Unlock() }
func (s *sampler) markHoldEnd()     { s.mu.Lock(); s.inHold = false; s.mu.Unlock() }

func (s *sampler) stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.stopped
}

var phaseNames = map[int32]string{phIdle: "idle", phRamp: "register", phHold: "hold", phDrain: "drain", phStop: "stop"}

func (s *sampler) loop(ctx context.Context) {
	defer close(s.stopped)
	pid, self := s.d.PID(), os.Getpid()
	pa, _ := cpu.ReadPID(pid)
	ga, _ := cpu.ReadPID(self)
	sa, _ := cpu.ReadStat()
	ta := time.Now()
	var last [nClasses]uint64
	var lastH SipHealth
	lastPrint := ta
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-s.quit:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pb, err1 := cpu.ReadPID(pid)
		gb, _ := cpu.ReadPID(self)
		sb, _ := cpu.ReadStat()
		tb := time.Now()
		wall := tb.Sub(ta)
		smp := cpuSample{at: tb, busy: cpu.BusyCores(sa, sb, wall), self: cpu.ProcCores(ga, gb, wall), rss: rssBytes(pid)}
		if err1 == nil {
			smp.sipd = cpu.ProcCores(pa, pb, wall)
		}
		if i%2 == 0 {
			if h, err := health(ctx, s.d); err == nil {
				smp.hasTrans, smp.trans, smp.regs, smp.calls = true, h.Transactions, h.Registrations, h.ActiveCalls
				lastH = h
			}
		}
		s.mu.Lock()
		smp.phase, smp.inHold = s.phase, s.inHold
		s.samples = append(s.samples, smp)
		s.mu.Unlock()
		pa, ga, sa, ta = pb, gb, sb, tb
		if tb.Sub(lastPrint) >= 5*time.Second {
			el := tb.Sub(lastPrint).Seconds()
			var rate [nClasses]float64
			for c := range nClasses {
				v := s.st.c[c].completed.Load()
				rate[c] = float64(v-last[c]) / el
				last[c] = v
			}
			var fails uint64
			for c := range nClasses {
				fails += s.st.c[c].timeouts.Load() + s.st.c[c].non2xx.Load()
			}
			fmt.Fprintf(s.w, "itsp %d %-8s reg %6.0f/s notify %6.0f/s refresh %4.0f/s calls %5.1f/s fail %d | sipd %.2f cores %4.0f MB, gen %.2f, system %.2f busy | regs %d tx %d\n",
				s.n, phaseNames[smp.phase], rate[clsRamp], rate[clsNotify], rate[clsRegister], rate[clsCall], fails,
				smp.sipd, float64(smp.rss)/(1<<20), smp.self, smp.busy, lastH.Registrations, lastH.Transactions)
			lastPrint = tb
		}
	}
}

func (s *sampler) cpuSince(t time.Time) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum float64
	var k int
	for _, x := range s.samples {
		if x.at.After(t.Add(time.Second)) {
			sum += x.sipd
			k++
		}
	}
	if k == 0 {
		return 0
	}
	return sum / float64(k)
}

// fill sets the hold's CPU and memory figures of r.
func (s *sampler) fill(r *Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var k int
	for _, x := range s.samples {
		r.RSSPeak = max(r.RSSPeak, x.rss)
		if x.hasTrans {
			r.TransactionsPeak = max(r.TransactionsPeak, x.trans)
		}
		if !x.inHold {
			continue
		}
		k++
		r.SipdCPUAvg += x.sipd
		r.SipdCPUPeak = max(r.SipdCPUPeak, x.sipd)
		r.GenCPUAvg += x.self
		r.SystemBusyAvg += x.busy
		if x.hasTrans {
			r.TransactionsHold = max(r.TransactionsHold, x.trans)
		}
	}
	if k > 0 {
		r.SipdCPUAvg /= float64(k)
		r.GenCPUAvg /= float64(k)
		r.SystemBusyAvg /= float64(k)
	}
}
