package netns

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/testenv"
)

func TestAddrsIn(t *testing.T) {
	for _, c := range []struct {
		net                            string
		caller, relayA, relayB, callee string
		bits                           int
	}{
		{"10.251.0.0/16", "10.251.1.2", "10.251.1.1", "10.251.2.1", "10.251.2.2", 24},
		{"10.0.0.0/8", "10.0.1.2", "10.0.1.1", "10.0.2.1", "10.0.2.2", 24},
		{"fd00:252::/32", "fd00:252:1::2", "fd00:252:1::1", "fd00:252:2::1", "fd00:252:2::2", 64},
	} {
		a := AddrsIn(netip.MustParsePrefix(c.net))
		got := []string{a.Caller.String(), a.RelayA.String(), a.RelayB.String(), a.Callee.String()}
		want := []string{c.caller, c.relayA, c.relayB, c.callee}
		for i := range got {
			if got[i] != want[i] || a.Bits != c.bits {
				t.Errorf("%s: addresses %v /%d, want %v /%d", c.net, got, a.Bits, want, c.bits)
				break
			}
		}
	}
}

func TestConfigFill(t *testing.T) {
	for _, c := range []struct {
		name   string
		cfg    Config
		ok     bool
		has6   bool
		prefix string
	}{
		{"zero: both defaults", Config{}, true, true, "sxns-"},
		{"IPv4 only", Config{Prefix: "x-", Net4: netip.MustParsePrefix("10.251.0.0/16")}, true, false, "x-"},
		{"IPv4 /24 too narrow", Config{Net4: netip.MustParsePrefix("10.251.1.0/24")}, false, false, ""},
		{"IPv6 as Net4", Config{Net4: Default6}, false, false, ""},
		{"IPv6 without IPv4", Config{Net6: Default6}, false, false, ""},
		{"IPv6 /48 too narrow", Config{Net4: Default4, Net6: netip.MustParsePrefix("fd00:1:2::/48")}, false, false, ""},
	} {
		err := c.cfg.fill()
		if (err == nil) != c.ok {
			t.Errorf("%s: fill error %v, want ok %v", c.name, err, c.ok)
			continue
		}
		if c.ok && (c.cfg.Net6.IsValid() != c.has6 || c.cfg.Prefix != c.prefix) {
			t.Errorf("%s: filled to %+v", c.name, c.cfg)
		}
	}
}

// send sends one datagram from inside ns to dst and returns what a socket
// at dst in rx received, or an error.
func roundTrip(t *testing.T, tx *NS, src netip.Addr, rx *NS, dst netip.Addr) (netip.Addr, error) {
	t.Helper()
	rc, err := rx.ListenUDP(netip.AddrPortFrom(dst, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tc, err := tx.ListenUDP(netip.AddrPortFrom(src, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if _, err := tc.WriteToUDPAddrPort([]byte("hello"), rc.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	rc.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, from, err := rc.ReadFromUDPAddrPort(buf)
	if err != nil {
		return netip.Addr{}, err
	}
	if string(buf[:n]) != "hello" {
		t.Fatalf("got %q", buf[:n])
	}
	return from.Addr(), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// Each end reaches the relay over its own link in both families, through
// the relay it reaches the other end, PrepareXDP hands both ends to the
// pass attacher, and nothing of the topology is left once the test's
// cleanup ran.
func TestTopology(t *testing.T) {
	testenv.RequireRoot(t)
	var names []string
	attached := map[string]bool{}
	t.Run("build", func(t *testing.T) {
		tp := New(t, Config{Prefix: "sxnt-"})
		names = []string{tp.Caller.Name, tp.Relay.Name, tp.Callee.Name}
		if len(tp.Families()) != 2 {
			t.Fatalf("families %v, want IPv4 and IPv6", tp.Families())
		}
		for _, f := range tp.Families() {
			for _, c := range []struct {
				from     *NS
				src, dst netip.Addr
				to       *NS
			}{
				{tp.Caller, f.Caller, f.RelayA, tp.Relay},
				{tp.Callee, f.Callee, f.RelayB, tp.Relay},
				{tp.Caller, f.Caller, f.Callee, tp.Callee},
			} {
				from, err := roundTrip(t, c.from, c.src, c.to, c.dst)
				if err != nil || from != c.src {
					t.Fatalf("%s: %s to %s: from %s, %v", f.Name, c.src, c.dst, from, err)
				}
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
		tp.PrepareXDP(t, func(ns interface{ Do(func() error) error }, dev string) (io.Closer, error) {
			// Run inside the namespace, as the real attacher does: the
			// device must be found there.
			err := ns.Do(func() error { _, err := net.InterfaceByName(dev); return err })
			attached[dev] = err == nil
			return closerFunc(func() error { return nil }), err
		})
	})
	if !attached[CallerIf] || !attached[CalleeIf] || len(attached) != 2 {
		t.Errorf("PrepareXDP attached to %v, want %s and %s", attached, CallerIf, CalleeIf)
	}
	for _, n := range names {
		if _, err := os.Stat(RunDir + "/" + n); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists after cleanup (stat: %v)", n, err)
		}
	}
}

// With a direct link, traffic between the end hosts skips the relay while
// traffic to the relay's addresses still reaches it; an IPv4-only
// topology has no IPv6 addresses.
func TestDirectLink(t *testing.T) {
	tp := New(t, Config{Prefix: "sxnt-", Net4: netip.MustParsePrefix("10.249.0.0/16"), Direct: true})
	if len(tp.Families()) != 1 || tp.V6.Caller.IsValid() {
		t.Fatalf("IPv4-only topology has families %v", tp.Families())
	}
	fwd := func() uint64 {
		// The relay forwards, so the callee getting the datagram does not
		// show it skipped the relay: the relay's forwarding counter does.
		out, err := tp.Relay.Exec("cat", "/proc/net/snmp")
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		m := map[string]uint64{}
		if err := parseSNMP(out, "Ip:", m); err != nil {
			t.Fatal(err)
		}
		return m["Ip:ForwDatagrams"]
	}
	fwd0 := fwd()
	for range 3 {
		if from, err := roundTrip(t, tp.Caller, tp.V4.Caller, tp.Callee, tp.V4.Callee); err != nil || from != tp.V4.Caller {
			t.Fatalf("caller to callee: from %s, %v", from, err)
		}
	}
	if got := fwd() - fwd0; got != 0 {
		t.Errorf("the relay forwarded %d datagrams; they should have gone direct", got)
	}
	if from, err := roundTrip(t, tp.Caller, tp.V4.Caller, tp.Relay, tp.V4.RelayA); err != nil || from != tp.V4.Caller {
		t.Fatalf("caller to relay: from %s, %v", from, err)
	}
}

// A namespace named after a process that is gone is removed; one of a
// live process, or without a PID, is not.
func TestCleanStale(t *testing.T) {
	testenv.RequireRoot(t)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := "sxns-" + strconv.Itoa(cmd.Process.Pid) + "-1-r"
	live := "sxns-" + strconv.Itoa(os.Getppid()) + "-1-r"
	other := "sxns-x-1-r"
	for _, n := range []string{dead, live, other} {
		if err := ip(context.Background(), "netns", "add", n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { deleteNS(n) })
	}
	removed, err := CleanStale("sxns-")
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != dead {
		t.Errorf("removed %v, want only %s", removed, dead)
	}
	if _, err := os.Stat(RunDir + "/" + dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale namespace %s not removed", dead)
	}
	for _, n := range []string{live, other} {
		if _, err := os.Stat(RunDir + "/" + n); err != nil {
			t.Errorf("namespace %s removed: %v", n, err)
		}
	}
}

// A host hung off the relay reaches the relay on its own link.
func TestAddHost(t *testing.T) {
	tp := New(t, Config{Prefix: "sxnt-"})
	h := tp.AddHost(t, "x", 3)
	if h.V4 != netip.MustParseAddr("10.252.3.2") || h.Relay6 != netip.MustParseAddr("fd00:252:3::1") || h.RelayIf != "h3" {
		t.Fatalf("host %+v", h)
	}
	for _, c := range [][2]netip.Addr{{h.V4, h.Relay4}, {h.V6, h.Relay6}} {
		if from, err := roundTrip(t, h.NS, c[0], tp.Relay, c[1]); err != nil || from != c[0] {
			t.Fatalf("%s to %s: from %s, %v", c[0], c[1], from, err)
		}
	}
	if from, err := roundTrip(t, h.NS, h.V4, tp.Callee, tp.V4.Callee); err != nil || from != h.V4 {
		t.Fatalf("host to callee through the relay: from %s, %v", from, err)
	}
}

// A relay host forwards in every family the topology has; a plain host
// does not.
func TestAddRelayHost(t *testing.T) {
	tp := New(t, Config{Prefix: "sxnt-"})
	plain, relay := tp.AddHost(t, "plain", 3), tp.AddRelayHost(t, "relay", 4)
	for _, c := range []struct {
		h    *Host
		want string
	}{{plain, "0"}, {relay, "1"}} {
		for _, fam := range []string{"ipv4", "ipv6"} {
			var got []byte
			if err := c.h.Do(func() (err error) {
				got, err = os.ReadFile("/proc/sys/net/" + fam + "/conf/all/forwarding")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(string(got)) != c.want {
				t.Errorf("%s: %s forwarding %q, want %s", c.h.Name, fam, got, c.want)
			}
		}
	}
}

func TestParseSNMP(t *testing.T) {
	text := "Ip: Forwarding InReceives\nIp: 1 42\nUdp: InDatagrams NoPorts\nUdp: 7 3\n"
	m := map[string]uint64{}
	if err := parseSNMP([]byte(text), "Udp:", m); err != nil || m["Udp:InDatagrams"] != 7 || m["Udp:NoPorts"] != 3 || len(m) != 2 {
		t.Fatalf("parse: %v, %v", m, err)
	}
	if err := parseSNMP([]byte("Udp: A\nUdp: x\n"), "Udp:", m); err == nil {
		t.Fatal("a non-number was accepted")
	}
	if err := parseSNMP([]byte(text), "Tcp:", m); err == nil {
		t.Fatal("a missing protocol was accepted")
	}
}

func FuzzParseSNMP(f *testing.F) {
	f.Add([]byte("Udp: InDatagrams NoPorts\nUdp: 7 3\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := map[string]uint64{}
		if parseSNMP(b, "Udp:", m) != nil {
			return
		}
		for k := range m {
			if len(k) <= len("Udp:") {
				t.Fatalf("key %q", k)
			}
		}
	})
}

// A lone namespace's loopback is up, and the namespace goes with the test.
func TestLone(t *testing.T) {
	testenv.RequireRoot(t)
	var name string
	t.Run("lone", func(t *testing.T) {
		ns := Lone(t, "sxnt-")
		name = ns.Name
		lo := netip.MustParseAddr("127.0.0.1")
		if from, err := roundTrip(t, ns, lo, ns, lo); err != nil || from != lo {
			t.Fatalf("over lo: from %s, %v", from, err)
		}
	})
	if _, err := os.Stat(RunDir + "/" + name); !os.IsNotExist(err) {
		t.Errorf("namespace %s still exists after cleanup (stat: %v)", name, err)
	}
}
