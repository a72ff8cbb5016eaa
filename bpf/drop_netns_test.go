package bpf

import (
	"testing"
	"time"

	"sipxdp/internal/netns"
)

// TestNetnsDrop: a dropping flow (rtpengine's drop-traffic) discards its
// peer's packets in each hook, same family and between families, counted
// as dropped and not on the flow; the same flow without the flag forwards
// them again.
func TestNetnsDrop(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{ModeXDPGeneric, ModeTC} {
		t.Run(mode, func(t *testing.T) {
			tp := newTopo(t)
			k := openForTraffic(t, tp, mode)
			for _, line := range [][2]netns.Addrs{{families[0], families[0]}, {families[0], families[1]}} {
				name := line[0].Name + " to " + line[1].Name
				flow := crossFlow(line[0], line[1])
				flow.Drop = true
				if err := k.Upsert(flow); err != nil {
					t.Fatal(err)
				}
				recv := tp.udp(t, nsReceiver, flow.Dst)
				send := tp.udp(t, nsSender, flow.Peer)
				const n = 20
				before, err := k.Counters()
				if err != nil {
					t.Fatal(err)
				}
				if err := stream(send, flow.Key.Local, 0, n); err != nil {
					t.Fatal(err)
				}
				if seen := receive(t, recv, flow.Out, 1, 300*time.Millisecond); len(seen) != 0 {
					t.Errorf("%s: dropping flow delivered %d packets", name, len(seen))
				}
				after, err := k.Counters()
				if err != nil {
					t.Fatal(err)
				}
				if d := after["dropped"] - before["dropped"]; d != n {
					t.Errorf("%s: dropped counter moved %d, want %d (counters moved %v)", name, d, n, counterDelta(before, after))
				}
				if st, err := k.Stats(flow.Key); err != nil || st.Packets != 0 {
					t.Errorf("%s: flow stats %+v %v: dropped packets counted on the flow", name, st, err)
				}

				flow.Drop = false
				if err := k.Upsert(flow); err != nil {
					t.Fatal(err)
				}
				if err := stream(send, flow.Key.Local, n, n); err != nil {
					t.Fatal(err)
				}
				if seen := receive(t, recv, flow.Out, n, 5*time.Second); len(seen) != n {
					t.Errorf("%s: after the drop stopped, received %d/%d", name, len(seen), n)
				}
				recv.Close()
				send.Close()
				if err := k.Delete(flow.Key); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
