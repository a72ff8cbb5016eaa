package relay

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func restoreLegs(a, b uint16) [2]RestoreLeg {
	return [2]RestoreLeg{
		{Ports: LegPorts{Address: "external", Local: ext4, RTP: a}, Set: true, RTP: ap(pub4, 4000), RTCP: ap(pub4, 4001)},
		{Ports: LegPorts{Address: "external", Local: ext4, RTP: b}, Set: true, RTP: ap(pub4, 5000), RTCP: ap(pub4, 5001)},
	}
}

// A call from before a restart gets its own ports back: the kernel flows a
// killed process left on them become the stream's (locked to the source
// they forwarded from, counters kept), not an adopted orphan, and the
// ports are not handed to anyone else.
func TestRestoreStreamTakesOverKernelFlows(t *testing.T) {
	k := newFakePath("tc")
	leftover(k) // call 1 on 20000/20002 (RTP only), call 2 on 20006 → 20008
	k.stats[FlowKey{ap(ext4, 20000)}] = FlowStats{Packets: 90, Bytes: 9000, LastSeen: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newAdoptHarness(t, k, nil)
	if _, err := h.e.Adopt(); err != nil {
		t.Fatal(err)
	}
	if err := h.e.CreateSession("c1"); err != nil {
		t.Fatal(err)
	}
	if err := h.e.RestoreStream("c1", 0, restoreLegs(20000, 20002), h.clk.Now()); err != nil {
		t.Fatal(err)
	}
	for id := range adoptedCalls(h.e.Flows()) {
		for _, f := range h.e.Flows() {
			if f.CallID == id && (f.Local.Port() == 20000 || f.Local.Port() == 20002) {
				t.Errorf("port %d is still shown as adopted (%s)", f.Local.Port(), id)
			}
		}
	}
	si, err := h.e.Session("c1")
	if err != nil {
		t.Fatal(err)
	}
	st := si.Streams[0]
	if st.A.RTP != 20000 || st.B.RTP != 20002 {
		t.Fatalf("restored ports %d and %d, want 20000 and 20002", st.A.RTP, st.B.RTP)
	}
	if l := st.A.RTPLatch; !l.Locked || l.Source != ap(pub4, 4000) {
		t.Errorf("side A's RTP latch %+v: want locked to the kernel flow's source %s", l, ap(pub4, 4000))
	}
	if f, ok := k.flow(ap(ext4, 20000)); !ok || f.Learning || f.Dst != ap(pub4, 5000) {
		t.Errorf("kernel flow 20000 after restore: %+v, %v; want it forwarding to %s", f, ok, ap(pub4, 5000))
	}
	if si.Stats.Packets < 90 {
		t.Errorf("restored call counts %d packets, want the 90 the kernel had", si.Stats.Packets)
	}
	// RTCP was never latched: it learns again in userspace.
	if f, ok := h.s.flow(ap(ext4, 20001)); !ok || !f.Learning {
		t.Errorf("RTCP 20001 after restore: %+v, %v; want learning in userspace", f, ok)
	}
	// The ports are the call's: a new call gets others, and they go back
	// to the pool with the call.
	if err := h.e.CreateSession("new"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		p, err := h.e.AddStream("new", 0, LegSpec{Address: "external", Family: IPv4}, LegSpec{Address: "external", Family: IPv4})
		if errors.Is(err, ErrPortsExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, port := range []uint16{p.A.RTP, p.B.RTP} {
			if port == 20000 || port == 20002 || port == 20006 || port == 20008 {
				t.Fatalf("a new call got port %d, which a restored or adopted call holds", port)
			}
		}
		h.e.RemoveStream("new", 0)
	}
}

// Ports that another call holds, or that no range has, are refused, and
// nothing of the stream is left.
func TestRestoreStreamRefusals(t *testing.T) {
	h := newHarness(t, false, nil)
	p := h.call(t, "live", LegSpec{Address: "external", Family: IPv4}, LegSpec{Address: "external", Family: IPv4})
	if err := h.e.CreateSession("old"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		legs [2]RestoreLeg
		want string
	}{
		{"taken", restoreLegs(p.A.RTP, 20008), "is taken"},
		{"out of range", restoreLegs(20000, 21000), "no configured relay range"},
		{"odd port", restoreLegs(20001, 20008), "no configured relay range"},
	}
	for _, c := range cases {
		err := h.e.RestoreStream("old", 0, c.legs, h.clk.Now())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if si, _ := h.e.Session("old"); len(si.Streams) != 0 {
		t.Fatalf("a refused restore left streams: %+v", si.Streams)
	}
	// The refused ports went back: restoring the free ones now works.
	free := []uint16{}
	for port := uint16(20000); port <= 20008; port += 2 {
		if port != p.A.RTP && port != p.B.RTP {
			free = append(free, port)
		}
	}
	if err := h.e.RestoreStream("old", 0, restoreLegs(free[0], free[1]), h.clk.Now()); err != nil {
		t.Fatalf("restore on free ports: %v", err)
	}
}

// A call whose media stopped while sipd was down (silent since before the
// media timeout) times out at the first scan; one that kept forwarding in
// the kernel does not.
func TestRestoreStreamTimedOutWhileDown(t *testing.T) {
	k := newFakePath("tc")
	leftover(k)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := newAdoptHarness(t, k, nil)
	h.clk.t = start.Add(10 * time.Minute) // sipd was down ten minutes
	// Call 1's kernel flows forwarded until a few seconds ago; call 2's
	// stopped nine minutes ago.
	k.stats[FlowKey{ap(ext4, 20000)}] = FlowStats{Packets: 5, LastSeen: h.clk.Now().Add(-5 * time.Second)}
	k.stats[FlowKey{ap(ext4, 20006)}] = FlowStats{Packets: 5, LastSeen: start.Add(time.Minute)}
	if _, err := h.e.Adopt(); err != nil {
		t.Fatal(err)
	}
	for id, ports := range map[string][2]uint16{"up": {20000, 20002}, "silent": {20006, 20008}} {
		if err := h.e.CreateSession(id); err != nil {
			t.Fatal(err)
		}
		if err := h.e.RestoreStream(id, 0, restoreLegs(ports[0], ports[1]), start); err != nil {
			t.Fatal(err)
		}
	}
	h.step(100 * time.Millisecond)
	var ended []string
	for {
		select {
		case ev := <-h.e.events:
			ended = append(ended, ev.CallID+" "+ev.Reason)
			continue
		default:
		}
		break
	}
	h.e.mu.Lock()
	for _, ev := range h.e.pending {
		ended = append(ended, ev.CallID+" "+ev.Reason)
	}
	h.e.mu.Unlock()
	if len(ended) != 1 || ended[0] != "silent "+ReasonMediaTimeout {
		t.Fatalf("timed out at the first scan: %q, want only the silent call", ended)
	}
}
