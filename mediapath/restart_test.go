package mediapath

import (
	"slices"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/netns"
	"sipxdp/relay"
)

// A daemon killed mid-call leaves its pinned flows forwarding; the next
// one adopts them: it lists them, keeps their ports from new calls, and
// removes them once the stream has been silent for the media timeout.
func TestRestartAdoptsPinnedFlows(t *testing.T) {
	requireTools(t)
	const timeout = 2 * time.Second
	for _, mode := range []string{TC, XDPGeneric} {
		t.Run(mode, func(t *testing.T) {
			tp := netns.New(t, netns.Config{Prefix: nsPrefix})
			if mode == XDPGeneric {
				t.Logf("%s: tx checksum offload off on %s and %s (XDP cannot fix CHECKSUM_PARTIAL)",
					mode, netns.CallerIf, netns.CalleeIf)
				if err := tp.Caller.SetTxChecksum(netns.CallerIf, false); err != nil {
					t.Fatal(err)
				}
				if err := tp.Callee.SetTxChecksum(netns.CalleeIf, false); err != nil {
					t.Fatal(err)
				}
			}
			pin := pinPath(t)
			cfg := stackConfig(mode, pin, timeout)
			old, err := startChild(t, tp.Relay, cfg)
			if err != nil {
				t.Fatal(err)
			}
			cl := setupCall(t, tp, old, "before", netns.V4)
			waitFlows(t, old, "before", func(fs []relay.FlowInfo) bool {
				return len(fs) == 2 && fs[0].Path == relay.PathKernel && fs[1].Path == relay.PathKernel
			})
			oldKeys := old.kernelFlows()
			if len(oldKeys) != 2 {
				t.Fatalf("kernel holds %v, want the call's two directions", oldKeys)
			}

			// 1,500 packets each way at 500 pps: the first stack dies a
			// second in, the second starts a second later, and the
			// stream goes on through both events.
			var fresh *child
			var newPorts relay.StreamPorts
			cl.stream(t, 1, 1501, 500, func() {
				time.Sleep(time.Second)
				old.sigkill()
				t.Logf("stack process killed mid-stream")
				time.Sleep(time.Second)
				fresh, err = startChild(t, tp.Relay, cfg)
				if err != nil {
					t.Errorf("restart: %v", err)
					return
				}
				fs := fresh.flows()
				var adopted []relay.FlowInfo
				for _, f := range fs {
					if strings.HasPrefix(f.CallID, relay.AdoptedPrefix) {
						adopted = append(adopted, f)
					}
				}
				if len(adopted) != 2 || adopted[0].CallID != adopted[1].CallID {
					t.Errorf("after restart flows are %+v, want the old call's two directions as one adopted call", fs)
				}
				for _, f := range adopted {
					if !slices.Contains(oldKeys, relay.FlowKey{Local: f.Local}) || f.Path != relay.PathKernel {
						t.Errorf("adopted flow %s on %s is not one of %v on the kernel path", f.Local, f.Path, oldKeys)
					}
				}
				fresh.must(request{Op: "create", Call: "after", Family: relay.IPv4}, &newPorts)
			})
			if fresh == nil {
				t.Fatal("no second stack")
			}
			if fresh.ready.Path != mode {
				t.Errorf("restarted stack runs %q, want %q", fresh.ready.Path, mode)
			}
			if newPorts.A.RTP == cl.ports.A.RTP || newPorts.B.RTP == cl.ports.B.RTP {
				t.Errorf("new call got ports %d/%d, the old call's ports are %d/%d",
					newPorts.A.RTP, newPorts.B.RTP, cl.ports.A.RTP, cl.ports.B.RTP)
			}
			if st := fresh.stats(); st.AdoptedFlows != 2 {
				t.Errorf("stats show %d adopted flows while the stream ran, want 2", st.AdoptedFlows)
			}

			// Silent now: gone after the timeout plus a scan period.
			end := time.Now().Add(timeout + 5*time.Second)
			for {
				st := fresh.stats()
				if st.AdoptedFlows == 0 {
					break
				}
				if time.Now().After(end) {
					t.Fatalf("adopted flows still listed %v after the stream stopped: %+v", time.Since(end.Add(-timeout-5*time.Second)), fresh.flows())
				}
				time.Sleep(100 * time.Millisecond)
			}
			for _, k := range fresh.kernelFlows() {
				if slices.Contains(oldKeys, k) {
					t.Errorf("kernel still holds adopted flow %s", k)
				}
			}
			for _, p := range fresh.stats().Pools {
				if p.Local.Is4() && p.FreePairs != p.TotalPairs-1 {
					t.Errorf("pool %s %s: %d of %d pairs free, want all but the new call's",
						p.Name, p.Local, p.FreePairs, p.TotalPairs)
				}
			}
			fresh.must(request{Op: "delete", Call: "after"}, nil)
			fresh.close()
		})
	}
}
