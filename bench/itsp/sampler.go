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
// every other second, and prints a progress line every five. With several
// sipd (nodes) their CPU and RSS are summed, and each node's and the
// redis-server's CPU kept too.
type sampler struct {
	d       *sipdrun.Sipd
	nodes   []*sipdrun.Sipd
	redis   int // redis-server's PID, 0 for none
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

func newSampler(nodes []*sipdrun.Sipd, redisPID int, w io.Writer, st *stats, n int) *sampler {
	return &sampler{d: nodes[0], nodes: nodes, redis: redisPID, w: w, st: st, n: n, quit: make(chan struct{}), stopped: make(chan struct{})}
}

// others reads the CPU of the nodes after the first and of redis-server,
// in cores since the last call (prev keeps each PID's last times).
func (s *sampler) others(prev map[int]cpu.ProcTimes, wall time.Duration) (nodes []float64, redis float64) {
	read := func(pid int) float64 {
		cur, err := cpu.ReadPID(pid)
		if err != nil {
			return 0
		}
		p, ok := prev[pid]
		prev[pid] = cur
		if !ok || wall <= 0 {
			return 0
		}
		return cpu.ProcCores(p, cur, wall)
	}
	for _, d := range s.nodes[1:] {
		nodes = append(nodes, read(d.PID()))
	}
	if s.redis > 0 {
		redis = read(s.redis)
	}
	return nodes, redis
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
	otherPrev := map[int]cpu.ProcTimes{}
	procsample.Every(ctx, s.quit, time.Second, s.d.PID(), func(i int, prev *procsample.Reading, cur procsample.Reading) {
		if prev == nil {
			lastPrint = cur.At
			s.others(otherPrev, 0)
			return
		}
		wall := cur.At.Sub(prev.At)
		smp := cpuSample{at: cur.At, busy: cpu.BusyCores(prev.Sys, cur.Sys, wall), self: cpu.ProcCores(prev.Self, cur.Self, wall), rss: cur.RSS}
		if cur.ProcOK {
			smp.sipd = cpu.ProcCores(prev.Proc, cur.Proc, wall)
		}
		if len(s.nodes) > 1 || s.redis > 0 {
			others, redis := s.others(otherPrev, wall)
			smp.nodes, smp.redis = append([]float64{smp.sipd}, others...), redis
			for i, c := range others {
				smp.sipd += c
				smp.rss += rssBytes(s.nodes[i+1].PID())
			}
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

// nodeResults gives each sipd's cores in the ramp (ramp, by node name,
// measured over its exact span) and its average in the hold.
func (s *sampler) nodeResults(ramp map[string]float64) []NodeResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NodeResult, len(s.nodes))
	var kh int
	for _, x := range s.samples {
		if len(x.nodes) != len(out) || !x.inHold {
			continue
		}
		kh++
		for i, c := range x.nodes {
			out[i].CPUHoldAvg += c
		}
	}
	for i, d := range s.nodes {
		out[i].Name, out[i].SIP = nodeName(i), d.SIP.String()
		out[i].CPURampAvg = ramp[out[i].Name]
		out[i].RSSRegistered = rssBytes(d.PID())
		if kh > 0 {
			out[i].CPUHoldAvg /= float64(kh)
		}
	}
	return out
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
	var redisHold float64
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
		redisHold += x.redis
		if x.hasTrans {
			r.TransactionsHold = max(r.TransactionsHold, x.trans)
		}
	}
	if k > 0 {
		r.SipdCPUAvg /= float64(k)
		r.GenCPUAvg /= float64(k)
		r.SystemBusyAvg /= float64(k)
		if r.Redis != nil {
			r.Redis.CPUHoldAvg = redisHold / float64(k)
		}
	}
}
