package sipd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.yaml.in/yaml/v3"

	"sipxdp/internal/childproc"
	"sipxdp/internal/netns"
	"sipxdp/internal/testenv"
	"sipxdp/mediapath"
	"sipxdp/sipd/sipconf"
)

// In the namespace test sipd runs as a whole process inside the relay
// namespace: the re-executed test binary in role sipdRole, started by
// childproc with nsenter --net=... . A thread-level setns is not enough,
// since the relay opens sockets from whatever thread its goroutines run
// on.
const sipdRole = "_sipd"

func init() { childproc.Register(sipdRole, sipdChild) }

func TestMain(m *testing.M) { childproc.Main(m) }

// sipdParams is the child's parameters: the YAML config, as an operator
// would write it, and the -relay-only flag, which the YAML cannot carry.
type sipdParams struct {
	Config    string
	RelayOnly bool
}

// flowsRequest asks the child for /flows of one call.
type flowsRequest struct{ CallID string }

// sipdChild runs sipd, says "ready" with its media path once /health
// answers, and answers each flowsRequest with the JSON of /flows; it stops
// at EOF.
func sipdChild() int {
	var p sipdParams
	if err := childproc.Params(&p); err != nil {
		childproc.Emit("ready", nil, err)
		return 2
	}
	cfg, err := ParseConfig([]byte(p.Config))
	if err != nil {
		childproc.Emit("ready", nil, err)
		return 1
	}
	cfg.RelayOnly = p.RelayOnly
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, log) }()
	base := "http://" + cfg.HTTP.Listen
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/health")
		if err == nil {
			var h Health
			json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			childproc.Emit("ready", h.Media.Path, nil)
			break
		}
		select {
		case err := <-done:
			childproc.Emit("ready", nil, err)
			return 1
		default:
		}
		if time.Now().After(deadline) {
			childproc.Emit("ready", nil, errors.New("no /health"))
			return 1
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		var req flowsRequest
		if !childproc.Next(&req) {
			break
		}
		resp, err := http.Get(base + "/flows?call_id=" + req.CallID)
		if err != nil {
			childproc.Reply(nil, err)
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			childproc.Reply(nil, err)
			continue
		}
		// Passed on as sent, so the test decodes what a client of
		// /flows gets; JSON that is not is an error reply.
		childproc.Reply(json.RawMessage(b), nil)
	}
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	return 0
}

type sipdProc struct {
	t    *testing.T
	p    *childproc.Proc
	path string // the media path /health reported at start
	log  string
}

func (p *sipdProc) flows(callID string) []FlowJSON {
	p.t.Helper()
	var fs []FlowJSON
	if err := p.p.Call(context.Background(), flowsRequest{CallID: callID}, &fs, 5*time.Second); err != nil {
		p.t.Fatalf("flows of %s: %v", callID, err)
	}
	return fs
}

// startSipdIn runs sipd inside ns with the given datapath, relaying
// between the relay's two links; it is stopped (stdin closed, then
// killed by PID if need be) when t ends.
func startSipdIn(t *testing.T, ns *netns.NS, datapath string) *sipdProc {
	t.Helper()
	// The sipxdp-test-PID- prefix lets mediapath's tests remove the pins
	// of a test process that died before its cleanup.
	pin := fmt.Sprintf("/sys/fs/bpf/sipxdp-test-%d-sipd-%s", os.Getpid(), datapath)
	t.Cleanup(func() { _ = mediapath.Uninstall(pin) })
	cfg, err := ParseConfig(DefaultConfigYAML())
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:18080"
	cfg.Media.Datapath = datapath
	cfg.Media.Interfaces = []string{netns.RelayA, netns.RelayB}
	cfg.Media.PinPath = pin
	cfg.Media.Addresses = nil
	cfg.SIP.Listen = nil
	for _, v := range []netns.Addrs{netns.V4, netns.V6} {
		fam := strings.TrimPrefix(v.Name, "ipv")
		cfg.Media.Addresses = append(cfg.Media.Addresses,
			AddressConfig{Name: "a" + fam, Local: v.RelayA.String(), PortMin: 40000, PortMax: 40099},
			AddressConfig{Name: "b" + fam, Local: v.RelayB.String(), PortMin: 42000, PortMax: 42099})
		cfg.SIP.Listen = append(cfg.SIP.Listen, sipconf.Listen{Transport: "udp", Addr: netip.AddrPortFrom(v.RelayA, 5060).String()},
			sipconf.Listen{Transport: "udp", Addr: netip.AddrPortFrom(v.RelayB, 5060).String()})
	}
	cfg.SIP.Domains = []string{netns.V4.RelayA.String(), netns.V4.RelayB.String()}
	cfg.SIP.Auth.Register, cfg.SIP.Auth.Invite = false, false
	return startChild(t, ns, "sipd", cfg, false)
}

// startChild runs sipd on cfg (-relay-only with relayOnly) as a child
// process inside ns and waits until its /health answers; it is stopped
// (stdin closed, then killed by PID if need be) when t ends, and its log
// goes to the test log if t failed.
func startChild(t *testing.T, ns *netns.NS, name string, cfg *Config, relayOnly bool) *sipdProc {
	t.Helper()
	p, err := tryChild(t, ns, name, cfg, relayOnly)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tryChild is startChild returning sipd's failure to start (with the end
// of its log) rather than failing t.
func tryChild(t *testing.T, ns *netns.NS, name string, cfg *Config, relayOnly bool) (*sipdProc, error) {
	t.Helper()
	text, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logf := filepath.Join(t.TempDir(), name+".log")
	lf, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	proc, err := childproc.Start(childproc.Spec{Role: sipdRole, Name: name,
		Params: sipdParams{Config: string(text), RelayOnly: relayOnly}, NetNS: ns.Path, Stderr: lf})
	if err != nil {
		t.Fatal(err)
	}
	p := &sipdProc{t: t, p: proc, log: logf}
	t.Cleanup(func() {
		if err := proc.Close(10 * time.Second); err != nil {
			t.Errorf("%s did not stop at EOF: %v", name, err)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.tail(80))
		}
	})
	m, err := proc.Await(context.Background(), "ready", 15*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s did not start: %w\n%s", name, err, p.tail(40))
	}
	if err := m.Decode(&p.path); err != nil {
		t.Fatal(err)
	}
	return p, nil
}

// tail is the end of the child's log.
func (p *sipdProc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	return tail(string(b), n)
}

func tail(s string, n int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// TestMediaNetns calls through sipd running in a relay namespace between
// a caller and a callee namespace, for each datapath: the SDP each side
// gets points at the relay leg on its own link, RTP crosses both ways
// from the relay's addresses, the flows carry the packets (on the kernel
// path, in the kernel), and BYE removes them.
func TestMediaNetns(t *testing.T) {
	testenv.RequireRoot(t)
	for _, dp := range []string{"userspace", "xdp", "xdp-generic", "tc"} {
		for _, fam := range []netns.Addrs{netns.V4, netns.V6} {
			t.Run(dp+"/"+fam.Name, func(t *testing.T) { netnsCall(t, dp, fam) })
		}
	}
}

func netnsCall(t *testing.T, dp string, fam netns.Addrs) {
	tp := netns.New(t, netns.Config{Prefix: "sxsd-"})
	if dp == "xdp" || dp == "xdp-generic" {
		var pass netns.Pass
		if dp == "xdp" {
			pass = mediapath.PeerPass
		}
		tp.PrepareXDP(t, pass)
	}
	p := startSipdIn(t, tp.Relay, dp)
	if p.path != dp {
		t.Fatalf("sipd runs the %s path, want %s", p.path, dp)
	}
	open := func(ns *netns.NS, a netip.Addr, port uint16) *net.UDPConn {
		c, err := ns.ListenUDP(netip.AddrPortFrom(a, port))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice := uaOn(t, "alice", netip.AddrPortFrom(fam.RelayA, 5060),
		open(tp.Caller, fam.Caller, 5062), open(tp.Caller, fam.Caller, 6000))
	bob := uaOn(t, "bob", netip.AddrPortFrom(fam.RelayB, 5060),
		open(tp.Callee, fam.Callee, 5062), open(tp.Callee, fam.Callee, 8000))
	bob.register()
	callID := "netns-" + dp + "-" + fam.Name + "@test"
	alice.invite("bob", callID, 1, alice.sdp())
	inv := bob.expectRequest(sip.INVITE)
	bobSends := mediaOf(t, inv)
	if bobSends.Addr() != fam.RelayB || bobSends.Port() < 42000 || bobSends.Port() > 42099 {
		t.Fatalf("bob told to send to %v, want the relay's leg on his link (%v, 42000-42099)", bobSends, fam.RelayB)
	}
	bob.answer(inv, 200, "OK", "", bob.sdp())
	ok := alice.expectResponse(200)
	aliceSends := mediaOf(t, ok)
	if aliceSends.Addr() != fam.RelayA || aliceSends.Port() < 40000 || aliceSends.Port() > 40099 {
		t.Fatalf("alice told to send to %v, want the relay's leg on her link (%v, 40000-40099)", aliceSends, fam.RelayA)
	}
	from, to := ok.From().Value(), ok.To().Value()
	alice.inDialog(sip.ACK, ok.Contact().Address, reversed(recordRoutes(ok)), from, to, callID, 1, "")
	bob.expectRequest(sip.ACK)

	// Once the peers are latched, later packets take the fast path.
	rtpExchange(t, alice, bob, aliceSends, bobSends, 20)
	time.Sleep(1500 * time.Millisecond) // past the engine's handoff delay
	rtpExchange(t, alice, bob, aliceSends, bobSends, 100)
	fs := p.flows(callID)
	var pkts uint64
	for _, f := range fs {
		if f.Component == "rtp" && f.Packets > 0 && dp != "userspace" && f.Path != "kernel" {
			t.Errorf("flow %s->%s on path %q, want kernel", f.Local, f.Dst, f.Path)
		}
		pkts += f.Packets
	}
	if len(fs) == 0 || pkts < 200 {
		t.Errorf("flows %+v count %d packets, want about 240", fs, pkts)
	}
	t.Logf("flows: %+v", fs)

	invContact, routeB := inv.Contact().Address, recordRoutes(inv)
	bob.inDialog(sip.BYE, invContact, routeB, to, from, callID, 2, "")
	bye := alice.expectRequest(sip.BYE)
	alice.answer(bye, 200, "OK", "", "")
	bob.expectResponse(200)
	deadline := time.Now().Add(3 * time.Second)
	for len(p.flows(callID)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("flows left after BYE: %+v", p.flows(callID))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
