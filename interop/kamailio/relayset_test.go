package kamailio

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/netns"
)

// relaySetNet is the network of TestKamailioRelaySet (IPv4 only).
var relaySetNet = netns.Config{Prefix: nsPrefix, Net4: netns.Default4}

// TestKamailioRelaySet gives Kamailio's rtpengine module a set of three
// sipd -relay-only nodes, each on a host of its own: a and b, and one
// whose port pool is full. Kamailio runs on the router of internal/netns'
// caller–router–callee line, the sipp caller and callee (and the test's
// RTP sockets) on the caller and callee hosts, and the relays on hosts
// hung off the router, as bench's relays scenario builds them, on the tc
// hook where it loads. A relay that cannot take a new call must answer
// so that the module tries the next one of the set (ng.ErrLoadLimit):
// calls through Kamailio go to a and b, never to the full relay, with no
// call failing, and RTP crosses both ways through a call on each; then
// the relay with more calls is drained (POST /drain) and the next calls
// all go to the other one, again with no call failing, while the calls
// the drained relay has end normally (their deletes succeed there).
func TestKamailioRelaySet(t *testing.T) {
	kamBin, sippBin := requireTools(t)

	dir := t.TempDir()
	tp := netns.New(t, relaySetNet)
	fam := tp.V4
	router, callerNS, calleeNS := &netNS{tp.Relay}, &netNS{tp.Caller}, &netNS{tp.Callee}
	kam := netip.AddrPortFrom(fam.RelayA, kamAddr.Port())
	uasAt := netip.AddrPortFrom(fam.Callee, uasAddr.Port())
	callerRTPAt := netip.AddrPortFrom(fam.Caller, callerRTP.Port())
	calleeRTPAt := netip.AddrPortFrom(fam.Callee, calleeRTP.Port())
	// Each relay on host 4+i, on the bench's links; NG open to the
	// topology's network (Kamailio on the router, the test on the host).
	// The full relay's range holds two RTP/RTCP pairs, one call's worth
	// (the least sipd takes).
	start := func(name string, i, portMin, portMax int) *relayCtl {
		h := tp.AddRelayHost(t, name, 4+i)
		r := startRelay(t, &netNS{h.NS}, dir, relaySpec{name: name, ng: netip.AddrPortFrom(h.V4, ngAddr.Port()),
			http: httpAddr, portMin: portMin, portMax: portMax, datapath: "tc", orUserspace: true,
			addr: h.V4, iface: "h0", allow: []string{relaySetNet.Net4.String()}})
		hl, err := r.sipd.Health(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("relay %s on %s, media path %s", name, h.V4, hl.Media.Path)
		return r
	}
	a := start("a", 0, 20000, 20099)
	b := start("b", 1, 20100, 20199)
	full := start("full", 2, 20200, 20203)

	// Fill the full relay with a call of the test's own, and check what it
	// answers the next one: the error-reason both modules move on for.
	offer := func(id string) map[string]any {
		return map[string]any{"command": "offer", "call-id": id, "from-tag": "t1", "supports": []any{"load limit"},
			"sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"}
	}
	if rep := full.ng(t, offer("filler")); rep["result"] != "ok" {
		t.Fatalf("filling the full relay: %v", rep)
	}
	if rep := full.ng(t, offer("one-too-many")); rep["result"] != "error" || rep["error-reason"] != "Ran out of ports" {
		t.Fatalf("the full relay answers a new call with %v, want error-reason \"Ran out of ports\"", rep)
	}

	var socks []string
	for _, r := range []*relayCtl{a, b, full} {
		socks = append(socks, "udp:"+r.spec.ng.String())
	}
	startKamailio(t, router, dir, kamBin, strings.Join(socks, " "), kam, uasAt)

	const phase1, phase2 = 10, 20
	uas := startSipp(t, calleeNS, dir, sippBin, "uas", phase1+phase2, "-sf", testdata(t, "uas.xml"),
		"-i", uasAt.Addr().String(), "-p", port(uasAt),
		"-key", "rtp_ip", calleeRTPAt.Addr().String(), "-key", "rtp_port", port(calleeRTPAt))
	waitFor(t, 5*time.Second, "sipp UAS listening on "+uasAt.String(), func() bool { return calleeNS.udpBound(uasAt.Port()) },
		func() string { return tailFile(uas.log, 20) })
	caller := func(name string, calls int, hold time.Duration, sipPort uint16) *sippProc {
		return startSipp(t, callerNS, dir, sippBin, name, calls, "-sf", testdata(t, "uac.xml"),
			"-i", fam.Caller.String(), "-p", strconv.Itoa(int(sipPort)), "-s", "bob", "-r", "20",
			"-d", strconv.Itoa(int(hold.Milliseconds())),
			"-key", "rtp_ip", callerRTPAt.Addr().String(), "-key", "rtp_port", port(callerRTPAt),
			kam.String())
	}
	relays := []*relayCtl{a, b, full}

	// Phase 1: calls held while the relay is drained.
	uac1 := caller("uac1", phase1, 5*time.Second, uacAddr.Port())
	var oks []*sipMsg
	waitFor(t, 10*time.Second, fmt.Sprintf("%d 200 OKs at the first caller", phase1), func() bool {
		oks = inviteOKs(uac1.msgs)
		return len(oks) >= phase1
	}, func() string { return uac1.errors() + "\nuas: " + uas.errors() })
	on := placed(t, oks, uas, relays)
	t.Logf("first %d calls: %d on a, %d on b", phase1, len(on[a]), len(on[b]))
	if len(on[full]) != 0 {
		t.Fatalf("%d calls on the full relay", len(on[full]))
	}
	for _, r := range []*relayCtl{a, b} {
		if got := r.calls(t); len(got) != len(on[r]) {
			t.Errorf("relay %s lists %d calls (%v), the SDP put %d there", r.name, len(got), got, len(on[r]))
		}
	}
	// RTP both ways through the first call on each relay, counted at the
	// test's sockets on the caller and callee hosts (sipp sends none).
	callerSock, calleeSock := callerNS.listenUDP(t, callerRTPAt), calleeNS.listenUDP(t, calleeRTPAt)
	for _, r := range []*relayCtl{a, b} {
		if len(on[r]) == 0 {
			continue
		}
		id := on[r][0]
		callerSends, calleeSends := mediaOfCall(t, id, oks, uas)
		exchange(t, callerSock, calleeSock, callerSends, calleeSends, 20)
		t.Logf("call %s: 20 RTP packets each way through relay %s (%v, %v)", id, r.name, callerSends, calleeSends)
	}
	if n := full.ngCommands(t, "offer", "error"); n < 2 { // the test's own, and Kamailio's
		t.Errorf("the full relay refused %d offers: Kamailio never tried it, the test proves nothing", n)
	}

	drained, other := a, b
	if len(on[b]) > len(on[a]) {
		drained, other = b, a
	}
	if code, body, err := drained.sipd.Do(context.Background(), "POST", "/drain", nil, nil); err != nil || code != 200 {
		t.Fatalf("POST /drain on relay %s: %d %s %v", drained.name, code, body, err)
	}
	refusedBefore := drained.ngCommands(t, "offer", "error")

	// Phase 2: every new call goes to the other relay, none fails.
	uac2 := caller("uac2", phase2, 200*time.Millisecond, uacAddr.Port()+2)
	if err := uac2.wait(25 * time.Second); err != nil {
		t.Fatalf("calls after the drain: sipp UAC: %v (a failed call makes sipp exit 1)\n%s", err, uac2.errors())
	}
	oks = inviteOKs(uac2.msgs)
	if len(oks) < phase2 {
		t.Fatalf("%d 200 OKs for %d calls after the drain", len(oks), phase2)
	}
	on = placed(t, oks, uas, relays)
	if len(on[other]) != len(oks) {
		t.Errorf("after draining %s: %d calls on %s, %d on %s, %d on full; want all on %s",
			drained.name, len(on[drained]), drained.name, len(on[other]), other.name, len(on[full]), other.name)
	}
	if n := drained.ngCommands(t, "offer", "error") - refusedBefore; n == 0 {
		t.Errorf("the drained relay refused no offer: Kamailio never tried it, the test proves nothing")
	} else {
		t.Logf("the drained relay refused %d offers, Kamailio moved each to the next relay", n)
	}

	// The first calls end; the drained relay's deletes succeed.
	if err := uac1.wait(20 * time.Second); err != nil {
		t.Fatalf("calls held across the drain: sipp UAC: %v\n%s", err, uac1.errors())
	}
	if err := uas.wait(5 * time.Second); err != nil {
		t.Fatalf("sipp UAS: %v\n%s", err, uas.errors())
	}
	for _, r := range []*relayCtl{a, b} {
		waitFor(t, 3*time.Second, "no calls left on relay "+r.name, func() bool { return len(r.calls(t)) == 0 },
			func() string { return fmt.Sprint(r.calls(t)) })
		if n := r.ngCommands(t, "delete", "error"); n != 0 {
			t.Errorf("relay %s failed %d deletes", r.name, n)
		}
	}
}

// inviteOKs are the 200 OKs to INVITEs a sipp caller got (not those to
// its BYEs).
func inviteOKs(path string) []*sipMsg {
	var out []*sipMsg
	for _, m := range receivedAll(path, "SIP/2.0 200 ") {
		if strings.HasSuffix(m.header("CSeq"), "INVITE") {
			out = append(out, m)
		}
	}
	return out
}

// placed sorts the calls whose 200 OKs the caller got by relay: the
// caller's SDP (in the 200 OK) and the callee's (in the INVITE the UAS
// got) must both point at the same relay.
func placed(t *testing.T, oks []*sipMsg, uas *sippProc, relays []*relayCtl) map[*relayCtl][]string {
	t.Helper()
	invites := map[string]*sipMsg{}
	for _, m := range receivedAll(uas.msgs, "INVITE ") {
		invites[m.header("Call-ID")] = m
	}
	on := map[*relayCtl][]string{}
	for _, ok := range oks {
		id := ok.header("Call-ID")
		callerSends, calleeSends := callMedia(t, id, ok, invites[id])
		var r *relayCtl
		for _, c := range relays {
			if c.owns(callerSends) && c.owns(calleeSends) {
				r = c
			}
		}
		if r == nil {
			t.Fatalf("call %s: caller sends to %v, callee to %v: not both on one relay", id, callerSends, calleeSends)
		}
		on[r] = append(on[r], id)
	}
	return on
}

// callMedia is where the caller (by the 200 OK it got) and the callee (by
// the INVITE it got) send a call's media.
func callMedia(t *testing.T, id string, ok, inv *sipMsg) (callerSends, calleeSends netip.AddrPort) {
	t.Helper()
	if inv == nil {
		t.Fatalf("call %s: the UAS logged no INVITE", id)
	}
	return ok.media(t, "200 OK of "+id), inv.media(t, "INVITE of "+id)
}

// mediaOfCall is callMedia for call id among the caller's 200 OKs.
func mediaOfCall(t *testing.T, id string, oks []*sipMsg, uas *sippProc) (callerSends, calleeSends netip.AddrPort) {
	t.Helper()
	for _, ok := range oks {
		if ok.header("Call-ID") != id {
			continue
		}
		for _, inv := range receivedAll(uas.msgs, "INVITE ") {
			if inv.header("Call-ID") == id {
				return callMedia(t, id, ok, inv)
			}
		}
		return callMedia(t, id, ok, nil)
	}
	t.Fatalf("call %s: no 200 OK at the caller", id)
	return
}
