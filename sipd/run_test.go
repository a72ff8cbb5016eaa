package sipd

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"sipxdp/internal/freeport"
)

// testConfig is the embedded default, parsed, for a test to edit.
func testConfig(t *testing.T) *Config {
	t.Helper()
	cfg, err := ParseConfig(DefaultConfigYAML())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	p, err := freeport.Loopback(network)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRunServesHealth starts the whole daemon on free loopback ports, in
// signaling-only mode and with the userspace relay, reads /health and
// /metrics, and checks that cancelling the context stops everything.
func TestRunServesHealth(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []string{MediaNone, MediaAll} {
		t.Run(mode, func(t *testing.T) {
			cfg := testConfig(t)
			httpPort := freePort(t, "tcp")
			sipPort := freePort(t, "udp")
			cfg.HTTP.Listen = fmt.Sprintf("127.0.0.1:%d", httpPort)
			for i := range cfg.SIP.Listen {
				cfg.SIP.Listen[i].Addr = fmt.Sprintf("127.0.0.1:%d", sipPort)
			}
			cfg.Media.Mode, cfg.Media.Datapath = mode, "userspace"
			// Profiles only when asked for: on in one run, default off in the other.
			pprofOn := mode == MediaAll
			cfg.HTTP.Pprof = pprofOn
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			defer startRun(t, cfg)()
			base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
			var h Health
			deadline := time.Now().Add(5 * time.Second)
			for {
				resp, err := http.Get(base + "/health")
				if err == nil {
					err = json.NewDecoder(resp.Body).Decode(&h)
					resp.Body.Close()
					if err != nil {
						t.Fatal(err)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no /health: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			wantPath := "userspace"
			if mode == MediaNone {
				wantPath = "none"
			}
			if h.Status != "ok" || h.SIP == nil || h.Media.Path != wantPath {
				t.Fatalf("health = %+v (sip %v), want ok, sip stats, media path %s", h, h.SIP, wantPath)
			}
			resp, err := http.Get(base + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, want := range []string{"sipxdp_sip_registrations 0", `sipxdp_build_info{`, `sipxdp_media_path_info{path="` + wantPath + `",reason=`,
				`sipxdp_sip_refused_total{reason="route_token_invalid"} 0`, `sipxdp_sip_refused_total{reason="digest_uri_mismatch"} 0`} {
				if !strings.Contains(string(b), want) {
					t.Errorf("/metrics lacks %q", want)
				}
			}
			// The relay's latching counters, when there is a relay.
			for _, want := range []string{`sipxdp_media_foreign_dropped_total{reason="locked"} 0`, `sipxdp_media_latch_total{event="relatched"} 0`} {
				if strings.Contains(string(b), want) != (mode == MediaAll) {
					t.Errorf("/metrics with media.mode %s: has %q = %v", mode, want, mode != MediaAll)
				}
			}
			resp, err = http.Get(base + "/debug/pprof/heap?debug=1")
			if err != nil {
				t.Fatal(err)
			}
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if pprofOn && (resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "# HeapAlloc")) {
				t.Errorf("http.pprof true: /debug/pprof/heap = %d %.80q", resp.StatusCode, b)
			}
			if !pprofOn && resp.StatusCode != http.StatusNotFound {
				t.Errorf("http.pprof false: /debug/pprof/heap = %d, want 404", resp.StatusCode)
			}
			// The SIP side answers: OPTIONS to the proxy gets 200.
			c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", sipPort))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			lp := c.LocalAddr().(*net.UDPAddr).Port
			opt := fmt.Sprintf("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-run-1;rport\r\n"+
				"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: run-test-1\r\n"+
				"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", sipPort, lp)
			if _, err := c.Write([]byte(opt)); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 2048)
			n, err := c.Read(buf)
			if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
				t.Fatalf("OPTIONS answer %q, %v", buf[:n], err)
			}
		})
	}
}
