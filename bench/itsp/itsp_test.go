package itsp

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/testenv"
)

// TestITSPQuick runs the tiny scale of "bench itsp" on loopback and checks
// the outputs' structure and that nothing failed (not speed).
func TestITSPQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts sipd and runs 20 s of load")
	}
	out := t.TempDir()
	r := runQuick(t, Options{Out: out})
	if r.HealthAfterRamp.Registrations != 2000 {
		t.Errorf("registrations after ramp: %d", r.HealthAfterRamp.Registrations)
	}
	for _, f := range []string{"results.jsonl", "results.csv", "report.md", "itsp-scaling.svg"} {
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil || len(b) == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	for _, want := range []string{"## Scaling", "## 2000 subscribers", "| notify |", "| call |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
}

// runQuick runs the tiny scale (2,000 subscribers, 10 s hold, 10 calls/s)
// with o's output directory and nodes, and checks nothing failed and
// every class completed what it offered.
func runQuick(t *testing.T, o Options) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o.Subscribers, o.Duration, o.RegisterRate, o.Media, o.Quick, o.CallRate = []int{2000}, 10*time.Second, 5000, "none", true, 10
	rs, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("%d results", len(rs))
	}
	r := rs[0]
	if f := r.Failures(); f != 0 {
		t.Errorf("%d failures: %+v", f, r.Classes)
	}
	if len(r.Classes) != int(nClasses) {
		t.Fatalf("%d classes", len(r.Classes))
	}
	for _, name := range []string{"register-ramp", "notify", "call", "bye"} {
		if c := r.Class(name); c.Completed == 0 || c.Completed != c.Offered {
			t.Errorf("%s: %d of %d completed", name, c.Completed, c.Offered)
		}
	}
	return r
}

// TestITSPSharedQuick runs the tiny scale with two sipd sharing a
// location table in redis-server: every registration succeeds through
// either node, calls cross between them, and the report carries
// Redis's memory and CPU per registration and each node's CPU.
func TestITSPSharedQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and two sipd and runs 20 s of load")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		testenv.Unavailable(t, "redis-server is not installed (scripts/install-deps.sh installs it)")
	}
	out := t.TempDir()
	r := runQuick(t, Options{Out: out, Proxies: 2, Store: "redis"})
	if ramp := r.Class("register-ramp"); ramp.Completed != 2000 || ramp.P99ms <= 0 || r.Ramp.Rate <= 0 {
		t.Errorf("ramp: %d registrations, p99 %.2f ms, %.0f/s", ramp.Completed, ramp.P99ms, r.Ramp.Rate)
	}
	if r.Proxies != 2 || r.Store != "redis" || len(r.Nodes) != 2 {
		t.Fatalf("proxies %d, store %q, nodes %+v", r.Proxies, r.Store, r.Nodes)
	}
	for _, n := range r.Nodes {
		if n.CPURampAvg <= 0 || n.RSSRegistered == 0 {
			t.Errorf("node %+v: no CPU or memory", n)
		}
	}
	if r.CrossNodeCalls == 0 {
		t.Errorf("no call crossed nodes")
	}
	x := r.Redis
	if x == nil {
		t.Fatal("no redis figures")
	}
	// One contact hash and one AoR set per subscriber, and the shared
	// registration count with its gate (location:count, :gate) once a
	// node has counted.
	if x.Keys < 4000 || x.Keys > 4002 || x.BytesPerContact <= 0 || x.UsedMemoryRegistered <= x.UsedMemoryIdle ||
		x.CPUUsPerRegistration <= 0 || x.RSSRegistered == 0 {
		t.Errorf("redis figures %+v", *x)
	}
	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	for _, want := range []string{"## Location table in Redis", "| sipd0 |", "| sipd1 |", "Redis B / contact"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
}
