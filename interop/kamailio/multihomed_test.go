package kamailio

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/netns"
	"sipxdp/mediapath"
	"sipxdp/relayctl"
	"sipxdp/sipd"
)

// multiHomedNet is TestKamailioMultiHomed's network (IPv4 only).
var multiHomedNet = netns.Config{Prefix: nsPrefix, Net4: netns.Default4}

// publicAddr is the external interface's advertised address: the relay's
// callee-side address as a 1:1 NAT in front of it publishes it (a cloud
// host's public IP). A documentation address, used only inside the
// namespaces.
var publicAddr = netip.MustParseAddr("203.0.113.6")

// multiHomedFlags are the script's rtpengine_manage() flags: Kamailio's
// module sends direction=internal direction=external as the NG
// "direction" list, the caller's side first.
const multiHomedFlags = rtpengineFlags + " direction=internal direction=external"

// TestKamailioMultiHomed bridges a private and a public network, the
// classic rtpengine deployment: the relay namespace of internal/netns'
// caller–relay–callee line has an internal interface on the caller's
// subnet and an external one on the callee's, named in media.addresses
// as rtpengine's interface= with the external one advertised as
// 203.0.113.6 would.
// Kamailio (on the relay namespace) sends direction=internal
// direction=external. The test checks that each side's SDP shows its own
// side's address (the advertised public address toward the callee), that
// RTP crosses between the two interfaces in the kernel, on tc and on
// native XDP (devmap redirect from one veth to the other), and that
// /flows, /metrics, relayctl flows and relayctl calls agree.
func TestKamailioMultiHomed(t *testing.T) {
	kamBin, sippBin := requireTools(t)
	lookBin(t, "nft", "nft is not installed (Debian package nftables)")
	for _, dp := range []string{"tc", "xdp"} {
		t.Run(dp, func(t *testing.T) { multiHomedCall(t, kamBin, sippBin, dp) })
	}
}

func multiHomedCall(t *testing.T, kamBin, sippBin, dp string) {
	dir := t.TempDir()
	tp := netns.New(t, multiHomedNet)
	fam := tp.V4
	if dp == "xdp" {
		tp.PrepareXDP(t, mediapath.PeerPass)
	}
	router, callerNS, calleeNS := &netNS{tp.Relay}, &netNS{tp.Caller}, &netNS{tp.Callee}
	publish(t, calleeNS, publicAddr, fam.RelayB, relayPortMin, relayPortMax)

	ngAt := netip.AddrPortFrom(fam.RelayA, ngAddr.Port())
	ctl := startRelay(t, router, dir, relaySpec{name: "multi-" + dp, ng: ngAt, http: httpAddr,
		portMin: relayPortMin, portMax: relayPortMax, datapath: dp, addr: fam.RelayA,
		allow: []string{multiHomedNet.Net4.String()},
		addrs: []sipd.AddressConfig{
			{Name: "internal", Local: fam.RelayA.String(), PortMin: relayPortMin, PortMax: relayPortMax},
			{Name: "external", Local: fam.RelayB.String(), Advertised: publicAddr.String(), PortMin: relayPortMin, PortMax: relayPortMax},
		},
		ifaces: []string{netns.RelayA, netns.RelayB}})
	if hl, err := ctl.sipd.Health(context.Background()); err != nil || hl.Media.Path != dp {
		t.Fatalf("relay media path %q (%v), want %s", hl.Media.Path, err, dp)
	}

	kam := netip.AddrPortFrom(fam.RelayA, kamAddr.Port())
	uasAt := netip.AddrPortFrom(fam.Callee, uasAddr.Port())
	callerRTPAt := netip.AddrPortFrom(fam.Caller, callerRTP.Port())
	calleeRTPAt := netip.AddrPortFrom(fam.Callee, calleeRTP.Port())
	callerSock, calleeSock := callerNS.listenUDP(t, callerRTPAt), calleeNS.listenUDP(t, calleeRTPAt)
	startKamailioFlags(t, router, dir, kamBin, "udp:"+ngAt.String(), multiHomedFlags, kam, uasAt)

	call := placeCall(t, dir, sippBin, kam, ctl,
		party{callerNS, netip.AddrPortFrom(fam.Caller, uacAddr.Port()), callerSock},
		party{calleeNS, uasAt, calleeSock})
	callID, callerSends, calleeSends := call.id, call.callerSends, call.calleeSends
	// Each side is told its own interface's address, in c= and, with
	// replace-origin, in o=.
	for _, c := range []struct {
		who  string
		m    *sipMsg
		got  netip.AddrPort
		want netip.Addr
	}{{"callee (INVITE, external)", call.inv, calleeSends, publicAddr}, {"caller (200 OK, internal)", call.ok, callerSends, fam.RelayA}} {
		if c.got.Addr() != c.want || c.got.Port() < relayPortMin || c.got.Port() > relayPortMax {
			t.Fatalf("the %s SDP points at %v, want %v port %d-%d", c.who, c.got, c.want, relayPortMin, relayPortMax)
		}
		if o := "IN IP4 " + c.want.String(); !strings.Contains(c.m.text, "\no=") || !strings.Contains(originLine(c.m.text), o) {
			t.Errorf("the %s SDP's o= is %q, want it to name %s", c.who, originLine(c.m.text), c.want)
		}
	}

	// The first packets latch and go through userspace; then the flows
	// are in the kernel, forwarding from one interface to the other.
	exchange(t, callerSock, calleeSock, callerSends, calleeSends, 20)
	var fs []flowJSON
	waitFor(t, 4*time.Second, "the call's RTP flows on the kernel path", func() bool {
		fs = ctl.flows(t, callID)
		return kernelRTP(fs)
	}, func() string { return "flows: " + js(fs) })
	kern0, redir0 := ctl.metric(t, `sipxdp_media_packets_total{path="kernel"}`), ctl.kernelCounter(t, "redirect")
	const n = 100
	exchange(t, callerSock, calleeSock, callerSends, calleeSends, n)
	fs = ctl.flows(t, callID)
	var sum uint64
	for _, f := range fs {
		if f.Component != "rtp" {
			continue
		}
		// Leg A receives from the caller on the internal interface and
		// forwards out of the external one; leg B the other way.
		want := map[string]netip.Addr{"A": fam.RelayA, "B": fam.RelayB}[f.Leg]
		if l, err := netip.ParseAddrPort(f.Local); err != nil || l.Addr() != want {
			t.Errorf("leg %s flow at %s, want the relay's %s", f.Leg, f.Local, want)
		}
		if f.Path != "kernel" || f.Packets < n {
			t.Errorf("leg %s flow: path %q, %d packets; want kernel, at least %d", f.Leg, f.Path, f.Packets, n)
		}
		sum += f.Packets
	}
	if kern := ctl.metric(t, `sipxdp_media_packets_total{path="kernel"}`) - kern0; kern < 2*n {
		t.Errorf("the kernel path counted %v packets during %d each way, want %d", kern, n, 2*n)
	}
	// Out of the other interface: a redirect (tc's bpf_redirect, XDP's
	// through the devmap), not a transmit back out of the one it came in.
	if redir := ctl.kernelCounter(t, "redirect") - redir0; redir < 2*n {
		t.Errorf("the %s program redirected %d packets during %d each way, want %d", dp, redir, n, 2*n)
	}
	total := ctl.metric(t, `sipxdp_media_packets_total{path="kernel"}`) + ctl.metric(t, `sipxdp_media_packets_total{path="userspace"}`)
	if total != float64(sum) {
		t.Errorf("/metrics counts %v packets relayed, /flows %d", total, sum)
	}
	checkRelayctlMultiHomed(t, router, callID, fs, fam.RelayA, fam.RelayB)
	t.Logf("flows: %s", js(fs))
	call.hangUp(t)
}

// originLine is the SDP's o= line in a SIP message.
func originLine(text string) string {
	for _, l := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		if strings.HasPrefix(l, "o=") {
			return l
		}
	}
	return ""
}

// publish stands in for the 1:1 NAT in front of the relay's external
// interface, in the callee's namespace: what the callee sends to public
// (on the relay's ports) goes to local, and what comes back from local
// seems to come from public. Stateless rewrites (nftables fixes the IP
// and UDP checksums), so the relay sees plain traffic to its own
// address and its kernel path is what forwards it.
func publish(t *testing.T, ns *netNS, public, local netip.Addr, portMin, portMax int) {
	t.Helper()
	rules := fmt.Sprintf(`table ip sxpublic {
	chain out { type filter hook output priority raw; ip daddr %[1]s udp dport %[3]d-%[4]d ip daddr set %[2]s; }
	chain in { type filter hook prerouting priority raw; ip saddr %[2]s udp sport %[3]d-%[4]d ip saddr set %[1]s; }
}
`, public, local, portMin, portMax)
	cmd := ns.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", ns.Name, err, out)
	}
}

// metric reads one series of the relay's /metrics (0 when absent).
func (c *relayCtl) metric(t *testing.T, series string) float64 {
	t.Helper()
	v, _, err := c.sipd.Metric(context.Background(), series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// kernelCounter reads one of the kernel program's counters from /stats.
func (c *relayCtl) kernelCounter(t *testing.T, name string) uint64 {
	t.Helper()
	var st struct {
		KernelCounters      map[string]uint64 `json:"kernel_counters"`
		KernelCountersError string            `json:"kernel_counters_error"`
	}
	if err := c.sipd.GetJSON(context.Background(), "/stats", &st); err != nil {
		t.Fatal(err)
	}
	if st.KernelCountersError != "" {
		t.Fatalf("/stats: kernel counters: %s", st.KernelCountersError)
	}
	return st.KernelCounters[name]
}

// checkRelayctlMultiHomed runs relayctl flows and calls against the relay
// (its API is in the relay namespace: a forwarder on the test's loopback
// reaches it) and checks they report the flows /flows did, with the same
// counters (no RTP moves between the reads), and each leg on its own
// interface's address.
func checkRelayctlMultiHomed(t *testing.T, ns *netNS, callID string, want []flowJSON, internal, external netip.Addr) {
	t.Helper()
	api := forwardAPI(t, ns, httpAddr)
	run := func(args ...string) []byte {
		var out, errb bytes.Buffer
		if code := relayctl.Main(context.Background(), append([]string{"-api", api}, args...), &out, &errb); code != 0 {
			t.Fatalf("relayctl %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
		}
		return out.Bytes()
	}
	var flows []relayctl.Flow
	if err := json.Unmarshal(run("flows", "-call", callID, "-json", "-interval", "0"), &flows); err != nil {
		t.Fatal(err)
	}
	byLocal := map[string]flowJSON{}
	for _, f := range want {
		byLocal[f.Local] = f
	}
	if len(flows) != len(want) {
		t.Fatalf("relayctl flows lists %d flows, /flows %d", len(flows), len(want))
	}
	for _, g := range flows {
		w, ok := byLocal[g.Local]
		if !ok || g.CallID != callID || g.Packets != w.Packets || g.Path != w.Path {
			t.Errorf("relayctl flow %+v does not match /flows %+v", g.FlowJSON, w)
		}
	}
	var calls []relayctl.Call
	if err := json.Unmarshal(run("calls", "-json"), &calls); err != nil {
		t.Fatal(err)
	}
	// The call's path names its RTCP flows' too (userspace: sipp sends
	// no RTCP, so they never latch); its RTP legs are in the kernel.
	if len(calls) != 1 || calls[0].CallID != callID || !strings.Contains(calls[0].MediaPath, "kernel") || len(calls[0].Legs) != 2 {
		t.Fatalf("relayctl calls: %+v, want the one call, in the kernel, with two RTP legs", calls)
	}
	for _, l := range calls[0].Legs {
		want := map[string]netip.Addr{"A": internal, "B": external}[l.Leg]
		if a, err := netip.ParseAddrPort(l.Local); err != nil || a.Addr() != want || l.Path != "kernel" {
			t.Errorf("relayctl calls: leg %s at %s on %s, want %s on kernel", l.Leg, l.Local, l.Path, want)
		}
	}
}

// forwardAPI listens on the test's loopback and copies each connection
// to target inside ns, for in-process clients (relayctl.Main) that dial
// from the test's own namespace. It returns the base URL.
func forwardAPI(t *testing.T, ns *netNS, target netip.AddrPort) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				u, err := ns.DialContext(ctx, "tcp", target.String())
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
	return "http://" + l.Addr().String()
}
