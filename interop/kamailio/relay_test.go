package kamailio

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"testing"
	"time"

	"sipxdp/internal/sipdrun"
	"sipxdp/internal/sipdtest"
	"sipxdp/ng"
	"sipxdp/sipd"
)

// relayCtl is sipd running -relay-only in the test's namespace.
type relayCtl struct {
	name  string
	relay netip.Addr // the address the relay puts in SDP
	spec  relaySpec
	ns    *netNS
	sipd  *sipdrun.Sipd
}

// relaySpec is where one relay listens.
type relaySpec struct {
	name             string // names its files and pins
	ng, http         netip.AddrPort
	portMin, portMax int
	// datapath: "tc" (the kernel hook for local senders on loopback, one
	// relay per namespace) or "userspace" (several relays may share the
	// namespace's lo).
	datapath string
	// addr is the relay's media address (zero: 127.0.0.1) and iface the
	// interface the kernel hook attaches to (empty: lo).
	addr  netip.Addr
	iface string
	// allow is ng.allow (nil: the default, this host only).
	allow []string
	// orUserspace falls back to the userspace relay, logged, where the
	// kernel hook does not load.
	orUserspace bool
	// addrs, when set, are media.addresses in place of the one addr
	// (named interfaces), and ifaces the kernel hook's interfaces in
	// place of iface.
	addrs  []sipd.AddressConfig
	ifaces []string
}

// defaultRelay is the relay TestKamailioRtpengine uses.
var defaultRelay = relaySpec{name: "sipd", ng: ngAddr, http: httpAddr,
	portMin: relayPortMin, portMax: relayPortMax, datapath: "tc"}

// startRelay builds sipd, edits its embedded default config, starts it
// -relay-only in the namespace and waits until its HTTP API answers and
// its NG listener answers a ping. Its pins are removed with sipd
// -uninstall when the test ends.
func startRelay(t *testing.T, ns *netNS, dir string, rs relaySpec) *relayCtl {
	t.Helper()
	relay, iface := loopback, "lo"
	if rs.addr.IsValid() {
		relay = rs.addr
	}
	if rs.iface != "" {
		iface = rs.iface
	}
	cfg := sipdtest.Config(t)
	// The sipxdp-test-PID- prefix lets mediapath's tests remove the pins
	// of a test process that died before its cleanup.
	pin := fmt.Sprintf("/sys/fs/bpf/sipxdp-test-%d-kamailio-%s", os.Getpid(), rs.name)
	cfg.HTTP.Listen = rs.http.String()
	cfg.Media.PinPath = pin
	cfg.Media.Addresses[0].Local = relay.String()
	cfg.Media.Addresses[0].PortMin, cfg.Media.Addresses[0].PortMax = rs.portMin, rs.portMax
	if rs.addrs != nil {
		cfg.Media.Addresses = rs.addrs
	}
	cfg.NG.Listen = rs.ng.String()
	if rs.allow != nil {
		cfg.NG.Allow = rs.allow
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	datapaths := []string{rs.datapath}
	if rs.orUserspace && rs.datapath != "userspace" {
		datapaths = append(datapaths, "userspace")
	}
	var d *sipdrun.Sipd
	var err error
	for _, dp := range datapaths {
		cfg.Media.Datapath, cfg.Media.Interfaces = dp, nil
		if dp != "userspace" {
			cfg.Media.Interfaces = []string{iface}
			if rs.ifaces != nil {
				cfg.Media.Interfaces = rs.ifaces
			}
		}
		d, err = sipdrun.Start(ctx, cfg, sipdrun.Options{Binary: sipdtest.Binary(t), Dir: dir, Name: rs.name,
			NetNS: ns.Path, Dial: ns.DialContext, Args: []string{"-relay-only"}})
		if err == nil {
			break
		}
		// What a failed hook left pinned goes before the next try.
		os.RemoveAll(pin)
		if dp != "userspace" && len(datapaths) > 1 {
			t.Logf("sipd %s: the %s hook does not load here, relaying in userspace: %v", rs.name, dp, err)
		}
	}
	if err != nil {
		t.Fatalf("start sipd %s: %v", rs.name, err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop sipd %s: %v", rs.name, err)
		}
		if _, err := os.Stat(pin); err == nil {
			t.Errorf("pins left at %s after sipd -uninstall", pin)
		}
		if t.Failed() {
			t.Logf("sipd %s log (%s), last lines:\n%s", rs.name, d.LogPath, d.Tail(4000))
		}
	})
	c := &relayCtl{name: rs.name, relay: relay, spec: rs, ns: ns, sipd: d}
	// rtpengine's own ping, as Kamailio's module sends it.
	probe := ns.listenUDP(t, netip.AddrPortFrom(rs.ng.Addr(), 0))
	buf := make([]byte, 1024)
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("sipd's NG listener %v does not answer ping", rs.ng)
		}
		cookie := fmt.Sprintf("probe%d", i)
		if _, err := probe.WriteToUDPAddrPort([]byte(cookie+" d7:command4:pinge"), rs.ng); err != nil {
			t.Fatal(err)
		}
		probe.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, _, err := probe.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue
		}
		if got, want := string(buf[:n]), cookie+" d6:result4:ponge"; got != want {
			t.Fatalf("NG ping: got %q, want %q", got, want)
		}
		break
	}
	return c
}

// flows reads /flows, for one call or (callID "") all.
func (c *relayCtl) flows(t *testing.T, callID string) []flowJSON {
	t.Helper()
	path := "/flows"
	if callID != "" {
		path += "?call_id=" + url.QueryEscape(callID)
	}
	var fs []flowJSON
	if err := c.sipd.GetJSON(context.Background(), path, &fs); err != nil {
		t.Fatal(err)
	}
	return fs
}

// ng sends one NG command to the relay, as a proxy's module would, and
// returns the reply's dictionary.
func (c *relayCtl) ng(t *testing.T, cmd map[string]any) map[string]any {
	t.Helper()
	body, err := ng.Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	conn := c.ns.listenUDP(t, netip.AddrPortFrom(c.spec.ng.Addr(), 0))
	defer conn.Close()
	cookie := fmt.Sprintf("test%d", time.Now().UnixNano())
	if _, err := conn.WriteToUDPAddrPort(append([]byte(cookie+" "), body...), c.spec.ng); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, ng.MaxMessageSize)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("relay %s: NG %v: %v", c.name, cmd["command"], err)
	}
	v, err := ng.Decode(buf[len(cookie)+1 : n])
	d, ok := v.(map[string]any)
	if err != nil || !ok {
		t.Fatalf("relay %s: NG reply %q: %v", c.name, buf[:n], err)
	}
	return d
}

// calls lists the relay's calls (NG list).
func (c *relayCtl) calls(t *testing.T) []string {
	t.Helper()
	rep := c.ng(t, map[string]any{"command": "list"})
	l, _ := rep["calls"].([]any)
	out := make([]string, 0, len(l))
	for _, id := range l {
		s, _ := id.(string)
		out = append(out, s)
	}
	return out
}

// owns reports whether ap is one of the relay's ports.
func (c *relayCtl) owns(ap netip.AddrPort) bool {
	if int(ap.Port()) < c.spec.portMin || int(ap.Port()) > c.spec.portMax {
		return false
	}
	if ap.Addr() == c.relay {
		return true
	}
	// A named interface's address, or what it advertises.
	for _, a := range c.spec.addrs {
		if ap.Addr().String() == a.Local || ap.Addr().String() == a.Advertised {
			return true
		}
	}
	return false
}

// ngCommands reads sipxdp_ng_commands_total for a command and result
// (ok, error).
func (c *relayCtl) ngCommands(t *testing.T, command, result string) int {
	t.Helper()
	v, _, err := c.sipd.Metric(context.Background(),
		fmt.Sprintf(`sipxdp_ng_commands_total{command=%q,result=%q}`, command, result))
	if err != nil {
		t.Fatal(err)
	}
	return int(v)
}
