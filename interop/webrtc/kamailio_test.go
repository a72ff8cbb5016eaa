package webrtc

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sipxdp/internal/browser"
	"sipxdp/internal/netns"
	"sipxdp/internal/sipdtest"
	"sipxdp/internal/sipua"
	"sipxdp/internal/testenv"
)

// What Kamailio asks of sipd's relay for each side, as Kamailio's WebRTC
// configs write it (issue 13): toward the browser ICE (sipd is ICE-lite),
// DTLS-SRTP with sipd passive and rtcp-mux; toward the phone plain RTP
// with RTP and RTCP on separate ports.
const (
	flagsCommon    = "trust-address replace-origin replace-session-connection"
	flagsToBrowser = flagsCommon + " ICE=force DTLS=passive RTP/SAVPF rtcp-mux-offer generate-mid"
	flagsToPhone   = flagsCommon + " ICE=remove RTP/AVP rtcp-mux-demux"
)

// Where Kamailio and sipd listen in the relay namespace (new and empty,
// so fixed ports are free).
const (
	kamWSPort = 8080
	ngAddr    = "127.0.0.1:22230"
)

// TestKamailioBrowser: the same browser and phone as TestBrowserCallsPhone,
// with Kamailio in sipd's place: Kamailio 5.6 takes the browser's SIP
// over ws (websocket and xhttp modules) and drives sipd -relay-only over
// NG with its rtpengine module, asking for ICE and DTLS-SRTP toward the
// browser and plain RTP toward the phone. The same checks pass: answered,
// the browser's beeps at bob as PCMU from the relay, bob's tone in the
// browser's stats, BYE from either side, no flows left.
func TestKamailioBrowser(t *testing.T) {
	e := newKamailioEnv(t, true)
	e.call(t, true)
	e.call(t, false)
}

// TestKamailioGateway checks the Kamailio configuration itself, with no
// relay: Kamailio passes the SDP through, bob answers with the test's
// gateway (as TestBrowserCallsGateway), and the call over Kamailio's
// WebSocket gets its media both ways and ends by BYE from either side.
// When TestKamailioBrowser fails and this passes, look at the relay.
func TestKamailioGateway(t *testing.T) {
	e := newKamailioEnv(t, false)
	e.callGateway(t, true)
	e.callGateway(t, false)
}

// newKamailioEnv starts Kamailio, with sipd -relay-only behind it when
// relay is set (else Kamailio leaves the SDP alone), bob (not
// registered: Kamailio sends every INVITE to it) and the browser
// connected to Kamailio over ws (no registrar, so no REGISTER).
func newKamailioEnv(t *testing.T, relay bool) *callEnv {
	t.Helper()
	bin := requireBrowser(t)
	kam, err := exec.LookPath("kamailio")
	if err != nil {
		testenv.Unavailable(t, "kamailio is not installed (Debian package kamailio; scripts/install-deps.sh installs it)")
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/kamailio/modules/websocket.so"); err != nil {
		if _, err2 := os.Stat("/usr/lib/kamailio/modules/websocket.so"); err2 != nil {
			testenv.Unavailable(t, "Kamailio's websocket module is not installed (Debian package kamailio-websocket-modules; scripts/install-deps.sh installs it)")
		}
	}
	tp := netns.New(t, netns.Config{Prefix: nsPrefix, Net4: net4})
	e := &callEnv{tp: tp, relay: tp.V4.RelayA}

	if relay {
		cfg := sipdtest.Config(t)
		cfg.HTTP.Listen = "127.0.0.1:18080"
		cfg.NG.Listen = ngAddr
		cfg.Log.Level = "debug"
		cfg.Media.Datapath = "userspace"
		cfg.Media.Addresses[0].Local = e.relay.String()
		cfg.Media.Addresses[0].PortMin, cfg.Media.Addresses[0].PortMax = relayPortMin, relayPortMax
		e.sipd = sipdtest.Start(t, cfg, sipdtest.Options{NS: tp.Relay, Args: []string{"-relay-only"}})
	}

	udp := netip.AddrPortFrom(tp.V4.RelayB, 5060)
	phone := netip.AddrPortFrom(tp.V4.Callee, 5060)
	startKamailio(t, tp, kam, relay, map[string]string{
		"{{UDP}}":        udp.String(),
		"{{WS}}":         netip.AddrPortFrom(tp.V4.RelayA, kamWSPort).String(),
		"{{NG}}":         ngAddr,
		"{{PHONE}}":      phone.String(),
		"{{TO_BROWSER}}": flagsToBrowser,
		"{{TO_PHONE}}":   flagsToPhone,
	})

	conn, err := tp.Callee.ListenUDP(phone)
	if err != nil {
		t.Fatal(err)
	}
	e.bob = sipua.New(t, conn, udp)
	e.page = openPage(t, bin, tp.Caller, url.Values{
		"ws":       {fmt.Sprintf("ws://%s", netip.AddrPortFrom(tp.V4.RelayA, kamWSPort))},
		"user":     {"alice"},
		"password": {alicePW},
		"domain":   {domain},
		"register": {"0"},
		"debug":    {"1"},
	})
	e.page.Await(15*time.Second, []string{"connected"}, "disconnected")
	return e
}

// startKamailio writes testdata/kamailio.cfg with its placeholders filled
// in and runs Kamailio in the relay namespace, in the foreground, one
// worker per transport, with its rtpengine module when relay is set; it is ready when it answers an OPTIONS over UDP
// (405 from the config). It is stopped by its PID when the test ends.
func startKamailio(t *testing.T, tp *netns.Topo, bin string, relay bool, fill map[string]string) {
	t.Helper()
	tmpl, err := os.ReadFile(filepath.Join("testdata", "kamailio.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(tmpl)
	for k, v := range fill {
		if !strings.Contains(text, k) {
			t.Fatalf("kamailio.cfg has no %s", k)
		}
		text = strings.ReplaceAll(text, k, v)
	}
	if i := strings.Index(text, "{{"); i >= 0 {
		t.Fatalf("kamailio.cfg: placeholder left: %.20s", text[i:])
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "kamailio.log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	args := []string{"-f", path, "-DD", "-E", "-Y", dir, "-P", filepath.Join(dir, "kamailio.pid"), "-m", "32", "-M", "8"}
	if relay {
		args = append(args, "-A", "WITH_RTPENGINE")
	}
	cmd := tp.Relay.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kamailio: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		// Kamailio's main process takes its workers down on SIGTERM.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("kamailio (pid %d) did not stop on SIGTERM in 5 s; killing it", cmd.Process.Pid)
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("kamailio log %s, last lines:\n%s", logPath, browser.TailFile(logPath, 60))
		}
	})

	probe, err := tp.Callee.ListenUDP(netip.AddrPortFrom(tp.V4.Callee, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	ua := sipua.New(t, probe, netip.MustParseAddrPort(fill["{{UDP}}"]))
	for i := 0; ; i++ {
		select {
		case <-done:
			t.Fatalf("kamailio exited: %v\n%s", cmd.ProcessState, browser.TailFile(logPath, 40))
		default:
		}
		if i == 50 {
			t.Fatalf("kamailio did not answer OPTIONS in 5 s\n%s", browser.TailFile(logPath, 40))
		}
		ua.Send(ua.Request(sipua.Msg{Method: "OPTIONS", RURI: "sip:" + fill["{{UDP}}"], From: "sip:probe@" + domain,
			To: "sip:" + fill["{{UDP}}"], CallID: fmt.Sprintf("probe-%d", i), CSeq: i + 1}))
		if ua.Response(100*time.Millisecond) != nil {
			return
		}
	}
}
