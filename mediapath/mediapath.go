// Package mediapath builds the media relay stack: it picks the kernel hook
// (or none), starts the userspace relay, and joins them under the engine.
// It is the only place that knows about both datapaths; the SIP layer gets
// the engine.
package mediapath

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"sipxdp/bpf"
	"sipxdp/relay"
	"sipxdp/usrelay"
)

// Datapath choices.
const (
	Auto       = "auto"
	XDP        = bpf.ModeXDP
	XDPGeneric = bpf.ModeXDPGeneric
	TC         = bpf.ModeTC
	Userspace  = "userspace"
)

// Options configure the stack.
type Options struct {
	Datapath   string // Auto, XDP, XDPGeneric, TC or Userspace
	Interfaces []string
	PinPath    string
	Strict     bool
	// Learning is the latching window (relay.Config.LearnWindow).
	Learning time.Duration
	Timeout  time.Duration
	// DTLSTimeout is relay.Config.DTLSTimeout.
	DTLSTimeout time.Duration
	Addresses   []relay.AddressConfig
	Logger      *slog.Logger
	// Workers of the userspace relay; zero means one per CPU.
	Workers int
	// Freebind lets the userspace relay bind relay addresses the host
	// does not hold (usrelay.Config.Freebind): a standby's floating
	// address. The kernel hook then needs Interfaces, as InterfacesFor
	// finds only addresses the host holds.
	Freebind bool
}

// Stack is a running media relay.
type Stack struct {
	Engine *relay.Engine
	Kernel *bpf.Kernel // nil on the userspace path
	Slow   *usrelay.Relay
}

// Open starts the relay. With Datapath Auto, a kernel hook that cannot be
// loaded (no CAP_BPF, an old kernel, attach refused) leaves the userspace
// relay forwarding everything, and the engine reports why; a kernel hook
// that was asked for by name must load or Open fails.
func Open(o Options) (*Stack, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.Datapath == "" {
		o.Datapath = Auto
	}
	var eng *relay.Engine
	slow, err := usrelay.New(usrelay.Config{
		Workers:  o.Workers,
		Freebind: o.Freebind,
		Logger:   log,
		// The engine exists before any flow does, so no latch can arrive
		// while eng is nil.
		OnLatch: func(ev relay.LatchEvent) { eng.OnLatch(ev) },
	})
	if err != nil {
		return nil, fmt.Errorf("start userspace relay: %w", err)
	}
	st := &Stack{Slow: slow}
	reason := "media.datapath is userspace"
	if o.Datapath != Userspace {
		k, why, err := openKernel(o, log)
		switch {
		case err == nil:
			st.Kernel = k
		case o.Datapath == Auto:
			reason = why
			log.Warn("kernel datapath unavailable, relaying in userspace", "reason", why)
		default:
			slow.Close()
			return nil, fmt.Errorf("media.datapath %s: %w", o.Datapath, err)
		}
	}
	var kp relay.KernelPath
	if st.Kernel != nil {
		kp = kernelPath{st.Kernel}
	}
	eng, err = relay.NewEngine(relay.Config{
		Addresses:    o.Addresses,
		Strict:       o.Strict,
		LearnWindow:  o.Learning,
		MediaTimeout: o.Timeout,
		DTLSTimeout:  o.DTLSTimeout,
		Logger:       log,
	}, kp, slow, reason)
	if err != nil {
		st.closeDatapaths()
		return nil, err
	}
	st.Engine = eng
	// Before any session exists, so no new call can be given a port that
	// a call from before the restart still forwards on.
	// The engine logs what it adopted.
	if _, err := eng.Adopt(); err != nil {
		// Starting anyway keeps signalling up; the risk is a port
		// collision with an old call, which the log names.
		log.Error("cannot adopt kernel flows left by a previous run; their ports may be reused", "err", err)
	}
	return st, nil
}

// kernelPath lets the engine list the pinned flows an earlier process
// left, without bpf knowing about adoption.
type kernelPath struct{ *bpf.Kernel }

func (k kernelPath) ListFlows() ([]relay.FlowWithStats, error) {
	es, err := k.Flows()
	if err != nil {
		return nil, fmt.Errorf("list kernel flows: %w", err)
	}
	out := make([]relay.FlowWithStats, len(es))
	for i, e := range es {
		out[i] = relay.FlowWithStats{Flow: e.Flow, Stats: e.Stats}
	}
	return out, nil
}

func openKernel(o Options, log *slog.Logger) (*bpf.Kernel, string, error) {
	// What counts is the capabilities, not the user: a daemon user with
	// them loads the kernel path, and root without them cannot. Checked
	// first so the reason /health gives is the capabilities alone.
	if err := bpf.CheckCapabilities(); err != nil {
		return nil, err.Error(), err
	}
	ifaces := o.Interfaces
	if len(ifaces) == 0 {
		var err error
		ifaces, err = InterfacesFor(o.Addresses)
		if err != nil {
			return nil, err.Error(), err
		}
	}
	lo, hi := portSpan(o.Addresses)
	mode := o.Datapath
	k, err := bpf.Open(bpf.Config{
		Interfaces: ifaces, Mode: mode, PinPath: o.PinPath,
		PortMin: lo, PortMax: hi, Logger: log,
	})
	if err != nil {
		return nil, fmt.Sprintf("load kernel datapath on %v: %v", ifaces, err), err
	}
	return k, k.Reason(), nil
}

// InterfacesFor finds the interfaces that hold the relay addresses: the
// kernel hook must sit where relayed packets arrive.
func InterfacesFor(addrs []relay.AddressConfig) ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, a := range addrs {
		want := a.Local.Unmap()
		if want.IsUnspecified() {
			return nil, fmt.Errorf("relay address %q is unspecified (%s): the kernel path matches one address; set media.interfaces or a specific address", a.Name, want)
		}
		found := false
		for _, l := range links {
			as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				return nil, fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
			}
			for _, x := range as {
				ip, ok := netip.AddrFromSlice(x.IP)
				if ok && ip.Unmap() == want {
					found = true
					if name := l.Attrs().Name; !seen[name] {
						seen[name] = true
						out = append(out, name)
					}
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("relay address %s (%q) is on no interface", want, a.Name)
		}
	}
	return out, nil
}

func portSpan(addrs []relay.AddressConfig) (lo, hi uint16) {
	for i, a := range addrs {
		if i == 0 || a.PortMin < lo {
			lo = a.PortMin
		}
		if a.PortMax > hi {
			hi = a.PortMax
		}
	}
	return lo, hi
}

// PathName is the path forwarding latched media.
func (s *Stack) PathName() string { return s.Engine.PathName() }

func (s *Stack) closeDatapaths() error {
	var errs []error
	if s.Kernel != nil {
		errs = append(errs, s.Kernel.Close())
	}
	errs = append(errs, s.Slow.Close())
	return errors.Join(errs...)
}

// Close stops the engine and both datapaths. Pinned kernel objects stay,
// so relayed calls keep their media until Uninstall.
func (s *Stack) Close() error {
	if s.Engine != nil {
		return s.Engine.Close() // closes both datapaths
	}
	return s.closeDatapaths()
}

// Uninstall removes the pinned maps and links: kernel forwarding stops.
func Uninstall(pinPath string) error {
	if err := bpf.Uninstall(pinPath); err != nil {
		return fmt.Errorf("uninstall %s: %w", pinPath, err)
	}
	return nil
}

// PeerPass attaches to dev, inside ns, the XDP_PASS program that the far
// end of a veth needs before native XDP can redirect into it, and returns
// what detaches it. Setups that run the xdp datapath between namespaces
// use it (it fits internal/netns's Pass); the SIP layer's tests reach it
// here because sipd/ does not import bpf.
func PeerPass(ns bpf.Namespace, dev string) (io.Closer, error) {
	return bpf.AttachPassXDP(ns, dev)
}

// UserspaceCounterNames lists the counters the userspace relay reports
// (Stack.Slow's Counters), for exporters outside the datapath packages
// that must place each one.
func UserspaceCounterNames() []string { return usrelay.CounterNames() }
