package itsp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestITSPQuick runs the tiny scale of "bench itsp" on loopback and checks
// the outputs' structure and that nothing failed (not speed).
func TestITSPQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts sipd and runs 20 s of load")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rs, err := Run(ctx, Options{Subscribers: []int{2000}, Duration: 10 * time.Second, RegisterRate: 5000,
		Media: "none", Out: out, Quick: true, CallRate: 10})
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
