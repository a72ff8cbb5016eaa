package bpf

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"sipxdp/relay"
)

// DefaultPinPath is where maps and links live between daemon runs.
const DefaultPinPath = "/sys/fs/bpf/sipxdp"

// Config selects the interfaces and hook of the kernel datapath.
type Config struct {
	Interfaces []string
	// Mode is "auto" (default), "xdp", "xdp-generic" or "tc".
	Mode string
	// PinPath defaults to DefaultPinPath; bpffs is mounted if missing.
	PinPath string
	// PortMin..PortMax is the relay port range; packets to other ports
	// skip the flow lookup. Both zero means every port.
	PortMin, PortMax uint16
	Logger           *slog.Logger
}

// Kernel is the kernel datapath: one program attached to every configured
// interface through pinned bpf_links, and the pinned maps it uses.
type Kernel struct {
	*Maps
	mode    string
	reason  string
	pinPath string
	prog    *ebpf.Program
	links   []link.Link
	// fwdOff4 and fwdOff6 name an attached interface with forwarding off.
	fwdOff4, fwdOff6 string
	// hostAddrs tells destinations on this host, delivered locally.
	hostAddrs localAddrs
	// capsRefused says why the program was loaded without a capability.
	capsRefused string
}

var _ relay.Datapath = (*Kernel)(nil)

// Name returns the hook in use: "xdp", "xdp-generic" or "tc".
func (k *Kernel) Name() string { return k.mode }

// Reason says why that hook was chosen.
func (k *Kernel) Reason() string { return k.reason }

// CrossFamily reports whether the attached program relays flows between
// IPv4 and IPv6 (relay.CrossFamilyPath); Upsert refuses them otherwise.
func (k *Kernel) CrossFamily() bool { return k.Maps.crossFamily }

// Program returns the attached program (for BPF_PROG_TEST_RUN in tests).
func (k *Kernel) Program() *ebpf.Program { return k.prog }

// Close releases this process's handles. The pinned links and maps stay,
// so flows keep forwarding while no daemon runs; Uninstall removes them.
func (k *Kernel) Close() error {
	var errs []error
	for _, l := range k.links {
		errs = append(errs, l.Close())
	}
	k.links = nil
	if k.prog != nil {
		errs = append(errs, k.prog.Close())
		k.prog = nil
	}
	errs = append(errs, k.Maps.Close())
	return errors.Join(errs...)
}

type iface struct {
	name   string
	index  int
	isVeth bool
	// isLocal: loopback carries only locally sent packets, which are
	// CHECKSUM_PARTIAL just as on veth.
	isLocal bool
}

// Open loads the programs, re-using maps and links pinned under
// cfg.PinPath by an earlier run (the program is swapped in place with
// link.Update, so forwarding never stops), and attaches to every
// interface that has no link yet.
func Open(cfg Config) (*Kernel, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.PinPath == "" {
		cfg.PinPath = DefaultPinPath
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeAuto
	}
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("open kernel datapath: no interfaces configured")
	}
	var ifs []iface
	for _, name := range cfg.Interfaces {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("find interface %s: %w", name, err)
		}
		ifs = append(ifs, iface{name: name, index: l.Attrs().Index, isVeth: l.Type() == "veth",
			isLocal: l.Attrs().Flags&net.FlagLoopback != 0})
	}
	// Before anything else: a process without the capabilities would
	// otherwise fail deep in the loader with an EPERM blamed on memlock.
	if err := CheckCapabilities(); err != nil {
		return nil, err
	}
	liftMemlock(log)
	if err := ensurePinDir(cfg.PinPath); err != nil {
		return nil, err
	}
	m, err := openOrCreateMaps(cfg.PinPath)
	if err != nil {
		return nil, err
	}
	k := &Kernel{Maps: m, pinPath: cfg.PinPath, hostAddrs: localAddrs{refresh: 5 * time.Second}}
	k.fwdOff4, k.fwdOff6 = readForwarding(cfg.Interfaces)
	k.hostAddrs.has(netip.IPv6Unspecified()) // snapshot in the loader's namespace
	if k.fwdOff4 != "" || k.fwdOff6 != "" {
		log.Warn("forwarding is off on an attached interface: flows to other hosts without pinned MACs stay in userspace, "+
			"because the kernel's FIB lookup refuses to route", "ipv4_off", k.fwdOff4, "ipv6_off", k.fwdOff6)
	}
	for _, i := range ifs {
		if err := m.AddTxPort(i.index); err != nil {
			k.Close()
			return nil, err
		}
	}

	modes, reason, err := candidates(cfg.Mode, ifs)
	if err != nil {
		k.Close()
		return nil, err
	}
	var errs []error
	for _, mode := range modes {
		err := k.attachAll(mode, ifs, cfg.PortMin, cfg.PortMax)
		if err == nil {
			k.mode = mode
			k.reason = reason
			if len(errs) > 0 {
				k.reason = fmt.Sprintf("%s; earlier hooks failed: %v", reason, errors.Join(errs...))
			}
			log.Info("kernel datapath attached", "hook", mode, "reason", k.reason,
				"interfaces", cfg.Interfaces, "pin_path", cfg.PinPath, "cross_family", k.CrossFamily())
			if k.capsRefused != "" {
				log.Warn("kernel datapath loaded without the IPv4<->IPv6 translation: calls between families "+
					"stay in userspace", "err", k.capsRefused)
			}
			return k, nil
		}
		log.Warn("kernel datapath hook failed", "hook", mode, "err", err)
		errs = append(errs, err)
	}
	k.Close()
	return nil, fmt.Errorf("attach kernel datapath: %w", errors.Join(errs...))
}

// candidates lists the hooks to try in order and why.
func candidates(mode string, ifs []iface) ([]string, string, error) {
	switch mode {
	case ModeXDP, ModeXDPGeneric, ModeTC:
		return []string{mode}, "configured (Config.Mode " + mode + ")", nil
	case ModeAuto:
	default:
		return nil, "", fmt.Errorf("unknown datapath mode %q", mode)
	}
	for _, i := range ifs {
		if i.isVeth || i.isLocal {
			kind := "veth"
			if i.isLocal {
				kind = "loopback"
			}
			return []string{ModeTC, ModeXDPGeneric}, fmt.Sprintf("auto: %s is %s; packets sent by local "+
				"sockets over %s carry CHECKSUM_PARTIAL, which XDP cannot see or fix, while tc updates "+
				"the checksum with bpf_l4_csum_replace", i.name, kind, kind), nil
		}
	}
	return []string{ModeXDP, ModeXDPGeneric, ModeTC},
		"auto: native XDP first, then generic XDP, then tc", nil
}

func linkPin(pinPath, mode, ifname string) string {
	return filepath.Join(pinPath, "link_"+mode+"_"+ifname)
}

var allModes = []string{ModeXDP, ModeXDPGeneric, ModeTC}

// attachAll loads the program for mode and makes every interface run it:
// a pinned link of the same mode is updated in place; a pinned link of
// another mode is removed; otherwise a new link is attached and pinned.
// On failure nothing new stays attached.
func (k *Kernel) attachAll(mode string, ifs []iface, portMin, portMax uint16) error {
	kind := "xdp"
	if mode == ModeTC {
		kind = "tc"
	}
	prog, caps, err := loadProgram(kind, k.Maps, portMin, portMax)
	if err != nil {
		return err
	}
	var links, fresh []link.Link
	fail := func(err error) error {
		for _, l := range fresh {
			l.Unpin()
		}
		for _, l := range links {
			l.Close()
		}
		prog.Close()
		return err
	}
	for _, i := range ifs {
		pin := linkPin(k.pinPath, mode, i.name)
		if l, err := loadLiveLink(pin, i.index); err == nil {
			if err := l.Update(prog); err != nil {
				l.Close()
				return fail(fmt.Errorf("update %s link on %s: %w", mode, i.name, err))
			}
			links = append(links, l)
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return fail(fmt.Errorf("load pinned link %s: %w", pin, err))
		}
		var l link.Link
		switch mode {
		case ModeXDP:
			l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: i.index, Flags: link.XDPDriverMode})
		case ModeXDPGeneric:
			l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: i.index, Flags: link.XDPGenericMode})
		case ModeTC:
			l, err = link.AttachTCX(link.TCXOptions{Program: prog, Interface: i.index, Attach: ebpf.AttachTCXIngress})
		}
		if err != nil {
			return fail(fmt.Errorf("attach %s to %s: %w", mode, i.name, err))
		}
		links = append(links, l)
		if err := l.Pin(pin); err != nil {
			return fail(fmt.Errorf("pin %s link of %s: %w", mode, i.name, err))
		}
		fresh = append(fresh, l)
	}
	// Only now drop links of other hooks, so a failed switch leaves the
	// old hook forwarding.
	for _, i := range ifs {
		for _, other := range allModes {
			if other != mode {
				removePinnedLink(linkPin(k.pinPath, other, i.name))
			}
		}
	}
	k.prog = prog
	k.links = links
	k.Maps.crossFamily = caps.crossFamily
	k.capsRefused = caps.refused
	return nil
}

// loadLiveLink opens a pinned link if it still drives ifindex. A link
// whose device went away (or was recreated under the same name with a new
// index) is defunct: updating it would succeed and attach nothing, so it
// is unpinned and reported as absent.
func loadLiveLink(pin string, ifindex int) (link.Link, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return nil, err
	}
	info, err := l.Info()
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("link info of %s: %w", pin, err)
	}
	var got uint32
	if x := info.XDP(); x != nil {
		got = x.Ifindex
	} else if x := info.TCX(); x != nil {
		got = x.Ifindex
	}
	if got == uint32(ifindex) {
		return l, nil
	}
	if err := l.Unpin(); err != nil {
		l.Close()
		return nil, fmt.Errorf("unpin stale link %s: %w", pin, err)
	}
	l.Close()
	return nil, fmt.Errorf("pinned link %s drives ifindex %d, not %d: %w", pin, got, ifindex, os.ErrNotExist)
}

// removePinnedLink detaches a pinned link: unpinning drops the last
// reference once our handle closes.
func removePinnedLink(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("load pinned link %s: %w", pin, err)
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin %s: %w", pin, err)
	}
	return nil
}

// openOrCreateMaps re-uses pinned maps (so flows and counters survive a
// restart) or creates and pins new ones.
func openOrCreateMaps(pinPath string) (*Maps, error) {
	if m, err := OpenPinnedMaps(pinPath); err == nil {
		if err := compatible(m); err != nil {
			m.Close()
			return nil, fmt.Errorf("pinned maps under %s: %w (run Uninstall to start over)", pinPath, err)
		}
		return m, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	m, err := newMaps()
	if err != nil {
		return nil, err
	}
	for name, mp := range map[string]*ebpf.Map{pinFlows: m.flows, pinCounters: m.counters, pinTxPorts: m.txPorts} {
		if err := mp.Pin(filepath.Join(pinPath, name)); err != nil {
			m.Close()
			return nil, fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	return m, nil
}

// compatible checks pinned maps against this build's map specs, so an
// upgrade that changes a layout fails loudly instead of misreading flows.
func compatible(m *Maps) error {
	spec, err := loadXdp()
	if err != nil {
		return fmt.Errorf("load xdp spec: %w", err)
	}
	for name, mp := range map[string]*ebpf.Map{pinFlows: m.flows, pinCounters: m.counters, pinTxPorts: m.txPorts} {
		if err := spec.Maps[name].Compatible(mp); err != nil {
			return fmt.Errorf("map %s: %w", name, err)
		}
	}
	return nil
}

// Uninstall detaches every pinned link and removes every object pinned
// under pinPath, then the directory itself (and the bpffs mount if Open
// mounted one on pinPath itself) where this process may.
func Uninstall(pinPath string) error {
	if pinPath == "" {
		pinPath = DefaultPinPath
	}
	entries, err := os.ReadDir(pinPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", pinPath, err)
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(pinPath, e.Name())
		switch name := e.Name(); {
		case strings.HasPrefix(name, "link_"):
			if err := removePinnedLink(p); err != nil {
				errs = append(errs, err)
			}
		case name == pinFlows || name == pinCounters || name == pinTxPorts:
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
			}
		}
		// Anything else is not ours: the root of a bpffs mount holds the
		// kernel's maps.debug and progs.debug, which go with the unmount.
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// A daemon user without CAP_SYS_ADMIN, or without write access to
	// the directory above, runs on a mount and a directory root prepared
	// for it (README, "Running as a non-root user"): they stay, empty,
	// for its next start.
	if isBPFFS(pinPath) && !isBPFFS(filepath.Dir(pinPath)) {
		if err := unix.Unmount(pinPath, 0); errors.Is(err, unix.EPERM) {
			return nil
		} else if err != nil {
			return fmt.Errorf("unmount bpffs at %s: %w", pinPath, err)
		}
	}
	if err := os.Remove(pinPath); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("remove %s: %w", pinPath, err)
	}
	return nil
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}
