package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/childproc"
	"sipxdp/internal/netns"
)

// TestMain lets the test binary stand in for the bench binary: the bench
// re-executes itself for its namespace children.
func TestMain(m *testing.M) { childproc.Main(m) }

func TestParseUDPSNMP(t *testing.T) {
	const snmp = `Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 1000 2 5 900 1 0 4 0 0
UdpLite: InDatagrams NoPorts
UdpLite: 0 0
`
	m, err := parseUDPSNMP(strings.NewReader(snmp))
	if err != nil {
		t.Fatal(err)
	}
	if m["InDatagrams"] != 1000 || m["InCsumErrors"] != 4 || m["RcvbufErrors"] != 1 {
		t.Fatalf("got %v", m)
	}
	if _, err := parseUDPSNMP(strings.NewReader("Ip: a\nIp: 1\n")); err == nil {
		t.Fatal("no Udp lines: no error")
	}
}

func TestExpandPaths(t *testing.T) {
	got, err := expandPaths("tc,userspace,tc")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "direct,tc,userspace" {
		t.Fatalf("got %v: direct must lead once, duplicates dropped", got)
	}
	all, _ := expandPaths("all")
	if len(all) != len(AllPaths) || all[0] != "direct" {
		t.Fatalf("all: got %v", all)
	}
	if _, err := expandPaths("dpdk"); err == nil {
		t.Fatal("unknown path accepted")
	}
}

// TestDatapathSmoke runs direct and userspace briefly at a low rate and
// checks packets arrive through each. It asserts delivery, not speed.
func TestDatapathSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and veth pairs")
	}
	if testing.Short() {
		t.Skip("starts namespaces and child processes; skipped in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rs, err := RunDatapath(ctx, DatapathOptions{
		Paths: []string{"direct", "userspace"}, Rate: 2000, Flows: 20,
		Duration: 2 * time.Second, Warmup: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d results, want 2", len(rs))
	}
	for _, r := range rs {
		t.Logf("%s: sent %d received %d delivered %.0f pps busy %.3f relay %.3f", r.Path, r.Sent, r.Received, r.DeliveredPPS, r.BusyCores, r.RelayCores)
		if r.Sent < 3000 {
			t.Errorf("%s: sent %d, want about 4000", r.Path, r.Sent)
		}
		// Warm-up packets can miss a just-built path; most must arrive.
		if r.Received < r.Sent*9/10 {
			t.Errorf("%s: received %d of %d", r.Path, r.Received, r.Sent)
		}
		if r.BadSource != 0 {
			t.Errorf("%s: %d packets from an unexpected source", r.Path, r.BadSource)
		}
	}
	if rs[1].RelayForwarded == 0 {
		t.Error("userspace relay counted no forwarded packets")
	}
	if left, _ := filepath.Glob(netns.RunDir + "/" + datapathNet.Prefix + strconv.Itoa(os.Getpid()) + "-*"); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}
