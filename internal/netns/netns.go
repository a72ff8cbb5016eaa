// Package netns builds throw-away network topologies for tests and the
// bench: three namespaces in a line joined by veth pairs,
//
//	caller ns  c0 ==veth== ra  relay ns  rb ==veth== e0  callee ns
//	N.1.2              N.1.1          N.2.1              N.2.2
//
// where N is the IPv4 /16 of Config.Net4 (and likewise link 1 and 2 of
// the IPv6 /32 of Config.Net6), optionally a direct caller–callee link,
// more hosts hung off the relay, and hosts behind a NAT router hung off
// one of those (AddBehindNAT, with nftables' masquerade). Every address
// lives only inside the namespaces; nothing is configured in the
// caller's namespace, so a run cannot disturb the host's traffic. Namespace names carry the process ID,
// so namespaces left by a killed run can be told from a live run's and
// removed.
//
// The package does not load eBPF: XDP_PASS programs for native XDP come
// from bpf.AttachPassXDP, passed in where needed (see Topo.PrepareXDP).
package netns

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sipxdp/internal/pidname"
	"sipxdp/internal/testenv"
)

// RunDir is where iproute2 keeps named namespaces.
const RunDir = "/run/netns"

// Interface names, fixed because each lives in its own namespace.
const (
	CallerIf       = "c0" // caller's end of the caller–relay veth
	RelayA         = "ra" // relay's end towards the caller
	RelayB         = "rb" // relay's end towards the callee
	CalleeIf       = "e0" // callee's end of the relay–callee veth
	CallerDirectIf = "cd" // caller's end of the direct link (Config.Direct)
	CalleeDirectIf = "ed" // callee's end of the direct link
)

// Link numbers within Net4 and Net6. AddHost takes the others.
const (
	linkA      = 1
	linkB      = 2
	linkDirect = 3
)

// Fixed MACs so the static neighbours need no discovery.
var (
	macCaller       = net.HardwareAddr{0x02, 0x52, 0x01, 0, 0, 0x02}
	macRelayA       = net.HardwareAddr{0x02, 0x52, 0x01, 0, 0, 0x01}
	macRelayB       = net.HardwareAddr{0x02, 0x52, 0x02, 0, 0, 0x01}
	macCallee       = net.HardwareAddr{0x02, 0x52, 0x02, 0, 0, 0x02}
	macCallerDirect = net.HardwareAddr{0x02, 0x52, 0x03, 0, 0, 0x01}
	macCalleeDirect = net.HardwareAddr{0x02, 0x52, 0x03, 0, 0, 0x02}
)

// Default4 and Default6 are the networks of a Config that sets neither.
var (
	Default4 = netip.MustParsePrefix("10.252.0.0/16")
	Default6 = netip.MustParsePrefix("fd00:252::/32")
)

// Config chooses names and addresses.
type Config struct {
	// Prefix starts every namespace name, followed by the PID, a sequence
	// number and the role; CleanStale finds a dead run's namespaces by it.
	// Default "sxns-".
	Prefix string
	// Net4 is an IPv4 network of /16 or wider: link n is its n.0/24.
	// Net6 is an IPv6 network of /32 or wider: link n is its n::/64 (n in
	// the third group). The relay (or, on the direct link, the caller) has
	// host 1 on a link, the other end host 2. With neither set both take
	// their defaults; with only Net4 set the topology is IPv4 only.
	Net4, Net6 netip.Prefix
	// Direct adds link 3, a veth straight between caller and callee
	// (CallerDirectIf, CalleeDirectIf), with host routes that send the
	// traffic between the two ends' line addresses over it. Traffic to
	// the relay's addresses still goes through the relay. It stands in
	// for the network path media takes when no relay is in it.
	Direct bool
}

func (c *Config) fill() error {
	if c.Prefix == "" {
		c.Prefix = "sxns-"
	}
	if !c.Net4.IsValid() && !c.Net6.IsValid() {
		c.Net4, c.Net6 = Default4, Default6
	}
	if !c.Net4.IsValid() || !c.Net4.Addr().Is4() || c.Net4.Bits() > 16 {
		return fmt.Errorf("Net4 %s: want an IPv4 network of /16 or wider", c.Net4)
	}
	if c.Net6.IsValid() && (!c.Net6.Addr().Is6() || c.Net6.Addr().Is4In6() || c.Net6.Bits() > 32) {
		return fmt.Errorf("Net6 %s: want an IPv6 network of /32 or wider", c.Net6)
	}
	return nil
}

// hostIn is host h on link n of net (see Config).
func hostIn(p netip.Prefix, n, h int) netip.Addr {
	if p.Addr().Is4() {
		a := p.Masked().Addr().As4()
		a[2], a[3] = byte(n), byte(h)
		return netip.AddrFrom4(a)
	}
	a := p.Masked().Addr().As16()
	a[4], a[5], a[15] = byte(n>>8), byte(n), byte(h)
	return netip.AddrFrom16(a)
}

// Addrs are the four line addresses of one family.
type Addrs struct {
	Name                   string // "ipv4" or "ipv6"
	Caller, RelayA, RelayB netip.Addr
	Callee                 netip.Addr
	Bits                   int
}

// V4 and V6 are the line addresses of a topology on the default networks
// (a zero Config's), for tests that name them in tables.
var (
	V4 = AddrsIn(Default4)
	V6 = AddrsIn(Default6)
)

// AddrsIn gives the line addresses a topology built on network p has.
func AddrsIn(p netip.Prefix) Addrs {
	a := Addrs{Name: "ipv4", Bits: 24}
	if p.Addr().Is6() {
		a.Name, a.Bits = "ipv6", 64
	}
	a.Caller, a.RelayA = hostIn(p, linkA, 2), hostIn(p, linkA, 1)
	a.RelayB, a.Callee = hostIn(p, linkB, 1), hostIn(p, linkB, 2)
	return a
}

// Topo is the caller–relay–callee line.
type Topo struct {
	Caller, Relay, Callee *NS
	// V4 and V6 are the line's addresses; V6 is zero when the topology is
	// IPv4 only.
	V4, V6 Addrs

	cfg   Config
	owned []*NS // every namespace made, for Close
}

// Families lists the address families the topology has, IPv4 first.
func (tp *Topo) Families() []Addrs {
	if tp.V6.Caller.IsValid() {
		return []Addrs{tp.V4, tp.V6}
	}
	return []Addrs{tp.V4}
}

func (tp *Topo) nets() []netip.Prefix {
	if tp.cfg.Net6.IsValid() {
		return []netip.Prefix{tp.cfg.Net4, tp.cfg.Net6}
	}
	return []netip.Prefix{tp.cfg.Net4}
}

var seq atomic.Uint64

// Create builds the topology. On error everything created so far is
// removed. Close removes it.
func Create(ctx context.Context, cfg Config) (tp *Topo, err error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	tp = &Topo{cfg: cfg, V4: AddrsIn(cfg.Net4)}
	if cfg.Net6.IsValid() {
		tp.V6 = AddrsIn(cfg.Net6)
	}
	defer func() {
		if err != nil {
			if cerr := tp.Close(); cerr != nil {
				slog.Warn("cleanup after failed create", "err", cerr)
			}
			tp = nil
		}
	}()
	id := fmt.Sprintf("%s%d-%d", cfg.Prefix, os.Getpid(), seq.Add(1))
	for _, p := range []struct {
		dst  **NS
		role string
	}{{&tp.Caller, "c"}, {&tp.Relay, "r"}, {&tp.Callee, "e"}} {
		if *p.dst, err = tp.newNS(ctx, id+"-"+p.role); err != nil {
			return tp, err
		}
	}
	if err := tp.build(ctx); err != nil {
		return tp, fmt.Errorf("build topology %s: %w", id, err)
	}
	return tp, nil
}

// New creates the topology for a test and removes it with t.Cleanup.
// It skips the test when not root (fails under CI), and first removes
// namespaces with the same prefix whose process is gone.
func New(t testing.TB, cfg Config) *Topo {
	t.Helper()
	testenv.RequireRoot(t)
	cleanStaleLogged(t, cmp.Or(cfg.Prefix, "sxns-"))
	tp, err := Create(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Error(err)
		}
	})
	return tp
}

// Lone creates a namespace holding only lo, up, for a test that needs a
// private loopback (ports of its own, hooks that touch nothing outside),
// and removes it with t.Cleanup. Like New it skips when not root and
// first removes stale namespaces with the prefix.
func Lone(t testing.TB, prefix string) *NS {
	t.Helper()
	testenv.RequireRoot(t)
	cleanStaleLogged(t, prefix)
	tp := &Topo{}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Error(err)
		}
	})
	ctx := context.Background()
	ns, err := tp.newNS(ctx, fmt.Sprintf("%s%d-%d-l", prefix, os.Getpid(), seq.Add(1)))
	if err == nil {
		err = ns.ip(ctx, "link", "set", "lo", "up")
	}
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func cleanStaleLogged(t testing.TB, prefix string) {
	removed, err := CleanStale(prefix)
	for _, n := range removed {
		t.Logf("removed stale namespace %s", n)
	}
	if err != nil {
		t.Logf("remove stale namespaces: %v", err)
	}
}

// newNS creates a named namespace and records it for Close.
func (tp *Topo) newNS(ctx context.Context, name string) (*NS, error) {
	if err := ip(ctx, "netns", "add", name); err != nil {
		return nil, err
	}
	n := &NS{Name: name, Path: RunDir + "/" + name, h: -1}
	tp.owned = append(tp.owned, n)
	if err := n.open(); err != nil {
		return nil, err
	}
	return n, nil
}

// Close deletes the namespaces; their veths go with them, and with those
// any program attached to them. Safe to call on a partly built topology
// and more than once.
func (tp *Topo) Close() error {
	var errs []error
	for _, n := range tp.owned {
		n.close()
		if err := deleteNS(n.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func deleteNS(name string) error {
	if _, err := os.Stat(RunDir + "/" + name); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// A fresh context: cleanup must run even when the run was cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ip(ctx, "netns", "delete", name)
}

// CleanStale removes namespaces named with prefix whose process is gone,
// left behind by a run that was killed before its cleanup, and returns
// their names.
func CleanStale(prefix string) ([]string, error) {
	ents, err := os.ReadDir(RunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", RunDir, err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		// Other goroutines of this process may be using theirs.
		if !pidname.Stale(e.Name(), prefix, false) {
			continue
		}
		if err := deleteNS(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ip runs iproute2 on the namespace: ip -n is enough for its own work,
// nothing here needs bpffs.
func (n *NS) ip(ctx context.Context, args ...string) error {
	return ip(ctx, append([]string{"-n", n.Name}, args...)...)
}

// end is one veth end: its namespace, name and MAC.
type end struct {
	ns  *NS
	dev string
	mac net.HardwareAddr
}

// addLink joins a and b by a veth, both ends made in their namespaces,
// never in ours, and gives them hosts ha and hb of link n in every
// family. It brings both ends up and waits until they carry traffic.
func (tp *Topo) addLink(ctx context.Context, n int, a, b end, ha, hb int) error {
	args := []string{"link", "add", a.dev}
	if a.mac != nil {
		args = append(args, "address", a.mac.String())
	}
	args = append(args, "type", "veth", "peer", "name", b.dev)
	if b.mac != nil {
		args = append(args, "address", b.mac.String())
	}
	if err := a.ns.ip(ctx, append(args, "netns", b.ns.Name)...); err != nil {
		return err
	}
	for _, e := range []struct {
		end
		host int
	}{{a, ha}, {b, hb}} {
		for _, p := range tp.nets() {
			if err := e.ns.addAddr(ctx, e.dev, netip.PrefixFrom(hostIn(p, n, e.host), linkBits(p))); err != nil {
				return err
			}
		}
	}
	for _, e := range []end{a, b} {
		if err := e.ns.ip(ctx, "link", "set", e.dev, "up"); err != nil {
			return err
		}
	}
	for _, e := range []end{a, b} {
		if err := e.ns.waitUp(ctx, e.dev); err != nil {
			return err
		}
	}
	return nil
}

func linkBits(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 24
	}
	return 64
}

func (n *NS) addAddr(ctx context.Context, dev string, p netip.Prefix) error {
	args := []string{"addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		// DAD would hold the address tentative for a second or two and
		// drop the first packets.
		args = append(args, "nodad")
	}
	return n.ip(ctx, args...)
}

func (tp *Topo) build(ctx context.Context) error {
	for _, ns := range []*NS{tp.Caller, tp.Relay, tp.Callee} {
		if err := ns.ip(ctx, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	if err := tp.addLink(ctx, linkA, end{tp.Caller, CallerIf, macCaller}, end{tp.Relay, RelayA, macRelayA}, 2, 1); err != nil {
		return err
	}
	if err := tp.addLink(ctx, linkB, end{tp.Callee, CalleeIf, macCallee}, end{tp.Relay, RelayB, macRelayB}, 2, 1); err != nil {
		return err
	}
	// The ends reach the far side only through the relay; the relay is on
	// both links, so its connected routes cover both ends.
	for _, f := range tp.Families() {
		for _, r := range []struct {
			ns  *NS
			via netip.Addr
		}{{tp.Caller, f.RelayA}, {tp.Callee, f.RelayB}} {
			if err := r.ns.ip(ctx, family(r.via), "route", "add", "default", "via", r.via.String()); err != nil {
				return err
			}
		}
	}
	// Permanent neighbours: the kernel datapath's FIB lookup passes a
	// packet up when the next hop is unresolved, which would make the
	// first kernel-path packets depend on ARP/ND timing, and with the
	// relay port having no socket nothing would ever resolve it. Every
	// path gets the same entries so none pays for ARP inside a
	// measurement.
	for _, f := range tp.Families() {
		for _, nb := range []struct {
			ns   *NS
			dev  string
			addr netip.Addr
			mac  net.HardwareAddr
		}{
			{tp.Relay, RelayA, f.Caller, macCaller},
			{tp.Relay, RelayB, f.Callee, macCallee},
			{tp.Caller, CallerIf, f.RelayA, macRelayA},
			{tp.Callee, CalleeIf, f.RelayB, macRelayB},
		} {
			if err := nb.ns.neigh(ctx, nb.dev, nb.addr, nb.mac); err != nil {
				return err
			}
		}
	}
	// The kernel datapath's FIB lookup is a forwarding lookup and fails
	// with forwarding disabled; the direct baseline forwards too.
	keys := []string{"net.ipv4.conf.all.forwarding"}
	if tp.cfg.Net6.IsValid() {
		keys = append(keys, "net.ipv6.conf.all.forwarding")
	}
	for _, k := range keys {
		if err := tp.Relay.Sysctl(k, "1"); err != nil {
			return err
		}
	}
	if tp.cfg.Direct {
		return tp.addDirect(ctx)
	}
	return nil
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "-4"
	}
	return "-6"
}

func (n *NS) neigh(ctx context.Context, dev string, a netip.Addr, mac net.HardwareAddr) error {
	return n.ip(ctx, "neigh", "replace", a.String(), "lladdr", mac.String(), "dev", dev, "nud", "permanent")
}

// addDirect joins caller and callee with their own veth and routes the
// traffic between their line addresses over it.
func (tp *Topo) addDirect(ctx context.Context) error {
	if err := tp.addLink(ctx, linkDirect, end{tp.Caller, CallerDirectIf, macCallerDirect},
		end{tp.Callee, CalleeDirectIf, macCalleeDirect}, 1, 2); err != nil {
		return err
	}
	for i, f := range tp.Families() {
		p := tp.nets()[i]
		cAddr, eAddr := hostIn(p, linkDirect, 1), hostIn(p, linkDirect, 2)
		for _, r := range []struct {
			ns       *NS
			dev      string
			dst, via netip.Addr
			viaMAC   net.HardwareAddr
		}{
			{tp.Caller, CallerDirectIf, f.Callee, eAddr, macCalleeDirect},
			{tp.Callee, CalleeDirectIf, f.Caller, cAddr, macCallerDirect},
		} {
			if err := r.ns.ip(ctx, family(r.dst), "route", "add", netip.PrefixFrom(r.dst, r.dst.BitLen()).String(),
				"via", r.via.String(), "dev", r.dev); err != nil {
				return err
			}
			if err := r.ns.neigh(ctx, r.dev, r.via, r.viaMAC); err != nil {
				return err
			}
		}
	}
	// Packets from the other end arrive on the direct link while replies
	// to the relay leave by the line: loose reverse-path filtering would
	// be enough, off is what a router-less test network has anyway.
	for _, n := range []*NS{tp.Caller, tp.Callee} {
		for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"} {
			if err := n.Sysctl(k, "0"); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitUp waits until dev is operationally up. Until the kernel's link
// watcher has run (it may wait up to a second) a new veth keeps its noop
// qdisc, which drops what is sent: the first packet of a test would be
// lost for reasons that have nothing to do with the relay.
func (n *NS) waitUp(ctx context.Context, dev string) error {
	var last string
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		out, err := exec.CommandContext(ctx, "ip", "-n", n.Name, "-j", "link", "show", "dev", dev).Output()
		if err != nil {
			return fmt.Errorf("show %s in %s: %w", dev, n.Name, err)
		}
		var links []struct {
			Qdisc     string `json:"qdisc"`
			Operstate string `json:"operstate"`
		}
		if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
			return fmt.Errorf("parse link %s in %s: %q: %v", dev, n.Name, out, err)
		}
		if links[0].Operstate == "UP" && links[0].Qdisc != "noop" {
			return nil
		}
		last = fmt.Sprintf("operstate %s, qdisc %s", links[0].Operstate, links[0].Qdisc)
	}
	return fmt.Errorf("%s in %s not up after 5s: %s", dev, n.Name, last)
}

// Pass attaches to dev, inside ns, an XDP program that passes every
// packet, in native mode, and returns what detaches it:
// bpf.AttachPassXDP. It is a parameter because this package does not
// import bpf. (An alias of an unnamed type, so bpf's function fits it.)
type Pass = func(ns interface{ Do(fn func() error) error }, dev string) (io.Closer, error)

// PrepareXDP readies the caller and callee for a relay on an XDP hook.
// Packets that local sockets send over veth carry a partial UDP checksum
// that XDP cannot see, so its incremental update would come out wrong
// (docs/ARCHITECTURE.md); a real NIC delivers full checksums, so the end
// hosts compute them in software to stand in for that, and the test says
// so. Native XDP on veth also redirects into a peer only if the peer runs
// an XDP program, so with pass set each end gets one from it.
func (tp *Topo) PrepareXDP(t testing.TB, pass Pass) {
	t.Helper()
	t.Logf("XDP hook: tx checksum offload off on %s and %s (XDP cannot fix CHECKSUM_PARTIAL)", CallerIf, CalleeIf)
	for _, e := range []struct {
		ns  *NS
		dev string
	}{{tp.Caller, CallerIf}, {tp.Callee, CalleeIf}} {
		if err := e.ns.SetTxChecksum(e.dev, false); err != nil {
			t.Fatal(err)
		}
		if pass != nil {
			l, err := pass(e.ns, e.dev)
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
	V4, V6 netip.Addr // the host's own addresses (V6 zero if IPv4 only)
	// Relay4 and Relay6 are the relay namespace's addresses on the link.
	Relay4, Relay6 netip.Addr
	// RelayIf is the link's interface in the relay namespace, where a
	// kernel hook must sit to see the host's packets.
	RelayIf string
}

// AddHost creates one more namespace joined to the relay namespace by a
// veth ("h0" on the host, "h<n>" on the relay) on link n (host 2, the
// relay host 1) with default routes through the relay. n must be 3..250
// and unique per topology (1 and 2 are the caller's and callee's links, 3
// the direct link when there is one). The namespace is removed with the
// topology. It fails the test on error; NewHost is the same for callers
// without a test, such as the bench.
func (tp *Topo) AddHost(t testing.TB, role string, n int) *Host {
	t.Helper()
	return hostOrFatal(t)(tp.NewHost(context.Background(), role, n))
}

// hostOrFatal returns what takes a New*Host's results and fails t on its
// error, so each Add*Host is one line.
func hostOrFatal(t testing.TB) func(*Host, error) *Host {
	return func(h *Host, err error) *Host {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
}

// NewHost is AddHost returning its error; what it made before an error
// goes with the topology.
func (tp *Topo) NewHost(ctx context.Context, role string, n int) (*Host, error) {
	if n < linkDirect || n > 250 || (n == linkDirect && tp.cfg.Direct) {
		return nil, fmt.Errorf("add host %s: link number %d: want 3..250, not taken by another link", role, n)
	}
	ns, err := tp.newNS(ctx, strings.TrimSuffix(tp.Relay.Name, "-r")+"-"+role)
	if err != nil {
		return nil, fmt.Errorf("add host %s: %w", role, err)
	}
	host := &Host{NS: ns, RelayIf: fmt.Sprintf("h%d", n),
		V4: hostIn(tp.cfg.Net4, n, 2), Relay4: hostIn(tp.cfg.Net4, n, 1)}
	if tp.cfg.Net6.IsValid() {
		host.V6, host.Relay6 = hostIn(tp.cfg.Net6, n, 2), hostIn(tp.cfg.Net6, n, 1)
	}
	if err := ns.ip(ctx, "link", "set", "lo", "up"); err != nil {
		return nil, fmt.Errorf("add host %s: %w", role, err)
	}
	if err := tp.addLink(ctx, n, end{ns: ns, dev: "h0"}, end{ns: tp.Relay, dev: host.RelayIf}, 2, 1); err != nil {
		return nil, fmt.Errorf("add host %s: %w", role, err)
	}
	for _, via := range []netip.Addr{host.Relay4, host.Relay6} {
		if !via.IsValid() {
			continue
		}
		if err := ns.ip(ctx, family(via), "route", "add", "default", "via", via.String()); err != nil {
			return nil, fmt.Errorf("add host %s: %w", role, err)
		}
	}
	return host, nil
}

// AddRelayHost is AddHost for a host that runs a media relay on a
// kernel hook (a -relay-only node, as bench's relays scenario and the
// relay-set tests hang them off the relay namespace); NewRelayHost is the
// same without a test.
func (tp *Topo) AddRelayHost(t testing.TB, role string, n int) *Host {
	t.Helper()
	return hostOrFatal(t)(tp.NewRelayHost(context.Background(), role, n))
}

// NewRelayHost is NewHost with forwarding on in the new namespace: the
// relay's media leaves by the interface it came in on, and the hook's
// FIB lookup, a forwarding lookup, fails with forwarding off (sipd reads
// the setting, never sets it).
func (tp *Topo) NewRelayHost(ctx context.Context, role string, n int) (*Host, error) {
	h, err := tp.NewHost(ctx, role, n)
	if err != nil {
		return nil, err
	}
	keys := []string{"net.ipv4.conf.all.forwarding"}
	if tp.cfg.Net6.IsValid() {
		keys = append(keys, "net.ipv6.conf.all.forwarding")
	}
	for _, k := range keys {
		if err := h.Sysctl(k, "1"); err != nil {
			return nil, fmt.Errorf("add host %s: %w", role, err)
		}
	}
	return h, nil
}

// AddAddr adds a as a further address (/32 or /128) on the host's link
// end, so sockets in the namespace can send from it: more attacker
// addresses in its own subnet, or an address of another host to spoof
// that host. Removed with the namespace.
func (h *Host) AddAddr(t testing.TB, a netip.Addr) {
	t.Helper()
	if err := h.addAddr(context.Background(), "h0", netip.PrefixFrom(a, a.BitLen())); err != nil {
		t.Fatalf("add address %s: %v", a, err)
	}
}

// AddV4 gives the host more IPv4 addresses on its link, hosts first up to
// first+count-1 (first at least 3: 1 is the relay's and 2 the host's
// own), so one test can send from many sources. They go with the
// namespace.
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
