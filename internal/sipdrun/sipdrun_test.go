package sipdrun

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"sipxdp/sipd"
	"sipxdp/sipd/sipconf"
)

// What Start writes must parse back to the config the caller edited:
// durations, lists and nested sections included.
func TestConfigRoundTrip(t *testing.T) {
	cfg, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Media.Mode, cfg.Media.Datapath = sipd.MediaNone, "userspace"
	cfg.Media.Timeout = sipd.Duration(7 * time.Second)
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "tls", Addr: "127.0.0.1:5061", Cert: "/c.pem", Key: "/k.pem"}}
	cfg.SIP.Registrar.MaxExpires = sipconf.Duration(2 * time.Hour)
	cfg.SIP.Protect.Exempt = append(cfg.SIP.Protect.Exempt, "10.0.0.0/8")
	cfg.Resolve()
	text, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	back, err := sipd.ParseConfig(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", back, cfg)
	}
}

func TestFreePorts(t *testing.T) {
	cfg, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}, {Transport: "tcp", Addr: "127.0.0.1:5060"}}
	if err := freePorts(cfg); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{cfg.HTTP.Listen, cfg.SIP.Listen[0].Addr} {
		if ap := netip.MustParseAddrPort(a); ap.Port() == 0 || ap.Addr() != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("%s: want a port on 127.0.0.1", a)
		}
	}
	if cfg.SIP.Listen[1].Addr != "127.0.0.1:5060" {
		t.Errorf("a set port changed: %s", cfg.SIP.Listen[1].Addr)
	}
}

func TestMetric(t *testing.T) {
	const text = `# HELP sipxdp_x help
# TYPE sipxdp_x counter
sipxdp_x 3
sipxdp_x_total{reason="a"} 4.5
sipxdp_x_total{reason="b"} 1e3 1700000000000
sipxdp_y NaN-ish
`
	for _, c := range []struct {
		series string
		want   float64
		ok     bool
	}{
		{"sipxdp_x", 3, true},
		{`sipxdp_x_total{reason="a"}`, 4.5, true},
		{`sipxdp_x_total{reason="b"}`, 1000, true},
		{`sipxdp_x_total{reason="c"}`, 0, false},
		{"sipxdp_y", 0, false},
		{"sipxdp", 0, false},
	} {
		if v, ok := metric(text, c.series); v != c.want || ok != c.ok {
			t.Errorf("%s: %v %v, want %v %v", c.series, v, ok, c.want, c.ok)
		}
	}
}

func FuzzMetric(f *testing.F) {
	f.Add("sipxdp_x 3\nsipxdp_y{a=\"b\"} 4 5\n", "sipxdp_x")
	f.Fuzz(func(t *testing.T, text, series string) {
		if v, ok := metric(text, series); !ok && v != 0 {
			t.Fatalf("absent series with value %v", v)
		}
	})
}

var (
	buildOnce sync.Once
	buildDir  string
	built     string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs sipd")
	}
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if buildDir, buildErr = os.MkdirTemp("", "sipdrun-test-"); buildErr == nil {
			built, buildErr = Build(ctx, buildDir)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// A sipd that dies at start is an error that carries its log.
func TestStartExits(t *testing.T) {
	bin := binary(t)
	cfg, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}}
	_, err = Start(context.Background(), cfg, Options{Binary: bin, Dir: t.TempDir(), Args: []string{"-no-such-flag"}})
	if err == nil || !strings.Contains(err.Error(), "exited at start") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("start with a bad flag: %v", err)
	}
}

// The real binary: started on free loopback ports, ready, killed,
// restarted on the same directory with a new log, and stopped.
func TestStartKillRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := binary(t)
	cfg, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}}
	cfg.Media.Mode = sipd.MediaNone
	s, err := Start(ctx, cfg, Options{Binary: bin, Dir: dir, Users: "alice password=x\n", NoFile: 4000,
		Env: []string{"SIPDRUN_TEST_MARK=1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	// prlimit and the environment reach sipd itself: the PID is its own.
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", s.PID()))
	if err != nil || !regexp.MustCompile(`Max open files\s+4000\s+4000`).Match(limits) {
		t.Errorf("sipd's limits (%v):\n%s", err, limits)
	}
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", s.PID())); err != nil || !strings.Contains(string(env), "SIPDRUN_TEST_MARK=1\x00") {
		t.Errorf("sipd's environment lacks the mark (%v)", err)
	}
	if s.SIP.Port() == 0 || s.Cfg.SIP.UsersFile == "" || s.Cfg.StateDir != dir+"/state" {
		t.Fatalf("start left sip %s, users %q, state %q", s.SIP, s.Cfg.SIP.UsersFile, s.Cfg.StateDir)
	}
	h, err := s.Health(ctx)
	if err != nil || h.Status != "ok" || h.SIP == nil || h.SIP.Users != 1 {
		t.Fatalf("health %+v, %v; want ok with one user", h, err)
	}
	// Whatever the series are called, the first sample is readable.
	b, err := s.Get(ctx, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var series, value string
	for line := range strings.SplitSeq(string(b), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			series, value, _ = strings.Cut(line, " ")
			break
		}
	}
	if v, ok, err := s.Metric(ctx, series); err != nil || !ok || strconv.FormatFloat(v, 'g', -1, 64) != value {
		t.Fatalf("metric %s: %v %v %v, want %s", series, v, ok, err, value)
	}
	firstLog := s.LogPath
	s.Kill()
	select {
	case <-s.Exited():
	default:
		t.Fatal("Kill returned before sipd exited")
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if s.LogPath == firstLog {
		t.Errorf("restart wrote to the first log %s", firstLog)
	}
	if _, err := s.Health(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
}
