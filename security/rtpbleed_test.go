package security

import (
	"net/netip"
	"testing"
	"time"

	"sipxdp/internal/netns"
)

// TestRTPBleed sprays RTP from the attacker's namespace at every port of
// both relay ranges, from before alice calls bob until the call has been
// up for several seconds. The relay must hand the attacker none of the
// call's audio and forward none of its packets to the phones, and alice
// and bob must hear each other throughout. It runs on the userspace path
// and on the tc hook.
func TestRTPBleed(t *testing.T) {
	for _, dp := range []string{"userspace", "tc"} {
		t.Run(dp, func(t *testing.T) {
			e := newEnv(t, withDatapath(dp))
			callerMedia, calleeMedia, alice, bob := e.phones()

			x := e.spray(100*time.Millisecond, 30*time.Second)
			time.Sleep(300 * time.Millisecond) // sweeps before the call
			// bob rings for several sweeps: his leg is live from the offer.
			c := e.relayedCall(callerMedia, calleeMedia, 500*time.Millisecond)
			// Phones open their audio a moment after the answer; the
			// attacker has sprayed the new legs by then. They talk past
			// the learning window, so the flows lock under fire.
			time.Sleep(300 * time.Millisecond)
			const talk = 5 * time.Second
			bob.talk(c.calleeRelay, talk)
			alice.talk(c.callerRelay, talk)
			time.Sleep(talk + 300*time.Millisecond)
			x.halt()
			time.Sleep(300 * time.Millisecond)
			t.Logf("attacker sent %d packets in %d sweeps; alice sent %d, bob %d", x.sent.Load(), x.sweeps.Load(),
				alice.sent.Load(), bob.sent.Load())

			if n := x.rx.total(); n != 0 {
				t.Errorf("the attacker received %d packets from the relay (%v): the call's media bled to it", n, x.rx)
			}
			if n := alice.rx.count(ssrcAttacker); n != 0 {
				t.Errorf("alice received %d of the attacker's packets: injected into the call", n)
			}
			if n := bob.rx.count(ssrcAttacker); n != 0 {
				t.Errorf("bob received %d of the attacker's packets: injected into the call", n)
			}
			c.checkAudio(alice, bob, "under the spray")
			// The spray did reach the call's ports: the relay refused it.
			foreign := 0.0
			for _, r := range []string{"learning", "locked"} {
				v, _ := e.sipd.Metric(`sipxdp_media_foreign_dropped_total{reason="` + r + `"}`)
				foreign += v
			}
			if dp != "userspace" {
				v, _ := e.sipd.Metric(`sipxdp_kernel_passed_packets_total{reason="wrong_source"}`)
				foreign += v
			}
			if foreign == 0 {
				t.Errorf("no foreign-source packet counted: the spray never reached the call's ports")
			}
			c.hangup()
			e.legitCall()
		})
	}
}

// TestRTPBleedNATedPhone: alice is behind NAT. Her SDP announces a
// private address and her packets come from her public one (the one her
// SIP comes from) on another port. With the attacker spraying the relay's
// ports throughout, audio flows both ways from her first packets, to her
// real address and not to the attacker, and her flow locks to that
// address once the learning window is over (in the kernel, on tc).
func TestRTPBleedNATedPhone(t *testing.T) {
	for _, dp := range []string{"userspace", "tc"} {
		t.Run(dp, func(t *testing.T) {
			e := newEnv(t, withDatapath(dp))
			announced := netip.MustParseAddrPort("192.168.1.100:40000") // behind her NAT
			real := netip.AddrPortFrom(netns.V4.Caller, 40010)          // what the relay sees
			calleeMedia := netip.AddrPortFrom(netns.V4.Callee, 40002)
			alice := newRTPPhone(t, e.tp.Caller, real, ssrcCaller)
			bob := newRTPPhone(t, e.tp.Callee, calleeMedia, ssrcCallee)

			x := e.spray(100*time.Millisecond, 30*time.Second)
			time.Sleep(300 * time.Millisecond)
			c := e.relayedCall(announced, calleeMedia, 500*time.Millisecond)
			time.Sleep(300 * time.Millisecond)
			const talk = 5 * time.Second
			bob.talk(c.calleeRelay, talk)
			alice.talk(c.callerRelay, talk)
			// The first second: bob's audio reaches alice as soon as her
			// first packet told the relay where she is.
			time.Sleep(time.Second)
			early := alice.rx.count(ssrcCallee)
			time.Sleep(talk - time.Second + 300*time.Millisecond)
			x.halt()
			time.Sleep(300 * time.Millisecond)
			t.Logf("alice heard %d of bob's packets in the first second; attacker sent %d packets", early, x.sent.Load())

			if n := x.rx.total(); n != 0 {
				t.Errorf("the attacker received %d packets from the relay (%v)", n, x.rx)
			}
			if n := alice.rx.count(ssrcAttacker) + bob.rx.count(ssrcAttacker); n != 0 {
				t.Errorf("the phones received %d of the attacker's packets", n)
			}
			if early < 40 {
				t.Errorf("alice heard %d of bob's packets in the first second, want at least 40 of 50", early)
			}
			if got, sent := alice.rx.count(ssrcCallee), bob.sent.Load(); int64(got) < sent*9/10 {
				t.Errorf("alice heard %d of bob's %d packets (%v)", got, sent, alice.rx)
			}
			if got, sent := bob.rx.count(ssrcCaller), alice.sent.Load(); int64(got) < sent*9/10 {
				t.Errorf("bob heard %d of alice's %d packets (%v)", got, sent, bob.rx)
			}
			found := false
			for _, f := range c.flows() {
				if f.Leg != "A" || f.Component != "rtp" {
					continue
				}
				found = true
				if f.Latch != "locked" || f.Peer != real.String() || f.Rank != "ip" {
					t.Errorf("alice's flow: latch %q rank %q from %s; want locked to %s", f.Latch, f.Rank, f.Peer, real)
				}
				if dp != "userspace" && f.Path != "kernel" {
					t.Errorf("alice's locked flow on path %q, want kernel", f.Path)
				}
			}
			if !found {
				t.Errorf("no flow of alice's leg in %+v", c.flows())
			}
			c.hangup()
		})
	}
}
