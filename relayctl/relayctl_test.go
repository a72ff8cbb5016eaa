package relayctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"sipxdp/mediapath"
	"sipxdp/relay"
	"sipxdp/sipd"
	"sipxdp/sipd/wire"
)

// startRelay runs a real userspace relay stack on loopback behind sipd's
// HTTP API, with one call whose two phones are plain UDP sockets.
func startRelay(t *testing.T) (api string, phoneA, phoneB *net.UDPConn, ports relay.StreamPorts) {
	t.Helper()
	return startRelayToken(t, "")
}

// startRelayToken is startRelay with the API's http.token set.
func startRelayToken(t *testing.T, token string) (api string, phoneA, phoneB *net.UDPConn, ports relay.StreamPorts) {
	t.Helper()
	st, err := mediapath.Open(mediapath.Options{
		Datapath: mediapath.Userspace,
		Timeout:  time.Minute,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Addresses: []relay.AddressConfig{{Name: "lo", Local: netip.MustParseAddr("127.0.0.1"),
			PortMin: 18000, PortMax: 18999}}, // below the ephemeral range: no host sysctl change
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Engine.Run(ctx) }()
	srv := httptest.NewServer((&sipd.API{Engine: st.Engine, Started: time.Now(), Version: "test", Token: token}).Handler())
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		st.Close()
	})
	phoneA = listenUDP(t)
	phoneB = listenUDP(t)
	if err := st.Engine.CreateSession("call-1"); err != nil {
		t.Fatal(err)
	}
	ports, err = st.Engine.AddStream("call-1", 0, relay.LegSpec{}, relay.LegSpec{})
	if err != nil {
		t.Fatal(err)
	}
	for side, ph := range map[relay.Side]*net.UDPConn{relay.SideA: phoneA, relay.SideB: phoneB} {
		a := ph.LocalAddr().(*net.UDPAddr).AddrPort()
		if err := st.Engine.SetPeer("call-1", 0, side, a, netip.AddrPortFrom(a.Addr(), a.Port()+1), false); err != nil {
			t.Fatal(err)
		}
	}
	return srv.URL, phoneA, phoneB, ports
}

func listenUDP(t *testing.T) *net.UDPConn {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func relayCmd(t *testing.T, args ...string) (string, int) {
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, &out, &errb)
	return out.String() + errb.String(), code
}

func TestFlowsFromRunningRelay(t *testing.T) {
	api, a, b, ports := startRelay(t)
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ports.A.Local, ports.A.RTP))
	const n = 20
	for i := 0; i < n; i++ {
		if _, err := a.WriteToUDP([]byte("rtp-packet-0123456789"), to); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 64)
	b.SetReadDeadline(time.Now().Add(3 * time.Second))
	for i := 0; i < n; i++ {
		if _, _, err := b.ReadFromUDP(buf); err != nil {
			t.Fatalf("phone B got %d of %d packets: %v", i, n, err)
		}
	}
	// The relay forwards as soon as it latches; the engine hears of the
	// latch a moment later, so the flow may still list as learning.
	var got *Flow
	for deadline := time.Now().Add(3 * time.Second); ; {
		out, code := relayCmd(t, "-api", api, "flows", "-json", "-interval", "0")
		if code != 0 {
			t.Fatalf("flows: exit %d: %s", code, out)
		}
		var rows []Flow
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("flows -json is not JSON: %v\n%s", err, out)
		}
		got = nil
		for i := range rows {
			if rows[i].Local == to.AddrPort().String() {
				got = &rows[i]
			}
		}
		if got == nil {
			t.Fatalf("no flow for %s in %+v", to, rows)
		}
		if got.State != "learning" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got.CallID != "call-1" || got.Packets != n || got.Bytes != n*21 || got.Path != "userspace" || got.State != "active" {
		t.Fatalf("flow = %+v, want call-1, %d packets, %d bytes, userspace, active", got, n, n*21)
	}
	if got.Peer != a.LocalAddr().String() {
		t.Fatalf("peer = %s, want the latched phone A %s", got.Peer, a.LocalAddr())
	}

	table, code := relayCmd(t, "-api", api, "flows", "-call", "call-1", "-interval", "0")
	if code != 0 || !strings.Contains(table, "call-1") || !strings.Contains(table, "LAST SEEN") {
		t.Fatalf("flows table (exit %d):\n%s", code, table)
	}
	none, _ := relayCmd(t, "-api", api, "flows", "-call", "nope", "-interval", "0")
	if !strings.Contains(none, "(no flows)") {
		t.Fatalf("filter by unknown call:\n%s", none)
	}

	stats, code := relayCmd(t, "-api", api, "stats")
	for _, re := range []string{`(?m)^path\s+userspace$`, `(?m)^sessions\s+1$`, `(?m)^packets\s+20 \(kernel 0, userspace 20\)$`} {
		if code != 0 || !regexp.MustCompile(re).MatchString(stats) {
			t.Fatalf("stats (exit %d) does not match %s:\n%s", code, re, stats)
		}
	}
	var sj wire.StatsJSON
	js, _ := relayCmd(t, "-api", api, "stats", "-json")
	if err := json.Unmarshal([]byte(js), &sj); err != nil {
		t.Fatal(err)
	}
	if sj.Sessions != 1 || sj.UserspacePackets != n || sj.Path != "userspace" {
		t.Fatalf("stats json = %+v", sj)
	}

	// relays and calls read the real API: its pool (the call holds a
	// pair of ports per leg) and the call the engine knows (no SIP server
	// here, so /calls is empty).
	var rl []Relay
	js, _ = relayCmd(t, "-api", api, "relays", "-j")
	if err := json.Unmarshal([]byte(js), &rl); err != nil {
		t.Fatalf("relays -j: %v\n%s", err, js)
	}
	if len(rl) != 1 || rl[0].Path != "userspace" || len(rl[0].Pools) != 1 || rl[0].Pools[0].Local != "127.0.0.1" ||
		rl[0].Pools[0].UsedPairs != 2 || rl[0].Pools[0].TotalPairs != 500 {
		t.Fatalf("relays -j = %+v", rl)
	}
	var cl []Call
	js, _ = relayCmd(t, "-api", api, "calls", "-j")
	if err := json.Unmarshal([]byte(js), &cl); err != nil {
		t.Fatalf("calls -j: %v\n%s", err, js)
	}
	if len(cl) != 1 || cl[0].CallID != "call-1" || cl[0].MediaPath != "userspace" || len(cl[0].Legs) != 2 || cl[0].Legs[0].Local != to.AddrPort().String() {
		t.Fatalf("calls -j = %+v", cl)
	}

	msg, code := relayCmd(t, "-api", api, "drain")
	if code != 0 || !strings.Contains(msg, "draining") {
		t.Fatalf("drain: %d %s", code, msg)
	}
	js, _ = relayCmd(t, "-api", api, "stats", "-json")
	if err := json.Unmarshal([]byte(js), &sj); err != nil || !sj.Draining {
		t.Fatalf("after drain: %+v %v", sj, err)
	}
}

func TestPacketsPerSecond(t *testing.T) {
	before := []wire.FlowJSON{{Local: "a", Packets: 100}, {Local: "b", Packets: 5}}
	after := []wire.FlowJSON{{Local: "a", Packets: 300}, {Local: "b", Packets: 5}, {Local: "c", Packets: 9}}
	rows := withRates(before, after, 2*time.Second)
	want := map[string]float64{"a": 100, "b": 0, "c": 0}
	for _, r := range rows {
		if r.PPS != want[r.Local] {
			t.Errorf("%s: pps %v, want %v", r.Local, r.PPS, want[r.Local])
		}
	}
}

func TestErrorsUsersCanActOn(t *testing.T) {
	// A port nothing listens on: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-api", dead, "-pin", t.TempDir() + "/none", "flows"}, "sipd is not running"},
		{[]string{"-api", dead, "-pin", t.TempDir() + "/none", "flows"}, "no pinned maps"},
		{[]string{"-api", dead, "-pin", t.TempDir() + "/none", "stats"}, "no pinned maps"},
		{[]string{"-api", dead, "drain"}, "sipd is not running"},
		{[]string{"-api", dead, "calls"}, "sipd is not running"},
		{[]string{"-api", dead, "relays", "-j"}, "sipd is not running"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{}, "no command"},
		{[]string{"-api", dead, "watch", "-interval", "0"}, "-interval must be positive"},
	}
	for _, c := range cases {
		out, code := relayCmd(t, c.args...)
		if code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("relayctl %v: exit %d, output %q; want failure mentioning %q", c.args, code, out, c.want)
		}
	}
}

// TestToken: against an API with http.token, relayctl without the token
// says how to give it; the flag, the file and the environment variable
// each work; a wrong token is named as such.
func TestToken(t *testing.T) {
	const tok = "relayctl-token-0123456789"
	api, _, _, _ := startRelayToken(t, tok)
	t.Setenv("SIPXDP_API_TOKEN", "")
	msg, code := relayCmd(t, "-api", api, "stats")
	if code == 0 || !strings.Contains(msg, "SIPXDP_API_TOKEN") {
		t.Errorf("no token: %d %s", code, msg)
	}
	msg, code = relayCmd(t, "-api", api, "-token", "wrong-"+tok, "drain")
	if code == 0 || !strings.Contains(msg, "refused the token") {
		t.Errorf("wrong token: %d %s", code, msg)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"flag": {"-api", api, "-token", tok, "drain", "-off"},
		"file": {"-api", api, "-token-file", file, "drain", "-off"},
	} {
		if msg, code := relayCmd(t, args...); code != 0 || !strings.Contains(msg, "not draining") {
			t.Errorf("token from the %s: %d %s", name, code, msg)
		}
	}
	t.Setenv("SIPXDP_API_TOKEN", tok)
	if msg, code := relayCmd(t, "-api", api, "flows", "-interval", "0"); code != 0 {
		t.Errorf("token from the environment: %d %s", code, msg)
	}
}

// TestPinErrors: each way opening the pins fails says what to do; EPERM
// (the kernel's bpf() check) and EACCES (the pins' mode) differ.
func TestPinErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		err  error
		want []string
	}{
		{os.ErrNotExist, []string{"no pinned maps", "has sipd ever run"}},
		{fmt.Errorf("open pinned map flows: %w", syscall.EPERM), []string{"needs CAP_BPF", "before Linux 6.5"}},
		{fmt.Errorf("open pinned map flows: %w", syscall.EACCES), []string{"permission denied", "owned by uid", "run relayctl as that user"}},
	} {
		got := pinError(dir, c.err).Error()
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("pinError(%v) = %q, lacks %q", c.err, got, w)
			}
		}
	}
}
