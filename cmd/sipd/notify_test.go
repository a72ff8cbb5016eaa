package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sipxdp/internal/sipdtest"
	"sipxdp/ng"
	"sipxdp/sipd"
	"sipxdp/sipd/sipconf"
)

// notice is one sd_notify datagram as the service manager would read it.
type notice struct {
	fields map[string]string // READY -> 1, STATUS -> ...
	// probe is what a request to sipd's main listener got when sent at
	// once on READY=1: "" when it was answered.
	probe string
}

var notifySeq atomic.Uint64

// listenNotify opens the socket systemd would ($NOTIFY_SOCKET), in the
// abstract namespace so no path length or file is involved, and passes
// every datagram on. On READY=1 it first runs probe, before reading on.
func listenNotify(t *testing.T, probe func() string) (addr string, notices <-chan notice) {
	t.Helper()
	addr = fmt.Sprintf("@sipd-notify-test-%d-%d", os.Getpid(), notifySeq.Add(1))
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan notice, 256)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			m := notice{fields: map[string]string{}}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				k, v, _ := strings.Cut(line, "=")
				m.fields[k] = v
			}
			if m.fields["READY"] == "1" {
				m.probe = probe()
			}
			ch <- m
		}
	}()
	return addr, ch
}

func freeAddr(t *testing.T, network string) string {
	t.Helper()
	var a net.Addr
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a = c.LocalAddr()
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		a = l.Addr()
	}
	return a.String()
}

// udpAsk sends one datagram to addr and returns "" when an answer that
// starts with want comes back within 2 s, else what went wrong.
func udpAsk(addr string, msg []byte, want string) string {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		return err.Error()
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return err.Error()
	}
	if !strings.HasPrefix(string(buf[:n]), want) {
		return fmt.Sprintf("answer %.80q, want %q...", buf[:n], want)
	}
	return ""
}

// TestServiceNotify runs the sipd binary as systemd would run a
// Type=notify unit with WatchdogSec= (sipd.service and
// sipd-relay.service in packaging/) and checks what reaches $NOTIFY_SOCKET: READY=1 only
// once the role's listener answers (a request sent at once on READY=1 is
// answered), WATCHDOG=1 at half the interval of $WATCHDOG_USEC (and none
// without it), and STOPPING=1 on SIGTERM.
func TestServiceNotify(t *testing.T) {
	for _, tc := range []struct {
		name      string
		relayOnly bool
		watchdog  time.Duration
	}{
		{"proxy", false, 400 * time.Millisecond},
		{"relay-only", true, 400 * time.Millisecond},
		{"proxy without watchdog", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := sipdtest.Config(t)
			cfg.HTTP.Listen = freeAddr(t, "tcp")
			cfg.Media.Datapath = "userspace"
			// A relay range of its own, below the ephemeral ports, as the
			// other tests that run sipd pick theirs.
			_, port, _ := net.SplitHostPort(cfg.HTTP.Listen)
			var p int
			fmt.Sscan(port, &p)
			cfg.Media.Addresses[0].PortMin, cfg.Media.Addresses[0].PortMax = 20000+20*(p%600), 20000+20*(p%600)+19
			var args []string
			var probe func() string
			if tc.relayOnly {
				args = []string{"-relay-only"}
				cfg.NG.Listen = freeAddr(t, "udp")
				ping, err := ng.Encode(map[string]any{"command": "ping"})
				if err != nil {
					t.Fatal(err)
				}
				probe = func() string { return udpAsk(cfg.NG.Listen, append([]byte("c1 "), ping...), "c1 d6:result4:pong") }
			} else {
				sip := freeAddr(t, "udp")
				cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: sip}}
				probe = func() string {
					return udpAsk(sip, []byte("OPTIONS sip:"+sip+" SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-notify;rport\r\n"+
						"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:"+sip+">\r\nCall-ID: notify-test\r\n"+
						"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"), "SIP/2.0 200")
				}
			}
			addr, notices := listenNotify(t, probe)
			t.Setenv("NOTIFY_SOCKET", addr)
			t.Setenv("WATCHDOG_PID", "") // any the test runner has names another process
			t.Setenv("WATCHDOG_USEC", "")
			if tc.watchdog > 0 {
				t.Setenv("WATCHDOG_USEC", fmt.Sprint(tc.watchdog.Microseconds()))
			}
			s := sipdtest.Start(t, cfg, sipdtest.Options{Args: args})

			next := func(within time.Duration) (notice, bool) {
				select {
				case m, ok := <-notices:
					return m, ok
				case <-time.After(within):
					return notice{}, false
				}
			}
			m, ok := next(5 * time.Second)
			if !ok || m.fields["READY"] != "1" {
				t.Fatalf("first notice %v, want READY=1", m.fields)
			}
			if m.probe != "" {
				t.Fatalf("a request sent on READY=1 was not answered: %s", m.probe)
			}
			if !strings.Contains(m.fields["STATUS"], "media path userspace") {
				t.Errorf("READY's STATUS=%q, want the media path", m.fields["STATUS"])
			}

			// Two intervals: about four pings with a watchdog, none without.
			window := 2 * tc.watchdog
			if window == 0 {
				window = time.Second
			}
			pings := 0
			for end := time.Now().Add(window); ; {
				m, ok := next(time.Until(end))
				if !ok {
					break
				}
				if m.fields["WATCHDOG"] != "1" {
					t.Fatalf("notice %v while running, want only WATCHDOG=1", m.fields)
				}
				pings++
			}
			if tc.watchdog > 0 && (pings < 2 || pings > 6) {
				t.Errorf("%d WATCHDOG=1 in %v with WATCHDOG_USEC for %v, want about 4 (every %v)", pings, window, tc.watchdog, tc.watchdog/2)
			}
			if tc.watchdog == 0 && pings > 0 {
				t.Errorf("%d WATCHDOG=1 without WATCHDOG_USEC, want none", pings)
			}

			if err := s.Stop(); err != nil { // SIGTERM
				t.Fatal(err)
			}
			stopping := false
			for !stopping {
				m, ok := next(time.Second)
				if !ok {
					break
				}
				stopping = m.fields["STOPPING"] == "1"
			}
			if !stopping {
				t.Error("no STOPPING=1 on SIGTERM")
			}
		})
	}
}

// The shipped example configurations load as sipd loads them, each in its
// role.
func TestExampleConfigs(t *testing.T) {
	for _, tc := range []struct {
		path      string
		relayOnly bool
	}{
		{"../../packaging/sipd.yaml", false},
		{"../../packaging/sipd-relay.yaml", true},
	} {
		cfg, err := sipd.LoadConfig(tc.path)
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		cfg.RelayOnly = tc.relayOnly
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s in its role: %v", tc.path, err)
		}
	}
}
