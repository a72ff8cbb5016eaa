package kamailio

import (
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// sippCall is one call from a sipp caller to a sipp callee through
// Kamailio at kam: the callee's SIP at uasAt, the caller's at uacAt, each
// told to announce its RTP socket, the caller hanging up after holdCall.
type sippCall struct {
	uas, uac *sippProc
	// inv is the INVITE the callee got, ok the 200 OK the caller got:
	// the SDP each side was given.
	inv, ok *sipMsg
}

// placeCall starts the sipp callee (in calleeNS) and caller (in
// callerNS) and waits until the callee has the INVITE and the caller the
// 200 OK.
func placeCall(t *testing.T, dir, sippBin string, callerNS, calleeNS *netNS, kam, uacAt, uasAt, callerRTPAt, calleeRTPAt netip.AddrPort) *sippCall {
	t.Helper()
	c := &sippCall{}
	c.uas = startSipp(t, calleeNS, dir, sippBin, "uas", 1, "-sf", testdata(t, "uas.xml"),
		"-i", uasAt.Addr().String(), "-p", port(uasAt),
		"-key", "rtp_ip", calleeRTPAt.Addr().String(), "-key", "rtp_port", port(calleeRTPAt))
	waitFor(t, 5*time.Second, "sipp UAS listening on "+uasAt.String(), func() bool { return calleeNS.udpBound(uasAt.Port()) },
		func() string { return tailFile(c.uas.log, 20) })
	c.uac = startSipp(t, callerNS, dir, sippBin, "uac", 1, "-sf", testdata(t, "uac.xml"),
		"-i", uacAt.Addr().String(), "-p", port(uacAt), "-s", "bob",
		"-d", strconv.Itoa(int(holdCall.Milliseconds())),
		"-key", "rtp_ip", callerRTPAt.Addr().String(), "-key", "rtp_port", port(callerRTPAt),
		kam.String())
	waitFor(t, 5*time.Second, "the INVITE at the UAS and the 200 OK at the UAC", func() bool {
		if c.inv == nil {
			c.inv = received(c.uas.msgs, "INVITE ")
		}
		if c.ok == nil {
			c.ok = received(c.uac.msgs, "SIP/2.0 200 ")
		}
		return c.inv != nil && c.ok != nil
	}, func() string {
		return fmt.Sprintf("uas messages:\n%s\nuac messages:\n%s", tailFile(c.uas.msgs, 40), tailFile(c.uac.msgs, 40))
	})
	return c
}

// media is the call's Call-ID and where each side was told to send its
// RTP: the caller by the 200 OK, the callee by the INVITE.
func (c *sippCall) media(t *testing.T) (callID string, callerSends, calleeSends netip.AddrPort) {
	t.Helper()
	callID = c.inv.header("Call-ID")
	calleeSends = c.inv.media(t, "the INVITE the callee got")
	callerSends = c.ok.media(t, "the 200 OK the caller got")
	t.Logf("call %s: caller sends to %v, callee to %v", callID, callerSends, calleeSends)
	return callID, callerSends, calleeSends
}

// hangUp waits for the caller's BYE after the hold: both sipp end
// successfully, the callee got the BYE, and the relay's flows for the
// call are gone.
func (c *sippCall) hangUp(t *testing.T, ctl *relayCtl, callID string) {
	t.Helper()
	if c.uac.exited() {
		t.Fatalf("the caller ended before the RTP checks were done (hold %v too short?)", holdCall)
	}
	if err := c.uac.wait(holdCall + 10*time.Second); err != nil {
		t.Fatalf("sipp UAC: %v\n%s", err, c.uac.errors())
	}
	if err := c.uas.wait(5 * time.Second); err != nil {
		t.Fatalf("sipp UAS: %v\n%s", err, c.uas.errors())
	}
	if bye := received(c.uas.msgs, "BYE "); bye == nil {
		t.Fatal("the callee got no BYE")
	}
	var fs []flowJSON
	waitFor(t, 3*time.Second, "no flows left for the call after BYE", func() bool {
		fs = ctl.flows(t, callID)
		return len(fs) == 0
	}, func() string { return "flows: " + js(fs) })
}
