package bpf

import (
	"testing"

	"sipxdp/relay/relaytest"
)

// BenchmarkXDPProgRun measures the XDP program alone with
// BPF_PROG_TEST_RUN: the kernel repeats the run and reports the mean time
// per run, which is what ns/op shows.
func BenchmarkXDPProgRun(b *testing.B) {
	requireRoot(b)
	cases := map[string]relaytest.Case{}
	for _, c := range relaytest.Cases() {
		switch c.Name {
		case "ipv4 hit xdp_tx":
			cases["hit"] = c
		case "ipv4 miss":
			cases["miss"] = c
		case "ipv6 hit":
			cases["hit6"] = c
		}
	}
	for _, name := range []string{"hit", "miss", "hit6"} {
		c := cases[name]
		b.Run(name, func(b *testing.B) {
			progs, err := LoadPrograms(1024, 65535)
			if err != nil {
				b.Fatal(err)
			}
			defer progs.Close()
			for _, f := range c.Flows {
				if err := progs.Upsert(f); err != nil {
					b.Fatal(err)
				}
			}
			if name != "miss" {
				// XDP test runs reuse one buffer, so each repetition sees the
				// previous one's output. A mirror flow rewrites the relayed
				// packet back into the original, keeping every run a hit.
				f := c.Flows[0]
				back := f
				back.Key.Local, back.Peer, back.Out, back.Dst = f.Dst, f.Out, f.Peer, f.Key.Local
				if err := progs.Upsert(back); err != nil {
					b.Fatal(err)
				}
			}
			want := uint32(xdpTX)
			if c.Kernel == relaytest.Pass {
				want = xdpPass
			}
			// One test run with b.N repetitions: ns/op is then wall time per
			// packet; kernel-ns/pkt is the kernel's own mean per run, without
			// the syscall.
			// Without a context the test run's ingress device is lo,
			// ifindex 1, which is the fixtures' ingress too.
			ret, d, err := progs.XDP.Benchmark(c.In, b.N, b.ResetTimer)
			if err != nil {
				b.Fatal(err)
			}
			if ret != want {
				b.Fatalf("verdict %d, want %d", ret, want)
			}
			b.ReportMetric(float64(d.Nanoseconds()), "kernel-ns/pkt")
			st, err := progs.Stats(c.Flows[0].Key)
			if err != nil {
				b.Fatal(err)
			}
			if name != "miss" && st.Packets < uint64(b.N/2) {
				b.Fatalf("flow saw %d packets, want at least %d", st.Packets, b.N/2)
			}
		})
	}
}
