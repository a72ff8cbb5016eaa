// Package netnstest builds a throw-away three-namespace line for tests that
// move real packets through the relay:
//
//	caller ns  c0 ==veth== ra  relay ns  rb ==veth== e0  callee ns
//	10.252.1.2        10.252.1.1      10.252.2.1        10.252.2.2
//	fd00:252:1::2     fd00:252:1::1   fd00:252:2::1     fd00:252:2::2
//
// Every address lives only inside the namespaces, and the ranges differ from
// those the bpf tests (10.250) and bench (10.251) use, so the suites can run
// at the same time. It is a non-test file so several packages can share it.
package netnstest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sipxdp/bpf"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where iproute2 keeps named namespaces.
const NetnsDir = "/run/netns"

// Interface names, fixed because each lives in its own namespace.
const (
	CallerIf = "c0" // caller's end of the caller–relay veth
	RelayA   = "ra" // relay's end towards the caller
	RelayB   = "rb" // relay's end towards the callee
	CalleeIf = "e0" // callee's end of the relay–callee veth
)

// Fixed MACs so the static neighbours need no discovery.
var (
	macCaller = net.HardwareAddr{0x02, 0x52, 0x01, 0, 0, 0x02}
	macRelayA = net.HardwareAddr{0x02, 0x52, 0x01, 0, 0, 0x01}
	macRelayB = net.HardwareAddr{0x02, 0x52, 0x02, 0, 0, 0x01}
	macCallee = net.HardwareAddr{0x02, 0x52, 0x02, 0, 0, 0x02}
)

// Addrs are the four addresses of one family.
type Addrs struct {
	Name                   string // "ipv4" or "ipv6"
	Caller, RelayA, RelayB netip.Addr
	Callee                 netip.Addr
	Bits                   int
}

// V4 and V6 are the topology's addresses.
var (
	V4 = Addrs{"ipv4", netip.MustParseAddr("10.252.1.2"), netip.MustParseAddr("10.252.1.1"),
		netip.MustParseAddr("10.252.2.1"), netip.MustParseAddr("10.252.2.2"), 24}
	V6 = Addrs{"ipv6", netip.MustParseAddr("fd00:252:1::2"), netip.MustParseAddr("fd00:252:1::1"),
		netip.MustParseAddr("fd00:252:2::1"), netip.MustParseAddr("fd00:252:2::2"), 64}
)

// NS is one named network namespace.
type NS struct {
	Name string
	h    netns.NsHandle
}

// Path is the bind-mounted namespace file, for nsenter --net=PATH.
func (n *NS) Path() string { return filepath.Join(NetnsDir, n.Name) }

// Topo is the caller–relay–callee line.
type Topo struct {
	Caller, Relay, Callee *NS
}

var counter atomic.Uint64

// New creates the topology and registers its removal with t.Cleanup.
// prefix names the namespaces (prefix + PID + counter); namespaces with
// the same prefix left by a test process that no longer runs are removed
// first. The caller must have checked for root.
func New(t testing.TB, prefix string) *Topo {
	t.Helper()
	RemoveStale(t, prefix)
	id := fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), counter.Add(1))
	tp := &Topo{}
	for _, p := range []struct {
		dst  **NS
		role string
	}{{&tp.Caller, "c"}, {&tp.Relay, "r"}, {&tp.Callee, "e"}} {
		*p.dst = newNS(t, id+"-"+p.role)
	}
	if err := tp.build(); err != nil {
		t.Fatalf("build topology %s: %v", id, err)
	}
	return tp
}

// newNS creates the named namespace and registers its removal with
// t.Cleanup.
func newNS(t testing.TB, name string) *NS {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("create namespace %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name, h: -1}
	t.Cleanup(func() { ns.remove(t) })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	ns.h = h
	return ns
}

func (n *NS) remove(t testing.TB) {
	if n.h >= 0 {
		n.h.Close()
	}
	// Deleting the namespace destroys its veth ends, which detaches any
	// program on them.
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Errorf("remove namespace %s: %v: %s", n.Name, err, out)
	}
}

// RemoveStale deletes namespaces named prefix+PID-... whose PID is not a
// running process: what a crashed or killed test run left behind.
func RemoveStale(t testing.TB, prefix string) {
	entries, _ := os.ReadDir(NetnsDir)
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		t.Logf("removing stale namespace %s", e.Name())
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			t.Logf("remove stale namespace %s: %v: %s", e.Name(), err, out)
		}
	}
}

func ip(ns *NS, args ...string) error {
	// ip -n is enough for iproute2's own work: nothing here needs bpffs.
	out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s %s: %w: %s", ns.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (tp *Topo) build() error {
	type end struct {
		ns   *NS
		name string
		mac  net.HardwareAddr
	}
	pairs := [][2]end{
		{{tp.Caller, CallerIf, macCaller}, {tp.Relay, RelayA, macRelayA}},
		{{tp.Callee, CalleeIf, macCallee}, {tp.Relay, RelayB, macRelayB}},
	}
	for _, p := range pairs {
		if err := ip(p[0].ns, "link", "add", p[0].name, "address", p[0].mac.String(), "type", "veth",
			"peer", "name", p[1].name, "address", p[1].mac.String(), "netns", p[1].ns.Name); err != nil {
			return err
		}
	}
	type addr struct {
		ns  *NS
		dev string
		a   func(Addrs) netip.Addr
	}
	addrs := []addr{
		{tp.Caller, CallerIf, func(f Addrs) netip.Addr { return f.Caller }},
		{tp.Relay, RelayA, func(f Addrs) netip.Addr { return f.RelayA }},
		{tp.Relay, RelayB, func(f Addrs) netip.Addr { return f.RelayB }},
		{tp.Callee, CalleeIf, func(f Addrs) netip.Addr { return f.Callee }},
	}
	for _, a := range addrs {
		for _, f := range []Addrs{V4, V6} {
			args := []string{"addr", "add", netip.PrefixFrom(a.a(f), f.Bits).String(), "dev", a.dev}
			if f.Name == "ipv6" {
				// DAD would hold the address tentative for a second or two
				// and drop the first packets.
				args = append(args, "nodad")
			}
			if err := ip(a.ns, args...); err != nil {
				return err
			}
		}
	}
	for _, ns := range []*NS{tp.Caller, tp.Relay, tp.Callee} {
		if err := ip(ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	for _, a := range addrs {
		if err := ip(a.ns, "link", "set", a.dev, "up"); err != nil {
			return err
		}
	}
	for _, a := range addrs {
		if err := waitUp(a.ns, a.dev); err != nil {
			return err
		}
	}
	// The ends reach the far side only through the relay; the relay is on
	// both links, so its connected routes cover both ends.
	for _, r := range []struct {
		ns  *NS
		via func(Addrs) netip.Addr
	}{{tp.Caller, func(f Addrs) netip.Addr { return f.RelayA }}, {tp.Callee, func(f Addrs) netip.Addr { return f.RelayB }}} {
		for _, f := range []Addrs{V4, V6} {
			fam := "-4"
			if f.Name == "ipv6" {
				fam = "-6"
			}
			if err := ip(r.ns, fam, "route", "add", "default", "via", r.via(f).String()); err != nil {
				return err
			}
		}
	}
	// Permanent neighbours: the kernel datapath's FIB lookup passes a
	// packet up when the next hop is unresolved, which would make the
	// first kernel-path packets depend on ARP/ND timing.
	neigh := []struct {
		ns  *NS
		dev string
		mac net.HardwareAddr
		a   func(Addrs) netip.Addr
	}{
		{tp.Relay, RelayA, macCaller, func(f Addrs) netip.Addr { return f.Caller }},
		{tp.Relay, RelayB, macCallee, func(f Addrs) netip.Addr { return f.Callee }},
		{tp.Caller, CallerIf, macRelayA, func(f Addrs) netip.Addr { return f.RelayA }},
		{tp.Callee, CalleeIf, macRelayB, func(f Addrs) netip.Addr { return f.RelayB }},
	}
	for _, n := range neigh {
		for _, f := range []Addrs{V4, V6} {
			if err := ip(n.ns, "neigh", "replace", n.a(f).String(), "lladdr", n.mac.String(),
				"dev", n.dev, "nud", "permanent"); err != nil {
				return err
			}
		}
	}
	// The kernel datapath's FIB lookup is a forwarding lookup and fails
	// with forwarding disabled.
	for _, key := range []string{"net.ipv4.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding=1"} {
		if out, err := tp.Relay.Exec("sysctl", "-qw", key); err != nil {
			return fmt.Errorf("sysctl %s in %s: %w: %s", key, tp.Relay.Name, err, out)
		}
	}
	return nil
}

// waitUp waits until dev is operationally up. Until the kernel's link
// watcher has run (it may wait up to a second) a new veth keeps its noop
// qdisc, which drops what is sent: the first packet of a test would be
// lost for reasons that have nothing to do with the relay.
func waitUp(ns *NS, dev string) error {
	var last string
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		out, err := exec.Command("ip", "-n", ns.Name, "-j", "link", "show", "dev", dev).Output()
		if err != nil {
			return fmt.Errorf("show %s in %s: %w", dev, ns.Name, err)
		}
		var links []struct {
			Qdisc     string `json:"qdisc"`
			Operstate string `json:"operstate"`
		}
		if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
			return fmt.Errorf("parse link %s in %s: %q: %v", dev, ns.Name, out, err)
		}
		if links[0].Operstate == "UP" && links[0].Qdisc != "noop" {
			return nil
		}
		last = fmt.Sprintf("operstate %s, qdisc %s", links[0].Operstate, links[0].Qdisc)
	}
	return fmt.Errorf("%s in %s not up after 5s: %s", dev, ns.Name, last)
}

// Do runs fn on a locked OS thread inside the namespace and moves the
// thread back afterwards. Sockets and netlink handles opened by fn keep
// this namespace after Do returns; goroutines fn starts do not inherit it.
func (n *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(n.h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", n.Name, err)
	}
	defer func() {
		// A thread that cannot go back stays locked, so the runtime
		// retires it with the goroutine instead of reusing it elsewhere.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

// ListenUDP opens a UDP socket bound inside the namespace.
func (n *NS) ListenUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return err
		}
		// A test process on a busy 2-CPU machine can be off the CPU for
		// tens of milliseconds; the default buffer (about 280 small
		// datagrams) would then drop packets the relay delivered, and a
		// loss check would blame the relay.
		rc, err := c.SyscallConn()
		if err != nil {
			c.Close()
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		}); err != nil || serr != nil {
			c.Close()
			return fmt.Errorf("set receive buffer: %w", errors.Join(err, serr))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listen udp %s in %s: %w", addr, n.Name, err)
	}
	return c, nil
}

// Exec runs a command inside the namespace with nsenter, which, unlike
// ip netns exec, leaves /sys (and so bpffs) as it is.
func (n *NS) Exec(name string, args ...string) ([]byte, error) {
	return exec.Command("nsenter", append([]string{"--net=" + n.Path(), name}, args...)...).CombinedOutput()
}

// Command returns a command that runs inside the namespace with nsenter.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--", name}, args...)...)
}

// SetTxChecksum switches tx checksum offload of dev on or off. With it on,
// packets sent by local sockets over veth keep a partial UDP checksum.
func (n *NS) SetTxChecksum(dev string, on bool) error {
	v := "off"
	if on {
		v = "on"
	}
	if out, err := n.Exec("ethtool", "-K", dev, "tx", v); err != nil {
		return fmt.Errorf("ethtool -K %s tx %s in %s: %w: %s", dev, v, n.Name, err, out)
	}
	return nil
}

// AttachXDPPass attaches a native-mode program that passes every packet.
// Native XDP on veth redirects or transmits into a peer only when the peer
// runs an XDP program too, so the ends facing the relay need one.
func (n *NS) AttachXDPPass(dev string) (io.Closer, error) {
	prog, err := bpf.NewPassXDP()
	if err != nil {
		return nil, err
	}
	defer prog.Close() // the link holds its own reference
	var l link.Link
	err = n.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attach xdp pass to %s in %s: %w", dev, n.Name, err)
	}
	return l, nil
}

// UDPCounters reads the namespace's UDP MIB: the Udp line of
// /proc/net/snmp and the Udp6 entries of /proc/net/snmp6, keyed as the
// kernel names them ("Udp:InCsumErrors", "Udp6InCsumErrors").
func (n *NS) UDPCounters() (map[string]uint64, error) {
	out := map[string]uint64{}
	err := n.Do(func() error {
		// thread-self, not self: /proc/self/net follows the namespace of
		// the process's main thread, not of this locked thread.
		if err := readSNMP("/proc/thread-self/net/snmp", out); err != nil {
			return err
		}
		return readSNMP6("/proc/thread-self/net/snmp6", out)
	})
	if err != nil {
		return nil, fmt.Errorf("udp counters of %s: %w", n.Name, err)
	}
	return out, nil
}

func readSNMP(path string, out map[string]uint64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var header []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Udp:" {
			continue
		}
		if header == nil {
			header = fields
			continue
		}
		for i := 1; i < len(fields) && i < len(header); i++ {
			v, err := strconv.ParseUint(fields[i], 10, 64)
			if err != nil {
				return fmt.Errorf("parse %s %s: %w", path, header[i], err)
			}
			out["Udp:"+header[i]] = v
		}
		return sc.Err()
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("no Udp lines in " + path)
}

func readSNMP6(path string, out map[string]uint64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasPrefix(f[0], "Udp6") {
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return fmt.Errorf("parse %s %s: %w", path, f[0], err)
			}
			out[f[0]] = v
		}
	}
	return nil
}

// PrepareXDP readies the caller and callee for a relay on an XDP hook.
// Packets that local sockets send over veth carry a partial UDP checksum
// that XDP cannot see, so its incremental update would come out wrong
// (docs/ARCHITECTURE.md, "The kernel hooks on these machines"); a real
// NIC delivers full checksums, so the end hosts compute them in software
// to stand in for that, and the test says so.
// Native XDP on veth also redirects into a peer only if the peer runs an
// XDP program, so with native set each end gets a pass-through one.
func (tp *Topo) PrepareXDP(t testing.TB, native bool) {
	t.Helper()
	t.Logf("XDP hook: tx checksum offload off on %s and %s (XDP cannot fix CHECKSUM_PARTIAL)", CallerIf, CalleeIf)
	for _, e := range []struct {
		ns  *NS
		dev string
	}{{tp.Caller, CallerIf}, {tp.Callee, CalleeIf}} {
		if err := e.ns.SetTxChecksum(e.dev, false); err != nil {
			t.Fatal(err)
		}
		if native {
			l, err := e.ns.AttachXDPPass(e.dev)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}
	}
}

// Host is an extra namespace hung off the relay namespace by AddHost: a
// third party on the network, such as an attacker, that reaches the relay
// and, through it, the caller and callee.
type Host struct {
	*NS
	V4, V6 netip.Addr // the host's own addresses
	// Relay4 and Relay6 are the relay namespace's addresses on the link.
	Relay4, Relay6 netip.Addr
	// RelayIf is the link's interface in the relay namespace, where a
	// kernel hook must sit to see the host's packets.
	RelayIf string
}

// AddHost creates one more namespace joined to the relay namespace by a
// veth ("h0" on the host, "h<n>" on the relay) with the addresses
// 10.252.n.2/24 and fd00:252:n::2/64 (the relay's end is .1 and ::1) and
// default routes through the relay. n must be 3..250 and unique per
// topology (1 and 2 are the caller's and callee's links). The namespace is
// removed with the test.
func (tp *Topo) AddHost(t testing.TB, role string, n int) *Host {
	t.Helper()
	if n < 3 || n > 250 {
		t.Fatalf("AddHost %s: link number %d: want 3..250", role, n)
	}
	ns := newNS(t, strings.TrimSuffix(tp.Relay.Name, "-r")+"-"+role)
	host := &Host{NS: ns,
		V4: netip.AddrFrom4([4]byte{10, 252, byte(n), 2}), Relay4: netip.AddrFrom4([4]byte{10, 252, byte(n), 1}),
		V6:     netip.MustParseAddr(fmt.Sprintf("fd00:252:%d::2", n)),
		Relay6: netip.MustParseAddr(fmt.Sprintf("fd00:252:%d::1", n))}
	relayIf := fmt.Sprintf("h%d", n)
	host.RelayIf = relayIf
	steps := []struct {
		ns   *NS
		args []string
	}{
		{ns, []string{"link", "add", "h0", "type", "veth", "peer", "name", relayIf, "netns", tp.Relay.Name}},
		{ns, []string{"addr", "add", netip.PrefixFrom(host.V4, 24).String(), "dev", "h0"}},
		{ns, []string{"addr", "add", netip.PrefixFrom(host.V6, 64).String(), "dev", "h0", "nodad"}},
		{tp.Relay, []string{"addr", "add", netip.PrefixFrom(host.Relay4, 24).String(), "dev", relayIf}},
		{tp.Relay, []string{"addr", "add", netip.PrefixFrom(host.Relay6, 64).String(), "dev", relayIf, "nodad"}},
		{ns, []string{"link", "set", "lo", "up"}},
		{ns, []string{"link", "set", "h0", "up"}},
		{tp.Relay, []string{"link", "set", relayIf, "up"}},
	}
	for _, s := range steps {
		if err := ip(s.ns, s.args...); err != nil {
			t.Fatalf("add host %s: %v", role, err)
		}
	}
	for _, w := range []struct {
		ns  *NS
		dev string
	}{{ns, "h0"}, {tp.Relay, relayIf}} {
		if err := waitUp(w.ns, w.dev); err != nil {
			t.Fatalf("add host %s: %v", role, err)
		}
	}
	for _, r := range [][]string{{"-4", "route", "add", "default", "via", host.Relay4.String()},
		{"-6", "route", "add", "default", "via", host.Relay6.String()}} {
		if err := ip(ns, r...); err != nil {
			t.Fatalf("add host %s: %v", role, err)
		}
	}
	return host
}

// DialContext connects from inside the namespace; the connection keeps
// the namespace after the call returns. Its signature fits
// http.Transport.DialContext, for reaching a daemon's API inside it.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s in %s: %w", network, addr, n.Name, err)
	}
	return c, nil
}

// AddAddr adds a as a further address (/32 or /128) on the host's link
// end, so sockets in the namespace can send from it: more attacker
// addresses in its own subnet, or an address of another host to spoof
// that host. Removed with the namespace.
func (h *Host) AddAddr(t testing.TB, a netip.Addr) {
	t.Helper()
	args := []string{"addr", "add", netip.PrefixFrom(a, a.BitLen()).String(), "dev", "h0"}
	if a.Is6() {
		args = append(args, "nodad")
	}
	if err := ip(h.NS, args...); err != nil {
		t.Fatalf("add address %s: %v", a, err)
	}
}

// AllowSpoofed switches reverse-path filtering off in the namespace, so
// it accepts packets whose source it would route elsewhere, as a server
// on the internet does for packets with a forged source. A test that
// spoofs must call it on the receiving namespace: with rp_filter on
// (inherited from the host on some systems) the forged packets would
// vanish and the test would prove nothing.
func (n *NS) AllowSpoofed(t testing.TB) {
	t.Helper()
	for _, k := range []string{"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"} {
		if out, err := n.Exec("sysctl", "-qw", k); err != nil {
			t.Fatalf("sysctl %s in %s: %v: %s", k, n.Name, err, out)
		}
	}
	// Per-interface values count too (the kernel uses the larger of all
	// and the interface's); /proc/sys/net lists the namespace's own.
	out, err := n.Exec("ls", "/proc/sys/net/ipv4/conf")
	if err != nil {
		t.Fatalf("list interfaces of %s: %v: %s", n.Name, err, out)
	}
	for _, dev := range strings.Fields(string(out)) {
		if dev == "all" || dev == "default" {
			continue
		}
		if o, err := n.Exec("sysctl", "-qw", "net.ipv4.conf."+dev+".rp_filter=0"); err != nil {
			t.Fatalf("sysctl rp_filter of %s in %s: %v: %s", dev, n.Name, err, o)
		}
	}
}

// AddV4 gives the host more IPv4 addresses on its link, 10.252.n.first
// up to 10.252.n.(first+count-1) (first at least 3: .1 is the relay's and
// .2 the host's own), so one test can send from many sources. They go
// with the namespace.
func (h *Host) AddV4(t testing.TB, first, count int) []netip.Addr {
	t.Helper()
	if first < 3 || first+count > 255 {
		t.Fatalf("AddV4 %d+%d: want addresses within .3 to .254", first, count)
	}
	b := h.V4.As4()
	var out []netip.Addr
	for i := range count {
		b[3] = byte(first + i)
		a := netip.AddrFrom4(b)
		h.AddAddr(t, a)
		out = append(out, a)
	}
	return out
}

// DialFrom connects from local (port chosen by the kernel) inside the
// namespace, within timeout.
func (n *NS) DialFrom(network string, local netip.Addr, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}
		var err error
		c, err = d.Dial(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from %s in %s: %w", network, addr, local, n.Name, err)
	}
	return c, nil
}
