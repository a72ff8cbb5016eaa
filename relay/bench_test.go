package relay

import (
	"net/netip"
	"runtime"
	"strconv"
	"testing"
)

// nullPath accepts everything and stores nothing, so benchmarks measure
// the engine alone.
type nullPath struct{ name string }

func (n nullPath) Name() string                   { return n.name }
func (nullPath) Upsert(Flow) error                { return nil }
func (nullPath) Delete(FlowKey) error             { return nil }
func (nullPath) Stats(FlowKey) (FlowStats, error) { return FlowStats{}, nil }
func (nullPath) Close() error                     { return nil }

type nullKernel struct{ nullPath }

func (nullKernel) Reason() string                       { return "bench" }
func (nullKernel) Counters() (map[string]uint64, error) { return nil, nil }

type nullSlow struct{ nullPath }

func (nullSlow) Counters() map[string]uint64 { return nil }
func (nullSlow) Sockets() int                { return 0 }

// benchEngine has room for 100,000 legs: 50,000 calls of one stream.
func benchEngine(b *testing.B) *Engine {
	b.Helper()
	var addrs []AddressConfig
	for i := 1; i <= 5; i++ {
		addrs = append(addrs, AddressConfig{Name: "a" + strconv.Itoa(i),
			Local: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), PortMin: 10000, PortMax: 59999})
	}
	e, err := NewEngine(Config{Addresses: addrs, Logger: discardLogger(), ProcDir: b.TempDir()},
		nullKernel{nullPath{"xdp"}}, nullSlow{nullPath{"userspace"}}, "")
	if err != nil {
		b.Fatal(err)
	}
	return e
}

var (
	benchA   = netip.MustParseAddrPort("203.0.113.10:5000")
	benchAc  = netip.MustParseAddrPort("203.0.113.10:5001")
	benchB   = netip.MustParseAddrPort("198.51.100.20:6000")
	benchBc  = netip.MustParseAddrPort("198.51.100.20:6001")
	benchNat = netip.MustParseAddrPort("203.0.113.99:41000")
)

// setupCall does what a call does to the engine: offer, answer, both sides
// latch RTP and RTCP.
func setupCall(b *testing.B, e *Engine, id string, legA, legB LegSpec) {
	if err := e.CreateSession(id); err != nil {
		b.Fatal(err)
	}
	p, err := e.AddStream(id, 0, legA, legB)
	if err != nil {
		b.Fatal(err)
	}
	if err := e.SetPeer(id, 0, SideA, benchA, benchAc, false); err != nil {
		b.Fatal(err)
	}
	if err := e.SetPeer(id, 0, SideB, benchB, benchBc, false); err != nil {
		b.Fatal(err)
	}
	for _, l := range []LegPorts{p.A, p.B} {
		e.lock(netip.AddrPortFrom(l.Local, l.RTP), benchNat)
		e.lock(netip.AddrPortFrom(l.Local, l.RTCP), benchNat)
	}
}

// BenchmarkSessionLifecycle is one whole call: create, offer, answer,
// four latches, handoff, delete.
func BenchmarkSessionLifecycle(b *testing.B) {
	e := benchEngine(b)
	legA, legB := LegSpec{Address: "a1"}, LegSpec{Address: "a2"}
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = "call-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := ids[i%len(ids)]
		i++
		setupCall(b, e, id, legA, legB)
		e.mu.Lock()
		e.runHandoffs(e.now().Add(e.cfg.HandoffDelay))
		e.mu.Unlock()
		if _, err := e.DeleteSession(id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemory50k holds 50,000 latched calls and reports the heap they
// take per session, then times one inactivity scan over all of them.
func BenchmarkMemory50k(b *testing.B) {
	const n = 50000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "call-" + strconv.Itoa(i) + "@example.org"
	}
	for b.Loop() {
		e := benchEngine(b)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i, id := range ids {
			legA := LegSpec{Address: "a" + strconv.Itoa(1+i%5)}
			legB := LegSpec{Address: "a" + strconv.Itoa(1+(i+1)%5)}
			setupCall(b, e, id, legA, legB)
		}
		e.mu.Lock()
		e.runHandoffs(e.now().Add(e.cfg.HandoffDelay))
		e.mu.Unlock()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := e.Stats().Sessions; got != n {
			b.Fatalf("sessions = %d, want %d", got, n)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/session")

		// Every session due at once: the worst case of the scan.
		e.mu.Lock()
		for _, s := range e.sessions {
			s.checkAt = e.now()
		}
		e.mu.Unlock()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		e.step(true)
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.Mallocs-m0.Mallocs), "scan-allocs")
		runtime.KeepAlive(e)
	}
}
