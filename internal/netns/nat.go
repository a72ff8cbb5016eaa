package netns

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"sipxdp/internal/testenv"
)

// AddBehindNAT creates a namespace on a private link n behind h, which
// becomes a NAT router: it forwards, masquerades what leaves its link to
// the relay namespace as its own address (h.V4), and lets in from there
// only what answers a flow that went out (conntrack state established or
// related). A phone in the namespace is then reachable only from the
// addresses it sent to, as behind a home router: its pinholes are its
// own flows. The new host has host 2 of link n, h host 1; its RelayIf and
// Relay4 name h's end of the link, and its default route goes through h.
// Nothing on the relay side routes to link n, so its addresses stay
// private. IPv4 only; removed with the topology. It needs nft
// (nftables).
func (tp *Topo) AddBehindNAT(t testing.TB, h *Host, role string, n int) *Host {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		testenv.Unavailable(t, "nft is not installed (scripts/install-deps.sh installs nftables)")
	}
	if n <= linkDirect || n > 250 {
		t.Fatalf("AddBehindNAT %s: link number %d: want 4..250, not taken by another link", role, n)
	}
	ctx := context.Background()
	ns, err := tp.newNS(ctx, strings.TrimSuffix(tp.Relay.Name, "-r")+"-"+role)
	if err != nil {
		t.Fatalf("add host %s behind %s: %v", role, h.Name, err)
	}
	in := &Host{NS: ns, RelayIf: fmt.Sprintf("h%d", n), V4: hostIn(tp.cfg.Net4, n, 2), Relay4: hostIn(tp.cfg.Net4, n, 1)}
	if err := tp.natLink(ctx, h, in, n); err != nil {
		t.Fatalf("add host %s behind %s: %v", role, h.Name, err)
	}
	return in
}

func (tp *Topo) natLink(ctx context.Context, h, in *Host, n int) error {
	if err := in.ip(ctx, "link", "set", "lo", "up"); err != nil {
		return err
	}
	// addLink would give the link an address of every family the
	// topology has; this link is IPv4 only, as NAT is.
	if err := in.ip(ctx, "link", "add", "h0", "type", "veth", "peer", "name", in.RelayIf, "netns", h.Name); err != nil {
		return err
	}
	for _, e := range []struct {
		ns   *NS
		dev  string
		addr netip.Addr
	}{{in.NS, "h0", in.V4}, {h.NS, in.RelayIf, in.Relay4}} {
		if err := e.ns.addAddr(ctx, e.dev, netip.PrefixFrom(e.addr, 24)); err != nil {
			return err
		}
		if err := e.ns.ip(ctx, "link", "set", e.dev, "up"); err != nil {
			return err
		}
	}
	for _, e := range []struct {
		ns  *NS
		dev string
	}{{in.NS, "h0"}, {h.NS, in.RelayIf}} {
		if err := e.ns.waitUp(ctx, e.dev); err != nil {
			return err
		}
	}
	if err := in.ip(ctx, "-4", "route", "add", "default", "via", in.Relay4.String()); err != nil {
		return err
	}
	if err := h.Sysctl("net.ipv4.conf.all.forwarding", "1"); err != nil {
		return err
	}
	// Endpoint-dependent filtering comes from conntrack itself: a packet
	// from an address the phone never sent to matches no entry, is not
	// translated and dies in the NAT's own stack. The forward policy
	// makes it explicit for anything routed.
	rules := fmt.Sprintf(`table ip sxnat {
	chain masq {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "h0" masquerade
	}
	chain pinholes {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname %q oifname "h0" accept
	}
}
`, in.RelayIf)
	cmd := h.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", h.Name, err, out)
	}
	return nil
}

// ForwardUDP makes h, the NAT router in sits behind (AddBehindNAT),
// forward UDP that arrives on its link to the relay namespace for one of
// ports to in, the port unchanged: a static port forward, as a home
// router is set up for a phone's RTP ports (or, for every port, a cloud
// host's 1:1 NAT). A party in never sent to then reaches it at h's
// address; what in sends from those ports still leaves as h's address
// and the same port. Removed with the topology.
func (h *Host) ForwardUDP(t testing.TB, in *Host, ports ...uint16) {
	t.Helper()
	if len(ports) == 0 {
		t.Fatal("ForwardUDP: no ports")
	}
	set := make([]string, len(ports))
	for i, p := range ports {
		set[i] = strconv.Itoa(int(p))
	}
	// The pinholes chain drops what is new from outside; a forwarded
	// packet is new, so it is let through by its DNAT status.
	rules := fmt.Sprintf(`add chain ip sxnat forwards { type nat hook prerouting priority dstnat; policy accept; }
add rule ip sxnat forwards iifname "h0" udp dport { %s } dnat to %s
add rule ip sxnat pinholes ct status dnat accept
`, strings.Join(set, ", "), in.V4)
	cmd := h.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("forward UDP %v from %s to %s: nft: %v: %s", ports, h.Name, in.Name, err, out)
	}
}
