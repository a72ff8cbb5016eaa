package sipserver

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func transports(t *testing.T, f func(t *testing.T, tr string)) {
	for _, tr := range []string{"udp", "tcp"} {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

func TestSippRegister(t *testing.T) {
	needSipp(t)
	transports(t, func(t *testing.T, tr string) {
		s := testServer(t, nil)
		port := freePort(t)
		register(t, s, tr, "bob", port)
		b := regs(t, s)
		if len(b) != 1 || b[0].AoR != "bob" || !strings.Contains(b[0].Contact, strconv.Itoa(port)) ||
			!strings.EqualFold(b[0].Transport, tr) {
			t.Fatalf("bindings after REGISTER: %+v", b)
		}
		st := s.Stats()
		if st.Registrations != 1 || st.Core.Challenges != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestSippRegisterWrongPassword(t *testing.T) {
	needSipp(t)
	s := testServer(t, nil)
	p := startSipp(t, 10*time.Second, "-sf", scenario("register.xml"), "-t", "u1", "-i", "127.0.0.1",
		"-p", strconv.Itoa(freePort(t)), "-s", "bob", "-au", "bob", "-ap", "wrong", serverAddr(t, s, "udp").String())
	if err := p.wait(t); err == nil {
		t.Fatal("registration with a wrong password succeeded")
	}
	if n := len(regs(t, s)); n != 0 || s.Stats().Core.AuthFailures == 0 {
		t.Fatalf("%d bindings, stats %+v", n, s.Stats().Core)
	}
}

func TestSippCall(t *testing.T) {
	needSipp(t)
	transports(t, func(t *testing.T, tr string) {
		s := testServer(t, nil)
		uasPort := freePort(t)
		register(t, s, tr, "bob", uasPort)
		uas := startSipp(t, 20*time.Second, "-sf", scenario("uas_call.xml"), "-t", sippTransport(tr),
			"-i", "127.0.0.1", "-p", strconv.Itoa(uasPort))
		time.Sleep(300 * time.Millisecond) // let the UAS bind
		// -auth_uri: sipp's digest uri is remote_ip:remote_port unless
		// told, and sipd wants the Request-URI (RFC 3261 §22.4).
		uac := startSipp(t, 20*time.Second, "-sf", scenario("uac_call.xml"), "-t", sippTransport(tr),
			"-i", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), "-s", "bob", "-au", "alice", "-ap", "alicepw",
			"-auth_uri", "bob@"+serverAddr(t, s, tr).String(), serverAddr(t, s, tr).String())
		if err := uac.wait(t); err != nil {
			t.Fatalf("uac: %v", err)
		}
		if err := uas.wait(t); err != nil {
			t.Fatalf("uas: %v", err)
		}
		st := s.Stats()
		if st.CallsCompleted != 1 || st.ActiveCalls != 0 {
			t.Fatalf("calls: %+v", st)
		}
		cdr, _ := os.ReadFile(s.cfg.Dialog.CDRFile)
		if !strings.Contains(string(cdr), `"status":200`) || !strings.Contains(string(cdr), `"end_reason":"bye"`) {
			t.Fatalf("cdr %q", cdr)
		}
	})
}

func TestSippCancel(t *testing.T) {
	needSipp(t)
	transports(t, func(t *testing.T, tr string) {
		s := testServer(t, nil)
		uasPort := freePort(t)
		register(t, s, tr, "bob", uasPort)
		uas := startSipp(t, 20*time.Second, "-sf", scenario("uas_cancel.xml"), "-t", sippTransport(tr),
			"-i", "127.0.0.1", "-p", strconv.Itoa(uasPort))
		time.Sleep(300 * time.Millisecond)
		uac := startSipp(t, 20*time.Second, "-sf", scenario("uac_cancel.xml"), "-t", sippTransport(tr),
			"-i", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), "-s", "bob", "-au", "alice", "-ap", "alicepw",
			"-auth_uri", "bob@"+serverAddr(t, s, tr).String(), serverAddr(t, s, tr).String())
		if err := uac.wait(t); err != nil {
			t.Fatalf("uac: %v", err)
		}
		if err := uas.wait(t); err != nil {
			t.Fatalf("uas: %v", err)
		}
		st := s.Stats()
		if st.CallsFailed != 1 || st.ActiveCalls != 0 || st.CallsCompleted != 0 {
			t.Fatalf("calls: %+v", st)
		}
	})
}

func TestSippKeepalive(t *testing.T) {
	needSipp(t)
	transports(t, func(t *testing.T, tr string) {
		s := testServer(t, nil)
		p := startSipp(t, 15*time.Second, "-sf", scenario("keepalive.xml"), "-t", sippTransport(tr),
			"-i", "127.0.0.1", "-p", strconv.Itoa(freePort(t)), "-s", "alice", "-m", "50", "-r", "100",
			serverAddr(t, s, tr).String())
		if err := p.wait(t); err != nil {
			t.Fatal(err)
		}
		if n := s.Stats().Core.Keepalives; n != 50 {
			t.Fatalf("%d keep-alives counted, want 50", n)
		}
		if tr == "udp" && s.fastKeepalives.Load() != 50 {
			t.Fatalf("UDP keep-alives off the fast path: %d of 50", s.fastKeepalives.Load())
		}
	})
}
