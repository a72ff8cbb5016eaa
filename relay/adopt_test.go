package relay

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// listingKernel is a fake kernel whose flows survive its process, as
// pinned maps do.
type listingKernel struct {
	fakeKernel
	listErr error
}

func (k listingKernel) ListFlows() ([]FlowWithStats, error) {
	if k.listErr != nil {
		return nil, k.listErr
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []FlowWithStats
	for key, f := range k.flows {
		out = append(out, FlowWithStats{Flow: f, Stats: k.stats[key]})
	}
	return out, nil
}

// leftover installs what a killed process left in the kernel: call 1 with
// both RTP directions between 20000 and 20002 (external, ext4), call 2 with
// one direction 20006 → 20008, and a flow on an address no pool has any
// more.
func leftover(k *fakePath) {
	for _, f := range []Flow{
		{Key: FlowKey{ap(ext4, 20000)}, Peer: ap(pub4, 4000), Out: ap(ext4, 20002), Dst: ap(pub4, 5000)},
		{Key: FlowKey{ap(ext4, 20002)}, Peer: ap(pub4, 5000), Out: ap(ext4, 20000), Dst: ap(pub4, 4000)},
		{Key: FlowKey{ap(ext4, 20006)}, Peer: ap(pub4, 4100), Out: ap(ext4, 20008), Dst: ap(pub4, 5100)},
		{Key: FlowKey{ap(netip.MustParseAddr("192.0.2.99"), 7000)}, Peer: ap(pub4, 4200),
			Out: ap(netip.MustParseAddr("192.0.2.99"), 7002), Dst: ap(pub4, 5200)},
	} {
		k.flows[f.Key] = f
	}
}

func newAdoptHarness(t *testing.T, k *fakePath, listErr error) *harness {
	t.Helper()
	h := &harness{s: newFakePath("userspace"), k: k, clk: &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	h.cfg = Config{Addresses: testAddresses(), MediaTimeout: time.Minute, HandoffDelay: time.Second,
		Logger: discardLogger(), ProcDir: t.TempDir(), Now: h.clk.Now}
	h.slow = fakeSlow{h.s}
	e, err := NewEngine(h.cfg, listingKernel{fakeKernel{k}, listErr}, h.slow, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	h.e = e
	return h
}

func adoptedCalls(fs []FlowInfo) map[string][]netip.AddrPort {
	out := map[string][]netip.AddrPort{}
	for _, f := range fs {
		if strings.HasPrefix(f.CallID, AdoptedPrefix) {
			out[f.CallID] = append(out[f.CallID], f.Local)
		}
	}
	return out
}

func TestAdoptListsFlowsAndReservesPorts(t *testing.T) {
	k := newFakePath("tc")
	leftover(k)
	h := newAdoptHarness(t, k, nil)
	n, err := h.e.Adopt()
	if err != nil || n != 4 {
		t.Fatalf("Adopt = %d, %v; want 4 flows", n, err)
	}
	got := adoptedCalls(h.e.Flows())
	want := map[string]int{"adopted:192.0.2.1:20000": 2, "adopted:192.0.2.1:20006": 1, "adopted:192.0.2.99:7000": 1}
	if len(got) != len(want) {
		t.Fatalf("adopted calls %v, want %v", got, want)
	}
	for id, cnt := range want {
		if len(got[id]) != cnt {
			t.Errorf("%s: flows %v, want %d", id, got[id], cnt)
		}
	}
	for _, f := range h.e.Flows() {
		if f.Path != PathKernel {
			t.Errorf("adopted flow %s on path %q, want kernel", f.Local, f.Path)
		}
	}
	// Adopting twice must not duplicate.
	if n, err := h.e.Adopt(); err != nil || n != 0 {
		t.Fatalf("second Adopt = %d, %v; want 0", n, err)
	}
	st := h.e.Stats()
	if st.AdoptedFlows != 4 || st.KernelFlows != 4 || st.Pools[0].FreePairs != 1 {
		t.Fatalf("stats: adopted %d, kernel flows %d, free external pairs %d; want 4, 4, 1",
			st.AdoptedFlows, st.KernelFlows, st.Pools[0].FreePairs)
	}
	// Adopted flows carry media too: one with a packet just now is an
	// active RTP stream on the kernel path.
	h.k.addTraffic(t, ap(ext4, 20000), 5, h.clk.Now())
	if got := h.e.Stats().ActiveRTP; got != (ActiveStreams{Kernel: 1}) {
		t.Errorf("active RTP = %+v, want the adopted flow with traffic on the kernel", got)
	}
	// The external pool has five pairs; four are adopted, one is left.
	if err := h.e.CreateSession("new"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.e.AddStream("new", 0, def, def); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("second external pair: err = %v, want exhausted (adopted ports handed out?)", err)
	}
	p, err := h.e.AddStream("new", 0, def, LegSpec{Address: "internal"})
	if err != nil {
		t.Fatal(err)
	}
	if p.A.RTP != 20004 {
		t.Fatalf("new call got external port %d, want 20004, the only pair not adopted", p.A.RTP)
	}
}

func TestAdoptedIdleRemoved(t *testing.T) {
	k := newFakePath("tc")
	leftover(k)
	h := newAdoptHarness(t, k, nil)
	if _, err := h.e.Adopt(); err != nil {
		t.Fatal(err)
	}
	// Call 1 keeps sending; the others are silent.
	for i := 0; i < 6; i++ {
		now := h.step(15 * time.Second)
		k.addTraffic(t, ap(ext4, 20000), 50, now)
	}
	calls := adoptedCalls(h.e.Flows())
	if len(calls) != 1 || calls["adopted:192.0.2.1:20000"] == nil {
		t.Fatalf("after 90s adopted calls are %v, want only the one with traffic", calls)
	}
	if k.count() != 2 {
		t.Fatalf("kernel holds %d flows, want the 2 of the live call", k.count())
	}
	if free := h.e.Stats().Pools[0].FreePairs; free != 3 {
		t.Fatalf("free external pairs %d, want 3 after call 2's two pairs came back", free)
	}
	h.step(time.Minute)
	if calls := adoptedCalls(h.e.Flows()); len(calls) != 0 {
		t.Fatalf("adopted calls left after they all went silent: %v", calls)
	}
	if k.count() != 0 || h.e.Stats().Pools[0].FreePairs != 5 {
		t.Fatalf("kernel flows %d, free pairs %d; want 0, 5", k.count(), h.e.Stats().Pools[0].FreePairs)
	}
	if h.e.Stats().KernelPackets != 300 {
		t.Fatalf("kernel packets %d after the adopted calls ended, want 300 kept in the totals", h.e.Stats().KernelPackets)
	}
	if len(h.e.pending) != 0 {
		t.Fatalf("events %v: no SIP dialog owns an adopted call, nothing to tell", h.e.pending)
	}
}

func TestAdoptedDeleteSession(t *testing.T) {
	k := newFakePath("tc")
	leftover(k)
	h := newAdoptHarness(t, k, nil)
	if _, err := h.e.Adopt(); err != nil {
		t.Fatal(err)
	}
	k.addTraffic(t, ap(ext4, 20006), 7, h.clk.Now())
	info, err := h.e.DeleteSession("adopted:192.0.2.1:20006")
	if err != nil || info.Stats.Packets != 7 {
		t.Fatalf("DeleteSession = %+v, %v; want 7 packets", info, err)
	}
	if _, ok := k.flow(ap(ext4, 20006)); ok {
		t.Fatal("deleted adopted flow still in the kernel")
	}
	if free := h.e.Stats().Pools[0].FreePairs; free != 3 {
		t.Fatalf("free external pairs %d, want 3", free)
	}
}

func TestAdoptWithoutLister(t *testing.T) {
	h := newHarness(t, true, nil)
	defer h.e.Close()
	leftover(h.k)
	if n, err := h.e.Adopt(); n != 0 || err != nil {
		t.Fatalf("Adopt on a kernel that cannot list = %d, %v", n, err)
	}
	if calls := adoptedCalls(h.e.Flows()); len(calls) != 0 {
		t.Fatalf("adopted %v", calls)
	}
}

func TestAdoptListError(t *testing.T) {
	k := newFakePath("tc")
	h := newAdoptHarness(t, k, errors.New("map gone"))
	if _, err := h.e.Adopt(); err == nil || !strings.Contains(err.Error(), "map gone") {
		t.Fatalf("Adopt err = %v, want the listing error", err)
	}
}

func TestPortPoolReserve(t *testing.T) {
	p, err := newPortPool(100, 109) // pairs 100, 102, 104, 106, 108
	if err != nil {
		t.Fatal(err)
	}
	first, _ := p.alloc()
	want := map[uint16]bool{}
	for _, r := range []uint16{100, 102, 104, 106, 108} {
		if r != first {
			want[r] = true
		}
	}
	// One in use, one odd, one outside, one twice, one quarantined below.
	var ask []uint16
	n := 0
	for r := range want {
		if n < 2 {
			ask = append(ask, r, r)
			delete(want, r)
			n++
		}
	}
	got := p.reserve(append(ask, first, 99, 200))
	if len(got) != 2 || got[0] != ask[0] || got[1] != ask[2] {
		t.Fatalf("reserve(%v) = %v, want [%d %d] (%d in use, 99 odd, 200 outside)", ask, got, ask[0], ask[2], first)
	}
	if err := p.free(first); err != nil {
		t.Fatal(err)
	}
	want[first] = true
	// A pair reserved while quarantined leaves the quarantine.
	q, _ := p.alloc()
	if err := p.free(q); err != nil {
		t.Fatal(err)
	}
	if r := p.reserve([]uint16{q}); len(r) != 1 {
		t.Fatalf("reserve of quarantined %d = %v", q, r)
	}
	delete(want, q)
	for p.available() > 0 {
		r, _ := p.alloc()
		if !want[r] {
			t.Fatalf("alloc = %d after reserve, want one of %v", r, want)
		}
		delete(want, r)
	}
	if len(want) != 0 {
		t.Fatalf("never handed out: %v", want)
	}
	for _, r := range append(got, q) {
		if err := p.free(r); err != nil {
			t.Fatalf("free a reserved pair: %v", err)
		}
	}
}
