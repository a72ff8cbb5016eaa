package mediapath

import (
	"net/netip"
	"testing"
	"time"

	"sipxdp/internal/netns"
	"sipxdp/relay"
)

// TestMediaHandoverKernel: the caller's side asked for media handover
// (rtpengine's ng_control_protocol.md, "media handover"), its flow is
// locked and in the kernel, and the caller moves to another port. The
// program passes the new source up as a wrong source, userspace re-latches
// and forwards it, and the kernel's flow is reprogrammed: the new source
// is relayed in the kernel, and the callee's media goes to it. Without the
// flag the new source is dropped. Each kernel hook, and userspace.
func TestMediaHandoverKernel(t *testing.T) {
	requireTools(t)
	eachModeWithFlag(t, []string{TC, XDPGeneric, Userspace}, "handover", mediaHandover)
}

// eachModeWithFlag runs fn on each datapath mode, without and with a
// side's flag.
func eachModeWithFlag(t *testing.T, modes []string, flag string, fn func(t *testing.T, mode string, on bool)) {
	for _, mode := range modes {
		for _, on := range []bool{false, true} {
			name := mode + "/default"
			if on {
				name = mode + "/" + flag
			}
			t.Run(name, func(t *testing.T) { fn(t, mode, on) })
		}
	}
}

// startStack starts a relay stack of mode in a new topology.
func startStack(t *testing.T, mode string) (*netns.Topo, *child) {
	t.Helper()
	tp := netns.New(t, netns.Config{Prefix: nsPrefix})
	if mode == XDPGeneric {
		var generic netns.Pass // nil: the peers need no XDP program of their own
		tp.PrepareXDP(t, generic)
	}
	c, err := startChild(t, tp.Relay, stackConfig(mode, pinPath(t), 30*time.Second))
	if err != nil {
		t.Fatalf("open %s stack: %v", mode, err)
	}
	t.Cleanup(c.close)
	return tp, c
}

func mediaHandover(t *testing.T, mode string, handover bool) {
	const packets = 100
	tp, c := startStack(t, mode)
	kernel := mode != Userspace
	fam := netns.V4
	cl := setupCall(t, tp, c, "ho", fam)
	c.must(request{Op: "options", Call: "ho", Side: relay.SideA, Opts: relay.SideOptions{Handover: handover}}, nil)
	cl.stream(t, 1, 1+packets, 1000, nil)
	want := relay.PathUserspace
	if kernel {
		want = relay.PathKernel
	}
	onPath := func(fs []relay.FlowInfo, side relay.Side) bool {
		for _, f := range fs {
			if f.Side == side && f.Component == "rtp" && f.Path == want && f.Latch == relay.LatchLocked {
				return true
			}
		}
		return false
	}
	waitFlows(t, c, "ho", func(fs []relay.FlowInfo) bool { return onPath(fs, relay.SideA) && onPath(fs, relay.SideB) })
	// Past the handoff (relay.Config.HandoffDelay, 1 s by default), when
	// a flow without handover leaves userspace.
	time.Sleep(1500 * time.Millisecond)

	moved := netip.AddrPortFrom(fam.Caller, callerPort+100)
	mc, err := tp.Caller.ListenUDP(moved)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	before := c.stats()
	atCallee := newReceiver(cl.calleeC, cl.relayB, ssrcAB)
	if err := send(mc, cl.relayA, ssrcAB, 1+packets, 1+2*packets, 1000); err != nil {
		t.Fatal(err)
	}
	if !handover {
		atCallee.check(t, "A→B from the moved caller", 0, 0)
		if kernel {
			if d := c.stats().KernelCounters["wrong_source"] - before.KernelCounters["wrong_source"]; d != packets {
				t.Errorf("kernel counted %d wrong sources, want %d", d, packets)
			}
		}
		return
	}
	atCallee.check(t, "A→B from the moved caller", 1+packets, 1+2*packets)
	fs := waitFlows(t, c, "ho", func(fs []relay.FlowInfo) bool {
		return dstIs(fs, relay.SideB, moved) && onPath(fs, relay.SideA)
	})
	for _, f := range fs {
		if f.Side == relay.SideA && f.Component == "rtp" && f.Peer != moved {
			t.Errorf("A→B accepts %s, want the moved caller %s", f.Peer, moved)
		}
	}
	// After the reprogramming the kernel relays the new source, and the
	// callee's media reaches it.
	mid := c.stats()
	cl.callerC = mc
	cl.stream(t, 1+2*packets, 1+3*packets, 1000, nil)
	if kernel {
		end := c.stats()
		if d := end.KernelPackets - mid.KernelPackets; d != 2*packets {
			t.Errorf("kernel relayed %d packets after the move, want %d", d, 2*packets)
		}
		if d := mid.KernelCounters["wrong_source"] - before.KernelCounters["wrong_source"]; d == 0 {
			t.Error("the kernel passed no wrong source up: the move never reached userspace")
		}
	}
}
