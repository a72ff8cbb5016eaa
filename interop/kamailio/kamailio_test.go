package kamailio

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/testenv"
)

// Where everything listens inside the test's namespace. The namespace is
// new and empty, so fixed ports are free by construction.
var (
	loopback  = netip.MustParseAddr("127.0.0.1")
	kamAddr   = netip.AddrPortFrom(loopback, 5060)  // Kamailio
	uacAddr   = netip.AddrPortFrom(loopback, 5070)  // sipp caller
	uasAddr   = netip.AddrPortFrom(loopback, 5080)  // sipp callee
	ngAddr    = netip.AddrPortFrom(loopback, 22230) // sipd's NG listener
	httpAddr  = netip.AddrPortFrom(loopback, 18080) // sipd's HTTP API
	callerRTP = netip.AddrPortFrom(loopback, 30000) // the test's caller socket
	calleeRTP = netip.AddrPortFrom(loopback, 30002) // the test's callee socket
)

// The relay's port range: below the ephemeral range (the relay would
// otherwise reserve it in ip_local_reserved_ports) and clear of the ports
// above.
const (
	relayPortMin = 20000
	relayPortMax = 20099
)

// rtpengine_manage flags: use the SDP's address rather than the SIP
// source, and rewrite o= and c= as rtpengine users usually ask.
const rtpengineFlags = "trust-address replace-origin replace-session-connection"

// holdCall is how long the caller holds the call before BYE; the RTP
// checks happen meanwhile.
const holdCall = 7 * time.Second

// TestKamailioRtpengine makes calls through Kamailio whose rtpengine
// module drives sipd (-relay-only) over the NG protocol, one Kamailio
// config per subtest:
//
//   - minimal: testdata/kamailio.cfg, every INVITE to the callee, with
//     rtpengineFlags, all in one namespace;
//   - stock: Kamailio's own stock kamailio.cfg, read from the installed
//     package (stockConfig), with WITH_NAT and WITH_RTPENGINE; the callee
//     registers, the call is routed by its location (testStock);
//   - stock-nat: the same config with the caller behind a NAT, where the
//     stock route passes SIP-source-address (testStockNAT).
//
// In each, each side's SDP is rewritten to the relay, RTP crosses both
// ways through it, the flows are on the kernel (tc) path, and the BYE
// removes them.
func TestKamailioRtpengine(t *testing.T) {
	kamBin, sippBin := requireTools(t)
	t.Run("minimal", func(t *testing.T) {
		dir := t.TempDir()
		ns := newNetNS(t)
		relay := startRelay(t, ns, dir, defaultRelay)
		startKamailio(t, ns, dir, kamBin, "udp:"+ngAddr.String(), kamAddr, uasAddr)
		c := placeCall(t, dir, sippBin, kamAddr, relay,
			party{ns, uacAddr, ns.listenUDP(t, callerRTP)}, party{ns, uasAddr, ns.listenUDP(t, calleeRTP)})
		c.relayMedia(t)
		c.hangUp(t)
	})
	t.Run("stock", func(t *testing.T) { testStock(t, kamBin, sippBin) })
	t.Run("stock-nat", func(t *testing.T) { testStockNAT(t, kamBin, sippBin) })
}

// requireTools skips the test in -short mode, needs root, and returns
// the paths of kamailio and sipp (the test is unavailable without them,
// nsenter or ip).
func requireTools(t *testing.T) (kamBin, sippBin string) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: starts Kamailio, sipp and sipd in a network namespace")
	}
	testenv.RequireRoot(t)
	kamBin = lookBin(t, "kamailio", "kamailio is not installed (Debian package kamailio; scripts/install-deps.sh installs it)")
	sippBin = lookBin(t, "sipp", "sipp is not installed (Debian package sip-tester; scripts/install-deps.sh installs it)")
	lookBin(t, "nsenter", "nsenter is not installed (Debian package util-linux)")
	lookBin(t, "ip", "ip is not installed (Debian package iproute2)")
	return kamBin, sippBin
}

func lookBin(t *testing.T, name, why string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testenv.Unavailable(t, why)
	}
	return p
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func port(a netip.AddrPort) string { return strconv.Itoa(int(a.Port())) }

// waitFor polls cond every 50 ms until it holds or d passes; then the
// test fails with what and detail().
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, detail func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s\n%s", d, what, detail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startKamailio writes the config from testdata/kamailio.cfg and runs
// Kamailio in the foreground (-DD), logging to stderr, one worker; it is
// ready when it answers an OPTIONS (405 from the config). socks is the
// rtpengine module's set of relays, as its rtpengine_sock takes it
// ("udp:127.0.0.1:22230 udp:127.0.0.1:22232"). It listens on sip, in
// ns, and sends every INVITE on to uas.
func startKamailio(t *testing.T, ns *netNS, dir, bin, socks string, sip, uas netip.AddrPort) {
	t.Helper()
	startKamailioFlags(t, ns, dir, bin, socks, rtpengineFlags, sip, uas)
}

// startKamailioFlags is startKamailio with the flags of the script's
// rtpengine_manage() calls.
func startKamailioFlags(t *testing.T, ns *netNS, dir, bin, socks, flags string, sip, uas netip.AddrPort) {
	t.Helper()
	startKamailioConfig(t, ns, dir, bin, "kamailio.cfg", sip, [][2]string{
		{"{{SIP}}", sip.String()},
		{"{{NG}}", socks},
		{"{{UAS}}", uas.String()},
		{"{{FLAGS}}", flags},
	})
}

// startKamailioConfig is startKamailio with the config testdata/name,
// its placeholders replaced as repl says.
func startKamailioConfig(t *testing.T, ns *netNS, dir, bin, name string, sip netip.AddrPort, repl [][2]string) {
	t.Helper()
	if !filepath.IsAbs(name) {
		name = testdata(t, name)
	}
	tmpl, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(tmpl)
	for _, r := range repl {
		if !strings.Contains(cfg, r[0]) {
			t.Fatalf("%s has no %s", name, r[0])
		}
		cfg = strings.ReplaceAll(cfg, r[0], r[1])
	}
	if i := strings.Index(cfg, "{{"); i >= 0 {
		t.Fatalf("%s: placeholder left: %.20s", name, cfg[i:])
	}
	path := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "kamailio-run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	k := ns.start(t, dir, "kamailio", bin, "-f", path, "-DD", "-E", "-n", "1", "-Y", run,
		"-P", filepath.Join(run, "kamailio.pid"), "-m", "32", "-M", "8")
	probe := ns.listenUDP(t, netip.AddrPortFrom(sip.Addr(), 0))
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		if k.exited() {
			t.Fatalf("kamailio exited: %v\n%s", k.err, tailFile(k.log, 40))
		}
		if i == 50 {
			t.Fatalf("kamailio did not answer OPTIONS in 5 s\n%s", tailFile(k.log, 40))
		}
		la := probe.LocalAddr().(*net.UDPAddr)
		msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-probe%d;rport\r\n"+
			"From: <sip:probe@%s>;tag=p%d\r\nTo: <sip:%s>\r\nCall-ID: probe-%d@test\r\nCSeq: %d OPTIONS\r\n"+
			"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n", sip, la, i, la.IP, i, sip, i, i+1)
		if _, err := probe.WriteToUDPAddrPort([]byte(msg), sip); err != nil {
			t.Fatal(err)
		}
		probe.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := probe.ReadFromUDPAddrPort(buf); err == nil && strings.HasPrefix(string(buf[:n]), "SIP/2.0 ") {
			return
		}
	}
}

// sippProc is one sipp run with its message trace.
type sippProc struct {
	*proc
	msgs, errs string
}

// startSipp runs sipp until it has made or taken calls calls.
func startSipp(t *testing.T, ns *netNS, dir, bin, name string, calls int, args ...string) *sippProc {
	t.Helper()
	s := &sippProc{msgs: filepath.Join(dir, name+"_messages.log"), errs: filepath.Join(dir, name+"_errors.log")}
	base := []string{"-m", strconv.Itoa(calls), "-nostdin", "-timeout", "25s", "-timeout_error",
		"-trace_msg", "-message_file", s.msgs, "-trace_err", "-error_file", s.errs}
	s.proc = ns.start(t, dir, "sipp-"+name, bin, append(base, args...)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sipp %s messages (%s), last lines:\n%s", name, s.msgs, tailFile(s.msgs, 60))
		}
	})
	return s
}

func (s *sippProc) errors() string {
	return "errors: " + tailFile(s.errs, 20) + "\noutput: " + tailFile(s.log, 20)
}

// sipMsg is one SIP message from a sipp message trace.
type sipMsg struct{ text string }

// received returns the first message sipp logged as received whose
// first line starts with prefix, or nil.
func received(path, prefix string) *sipMsg {
	if all := receivedAll(path, prefix); len(all) > 0 {
		return all[0]
	}
	return nil
}

// receivedAll returns the messages sipp logged as received whose first
// line starts with prefix, in order.
func receivedAll(path, prefix string) []*sipMsg {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []*sipMsg
	// Entries: a "-----... date" line, "UDP message received [N] bytes :",
	// a blank line, then the message.
	for _, e := range strings.Split(string(b), "\n----------------------------------------------- ") {
		head, body, found := strings.Cut(e, "\n\n")
		if !found || !strings.Contains(head, "message received") {
			continue
		}
		body = strings.TrimLeft(body, "\r\n")
		if strings.HasPrefix(body, prefix) {
			out = append(out, &sipMsg{text: body})
		}
	}
	return out
}

func (m *sipMsg) header(name string) string {
	for _, l := range strings.Split(m.text, "\n") {
		l = strings.TrimRight(l, "\r")
		if l == "" {
			break
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// media is where the message's SDP says to send audio: the c= address
// (session or media level) and the m=audio port.
func (m *sipMsg) media(t *testing.T, what string) netip.AddrPort {
	t.Helper()
	_, sdp, _ := strings.Cut(strings.ReplaceAll(m.text, "\r\n", "\n"), "\n\n")
	var addr netip.Addr
	var p int
	for _, l := range strings.Split(sdp, "\n") {
		switch {
		case strings.HasPrefix(l, "c=IN IP4 "), strings.HasPrefix(l, "c=IN IP6 "):
			if a, err := netip.ParseAddr(strings.TrimSpace(l[len("c=IN IP4 "):])); err == nil {
				addr = a
			}
		case strings.HasPrefix(l, "m=audio "):
			if f := strings.Fields(l); len(f) > 1 {
				p, _ = strconv.Atoi(f[1])
			}
		}
	}
	if !addr.IsValid() || p <= 0 || p > 65535 {
		t.Fatalf("%s has no usable c=/m=audio in its SDP:\n%s", what, m.text)
	}
	return netip.AddrPortFrom(addr, uint16(p))
}

// exchange sends n RTP packets (172 bytes: 12 header + 160 PCMU) each way
// and checks every one arrives at the other side from the relay port that
// side was told to send to (symmetric RTP).
func exchange(t *testing.T, caller, callee *net.UDPConn, callerSends, calleeSends netip.AddrPort, n int) {
	t.Helper()
	type result struct {
		got int
		err error
	}
	recv := func(c *net.UDPConn, from netip.AddrPort, res chan<- result) {
		buf := make([]byte, 2048)
		got := 0
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		for got < n {
			k, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				res <- result{got, err}
				return
			}
			if src != from {
				res <- result{got, fmt.Errorf("packet from %v, want the relay's %v", src, from)}
				return
			}
			if k != 172 {
				res <- result{got, fmt.Errorf("packet of %d bytes, want 172", k)}
				return
			}
			got++
		}
		res <- result{got, nil}
	}
	atCallee, atCaller := make(chan result, 1), make(chan result, 1)
	go recv(callee, calleeSends, atCallee)
	go recv(caller, callerSends, atCaller)
	for i := 0; i < n; i++ {
		if _, err := caller.WriteToUDPAddrPort(rtpPacket(ssrcCaller, i), callerSends); err != nil {
			t.Fatal(err)
		}
		if _, err := callee.WriteToUDPAddrPort(rtpPacket(ssrcCallee, i), calleeSends); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	for _, r := range []struct {
		who string
		ch  chan result
	}{{"callee", atCallee}, {"caller", atCaller}} {
		res := <-r.ch
		if res.err != nil || res.got != n {
			t.Fatalf("the %s got %d of %d RTP packets: %v", r.who, res.got, n, res.err)
		}
	}
}

// flowJSON is the part of sipd's /flows entries (sipd/wire.FlowJSON) the
// test reads; decoded here so the test does not depend on sipd's packages.
type flowJSON struct {
	CallID      string `json:"call_id"`
	Stream      int    `json:"stream"`
	Leg         string `json:"leg"`
	Component   string `json:"component"`
	Local       string `json:"local"`
	Dst         string `json:"dst"`
	Peer        string `json:"peer"`
	Path        string `json:"path"`
	State       string `json:"state"`
	KernelError string `json:"kernel_error"`
	Packets     uint64 `json:"packets"`
}

// kernelRTP reports whether the call has RTP flows and all are on the
// kernel path.
func kernelRTP(fs []flowJSON) bool {
	n := 0
	for _, f := range fs {
		if f.Component == "rtp" {
			if f.Path != "kernel" {
				return false
			}
			n++
		}
	}
	return n >= 2
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
