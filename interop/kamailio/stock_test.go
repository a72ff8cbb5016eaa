package kamailio

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/netns"
)

// stockConfig is Kamailio 5.6's stock config as Debian's kamailio
// package installs it. The test reads the installed file rather than
// keeping a copy: the project holds only code written here, and the test
// then follows the config the operator's package actually ships.
const stockConfig = "/etc/kamailio/kamailio.cfg"

// stockEdits turn the stock config into the test's: WITH_NAT and
// WITH_RTPENGINE on (as the config's own notes ask), one UDP socket on
// the test's address, no TCP and no DNS (the namespaces have no resolver,
// and nothing may leave them), sipd -relay-only's NG listener, and a
// missed first ping retried within a second rather than the default
// minute. Everything else is as shipped. Each edit must match exactly
// once, so a changed stock config fails loudly instead of running a
// script nobody looked at.
func stockEdits(sip netip.AddrPort) [][2]string {
	return [][2]string{
		{"#!KAMAILIO\n", "#!KAMAILIO\n#!define WITH_NAT\n#!define WITH_RTPENGINE\n"},
		{"\n# listen=udp:10.0.0.10:5060\n", "\n# listen=udp:10.0.0.10:5060\nlisten=udp:" + sip.String() +
			"\ndisable_tcp=yes\nauto_aliases=no\ndns=no\nrev_dns=no\nuse_dns_cache=no\n"},
		{`modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:2223")`,
			`modparam("rtpengine", "rtpengine_sock", "udp:` + ngAddr.String() + `")` + "\n" +
				`modparam("rtpengine", "rtpengine_disable_tout", 1)`},
	}
}

// startStockKamailio runs the stock config (stockConfig) with
// stockEdits on sip; edits are more replacements (a variant's script
// line), each also required to match exactly once.
func startStockKamailio(t *testing.T, ns *netNS, dir, bin string, sip netip.AddrPort, edits ...[2]string) {
	t.Helper()
	stock, err := os.ReadFile(stockConfig)
	if err != nil {
		t.Fatalf("Kamailio's stock config (Debian's kamailio package, which scripts/install-deps.sh installs): %v", err)
	}
	cfg := string(stock)
	for _, e := range append(stockEdits(sip), edits...) {
		if n := strings.Count(cfg, e[0]); n != 1 {
			t.Fatalf("%s: %q found %d times, want once: the stock config changed; review the test's edits", stockConfig, e[0], n)
		}
		cfg = strings.Replace(cfg, e[0], e[1], 1)
	}
	path := filepath.Join(dir, "kamailio-stock.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	startKamailioConfig(t, ns, dir, bin, path, sip, nil)
}

// lanAddr is the stock subtest's callee: an RFC 1918 address on the
// namespace's lo. The stock config relays media only for calls it takes
// for NATed (route[NATMANAGE] returns otherwise), and nathelper's
// nat_uac_test("19") takes a Contact in RFC 1918 space for one, as it
// does for a phone on a LAN registered with a public Kamailio; the caller,
// on 127.0.0.1, is not. So the INVITE's branch sends the offer with the
// stock "replace-origin replace-session-connection" (the caller's SDP
// address is not private), and the 200 OK's answer adds
// SIP-source-address (nat_uac_test("8"): the callee's is).
var lanAddr = netip.MustParseAddr("10.99.0.2")

// testStock: the callee registers (usrloc keeps its NAT branch flag),
// the caller calls bob, and the stock routes do the rest:
// route[NATMANAGE] from the INVITE's branch_route, the 200 OK's
// onreply_route and the BYE's branch (by the nat=yes Record-Route
// parameter), all in one namespace.
func testStock(t *testing.T, kamBin, sippBin string) {
	dir := t.TempDir()
	ns := newNetNS(t)
	ns.addLoopback(t, lanAddr)
	relay := startRelay(t, ns, dir, defaultRelay)
	startStockKamailio(t, ns, dir, kamBin, kamAddr)
	calleeSIP := netip.AddrPortFrom(lanAddr, uasAddr.Port())
	register(t, ns, dir, sippBin, calleeSIP, kamAddr)
	c := placeCall(t, dir, sippBin, kamAddr, relay,
		party{ns, uacAddr, ns.listenUDP(t, callerRTP)},
		party{ns, calleeSIP, ns.listenUDP(t, netip.AddrPortFrom(lanAddr, calleeRTP.Port()))})
	c.relayMedia(t)
	c.hangUp(t)
	checkCommands(t, relay)
}

// stockNATLine is the stock config's rtpengine_manage() for a message
// whose SDP has a private address (nat_uac_test("8")).
const stockNATLine = `rtpengine_manage("SIP-source-address replace-origin replace-session-connection");`

// testStockNAT calls from a phone behind a NAT (internal/netns'
// AddBehindNAT: nftables masquerade, only answers let in) whose SDP
// announces its private address, through the stock config, to a
// registered callee. The NAT forwards the phone's RTP ports (a static
// port forward, as for a phone at home, or a cloud host's 1:1 NAT), so
// media sent to the NAT's address reaches the phone before the phone
// has sent any. The callee sends first: with the stock
// SIP-source-address the relay sends to the NAT's address from the
// first packet, and the phone gets it. The trust-address variant, the
// same script with trust-address in that line, is the negative: the
// relay sends to the private address, which nothing routes, and the
// first packets are lost until the phone's own latch the NAT's address.
// Both then relay both ways on the kernel path.
func testStockNAT(t *testing.T, kamBin, sippBin string) {
	for _, tc := range []struct {
		name         string
		edits        [][2]string
		firstThrough bool
	}{
		{"SIP-source-address", nil, true},
		{"trust-address", [][2]string{{stockNATLine, strings.Replace(stockNATLine, "SIP-source-address", "trust-address", 1)}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) { natCall(t, kamBin, sippBin, tc.edits, tc.firstThrough) })
	}
}

// natLineNet is the network of the NAT subtest's line (IPv4 only, as NAT
// is).
var natLineNet = netns.Config{Prefix: nsPrefix, Net4: netns.Default4}

func natCall(t *testing.T, kamBin, sippBin string, edits [][2]string, firstThrough bool) {
	dir := t.TempDir()
	// Kamailio and the relay on the router, the callee on the callee
	// host, the phone behind a NAT router hung off the router.
	tp := netns.New(t, natLineNet)
	router, calleeNS := &netNS{tp.Relay}, &netNS{tp.Callee}
	nat := tp.AddHost(t, "nat", 4)
	phone := tp.AddBehindNAT(t, nat, "ph", 5)
	phoneNS := &netNS{phone.NS}
	nat.ForwardUDP(t, phone, callerRTP.Port(), callerRTP.Port()+1)

	kam := netip.AddrPortFrom(nat.Relay4, kamAddr.Port())
	relay := startRelay(t, router, dir, relaySpec{name: "sipd", ng: ngAddr, http: httpAddr,
		portMin: relayPortMin, portMax: relayPortMax, datapath: "tc",
		addr: nat.Relay4, ifaces: []string{nat.RelayIf, netns.RelayB}})
	startStockKamailio(t, router, dir, kamBin, kam, edits...)
	calleeSIP := netip.AddrPortFrom(tp.V4.Callee, uasAddr.Port())
	register(t, calleeNS, dir, sippBin, calleeSIP, kam)
	c := placeCall(t, dir, sippBin, kam, relay,
		party{phoneNS, netip.AddrPortFrom(phone.V4, uacAddr.Port()), phoneNS.listenUDP(t, netip.AddrPortFrom(phone.V4, callerRTP.Port()))},
		party{calleeNS, calleeSIP, calleeNS.listenUDP(t, netip.AddrPortFrom(tp.V4.Callee, calleeRTP.Port()))})

	// Where the relay sends the phone's media before the phone sent any:
	// the flow of what the callee sends (to calleeSends).
	public, private := netip.AddrPortFrom(nat.V4, callerRTP.Port()), c.caller.rtpAddr()
	want := public
	if !firstThrough {
		want = private
	}
	if dst := c.toPhone(t); dst != want.String() {
		t.Errorf("before any packet the relay sends the phone's RTP to %s, want %s", dst, want)
	}

	const n = 20
	got := oneWay(t, ssrcCallee, c.callee.rtp, c.calleeSends, c.caller.rtp, c.callerSends, n, time.Second)
	switch {
	case firstThrough && got != n:
		t.Fatalf("the phone got %d of the callee's first %d packets: the relay did not send to the NAT's %v", got, n, public)
	case !firstThrough && got != 0:
		t.Fatalf("the phone got %d of the callee's first %d packets, sent to its private %v: the NAT test proves nothing", got, n, private)
	}
	t.Logf("the phone got %d of the callee's first %d packets", got, n)
	if got := oneWay(t, ssrcCaller, c.caller.rtp, c.callerSends, c.callee.rtp, c.calleeSends, n, time.Second); got != n {
		t.Fatalf("the callee got %d of the phone's first %d packets", got, n)
	}
	if !firstThrough {
		// The relay forwards the phone's packets as it latches them and
		// points the callee's flow at the NAT only once the engine hears
		// of the latch; until then the callee's packets still go to the
		// private address, as this variant shows. Both ways are counted
		// from then on.
		waitFor(t, 3*time.Second, "the relay to send the phone's RTP to the NAT's "+public.String(),
			func() bool { return c.toPhone(t) == public.String() }, func() string { return js(c.relay.flows(t, c.id)) })
	}
	c.relayMedia(t)
	if dst := c.toPhone(t); dst != public.String() {
		t.Errorf("after the phone's packets the relay sends its RTP to %s, want the NAT's %s", dst, public)
	}
	c.hangUp(t)
	checkCommands(t, relay)
}

// checkCommands checks the relay answered the call's offer, answer and
// delete (from rtpengine_manage in the stock routes) and nothing failed.
func checkCommands(t *testing.T, relay *relayCtl) {
	t.Helper()
	for _, cmd := range []string{"offer", "answer", "delete"} {
		if n := relay.ngCommands(t, cmd, "ok"); n < 1 {
			t.Errorf("the relay answered %d %s commands", n, cmd)
		}
		if n := relay.ngCommands(t, cmd, "error"); n != 0 {
			t.Errorf("the relay refused %d %s commands", n, cmd)
		}
	}
}

// toPhone is where the relay sends the caller's RTP: the destination of
// the flow of what the callee sends.
func (c *call) toPhone(t *testing.T) string {
	t.Helper()
	fs := c.relay.flows(t, c.id)
	for _, f := range fs {
		if f.Component == "rtp" && f.Local == c.calleeSends.String() {
			return f.Dst
		}
	}
	t.Fatalf("no RTP flow from the relay's %v, where the callee sends: %s", c.calleeSends, js(fs))
	return ""
}

// addLoopback gives the namespace's lo one more address, a, for a party
// that must not be on 127.0.0.1.
func (n *netNS) addLoopback(t *testing.T, a netip.Addr) {
	t.Helper()
	if out, err := n.Exec("ip", "addr", "add", netip.PrefixFrom(a, a.BitLen()).String(), "dev", "lo"); err != nil {
		t.Fatalf("add %s to lo in %s: %v: %s", a, n.Name, err, out)
	}
}
