package relay

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakePath is a Datapath that records every call.
type fakePath struct {
	name string

	mu    sync.Mutex
	flows map[FlowKey]Flow
	stats map[FlowKey]FlowStats
	calls []string
	// upsertErr, when set, decides whether an Upsert fails.
	upsertErr func(Flow) error
	// resetOnUpsert makes a replaced flow start its counters from zero.
	resetOnUpsert bool
	closed        int
	statsCalls    int
}

func newFakePath(name string) *fakePath {
	return &fakePath{name: name, flows: map[FlowKey]Flow{}, stats: map[FlowKey]FlowStats{}}
}

func (f *fakePath) Name() string { return f.name }

func (f *fakePath) Upsert(fl Flow) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("upsert %s learning=%v", fl.Key, fl.Learning))
	if f.upsertErr != nil {
		if err := f.upsertErr(fl); err != nil {
			return err
		}
	}
	if _, ok := f.flows[fl.Key]; ok && f.resetOnUpsert {
		delete(f.stats, fl.Key)
	}
	f.flows[fl.Key] = fl
	return nil
}

func (f *fakePath) Delete(k FlowKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "delete "+k.String())
	if _, ok := f.flows[k]; !ok {
		return ErrFlowNotFound
	}
	delete(f.flows, k)
	delete(f.stats, k)
	return nil
}

func (f *fakePath) Stats(k FlowKey) (FlowStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statsCalls++
	if _, ok := f.flows[k]; !ok {
		return FlowStats{}, ErrFlowNotFound
	}
	return f.stats[k], nil
}

func (f *fakePath) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}

// flow returns the installed copy of the flow arriving at local.
func (f *fakePath) flow(local netip.AddrPort) (Flow, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl, ok := f.flows[FlowKey{Local: local}]
	return fl, ok
}

func (f *fakePath) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.flows)
}

// addTraffic counts packets on an installed flow, as forwarding would.
func (f *fakePath) addTraffic(t *testing.T, local netip.AddrPort, pkts uint64, at time.Time) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	k := FlowKey{Local: local}
	if _, ok := f.flows[k]; !ok {
		t.Fatalf("%s: traffic on %s, which is not installed", f.name, local)
	}
	f.stats[k] = f.stats[k].Add(FlowStats{Packets: pkts, Bytes: pkts * 160, LastSeen: at})
}

func (f *fakePath) upserts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if len(c) > 6 && c[:6] == "upsert" {
			n++
		}
	}
	return n
}

type fakeKernel struct{ *fakePath }

func (fakeKernel) Reason() string { return "fake kernel" }
func (fakeKernel) Counters() (map[string]uint64, error) {
	return map[string]uint64{"pass_learning": 3}, nil
}

type fakeSlow struct{ *fakePath }

func (fakeSlow) Counters() map[string]uint64 { return map[string]uint64{"rx": 5} }
func (s fakeSlow) Sockets() int              { return s.count() }

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

var (
	ext4 = netip.MustParseAddr("192.0.2.1")
	int4 = netip.MustParseAddr("10.0.0.1")
	ext6 = netip.MustParseAddr("2001:db8::1")
	pub4 = netip.MustParseAddr("198.51.100.1")
)

func testAddresses() []AddressConfig {
	return []AddressConfig{
		{Name: "external", Local: ext4, Advertised: pub4, PortMin: 20000, PortMax: 20009},
		{Name: "internal", Local: int4, PortMin: 30000, PortMax: 30003},
		{Name: "external", Local: ext6, PortMin: 40000, PortMax: 40009},
	}
}

type harness struct {
	e    *Engine
	k    *fakePath // nil without a kernel path
	s    *fakePath
	clk  *fakeClock
	cfg  Config
	slow fakeSlow
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newHarness builds an engine on fakes. mod may change the config.
func newHarness(t *testing.T, withKernel bool, mod func(*Config)) *harness {
	t.Helper()
	return newHarnessKernel(t, withKernel, false, mod)
}

// crossKernel is a fake kernel whose programs translate between families.
type crossKernel struct{ fakeKernel }

func (crossKernel) CrossFamily() bool { return true }

// newHarnessKernel is newHarness with a kernel that relays flows between
// IPv4 and IPv6 when crossFamily is set.
func newHarnessKernel(t *testing.T, withKernel, crossFamily bool, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{s: newFakePath("userspace"), clk: &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	h.cfg = Config{
		Addresses:    testAddresses(),
		MediaTimeout: time.Minute,
		HandoffDelay: time.Second,
		Logger:       discardLogger(),
		ProcDir:      t.TempDir(), // never the host's sysctls
		Now:          h.clk.Now,
	}
	if mod != nil {
		mod(&h.cfg)
	}
	var kp KernelPath
	if withKernel {
		h.k = newFakePath("xdp")
		kp = fakeKernel{h.k}
		if crossFamily {
			kp = crossKernel{fakeKernel{h.k}}
		}
	}
	h.slow = fakeSlow{h.s}
	e, err := NewEngine(h.cfg, kp, h.slow, "no CAP_BPF")
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	return h
}

// call creates a session with one stream and returns its ports.
func (h *harness) call(t *testing.T, id string, a, b LegSpec) StreamPorts {
	t.Helper()
	if err := h.e.CreateSession(id); err != nil {
		t.Fatal(err)
	}
	p, err := h.e.AddStream(id, 0, a, b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (h *harness) setPeer(t *testing.T, id string, side Side, rtp string, mux bool) {
	t.Helper()
	ap := netip.MustParseAddrPort(rtp)
	rtcp := netip.AddrPortFrom(ap.Addr(), ap.Port()+1)
	if err := h.e.SetPeer(id, 0, side, ap, rtcp, mux); err != nil {
		t.Fatal(err)
	}
}

// step advances the clock and runs what Run would run at that time.
func (h *harness) step(d time.Duration) time.Time {
	now := h.clk.Advance(d)
	h.e.step(true)
	return now
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// report tells the engine, as the slow path would, that the flow arriving
// at local took src (locked or not), ranked against what the flow
// learns by.
func (e *Engine) report(local, src netip.AddrPort, locked bool) {
	e.mu.Lock()
	var ann netip.AddrPort
	rank := RankOther
	if d, ok := e.flows[local]; ok {
		ann = d.st.legs[d.from].announced[d.comp]
		rank = RankOf(src, ann, e.hints(d), e.cfg.Strict)
	}
	e.mu.Unlock()
	e.latch(LatchEvent{Key: FlowKey{Local: local}, Latch: Latch{Source: src, Rank: rank, Locked: locked}, Announced: ann})
}

// lock reports that the flow arriving at local locked to src.
func (e *Engine) lock(local, src netip.AddrPort) { e.report(local, src, true) }
