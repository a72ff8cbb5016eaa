package sipdrun

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

func TestLoopback(t *testing.T) {
	for _, mode := range []string{"none", "all"} {
		listen := sipconf.Listen{Transport: "tcp", Addr: "127.0.0.1:0"}
		cfg, err := Loopback(listen, mode)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.HTTP.Listen != "127.0.0.1:0" || !cfg.HTTP.Pprof || len(cfg.SIP.Listen) != 1 || cfg.SIP.Listen[0] != listen ||
			cfg.Media.Mode != mode || cfg.Media.Datapath != "userspace" || cfg.Log.Level != "warn" {
			t.Errorf("Loopback(%v, %s): http %q pprof %v, sip %v, media %s/%s, log %s", listen, mode, cfg.HTTP.Listen, cfg.HTTP.Pprof,
				cfg.SIP.Listen, cfg.Media.Mode, cfg.Media.Datapath, cfg.Log.Level)
		}
	}
}

func TestWorkdir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(t.TempDir(), "a", "b")
	tests := []struct {
		name, dir string
		ok        bool
	}{
		{"nested dir is made", nested, true},
		{"empty dir: a temporary one", "", true},
		{"a file is no dir", filepath.Join(file, "x"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, bin, err := Workdir(context.Background(), tt.dir, "sipdrun-test-", "/given/sipd")
			if (err == nil) != tt.ok {
				t.Fatalf("Workdir(%q) = %q, %v; want ok %v", tt.dir, dir, err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if tt.dir == "" {
				defer os.RemoveAll(dir)
			} else if dir != tt.dir {
				t.Errorf("dir %q, want %q", dir, tt.dir)
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || bin != "/given/sipd" {
				t.Errorf("dir %q (%v), bin %q: want a directory and the given binary", dir, err, bin)
			}
		})
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
	if cfg.HTTP.Listen == cfg.SIP.Listen[0].Addr {
		t.Errorf("one port for http and sip: %s", cfg.HTTP.Listen)
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

// The exposition as client_golang writes it: HELP and TYPE lines, escaped
// label values, labels in its order, a histogram and a summary.
const exposition = `# HELP sipxdp_build_info Build of sipd: \\ and \n escaped.
# TYPE sipxdp_build_info gauge
sipxdp_build_info{goversion="go1.26",version="v0.1"} 1
# HELP sipxdp_x_total A counter.
# TYPE sipxdp_x_total counter
sipxdp_x_total{reason="a"} 4.5
sipxdp_x_total{reason="b"} 1e3 1700000000000
sipxdp_x_total{reason="quote \" back \\ nl \n"} 7
# HELP sipxdp_setup_seconds Call setup.
# TYPE sipxdp_setup_seconds histogram
sipxdp_setup_seconds_bucket{path="tc",le="0.005"} 1
sipxdp_setup_seconds_bucket{path="tc",le="0.5"} 3
sipxdp_setup_seconds_bucket{path="tc",le="+Inf"} 4
sipxdp_setup_seconds_sum{path="tc"} 2.25
sipxdp_setup_seconds_count{path="tc"} 4
# HELP sipxdp_gc_seconds A summary.
# TYPE sipxdp_gc_seconds summary
sipxdp_gc_seconds{quantile="0.5"} 0.001
sipxdp_gc_seconds_sum 0.01
sipxdp_gc_seconds_count 9
# TYPE sipxdp_plain untyped
sipxdp_plain 3
`

func TestMetric(t *testing.T) {
	for _, c := range []struct {
		series string
		want   float64
		ok     bool
	}{
		{"sipxdp_plain", 3, true},
		{`sipxdp_build_info{version="v0.1",goversion="go1.26"}`, 1, true}, // any label order
		{`sipxdp_build_info{version="v0.1"}`, 0, false},                   // labels must all match
		{`sipxdp_x_total{reason="a"}`, 4.5, true},
		{`sipxdp_x_total{reason="b"}`, 1000, true},
		{`sipxdp_x_total{reason="quote \" back \\ nl \n"}`, 7, true},
		{`sipxdp_x_total{reason="c"}`, 0, false},
		{`sipxdp_x_total`, 0, false},
		{`sipxdp_setup_seconds_bucket{path="tc",le="0.5"}`, 3, true},
		{`sipxdp_setup_seconds_bucket{le="5e-3",path="tc"}`, 1, true},
		{`sipxdp_setup_seconds_bucket{path="tc",le="+Inf"}`, 4, true},
		{`sipxdp_setup_seconds_sum{path="tc"}`, 2.25, true},
		{`sipxdp_setup_seconds_count{path="tc"}`, 4, true},
		{`sipxdp_setup_seconds{path="tc"}`, 0, false},
		{`sipxdp_gc_seconds{quantile="0.5"}`, 0.001, true},
		{`sipxdp_gc_seconds_count`, 9, true},
		{"sipxdp", 0, false},
	} {
		v, ok, err := metric([]byte(exposition), c.series)
		if err != nil || v != c.want || ok != c.ok {
			t.Errorf("%s: %v %v %v, want %v %v", c.series, v, ok, err, c.want, c.ok)
		}
	}
	for _, bad := range []string{"", "x{", `x{a="b"} 1`, "x 1"} {
		if _, _, err := metric([]byte(exposition), bad); err == nil {
			t.Errorf("series %q: no error", bad)
		}
	}
	if _, _, err := metric([]byte("sipxdp_y NaN-ish\n"), "sipxdp_y"); err == nil {
		t.Error("a malformed exposition: no error")
	}
}

func FuzzMetric(f *testing.F) {
	f.Add(exposition, "sipxdp_x_total{reason=\"a\"}")
	f.Add("sipxdp_x 3\nsipxdp_y{a=\"b\"} 4 5\n", "sipxdp_x")
	f.Fuzz(func(t *testing.T, text, series string) {
		if v, ok, err := metric([]byte(text), series); !ok && v != 0 {
			t.Fatalf("absent series with value %v (%v)", v, err)
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

// loopbackConfig is the default on free loopback ports, UDP only.
func loopbackConfig(t *testing.T) *sipd.Config {
	t.Helper()
	cfg, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}}
	return cfg
}

// A sipd that dies at start is an error that carries its log.
func TestStartExits(t *testing.T) {
	bin := binary(t)
	cfg := loopbackConfig(t)
	_, err := Start(context.Background(), cfg, Options{Binary: bin, Dir: t.TempDir(), Args: []string{"-no-such-flag"}})
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
	cfg := loopbackConfig(t)
	cfg.Media.Mode = sipd.MediaNone
	// sipd refuses an unknown SIPD_ variable: one in the caller's
	// environment must not reach it.
	t.Setenv("SIPD_NO_SUCH_KEY", "1")
	o := Options{Binary: bin, Dir: dir, Users: "alice password=x\n", NoFile: 4000,
		Env: []string{"SIPDRUN_TEST_MARK=1"}, Wrap: []string{"env", "SIPDRUN_WRAPPED=1"}}
	if os.Geteuid() == 0 {
		o.Owner = &Owner{UID: 61237, GID: 61237}
	}
	s, err := Start(ctx, cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	// prlimit, the wrapper and the environment reach sipd itself: the
	// PID is its own.
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", s.PID()))
	if err != nil || !regexp.MustCompile(`Max open files\s+4000\s+4000`).Match(limits) {
		t.Errorf("sipd's limits (%v):\n%s", err, limits)
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", s.PID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SIPDRUN_TEST_MARK=1", "SIPDRUN_WRAPPED=1"} {
		if !strings.Contains("\x00"+string(env), "\x00"+want+"\x00") {
			t.Errorf("sipd's environment lacks %s", want)
		}
	}
	if strings.Contains(string(env), "SIPD_NO_SUCH_KEY") {
		t.Error("the caller's SIPD_ variable reached sipd")
	}
	for _, p := range []string{s.ConfigPath, s.Cfg.SIP.UsersFile} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); o.Owner != nil && (int(st.Uid) != o.Owner.UID || int(st.Gid) != o.Owner.GID) {
			t.Errorf("%s is %d:%d, want the owner's %d:%d", p, st.Uid, st.Gid, o.Owner.UID, o.Owner.GID)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	if s.SIP.Port() == 0 || s.Cfg.SIP.UsersFile == "" || s.Cfg.StateDir != dir+"/state" {
		t.Fatalf("start left sip %s, users %q, state %q", s.SIP, s.Cfg.SIP.UsersFile, s.Cfg.StateDir)
	}
	h, err := s.Health(ctx)
	if err != nil || h.Status != "ok" || h.SIP == nil || h.SIP.Users != 1 {
		t.Fatalf("health %+v, %v; want ok with one user", h, err)
	}
	// The build info series reads as written, labels and all; it is one
	// that does not change between two scrapes.
	b, err := s.Get(ctx, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var series, value string
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "sipxdp_build_info{") {
			series, value, _ = strings.Cut(line, " ")
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
