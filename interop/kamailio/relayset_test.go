package kamailio

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestKamailioRelaySet gives Kamailio's rtpengine module a set of three
// sipd -relay-only nodes: a and b, and one whose port pool is full. A
// relay that cannot take a new call must answer so that the module tries
// the next one of the set (ng.ErrLoadLimit): calls through Kamailio go
// to a and b, never to the full relay, with no call failing; then the
// relay with more calls is drained (POST /drain) and the next calls all
// go to the other one, again with no call failing, while the calls the
// drained relay has end normally (their deletes succeed there).
func TestKamailioRelaySet(t *testing.T) {
	kamBin, sippBin := requireTools(t)

	dir := t.TempDir()
	ns := newNetNS(t)
	// Three relays on the namespace's lo, told apart by NG and API ports
	// and port ranges; userspace, as one kernel hook per lo is the most.
	// The full relay's range holds two RTP/RTCP pairs, one call's worth
	// (the least sipd takes).
	spec := func(name string, i, portMin, portMax int) relaySpec {
		return relaySpec{name: name, ng: netip.AddrPortFrom(loopback, uint16(22230+2*i)),
			http: netip.AddrPortFrom(loopback, uint16(18080+2*i)), portMin: portMin, portMax: portMax, datapath: "userspace"}
	}
	a := startRelay(t, ns, dir, spec("a", 0, 20000, 20099))
	b := startRelay(t, ns, dir, spec("b", 1, 20100, 20199))
	full := startRelay(t, ns, dir, spec("full", 2, 20200, 20203))

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
	startKamailio(t, ns, dir, kamBin, strings.Join(socks, " "))

	const phase1, phase2 = 10, 20
	uas := startSipp(t, ns, dir, sippBin, "uas", phase1+phase2, "-sf", testdata(t, "uas.xml"),
		"-i", uasAddr.Addr().String(), "-p", port(uasAddr),
		"-key", "rtp_ip", calleeRTP.Addr().String(), "-key", "rtp_port", port(calleeRTP))
	waitFor(t, 5*time.Second, "sipp UAS listening on "+uasAddr.String(), func() bool { return ns.udpBound(uasAddr.Port()) },
		func() string { return tailFile(uas.log, 20) })
	caller := func(name string, calls int, hold time.Duration, sipPort uint16) *sippProc {
		return startSipp(t, ns, dir, sippBin, name, calls, "-sf", testdata(t, "uac.xml"),
			"-i", loopback.String(), "-p", strconv.Itoa(int(sipPort)), "-s", "bob", "-r", "20",
			"-d", strconv.Itoa(int(hold.Milliseconds())),
			"-key", "rtp_ip", callerRTP.Addr().String(), "-key", "rtp_port", port(callerRTP),
			kamAddr.String())
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
		inv := invites[id]
		if inv == nil {
			t.Fatalf("call %s: the UAS logged no INVITE", id)
		}
		callerSends, calleeSends := ok.media(t, "200 OK of "+id), inv.media(t, "INVITE of "+id)
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
