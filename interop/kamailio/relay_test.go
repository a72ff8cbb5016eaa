package kamailio

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// relayCtl is sipd running -relay-only in the test's namespace.
type relayCtl struct {
	relay netip.Addr // the address the relay puts in SDP
	http  *http.Client
	base  string
}

// startRelay builds sipd, derives its config from the embedded default
// (failing if an expected line is gone, so a change to the default is
// noticed), starts it -relay-only in the namespace and waits until its
// HTTP API answers and its NG listener answers a ping. Its pins are
// removed with sipd -uninstall when the test ends.
func startRelay(t *testing.T, ns *netNS, dir string) *relayCtl {
	t.Helper()
	bin := buildSipd(t, dir)
	def, err := exec.Command(bin, "-print-default-config").Output()
	if err != nil {
		t.Fatalf("sipd -print-default-config: %v", err)
	}
	// The sipxdp-test-PID- prefix lets mediapath's tests remove the pins
	// of a test process that died before its cleanup.
	pin := fmt.Sprintf("/sys/fs/bpf/sipxdp-test-%d-kamailio", os.Getpid())
	text := string(def)
	for _, r := range [][2]string{
		{"listen: 127.0.0.1:8080", "listen: " + httpAddr.String()},
		// tc: the kernel hook for local senders on loopback.
		{"datapath: auto", "datapath: tc"},
		{"interfaces: []", "interfaces: [lo]"},
		{"pin_path: /sys/fs/bpf/sipxdp", "pin_path: " + pin},
		{"port_min: 20000", fmt.Sprintf("port_min: %d", relayPortMin)},
		{"port_max: 29999", fmt.Sprintf("port_max: %d", relayPortMax)},
		{"listen: 127.0.0.1:2223", "listen: " + ngAddr.String()},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("sipd's default config has no %q", r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	cfg := filepath.Join(dir, "sipd.yaml")
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs after sipd has stopped.
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "-config", cfg, "-uninstall").CombinedOutput(); err != nil {
			t.Errorf("sipd -uninstall: %v: %s", err, out)
		}
		if _, err := os.Stat(pin); err == nil {
			t.Errorf("pins left at %s after sipd -uninstall", pin)
		}
	})
	p := ns.start(t, dir, "sipd", bin, "-config", cfg, "-relay-only")
	c := &relayCtl{relay: loopback, http: ns.httpClient(), base: "http://" + httpAddr.String()}
	waitFor(t, 15*time.Second, "sipd's HTTP API on "+httpAddr.String(), func() bool {
		if p.exited() {
			t.Fatalf("sipd exited: %v\n%s", p.err, tailFile(p.log, 40))
		}
		resp, err := c.http.Get(c.base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}, func() string { return tailFile(p.log, 40) })
	// rtpengine's own ping, as Kamailio's module sends it.
	probe := ns.listenUDP(t, netip.AddrPortFrom(loopback, 0))
	buf := make([]byte, 1024)
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("sipd's NG listener %v does not answer ping\n%s", ngAddr, tailFile(p.log, 40))
		}
		cookie := fmt.Sprintf("probe%d", i)
		if _, err := probe.WriteToUDPAddrPort([]byte(cookie+" d7:command4:pinge"), ngAddr); err != nil {
			t.Fatal(err)
		}
		probe.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, _, err := probe.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue
		}
		if got, want := string(buf[:n]), cookie+" d6:result4:ponge"; got != want {
			t.Fatalf("NG ping: got %q, want %q", got, want)
		}
		break
	}
	return c
}

// buildSipd builds cmd/sipd into dir.
func buildSipd(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "/usr/local/go/bin/go"
		}
	}
	bin := filepath.Join(dir, "sipd")
	if out, err := exec.Command(goBin, "build", "-o", bin, "sipxdp/cmd/sipd").CombinedOutput(); err != nil {
		t.Fatalf("go build sipd: %v\n%s", err, out)
	}
	return bin
}

// flows reads /flows, for one call or (callID "") all.
func (c *relayCtl) flows(t *testing.T, callID string) []flowJSON {
	t.Helper()
	u := c.base + "/flows"
	if callID != "" {
		u += "?call_id=" + url.QueryEscape(callID)
	}
	resp, err := c.http.Get(u)
	if err != nil {
		t.Fatalf("GET /flows: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /flows: %s: %s", resp.Status, b)
	}
	var fs []flowJSON
	if err := json.Unmarshal(b, &fs); err != nil {
		t.Fatalf("GET /flows: %v: %s", err, b)
	}
	return fs
}
