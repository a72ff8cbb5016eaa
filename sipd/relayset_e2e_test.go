package sipd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/netns"
	"sipxdp/mediapath"
	"sipxdp/sipd/sipconf"
	"sipxdp/sipd/wire"
)

// The relay-set tests run every party on a host of its own: network
// namespaces from internal/netns in the bench's "relays" shape (the
// caller–router–callee line, with one host per relay hung off the
// router). sipd, the SIP proxy, runs on the router; alice on the caller
// host, bob on the callee host, and each sipd -relay-only node on its own
// host, on the tc hook where it loads.
const (
	relayNGPort              = 2223 // sipd's default ng.listen port
	relayPortMin             = 20000
	relayPortMax             = 20099
	relayPing                = 200 * time.Millisecond
	relaySetPrefix           = "sxrs-"
	relayHostLink            = 4                 // relay i is on link relayHostLink+i, as in the bench
	apiListen                = "127.0.0.1:18080" // sipd's and every relay's, each in its namespace
	relaySetProxyPort uint16 = 5060
)

// apiIn reaches a sipd's HTTP API inside its namespace.
type apiIn struct {
	base string
	c    *http.Client
}

func newAPIIn(ns *netns.NS, listen string) *apiIn {
	tr := &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}
	return &apiIn{base: "http://" + listen, c: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
}

func (a *apiIn) do(t *testing.T, method, path, body string, out any) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, a.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// relayNode is a sipd -relay-only node on its own host.
type relayNode struct {
	host *netns.Host
	ng   netip.AddrPort
	api  *apiIn
	proc *sipdProc
}

// owns says whether ap is one of the node's relay ports.
func (n *relayNode) owns(ap netip.AddrPort) bool {
	return ap.Addr() == n.host.V4 && ap.Port() >= relayPortMin && ap.Port() <= relayPortMax
}

// relaySet is sipd on the router with alice, bob and the relay nodes
// around it.
type relaySet struct {
	api        *apiIn
	cdrPath    string
	nodes      []*relayNode
	alice, bob *ua
}

// startSet builds the hosts and starts a relay node per weight, sipd over
// them pinging every relayPing with media.timeout timeout on sipd and
// relays, and bob registered. Everything goes when t ends.
func startSet(t *testing.T, timeout time.Duration, weights ...int) *relaySet {
	t.Helper()
	tp := netns.New(t, netns.Config{Prefix: relaySetPrefix, Net4: netns.Default4})
	s := &relaySet{cdrPath: t.TempDir() + "/cdr.jsonl"}
	var set []string
	for i, w := range weights {
		n := startRelayHost(t, tp, i, timeout)
		s.nodes = append(s.nodes, n)
		set = append(set, fmt.Sprintf("udp:%s=%d", n.ng, w))
	}
	fam := tp.V4
	cfg := testConfig(t)
	cfg.StateDir = t.TempDir()
	cfg.HTTP.Listen = apiListen
	cfg.SIP.Listen = []sipconf.Listen{
		{Transport: "udp", Addr: netip.AddrPortFrom(fam.RelayA, relaySetProxyPort).String()},
		{Transport: "udp", Addr: netip.AddrPortFrom(fam.RelayB, relaySetProxyPort).String()}}
	cfg.SIP.Domains = []string{fam.RelayA.String(), fam.RelayB.String()}
	cfg.SIP.Auth.Register, cfg.SIP.Auth.Invite = false, false
	cfg.SIP.Dialog.CDRFile = s.cdrPath
	cfg.Media.Mode, cfg.Media.Datapath = MediaAll, "userspace"
	cfg.Media.Relays = strings.Join(set, " ")
	cfg.Media.RelayPing = Duration(relayPing)
	cfg.Media.Timeout = Duration(timeout)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	startChild(t, tp.Relay, "sipd", cfg, false)
	s.api = newAPIIn(tp.Relay, apiListen)
	listen := func(ns *netns.NS, a netip.Addr, port uint16) *net.UDPConn {
		c, err := ns.ListenUDP(netip.AddrPortFrom(a, port))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	s.alice = uaOn(t, "alice", netip.AddrPortFrom(fam.RelayA, relaySetProxyPort),
		listen(tp.Caller, fam.Caller, 5062), listen(tp.Caller, fam.Caller, 6000))
	s.bob = uaOn(t, "bob", netip.AddrPortFrom(fam.RelayB, relaySetProxyPort),
		listen(tp.Callee, fam.Callee, 5062), listen(tp.Callee, fam.Callee, 8000))
	s.bob.register()
	return s
}

// startRelayHost hangs host i off the router and runs a relay node on
// it: on the tc hook on its one interface, or, where the hook does not
// load, on the userspace relay (logged). NG is open to the router only.
func startRelayHost(t *testing.T, tp *netns.Topo, i int, timeout time.Duration) *relayNode {
	t.Helper()
	name := fmt.Sprintf("relay%d", i)
	h := tp.AddRelayHost(t, fmt.Sprintf("n%d", i), relayHostLink+i)
	n := &relayNode{host: h, ng: netip.AddrPortFrom(h.V4, relayNGPort), api: newAPIIn(h.NS, apiListen)}
	// The sipxdp-test-PID- prefix lets mediapath's tests remove the pins
	// of a test process that died before its cleanup (a killed relay
	// leaves its own).
	pin := fmt.Sprintf("/sys/fs/bpf/sipxdp-test-%d-%s-%s", os.Getpid(), strings.TrimPrefix(tp.Relay.Name, relaySetPrefix), name)
	t.Cleanup(func() {
		if err := mediapath.Uninstall(pin); err != nil {
			t.Errorf("remove %s: %v", pin, err)
		}
	})
	cfg := testConfig(t)
	cfg.StateDir = t.TempDir()
	cfg.HTTP.Listen = apiListen
	cfg.Media.Interfaces = []string{"h0"}
	cfg.Media.PinPath = pin
	cfg.Media.Timeout = Duration(timeout)
	cfg.Media.Addresses = []AddressConfig{{Name: "relay", Local: h.V4.String(), PortMin: relayPortMin, PortMax: relayPortMax}}
	cfg.NG.Listen = n.ng.String()
	cfg.NG.Allow = []string{netip.PrefixFrom(h.Relay4, 32).String()}
	var err error
	for _, dp := range []string{"tc", "userspace"} {
		cfg.Media.Datapath = dp
		if n.proc, err = tryChild(t, h.NS, name, cfg, true); err == nil {
			break
		}
		t.Logf("%s: the %s hook does not load here, relaying in userspace: %v", name, dp, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s on %s, media path %s", name, h.V4, n.proc.path)
	return n
}

func (s *relaySet) relays(t *testing.T) []wire.RelayMember {
	t.Helper()
	var h Health
	s.api.do(t, "GET", "/health", "", &h)
	return h.Relays
}

// call places a whole call alice -> bob (INVITE, 200, ACK, BYE) and
// returns which node relayed it, by the relay address and port the SDP
// each phone got points at; with rtp, RTP flows both ways through that
// node first, counted at both phones.
func (s *relaySet) call(t *testing.T, callID string, rtp bool) int {
	t.Helper()
	alice, bob := s.alice, s.bob
	alice.invite("bob", callID, 1, alice.sdp())
	inv := bob.expectRequest(sip.INVITE)
	bobSends := mediaOf(t, inv)
	bob.answer(inv, 200, "OK", "bob-tag", bob.sdp())
	ok := alice.expectResponse(200)
	aliceSends := mediaOf(t, ok)
	which := -1
	for i, n := range s.nodes {
		if n.owns(bobSends) && n.owns(aliceSends) {
			which = i
		}
	}
	if which < 0 {
		t.Fatalf("%s: SDPs point at %v and %v, not both at one relay", callID, bobSends, aliceSends)
	}
	from, to := ok.From().Value(), ok.To().Value()
	route := reversed(recordRoutes(ok))
	alice.inDialog(sip.ACK, ok.Contact().Address, route, from, to, callID, 1, "")
	bob.expectRequest(sip.ACK)
	if rtp {
		rtpExchange(t, alice, bob, aliceSends, bobSends, 20)
	}
	alice.inDialog(sip.BYE, ok.Contact().Address, route, from, to, callID, 2, "")
	bye := bob.expectRequest(sip.BYE)
	bob.answer(bye, 200, "OK", "", "")
	alice.expectResponse(200)
	return which
}

// TestRelaySetSpread: sipd with two -relay-only nodes weighted 2:1
// spreads 30 calls 20:10 (smooth weighted round robin), RTP flowing both
// ways through the chosen relay for the first calls; /health lists both
// with their offers.
func TestRelaySetSpread(t *testing.T) {
	s := startSet(t, 30*time.Second, 2, 1)
	var got [2]int
	for i := range 30 {
		got[s.call(t, fmt.Sprintf("set-%d@test", i), i < 3)]++
	}
	if got[0] < 17 || got[0] > 23 || got[0]+got[1] != 30 {
		t.Errorf("30 calls over weights 2:1 went %d:%d", got[0], got[1])
	}
	rs := s.relays(t)
	if len(rs) != 2 || rs[0].Offers != uint64(got[0]) || rs[1].Offers != uint64(got[1]) || rs[0].Weight != 2 ||
		rs[0].State != "up" || rs[1].State != "up" {
		t.Errorf("/health relays %+v, want both up with offers %d and %d", rs, got[0], got[1])
	}
}

// TestRelaySetDrain: with the relay that round robin picks next drained,
// the next 10 calls all go to the other with no failure: the drained
// relay answers "load limit" and sipd moves the offer on.
func TestRelaySetDrain(t *testing.T) {
	s := startSet(t, 30*time.Second, 2, 1)
	s.nodes[0].api.do(t, "POST", "/drain", `{"on":true}`, nil)
	for i := range 10 {
		if w := s.call(t, fmt.Sprintf("drained-%d@test", i), i == 0); w != 1 {
			t.Errorf("call %d with relay 0 drained went to relay %d", i, w)
		}
	}
	rs := s.relays(t)
	if rs[0].State != "overloaded" || rs[0].Failovers != 1 || rs[1].Offers != 10 {
		t.Errorf("/health relays after drain: %+v", rs)
	}
}

// TestRelaySetKill: relay 1's process is SIGKILLed (by PID) when round
// robin would pick it next. It is marked down within a ping interval or
// two (a ping times out after one interval), and from then on every new
// call goes to relay 0 with no failure.
//
// A call whose offer reaches the dead relay before its ping fails waits
// out the NG client's retries (5 s) before moving on; the test places its
// calls after the relay is marked down, as the issue's "within the ping
// interval" asks, rather than racing that.
func TestRelaySetKill(t *testing.T) {
	s := startSet(t, 30*time.Second, 1, 1)
	var got [2]int
	for i := range 3 {
		got[s.call(t, fmt.Sprintf("before-%d@test", i), i < 2)]++
	}
	if got != [2]int{2, 1} {
		t.Errorf("3 calls over weights 1:1 went %v", got)
	}
	if err := s.nodes[1].proc.p.Crash(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Round robin's next pick is the dead relay: the call placed now
	// waits for the health check to mark it down (a few ping
	// intervals), not for the offer's five retries a second apart.
	if w := s.call(t, "at-kill@test", false); w != 0 {
		t.Errorf("the call placed as relay 1 died went to relay %d", w)
	}
	if took := time.Since(killed); took > 2*time.Second {
		t.Errorf("the call placed as relay 1 died took %v: held up by the dead relay's retries", took)
	} else {
		t.Logf("the call placed as relay 1 died was set up on relay 0 in %v", took.Round(time.Millisecond))
	}
	for s.relays(t)[1].State != "down" {
		if time.Since(killed) > 5*relayPing {
			t.Fatalf("relay 1 not down %v after it was killed: %+v", time.Since(killed), s.relays(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("relay 1 marked down %v after the kill (ping every %v)", time.Since(killed).Round(time.Millisecond), relayPing)
	for i := range 10 {
		if w := s.call(t, fmt.Sprintf("after-%d@test", i), i == 0); w != 0 {
			t.Errorf("call %d after relay 1 died went to relay %d", i, w)
		}
	}
}

// TestRelaySetMediaTimeout: a call gone silent is ended by its relay's
// media timeout; sipd learns of it by query, sends both phones a BYE
// and writes the CDR with end_reason "media timeout", as it does with
// the embedded relay.
func TestRelaySetMediaTimeout(t *testing.T) {
	s := startSet(t, time.Second, 1, 1)
	alice, bob := s.alice, s.bob
	const callID = "set-timeout@test"
	ok, aliceSends, bobSends := answeredCall(t, alice, bob, callID)
	rtpExchange(t, alice, bob, aliceSends, bobSends, 10)
	start := time.Now()
	bobTag, _ := ok.To().Params.Get("tag")
	for _, u := range []*ua{alice, bob} {
		bye := u.expectRequest(sip.BYE)
		want := map[string]string{"alice": "alice-tag", "bob": bobTag}[u.name]
		if tag, _ := bye.To().Params.Get("tag"); bye.CallID().Value() != callID || tag != want {
			t.Errorf("%s got a BYE for %q to tag %q", u.name, bye.CallID().Value(), tag)
		}
		u.answer(bye, 200, "OK", "", "")
	}
	t.Logf("BYEs %v after the media stopped (relay timeout 1s, sipd queries every 250ms)", time.Since(start).Round(time.Millisecond))
	waitTimeoutCDR(t, s.cdrPath, callID)
	if rs := s.relays(t); rs[0].Calls+rs[1].Calls != 0 {
		t.Errorf("relay set still holds the call: %+v", rs)
	}
}
