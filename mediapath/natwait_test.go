package mediapath

import (
	"net/netip"
	"testing"

	"sipxdp/internal/netns"
	"sipxdp/relay"
)

// TestNATWaitKernel: the callee's side asked for NAT-wait
// (ng_control_protocol.md, "NAT-wait"), so the caller's media is dropped
// until the callee has sent, and its flow stays out of the kernel until
// then; afterwards the caller's media is relayed in the kernel. Without
// the flag the caller's first packets reach the callee. On tc and in
// userspace.
func TestNATWaitKernel(t *testing.T) {
	requireTools(t)
	eachModeWithFlag(t, []string{TC, Userspace}, "nat-wait", natWait)
}

func natWait(t *testing.T, mode string, on bool) {
	const packets = 100
	tp, c := startStack(t, mode)
	kernel := mode != Userspace
	fam := netns.V4
	var ports relay.StreamPorts
	c.must(request{Op: "create", Call: "nw", Family: family(fam)}, &ports)
	relayA, relayB := netip.AddrPortFrom(fam.RelayA, ports.A.RTP), netip.AddrPortFrom(fam.RelayB, ports.B.RTP)
	c.must(request{Op: "options", Call: "nw", Side: relay.SideB, Opts: relay.SideOptions{NATWait: on}}, nil)
	caller, callee := netip.AddrPortFrom(fam.Caller, callerPort), netip.AddrPortFrom(fam.Callee, calleePort)
	// Each announces where it sends from: its first packet locks.
	c.must(request{Op: "setpeer", Call: "nw", Side: relay.SideA, RTP: caller, Mux: true}, nil)
	c.must(request{Op: "setpeer", Call: "nw", Side: relay.SideB, RTP: callee, Mux: true}, nil)
	callerC, err := tp.Caller.ListenUDP(caller)
	if err != nil {
		t.Fatal(err)
	}
	defer callerC.Close()
	calleeC, err := tp.Callee.ListenUDP(callee)
	if err != nil {
		t.Fatal(err)
	}
	defer calleeC.Close()

	atCallee := newReceiver(calleeC, relayB, ssrcAB)
	if err := send(callerC, relayA, ssrcAB, 0, packets, 1000); err != nil {
		t.Fatal(err)
	}
	if !on {
		atCallee.check(t, "A→B before B sent", 0, packets)
		return
	}
	atCallee.check(t, "A→B before B sent", 0, 0)
	st := c.stats()
	if got := st.UserspaceCounters["nat_wait"]; got != packets {
		t.Errorf("userspace counted %d nat_wait drops, want %d", got, packets)
	}
	for _, f := range callFlows(c.flows(), "nw") {
		if f.Side == relay.SideA && f.Path != relay.PathUserspace {
			t.Errorf("A→B on %s before B sent, want userspace (%s)", f.Path, f.KernelError)
		}
	}
	atCaller := newReceiver(callerC, relayA, ssrcBA)
	if err := send(calleeC, relayB, ssrcBA, 0, 10, 1000); err != nil {
		t.Fatal(err)
	}
	atCaller.check(t, "B→A", 0, 10)
	want := relay.PathUserspace
	if kernel {
		want = relay.PathKernel
	}
	waitFlows(t, c, "nw", func(fs []relay.FlowInfo) bool {
		for _, f := range fs {
			if f.Side == relay.SideA && f.Path == want && f.KernelError == "" {
				return true
			}
		}
		return false
	})
	atCallee = newReceiver(calleeC, relayB, ssrcAB)
	if err := send(callerC, relayA, ssrcAB, packets, 2*packets, 1000); err != nil {
		t.Fatal(err)
	}
	atCallee.check(t, "A→B after B sent", packets, 2*packets)
	if kernel {
		if d := c.stats().KernelPackets - st.KernelPackets; d < packets {
			t.Errorf("kernel relayed %d packets after B sent, want at least %d", d, packets)
		}
	}
}
