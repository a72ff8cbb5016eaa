package netnstest

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"sipxdp/internal/testenv"
)

// Each end reaches the relay over its own link in both families, and
// nothing of the topology is left once the test's cleanup ran.
func TestTopology(t *testing.T) {
	testenv.RequireRoot(t)
	var names []string
	t.Run("build", func(t *testing.T) {
		tp := New(t, "sxnt-")
		names = []string{tp.Caller.Name, tp.Relay.Name, tp.Callee.Name}
		for _, f := range []Addrs{V4, V6} {
			for _, c := range []struct {
				from   *NS
				src    netip.Addr
				relayA netip.Addr
			}{{tp.Caller, f.Caller, f.RelayA}, {tp.Callee, f.Callee, f.RelayB}} {
				rx, err := tp.Relay.ListenUDP(netip.AddrPortFrom(c.relayA, 0))
				if err != nil {
					t.Fatal(err)
				}
				tx, err := c.from.ListenUDP(netip.AddrPortFrom(c.src, 0))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.WriteToUDPAddrPort([]byte("hello"), rx.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
					t.Fatal(err)
				}
				rx.SetReadDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 64)
				n, from, err := rx.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("%s: %s to relay %s: %v", f.Name, c.src, c.relayA, err)
				}
				if string(buf[:n]) != "hello" || from.Addr() != c.src {
					t.Fatalf("%s: got %q from %s", f.Name, buf[:n], from)
				}
				rx.Close()
				tx.Close()
			}
		}
		cnt, err := tp.Relay.UDPCounters()
		if err != nil {
			t.Fatal(err)
		}
		if cnt["Udp:InDatagrams"] != 2 || cnt["Udp6InDatagrams"] != 2 {
			t.Fatalf("relay namespace counted %d IPv4 and %d IPv6 datagrams, want 2 and 2 (counters of another namespace?)",
				cnt["Udp:InDatagrams"], cnt["Udp6InDatagrams"])
		}
		if err := tp.Caller.SetTxChecksum(CallerIf, false); err != nil {
			t.Fatal(err)
		}
		c, err := tp.Caller.AttachXDPPass(CallerIf)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(NetnsDir, n)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists after cleanup (stat: %v)", n, err)
		}
	}
}

// A namespace named after a process that is gone is removed; one of a
// live process is not.
func TestRemoveStale(t *testing.T) {
	testenv.RequireRoot(t)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := "sxns-" + itoa(cmd.Process.Pid) + "-1-r"
	live := "sxns-" + itoa(os.Getppid()) + "-1-r"
	for _, n := range []string{dead, live} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", dead).Run()
		exec.Command("ip", "netns", "del", live).Run()
	})
	RemoveStale(t, "sxns-")
	if _, err := os.Stat(filepath.Join(NetnsDir, dead)); !os.IsNotExist(err) {
		t.Errorf("stale namespace %s not removed", dead)
	}
	if _, err := os.Stat(filepath.Join(NetnsDir, live)); err != nil {
		t.Errorf("namespace of a live process removed: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
