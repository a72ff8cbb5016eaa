// Package netns builds the bench's network topology: three namespaces in a
// line (sender — relay — receiver) joined by veth pairs, with addresses that
// exist only inside them. Nothing is configured in the caller's namespace,
// so a bench run cannot disturb the host's traffic.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// DefaultPrefix starts every namespace name the bench creates, so stale
// ones from a crashed run can be found and removed.
const DefaultPrefix = "sxdpb"

// RunDir is where iproute2 keeps named namespaces.
const RunDir = "/run/netns"

// Config chooses names and addresses. The zero value is usable.
type Config struct {
	Prefix string // default DefaultPrefix
	// ID makes names unique per run; default the bench's PID, which is also
	// how CleanStale tells a live run from a dead one.
	ID int
	// Left and Right are the /24 networks sender–relay and relay–receiver.
	// The relay takes .1 on both, the end hosts .2.
	Left, Right netip.Prefix
	// Direct, when set, is a third /24 on a veth straight between sender
	// and receiver (sender .1, receiver .2), with host routes that send
	// traffic between the two end addresses over it. Traffic to the
	// relay's addresses still goes through the relay. It stands in for
	// the network path media takes when no relay is in it.
	Direct netip.Prefix
}

// NS is one named namespace.
type NS struct {
	Name string
	Path string // /run/netns/NAME, for nsenter --net=
}

// Line is the built topology.
type Line struct {
	Sender, Relay, Receiver NS

	SenderIf, RelayLeftIf, RelayRightIf, ReceiverIf string

	SenderAddr, RelayLeftAddr, RelayRightAddr, ReceiverAddr netip.Addr
	// MACs of the veth ends, for datapaths that pin the next hop.
	SenderMAC, RelayLeftMAC, RelayRightMAC, ReceiverMAC net.HardwareAddr

	// The direct link, when Config.Direct was set ("" otherwise).
	SenderDirectIf, ReceiverDirectIf string
}

func (c *Config) fill() error {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.ID == 0 {
		c.ID = os.Getpid()
	}
	if !c.Left.IsValid() {
		c.Left = netip.MustParsePrefix("10.251.1.0/24")
	}
	if !c.Right.IsValid() {
		c.Right = netip.MustParsePrefix("10.251.2.0/24")
	}
	for _, p := range []netip.Prefix{c.Left, c.Right, c.Direct} {
		if p == c.Direct && !p.IsValid() {
			continue
		}
		if !p.Addr().Is4() || p.Bits() != 24 {
			return fmt.Errorf("network %s: want an IPv4 /24", p)
		}
	}
	return nil
}

func hostAddr(p netip.Prefix, host byte) netip.Addr {
	a := p.Masked().Addr().As4()
	a[3] = host
	return netip.AddrFrom4(a)
}

// Create builds the line. On error everything created so far is removed.
func Create(ctx context.Context, cfg Config) (l *Line, err error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	ns := func(role string) NS {
		name := fmt.Sprintf("%s-%d-%s", cfg.Prefix, cfg.ID, role)
		return NS{Name: name, Path: RunDir + "/" + name}
	}
	// Interface names are capped at 15 bytes; a PID has at most 7 digits.
	ifn := func(end string) string { return fmt.Sprintf("sx%d%s", cfg.ID, end) }
	l = &Line{
		Sender: ns("snd"), Relay: ns("rly"), Receiver: ns("rcv"),
		SenderIf: ifn("a"), RelayLeftIf: ifn("b"), RelayRightIf: ifn("c"), ReceiverIf: ifn("d"),
		SenderAddr: hostAddr(cfg.Left, 2), RelayLeftAddr: hostAddr(cfg.Left, 1),
		RelayRightAddr: hostAddr(cfg.Right, 1), ReceiverAddr: hostAddr(cfg.Right, 2),
	}
	defer func() {
		if err != nil {
			if cerr := l.Close(); cerr != nil {
				slog.Warn("cleanup after failed create", "err", cerr)
			}
			l = nil
		}
	}()
	for _, n := range []NS{l.Sender, l.Relay, l.Receiver} {
		if err := ip(ctx, "netns", "add", n.Name); err != nil {
			return l, err
		}
	}
	// Each veth is created directly inside its namespaces, never in ours.
	if err := ip(ctx, "link", "add", l.SenderIf, "netns", l.Sender.Name, "type", "veth",
		"peer", "name", l.RelayLeftIf, "netns", l.Relay.Name); err != nil {
		return l, err
	}
	if err := ip(ctx, "link", "add", l.RelayRightIf, "netns", l.Relay.Name, "type", "veth",
		"peer", "name", l.ReceiverIf, "netns", l.Receiver.Name); err != nil {
		return l, err
	}
	bits := strconv.Itoa(cfg.Left.Bits())
	steps := [][]string{
		{"-n", l.Sender.Name, "addr", "add", l.SenderAddr.String() + "/" + bits, "dev", l.SenderIf},
		{"-n", l.Relay.Name, "addr", "add", l.RelayLeftAddr.String() + "/" + bits, "dev", l.RelayLeftIf},
		{"-n", l.Relay.Name, "addr", "add", l.RelayRightAddr.String() + "/" + strconv.Itoa(cfg.Right.Bits()), "dev", l.RelayRightIf},
		{"-n", l.Receiver.Name, "addr", "add", l.ReceiverAddr.String() + "/" + strconv.Itoa(cfg.Right.Bits()), "dev", l.ReceiverIf},
		{"-n", l.Sender.Name, "link", "set", "lo", "up"},
		{"-n", l.Relay.Name, "link", "set", "lo", "up"},
		{"-n", l.Receiver.Name, "link", "set", "lo", "up"},
		{"-n", l.Sender.Name, "link", "set", l.SenderIf, "up"},
		{"-n", l.Relay.Name, "link", "set", l.RelayLeftIf, "up"},
		{"-n", l.Relay.Name, "link", "set", l.RelayRightIf, "up"},
		{"-n", l.Receiver.Name, "link", "set", l.ReceiverIf, "up"},
		{"-n", l.Sender.Name, "route", "add", "default", "via", l.RelayLeftAddr.String()},
		{"-n", l.Receiver.Name, "route", "add", "default", "via", l.RelayRightAddr.String()},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return l, err
		}
	}
	// The relay forwards for the direct baseline, and the kernel datapath's
	// FIB lookup refuses to answer on an interface without forwarding.
	if err := l.Relay.Sysctl(ctx, "net.ipv4.ip_forward", "1"); err != nil {
		return l, err
	}
	for _, m := range []struct {
		ns  NS
		ifc string
		dst *net.HardwareAddr
	}{
		{l.Sender, l.SenderIf, &l.SenderMAC},
		{l.Relay, l.RelayLeftIf, &l.RelayLeftMAC},
		{l.Relay, l.RelayRightIf, &l.RelayRightMAC},
		{l.Receiver, l.ReceiverIf, &l.ReceiverMAC},
	} {
		link, err := m.ns.Link(m.ifc)
		if err != nil {
			return l, err
		}
		*m.dst = link.Attrs().HardwareAddr
	}
	// Static neighbours: a kernel datapath whose FIB lookup finds no
	// neighbour passes the packet up, and with the relay port having no
	// socket nothing would ever resolve it. Every path gets the same
	// entries so none pays for ARP inside a measurement.
	neigh := [][]string{
		{"-n", l.Sender.Name, "neigh", "replace", l.RelayLeftAddr.String(), "lladdr", l.RelayLeftMAC.String(), "dev", l.SenderIf, "nud", "permanent"},
		{"-n", l.Relay.Name, "neigh", "replace", l.SenderAddr.String(), "lladdr", l.SenderMAC.String(), "dev", l.RelayLeftIf, "nud", "permanent"},
		{"-n", l.Relay.Name, "neigh", "replace", l.ReceiverAddr.String(), "lladdr", l.ReceiverMAC.String(), "dev", l.RelayRightIf, "nud", "permanent"},
		{"-n", l.Receiver.Name, "neigh", "replace", l.RelayRightAddr.String(), "lladdr", l.RelayRightMAC.String(), "dev", l.ReceiverIf, "nud", "permanent"},
	}
	for _, s := range neigh {
		if err := ip(ctx, s...); err != nil {
			return l, err
		}
	}
	if cfg.Direct.IsValid() {
		if err := l.addDirect(ctx, cfg, ifn("e"), ifn("f")); err != nil {
			return l, err
		}
	}
	return l, nil
}

// addDirect joins sender and receiver with their own veth and routes the
// traffic between their line addresses over it.
func (l *Line) addDirect(ctx context.Context, cfg Config, sIf, rIf string) error {
	l.SenderDirectIf, l.ReceiverDirectIf = sIf, rIf
	sAddr, rAddr := hostAddr(cfg.Direct, 1), hostAddr(cfg.Direct, 2)
	if err := ip(ctx, "link", "add", sIf, "netns", l.Sender.Name, "type", "veth",
		"peer", "name", rIf, "netns", l.Receiver.Name); err != nil {
		return err
	}
	bits := strconv.Itoa(cfg.Direct.Bits())
	steps := [][]string{
		{"-n", l.Sender.Name, "addr", "add", sAddr.String() + "/" + bits, "dev", sIf},
		{"-n", l.Receiver.Name, "addr", "add", rAddr.String() + "/" + bits, "dev", rIf},
		{"-n", l.Sender.Name, "link", "set", sIf, "up"},
		{"-n", l.Receiver.Name, "link", "set", rIf, "up"},
		{"-n", l.Sender.Name, "route", "add", l.ReceiverAddr.String() + "/32", "via", rAddr.String(), "dev", sIf},
		{"-n", l.Receiver.Name, "route", "add", l.SenderAddr.String() + "/32", "via", sAddr.String(), "dev", rIf},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	// Packets from the other end arrive on the direct link while replies
	// to the relay leave by the line: loose reverse-path filtering would
	// be enough, off is what a router-less test network has anyway.
	for _, n := range []NS{l.Sender, l.Receiver} {
		for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"} {
			if err := n.Sysctl(ctx, k, "0"); err != nil {
				return err
			}
		}
	}
	for _, e := range []struct {
		ns       NS
		ifc, dst string
		peerNS   NS
		peerIf   string
	}{
		{l.Sender, sIf, rAddr.String(), l.Receiver, rIf},
		{l.Receiver, rIf, sAddr.String(), l.Sender, sIf},
	} {
		peer, err := e.peerNS.Link(e.peerIf)
		if err != nil {
			return err
		}
		if err := ip(ctx, "-n", e.ns.Name, "neigh", "replace", e.dst, "lladdr", peer.Attrs().HardwareAddr.String(),
			"dev", e.ifc, "nud", "permanent"); err != nil {
			return err
		}
	}
	return nil
}

// Close deletes the namespaces; their veths go with them. Safe to call on
// a partly built line and more than once.
func (l *Line) Close() error {
	var errs []error
	for _, n := range []NS{l.Sender, l.Relay, l.Receiver} {
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
	// A fresh context: cleanup must run even when the bench was cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ip(ctx, "netns", "delete", name)
}

// CleanStale removes namespaces with the prefix whose owning bench process
// is gone, left behind by a run that was killed. It returns their names.
func CleanStale(prefix string) ([]string, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
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
		rest, ok := strings.CutPrefix(e.Name(), prefix+"-")
		if !ok {
			continue
		}
		idStr, _, _ := strings.Cut(rest, "-")
		id, err := strconv.Atoi(idStr)
		if err != nil || id <= 0 {
			continue
		}
		if id != os.Getpid() && processAlive(id) {
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

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Sysctl sets a sysctl inside the namespace; /proc/sys/net follows the
// writer's network namespace, so it has to be written from inside.
func (n NS) Sysctl(ctx context.Context, key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+n.Path, "sh", "-c", `printf '%s' "$1" > "$2"`, "sh", value, path)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("set %s=%s in %s: %w: %s", key, value, n.Name, err, bytes.TrimSpace(out))
	}
	return nil
}

// Handle opens a netlink handle working inside the namespace. Close it.
func (n NS) Handle() (*netlink.Handle, error) {
	h, err := netns.GetFromPath(n.Path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", n.Name, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n.Name, err)
	}
	return nh, nil
}

// Link looks up an interface inside the namespace.
func (n NS) Link(name string) (netlink.Link, error) {
	h, err := n.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("link %s in %s: %w", name, n.Name, err)
	}
	return link, nil
}

// Counters are an interface's packet counters.
type Counters struct {
	RxPackets, TxPackets, RxDropped, TxDropped uint64
}

// Counters reads an interface's counters through a handle from Handle;
// keeping the handle open makes repeated reads cheap inside a measurement.
func ReadCounters(h *netlink.Handle, ifname string) (Counters, error) {
	link, err := h.LinkByName(ifname)
	if err != nil {
		return Counters{}, fmt.Errorf("link %s: %w", ifname, err)
	}
	s := link.Attrs().Statistics
	if s == nil {
		return Counters{}, fmt.Errorf("link %s: no statistics", ifname)
	}
	return Counters{RxPackets: s.RxPackets, TxPackets: s.TxPackets, RxDropped: s.RxDropped, TxDropped: s.TxDropped}, nil
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
