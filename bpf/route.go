package bpf

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"sipxdp/relay"
)

// Upsert installs f. A destination on this host is marked for local
// delivery (no FIB lookup). Any other destination without pinned MACs
// needs the kernel's FIB lookup, which refuses to route when forwarding is
// off on the interface the packet came in on; such a flow is refused with
// relay.ErrUnsupportedFlow, so the engine keeps it in userspace instead of
// losing its packets.
func (k *Kernel) Upsert(f relay.Flow) error {
	if f.Dst.IsValid() && k.hostAddrs.has(f.Dst.Addr()) {
		return k.Maps.upsert(f, flagLocal)
	}
	pinned := len(f.SrcMAC) == 6 && len(f.DstMAC) == 6 && f.OutIfindex > 0
	if !pinned && !f.Learning && f.Dst.IsValid() {
		if off := k.forwardingOff(f.Dst.Addr()); off != "" {
			return fmt.Errorf("flow %v: forwarding is off on %s, so the kernel's FIB lookup will not route to %v "+
				"(set %s=1 to relay it in the kernel): %w", f.Key, off, f.Dst, forwardingSysctl(off, f.Dst.Addr()), relay.ErrUnsupportedFlow)
		}
	}
	return k.Maps.Upsert(f)
}

// forwardingOff names an attached interface with forwarding disabled for
// addr's family, or returns "". Read at Open, in the loader's namespace
// (/proc/sys/net shows the reading thread's namespace, and Upsert may run
// on any thread).
func (k *Kernel) forwardingOff(addr netip.Addr) string {
	if addr.Unmap().Is4() {
		return k.fwdOff4
	}
	return k.fwdOff6
}

// readForwarding finds the first of ifnames with forwarding off, per family.
func readForwarding(ifnames []string) (off4, off6 string) {
	v4, v6 := netip.MustParseAddr("0.0.0.1"), netip.MustParseAddr("::1")
	for _, name := range ifnames {
		if b, err := os.ReadFile(forwardingPath(name, v4)); off4 == "" && (err != nil || strings.TrimSpace(string(b)) != "1") {
			off4 = name
		}
		if b, err := os.ReadFile(forwardingPath(name, v6)); off6 == "" && (err != nil || strings.TrimSpace(string(b)) != "1") {
			off6 = name
		}
	}
	return off4, off6
}

func forwardingPath(ifname string, addr netip.Addr) string {
	if addr.Unmap().Is4() {
		return "/proc/sys/net/ipv4/conf/" + ifname + "/forwarding"
	}
	return "/proc/sys/net/ipv6/conf/" + ifname + "/forwarding"
}

func forwardingSysctl(ifname string, addr netip.Addr) string {
	if addr.Unmap().Is4() {
		return "net.ipv4.conf." + ifname + ".forwarding"
	}
	return "net.ipv6.conf." + ifname + ".forwarding"
}

// localAddrs caches this host's addresses (in the loader's namespace): an
// upsert per call leg must not dump the interface table each time.
type localAddrs struct {
	mu      sync.Mutex
	at      time.Time
	addrs   map[netip.Addr]bool
	refresh time.Duration
}

func (l *localAddrs) has(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addrs == nil || time.Since(l.at) > l.refresh {
		l.addrs = map[netip.Addr]bool{}
		if as, err := net.InterfaceAddrs(); err == nil {
			for _, x := range as {
				if n, ok := x.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok {
						l.addrs[ip.Unmap()] = true
					}
				}
			}
		}
		l.at = time.Now()
	}
	return l.addrs[a]
}
