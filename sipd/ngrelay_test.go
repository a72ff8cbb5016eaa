package sipd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"sipxdp/ng"
	"sipxdp/sipd/sdprewrite"
)

// ngClient sends NG commands over UDP, as Kamailio's rtpengine module does.
type ngClient struct {
	t      *testing.T
	c      *net.UDPConn
	cookie int
}

func (n *ngClient) do(cmd map[string]any) map[string]any {
	n.t.Helper()
	body, err := ng.Encode(cmd)
	if err != nil {
		n.t.Fatal(err)
	}
	n.cookie++
	cookie := fmt.Sprintf("c%d", n.cookie)
	if _, err := n.c.Write(append([]byte(cookie+" "), body...)); err != nil {
		n.t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	k, err := n.c.Read(buf)
	if err != nil {
		n.t.Fatalf("no NG reply to %v: %v", cmd["command"], err)
	}
	got, rest, ok := bytes.Cut(buf[:k], []byte(" "))
	if !ok || string(got) != cookie {
		n.t.Fatalf("reply %q: want cookie %s", buf[:k], cookie)
	}
	v, err := ng.Decode(rest)
	if err != nil {
		n.t.Fatalf("reply %q: %v", rest, err)
	}
	d, _ := v.(map[string]any)
	return d
}

// sdpOf returns the single audio m-line's relay address of a reply.
func sdpOf(t *testing.T, reply map[string]any) (string, netip.AddrPort) {
	t.Helper()
	if reply["result"] != "ok" {
		t.Fatalf("NG reply %v", reply)
	}
	s, _ := reply["sdp"].(string)
	ms, err := sdprewrite.Parse([]byte(s))
	if err != nil || len(ms) != 1 {
		t.Fatalf("reply sdp %q: %v", s, err)
	}
	return s, netip.AddrPortFrom(ms[0].Addr, ms[0].Port)
}

// startRelayOnly runs sipd -relay-only with the userspace relay, a 3 s
// media timeout and 20 relay ports, and returns its API, an NG client
// that answered ping, the NG port, the first relay port, and the function
// that stops it (deferred after a goroutine-leak check, so it runs first).
// change, when set, edits the config first.
func startRelayOnly(t *testing.T, change func(*Config)) (d *daemon, n *ngClient, ngPort, pmin int, stop func()) {
	t.Helper()
	cfg := testConfig(t)
	httpPort := freePort(t, "tcp")
	ngPort = freePort(t, "udp")
	pmin = 20000 + 20*(ngPort%600) // below the ephemeral range; see startDaemon
	cfg.HTTP.Listen = fmt.Sprintf("127.0.0.1:%d", httpPort)
	cfg.NG.Listen, cfg.NG.TCP = fmt.Sprintf("127.0.0.1:%d", ngPort), true
	cfg.Media.Datapath = "userspace"
	cfg.Media.Timeout = Duration(3 * time.Second)
	cfg.Media.Addresses[0].PortMin, cfg.Media.Addresses[0].PortMax = pmin, pmin+19
	cfg.RelayOnly = true
	if change != nil {
		change(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	stopRun := startRun(t, cfg)
	d = &daemon{http: fmt.Sprintf("http://127.0.0.1:%d", httpPort)}
	var h Health
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(d.http + "/health")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			stopRun()
			t.Fatalf("no /health: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if h.SIP != nil || h.Media.Path != "userspace" {
		t.Errorf("health %+v: want no SIP, userspace relay", h)
	}
	uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", ngPort))))
	if err != nil {
		t.Fatal(err)
	}
	n = &ngClient{t: t, c: uc}
	if r := n.do(map[string]any{"command": "ping"}); r["result"] != "pong" {
		stopRun()
		t.Fatalf("ping: %v", r)
	}
	return d, n, ngPort, pmin, func() { uc.Close(); stopRun() }
}

// TestRelayOnlyNG runs sipd in relay-only mode and drives it over NG as a
// Kamailio would: offer and answer get SDP on the relay, RTP flows both
// ways, query counts it, delete removes the flows, and a silent call is
// deleted by the media timeout. No SIP listener starts.
func TestRelayOnlyNG(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d, n, ngPort, pmin, stop := startRelayOnly(t, nil)
	defer stop()
	// ng.tcp: the same protocol on TCP at the same address.
	tc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ngPort))
	if err != nil {
		t.Fatalf("ng.tcp: %v", err)
	}
	defer tc.Close()
	if _, err := tc.Write([]byte("t1 d7:command4:pinge")); err != nil {
		t.Fatal(err)
	}
	tc.SetReadDeadline(time.Now().Add(3 * time.Second))
	pong := make([]byte, 64)
	if k, err := io.ReadAtLeast(tc, pong, len("t1 d6:result4:ponge")); err != nil || string(pong[:k]) != "t1 d6:result4:ponge" {
		t.Errorf("ping over TCP: %q, %v", pong[:k], err)
	}

	alice, bob := newUA(t, "alice", netip.AddrPort{}), newUA(t, "bob", netip.AddrPort{})
	const callID = "ng-e2e@test"
	offer, bobSends := sdpOf(t, n.do(map[string]any{"command": "offer", "call-id": callID, "from-tag": "alice-tag",
		"sdp": alice.sdp(), "ICE": "remove", "replace": []any{"origin", "session-connection"},
		"received-from": []any{"IP4", "127.0.0.1"}, "flags": []any{"trust-address"}}))
	if strings.Contains(offer, fmt.Sprint(alice.rtpAddr().Port())) || bobSends.Port() < uint16(pmin) || bobSends.Port() > uint16(pmin+19) {
		t.Fatalf("offer not rewritten to the relay's ports %d-%d:\n%s", pmin, pmin+19, offer)
	}
	_, aliceSends := sdpOf(t, n.do(map[string]any{"command": "answer", "call-id": callID, "from-tag": "alice-tag",
		"to-tag": "bob-tag", "sdp": bob.sdp()}))
	if aliceSends == bobSends || aliceSends.Port() < uint16(pmin) || aliceSends.Port() > uint16(pmin+19) {
		t.Fatalf("answer points at %v (offer at %v)", aliceSends, bobSends)
	}
	rtpExchange(t, alice, bob, aliceSends, bobSends, 10)

	q := n.do(map[string]any{"command": "query", "call-id": callID})
	if q["result"] != "ok" {
		t.Fatalf("query: %v", q)
	}
	totals, _ := q["totals"].(map[string]any)
	rtp, _ := totals["RTP"].(map[string]any)
	if p, _ := rtp["packets"].(int64); p != 20 {
		t.Errorf("query: RTP packets %v, want 20 (10 each way); reply %v", rtp["packets"], q)
	}
	tags, _ := q["tags"].(map[string]any)
	if _, ok := tags["alice-tag"]; !ok || len(tags) != 2 {
		t.Errorf("query tags %v", tags)
	}
	if l := n.do(map[string]any{"command": "list"}); fmt.Sprint(l["calls"]) != "["+callID+"]" {
		t.Errorf("list: %v", l)
	}
	if len(d.flows(t, callID)) == 0 {
		t.Fatal("no flows before delete")
	}
	if r := n.do(map[string]any{"command": "delete", "call-id": callID, "from-tag": "alice-tag"}); r["result"] != "ok" {
		t.Errorf("delete: %v", r)
	}
	if fs := d.flows(t, ""); len(fs) != 0 {
		t.Errorf("flows after delete: %+v", fs)
	}
	if r := n.do(map[string]any{"command": "query", "call-id": callID}); r["result"] != "error" {
		t.Errorf("query after delete: %v", r)
	}

	// A call whose media never comes is deleted by the timeout (no SIP
	// to end it): gone from list and /flows.
	const silent = "ng-silent@test"
	sdpOf(t, n.do(map[string]any{"command": "offer", "call-id": silent, "from-tag": "a", "sdp": alice.sdp()}))
	sdpOf(t, n.do(map[string]any{"command": "answer", "call-id": silent, "from-tag": "a", "to-tag": "b", "sdp": bob.sdp()}))
	deadline := time.Now().Add(8 * time.Second)
	for {
		l := n.do(map[string]any{"command": "list"})
		if fmt.Sprint(l["calls"]) == "[]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("silent call still listed 8 s after its offer with a 3 s timeout: %v", l)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if fs := d.flows(t, ""); len(fs) != 0 {
		t.Errorf("flows after the media timeout: %+v", fs)
	}

	resp, err := http.Get(d.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`sipxdp_ng_commands_total{command="offer",result="ok"} 2`, `sipxdp_ng_commands_total{command="delete",result="ok"} 1`,
		`sipxdp_ng_command_duration_seconds_count{command="offer"} 2`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(string(b), "sipxdp_sip_") {
		t.Error("/metrics has SIP metrics in relay-only mode")
	}
}
