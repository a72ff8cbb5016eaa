package itsp

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"sipxdp/bench/cpu"
	"sipxdp/bench/procsample"
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

// sampler turns procsample.Every's readings into sipd's and the generator's
// CPU, sipd's RSS and the system's busy cores each second, reads /health
// every other second, and prints a progress line every five.
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
	var last [nClasses]uint64
	var lastH SipHealth
	var lastPrint time.Time
	procsample.Every(ctx, s.quit, time.Second, s.d.PID(), func(i int, prev *procsample.Reading, cur procsample.Reading) {
		if prev == nil {
			lastPrint = cur.At
			return
		}
		wall := cur.At.Sub(prev.At)
		smp := cpuSample{at: cur.At, busy: cpu.BusyCores(prev.Sys, cur.Sys, wall), self: cpu.ProcCores(prev.Self, cur.Self, wall), rss: cur.RSS}
		if cur.ProcOK {
			smp.sipd = cpu.ProcCores(prev.Proc, cur.Proc, wall)
		}
		if i%2 == 1 {
			if h, err := health(ctx, s.d); err == nil {
				smp.hasTrans, smp.trans, smp.regs, smp.calls = true, h.Transactions, h.Registrations, h.ActiveCalls
				lastH = h
			}
		}
		s.mu.Lock()
		smp.phase, smp.inHold = s.phase, s.inHold
		s.samples = append(s.samples, smp)
		s.mu.Unlock()
		if cur.At.Sub(lastPrint) >= 5*time.Second {
			el := cur.At.Sub(lastPrint).Seconds()
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
			lastPrint = cur.At
		}
	})
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
