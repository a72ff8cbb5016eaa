package kamailio

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The fork test's second callee.
var (
	uas2Addr   = netip.AddrPortFrom(loopback, 5082)
	callee2RTP = netip.AddrPortFrom(loopback, 30004)
)

// Pauses of the fork test's callees after their 183: the loser rejects
// first, the winner answers later, and the test checks the winner's media
// in between.
const (
	loserWait  = 2 * time.Second
	winnerWait = 8 * time.Second
)

// TestKamailioFork forks a call through Kamailio to two sipp callees,
// Kamailio offering once per branch with via-branch=auto-next (the
// rtpengine module's per-branch recipe, testdata/kamailio-fork.cfg).
// Both callees answer 183 with early media: each branch gets relay ports
// of its own and RTP crosses both branches both ways. The loser's 486
// makes Kamailio delete its branch by via-branch: its flows go, the
// winner's stay as they were (ports, peers, kernel path) and keep
// relaying both ways. The winner's 200, the caller's BYE, and the flows
// are gone.
func TestKamailioFork(t *testing.T) {
	kamBin, sippBin := requireTools(t)

	dir := t.TempDir()
	ns := newNetNS(t)
	ctl := startRelay(t, ns, dir, defaultRelay)
	caller := ns.listenUDP(t, callerRTP)
	callee1 := ns.listenUDP(t, calleeRTP)
	callee2 := ns.listenUDP(t, callee2RTP)

	startKamailioConfig(t, ns, dir, kamBin, "kamailio-fork.cfg", kamAddr, [][2]string{
		{"{{SIP}}", kamAddr.String()},
		{"{{NG}}", "udp:" + ngAddr.String()},
		{"{{UAS}}", uasAddr.String()},
		{"{{UAS2}}", uas2Addr.String()},
		{"{{FLAGS}}", rtpengineFlags},
	})
	uas := func(name, scenario string, at, rtp netip.AddrPort, wait time.Duration) *sippProc {
		p := startSipp(t, ns, dir, sippBin, name, 1, "-sf", testdata(t, scenario),
			"-i", at.Addr().String(), "-p", port(at),
			"-key", "rtp_ip", rtp.Addr().String(), "-key", "rtp_port", port(rtp),
			"-d", strconv.Itoa(int(wait.Milliseconds())))
		waitFor(t, 5*time.Second, "sipp "+name+" listening on "+at.String(), func() bool { return ns.udpBound(at.Port()) },
			func() string { return tailFile(p.log, 20) })
		return p
	}
	winner := uas("uas-win", "uas-fork-win.xml", uasAddr, calleeRTP, winnerWait)
	loser := uas("uas-lose", "uas-fork-lose.xml", uas2Addr, callee2RTP, loserWait)
	uac := startSipp(t, ns, dir, sippBin, "uac", 1, "-sf", testdata(t, "uac-fork.xml"),
		"-i", uacAddr.Addr().String(), "-p", port(uacAddr), "-s", "bob",
		"-d", strconv.Itoa(int(holdCall.Milliseconds())),
		"-key", "rtp_ip", callerRTP.Addr().String(), "-key", "rtp_port", port(callerRTP),
		kamAddr.String())

	// Each callee's INVITE and the caller's two 183s, told apart by To tag.
	var inv1, inv2 *sipMsg
	var early []*sipMsg
	waitFor(t, 5*time.Second, "both INVITEs and both 183s", func() bool {
		inv1, inv2 = received(winner.msgs, "INVITE "), received(loser.msgs, "INVITE ")
		early = receivedAll(uac.msgs, "SIP/2.0 183 ")
		return inv1 != nil && inv2 != nil && len(early) == 2
	}, func() string {
		return fmt.Sprintf("uac messages:\n%s\nwinner:\n%s\nloser:\n%s", tailFile(uac.msgs, 40), tailFile(winner.msgs, 20), tailFile(loser.msgs, 20))
	})
	callID := inv1.header("Call-ID")
	callee1Sends, callee2Sends := inv1.media(t, "the winner's INVITE"), inv2.media(t, "the loser's INVITE")
	var caller1Sends, caller2Sends netip.AddrPort
	for _, m := range early {
		to := m.header("To")
		switch {
		case strings.Contains(to, "SIPpTagW"):
			caller1Sends = m.media(t, "the winner's 183")
		case strings.Contains(to, "SIPpTagL"):
			caller2Sends = m.media(t, "the loser's 183")
		}
	}
	ports := []netip.AddrPort{callee1Sends, callee2Sends, caller1Sends, caller2Sends}
	t.Logf("call %s: winner branch %v/%v, loser branch %v/%v", callID, caller1Sends, callee1Sends, caller2Sends, callee2Sends)
	for _, p := range ports {
		if p.Addr() != ctl.relay || p.Port() < relayPortMin || p.Port() > relayPortMax {
			t.Fatalf("SDP points at %v, want the relay %v port %d-%d (all: %v)", p, ctl.relay, relayPortMin, relayPortMax, ports)
		}
	}
	if len(slices.CompactFunc(slices.SortedFunc(slices.Values(ports), netip.AddrPort.Compare),
		func(a, b netip.AddrPort) bool { return a == b })) != 4 {
		t.Fatalf("the branches share relay ports: %v (one offer for both, or no per-branch state)", ports)
	}

	// Early media on both branches, both ways.
	exchange(t, caller, callee1, caller1Sends, callee1Sends, 20)
	exchange(t, caller, callee2, caller2Sends, callee2Sends, 20)
	branchFlows := func(fs []flowJSON, loser bool) []string {
		var out []string
		for _, f := range fs {
			if (f.Stream >= 1<<16) == loser { // the second branch's streams (sipd/media/fork.go)
				out = append(out, fmt.Sprintf("%d %s %s %s %s", f.Stream, f.Leg, f.Component, f.Local, f.Peer))
			}
		}
		slices.Sort(out)
		return out
	}
	var fs []flowJSON
	waitFor(t, 4*time.Second, "the winner's RTP flows on the kernel path", func() bool {
		fs = ctl.flows(t, callID)
		var w []flowJSON
		for _, f := range fs {
			if f.Stream < 1<<16 {
				w = append(w, f)
			}
		}
		return kernelRTP(w)
	}, func() string { return "flows: " + js(fs) })
	winnerBefore := branchFlows(fs, false)
	if len(branchFlows(fs, true)) == 0 {
		t.Fatalf("no flows of the losing branch: %s", js(fs))
	}

	// The loser's 486: Kamailio deletes its branch by via-branch.
	waitFor(t, loserWait+5*time.Second, "the losing branch's flows gone after its 486", func() bool {
		fs = ctl.flows(t, callID)
		return len(branchFlows(fs, true)) == 0
	}, func() string { return "flows: " + js(fs) + "\nloser:\n" + tailFile(loser.msgs, 30) })
	if received(uac.msgs, "SIP/2.0 200 ") != nil {
		t.Fatalf("the winner answered before the loser's delete was checked (winnerWait %v too short?)", winnerWait)
	}
	if got := branchFlows(fs, false); !slices.Equal(got, winnerBefore) {
		t.Errorf("the winner's flows after the loser's delete:\n%v\nwant as before:\n%v", got, winnerBefore)
	}
	exchange(t, caller, callee1, caller1Sends, callee1Sends, 50)
	if fs = ctl.flows(t, callID); !kernelRTP(fs) {
		t.Errorf("the winner's RTP flows left the kernel path: %s", js(fs))
	}
	if ctl.ngCommands(t, "delete", "ok") < 1 {
		t.Error("the relay counted no delete")
	}

	// The winner's 200 (the same media), the caller's BYE.
	var ok *sipMsg
	waitFor(t, winnerWait+5*time.Second, "the winner's 200 OK at the caller", func() bool {
		ok = received(uac.msgs, "SIP/2.0 200 ")
		return ok != nil
	}, func() string { return tailFile(uac.msgs, 40) })
	if got := ok.media(t, "the 200 OK"); got != caller1Sends {
		t.Errorf("the 200 OK points the caller at %v, the winner's 183 at %v", got, caller1Sends)
	}
	exchange(t, caller, callee1, caller1Sends, callee1Sends, 20)
	if err := uac.wait(holdCall + 10*time.Second); err != nil {
		t.Fatalf("sipp UAC: %v\n%s", err, uac.errors())
	}
	for _, p := range []*sippProc{winner, loser} {
		if err := p.wait(5 * time.Second); err != nil {
			t.Fatalf("sipp UAS: %v\n%s", err, p.errors())
		}
	}
	waitFor(t, 3*time.Second, "no flows left for the call after BYE", func() bool {
		fs = ctl.flows(t, callID)
		return len(fs) == 0
	}, func() string { return "flows: " + js(fs) })
}
