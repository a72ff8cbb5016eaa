package netns

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
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
