// Package sipdtest runs the real sipd binary for tests: built once per
// test process, started on a configuration the test edits as Go values
// (derived from the embedded default), optionally inside a network
// namespace, under a lowered RLIMIT_NOFILE or as another user with chosen
// capabilities, and stopped by its PID. It wraps bench/sipload's Launch,
// the daemon harness the benchmarks use.
package sipdtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"sipxdp/bench/sipload"
	"sipxdp/internal/netns"
	"sipxdp/sipd"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// Binary builds sipd once for the test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "sipdtest-")
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		buildBin, buildErr = sipload.BuildSipd(ctx, buildDir)
		if buildErr == nil {
			// MkdirTemp makes it 0700: a sipd run as another user
			// (Options.As) must reach the binary.
			buildErr = os.Chmod(buildDir, 0o755)
		}
	})
	if buildErr != nil {
		t.Fatalf("build sipd: %v", buildErr)
	}
	return buildBin
}

// Config returns the embedded default configuration, parsed.
func Config(t testing.TB) *sipd.Config {
	t.Helper()
	cfg, err := sipd.ParseConfig(sipd.DefaultConfigYAML())
	if err != nil {
		t.Fatalf("default config: %v", err)
	}
	return cfg
}

// Options of Start.
type Options struct {
	// NS runs sipd inside this namespace (nil: the test's own).
	NS *netns.NS
	// NoFile lowers sipd's RLIMIT_NOFILE (0: inherited).
	NoFile uint64
	// Args are extra command-line arguments, such as -relay-only.
	Args []string
	// Dir holds the config, users file and log (empty: a new t.TempDir).
	// Restarting on the same Dir keeps whatever sipd keeps there.
	Dir string
	// Users are written to a users file that the config then names, as
	// name -> password.
	Users map[string]string
	// As runs sipd as another user (nil: as the test process).
	As *Cred
}

// Cred is a user sipd runs as, with only the capabilities listed, as a
// systemd unit's User= and AmbientCapabilities= would run it. The uid
// needs no passwd entry.
type Cred struct {
	UID, GID int
	// Caps are capability names as setpriv spells them ("bpf",
	// "net_admin"); none leaves sipd no capabilities at all.
	Caps []string
}

// Setpriv is the setpriv command line that runs a program as c: every
// capability outside Caps is dropped from the bounding set too, and
// no_new_privs is set, as a hardened unit sets NoNewPrivileges=.
func (c Cred) Setpriv() []string {
	caps := "-all"
	for _, x := range c.Caps {
		caps += ",+" + x
	}
	return []string{"setpriv", "--reuid", strconv.Itoa(c.UID), "--regid", strconv.Itoa(c.GID), "--clear-groups",
		"--bounding-set", caps, "--inh-caps", caps, "--ambient-caps", caps, "--no-new-privs", "--"}
}

// Sipd is a running sipd child.
type Sipd struct {
	*sipload.Daemon
	t      testing.TB
	Cfg    *sipd.Config
	Dir    string
	opt    Options
	client *http.Client
}

// Start writes cfg (with the users of o) into the run directory and starts
// sipd on it; the test's cleanup stops it by its PID.
func Start(t testing.TB, cfg *sipd.Config, o Options) *Sipd {
	t.Helper()
	if o.Dir == "" {
		o.Dir = runDir(t, o.As)
	}
	if cfg.StateDir == sipd.DefaultStateDir {
		// Never the machine's own; Restart on the same Dir keeps it.
		cfg.StateDir = filepath.Join(o.Dir, "state")
		cfg.Resolve()
	}
	if len(o.Users) > 0 {
		var b strings.Builder
		for u, p := range o.Users {
			fmt.Fprintf(&b, "%s password=%s\n", u, p)
		}
		path := filepath.Join(o.Dir, "users")
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.SIP.UsersFile = path
	}
	text, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatalf("marshal config: %v", err)
	}
	// sipd must run on exactly the config the test built.
	back, err := sipd.ParseConfig(text)
	if err != nil {
		t.Fatalf("config does not survive a round trip: %v\n%s", err, text)
	}
	if again, err := yaml.Marshal(back); err != nil || string(again) != string(text) {
		t.Fatalf("config read back differs (%v):\n%s\n---\n%s", err, text, again)
	}
	cfgPath := filepath.Join(o.Dir, "sipd.yaml")
	if err := os.WriteFile(cfgPath, text, 0o600); err != nil {
		t.Fatal(err)
	}
	if o.As != nil {
		for _, p := range []string{cfgPath, cfg.SIP.UsersFile} {
			if p != "" {
				if err := os.Chown(p, o.As.UID, o.As.GID); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	s := &Sipd{t: t, Cfg: cfg, Dir: o.Dir, opt: o}
	s.launch(cfgPath)
	return s
}

func (s *Sipd) launch(cfgPath string) {
	t := s.t
	t.Helper()
	var dial func(ctx context.Context, network, addr string) (net.Conn, error)
	nsPath := ""
	if s.opt.NS != nil {
		dial, nsPath = s.opt.NS.DialContext, s.opt.NS.Path
	}
	var wrap []string
	if s.opt.As != nil {
		wrap = s.opt.As.Setpriv()
	}
	s.client = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: dial}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := sipload.Launch(ctx, sipload.LaunchConfig{
		Binary: Binary(t), ConfigPath: cfgPath, LogPath: filepath.Join(s.Dir, fmt.Sprintf("sipd-%d.log", time.Now().UnixNano())),
		HTTP: "http://" + s.Cfg.HTTP.Listen, NetNS: nsPath, Dial: dial, NoFile: s.opt.NoFile, Args: s.opt.Args,
		Uninstall: s.Cfg.Media.Mode != sipd.MediaNone && s.Cfg.Media.Datapath != "userspace",
		Wrap:      wrap,
	})
	if err != nil {
		t.Fatalf("start sipd: %v", err)
	}
	s.Daemon = d
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop sipd: %v", err)
		}
		if t.Failed() {
			t.Logf("sipd log %s:\n%s", d.LogPath, tail(d.LogPath, 6000))
		}
	})
}

// Restart starts sipd again on the same configuration and directory,
// after Stop or Kill.
func (s *Sipd) Restart() {
	s.t.Helper()
	select {
	case <-s.Exited():
	default:
		s.t.Fatal("restart: sipd is still running")
	}
	s.launch(filepath.Join(s.Dir, "sipd.yaml"))
}

// runDir is a new directory for sipd's config, log and state: the test's
// own temporary directory, or, when sipd runs as another user, one that
// user owns outside it (t.TempDir's parent is the test user's alone).
func runDir(t testing.TB, as *Cred) string {
	t.Helper()
	if as == nil {
		return t.TempDir()
	}
	return as.TempDir(t)
}

// TempDir is a new directory under the system's temporary directory,
// owned by c and removed with the test.
func (c Cred) TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sipdtest-as-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, c.UID, c.GID); err != nil {
		t.Fatal(err)
	}
	return dir
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Log returns what sipd has written to its log so far.
func (s *Sipd) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

// Do sends an API request and returns the status and body. It sends the
// configured http.token as a bearer token unless hdr has an
// Authorization entry (an empty one sends none).
func (s *Sipd) Do(method, path string, hdr map[string]string, body io.Reader) (int, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.HTTP+path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	if s.Cfg.HTTP.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.Cfg.HTTP.Token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
		if v == "" {
			req.Header.Del(k)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// GetJSON reads an API document into v, failing the test unless it
// answers 200.
func (s *Sipd) GetJSON(path string, v any) {
	s.t.Helper()
	code, b := s.Do("GET", path, nil, nil)
	if code != 200 {
		s.t.Fatalf("GET %s: %d %s", path, code, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		s.t.Fatalf("GET %s: %v\n%s", path, err, b)
	}
}

// Health reads /health.
func (s *Sipd) Health() sipd.Health {
	s.t.Helper()
	var h sipd.Health
	s.GetJSON("/health", &h)
	return h
}

// Metric reads one sample of /metrics: the value on the line that starts
// with series (name and labels as written, e.g.
// `sipxdp_sip_refused_total{reason="x"}`); ok is false when absent.
func (s *Sipd) Metric(series string) (float64, bool) {
	s.t.Helper()
	code, b := s.Do("GET", "/metrics", nil, nil)
	if code != 200 {
		s.t.Fatalf("GET /metrics: %d", code)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

// SIPAddr is the address of sipd's first listener of transport.
func (s *Sipd) SIPAddr(transport string) netip.AddrPort {
	s.t.Helper()
	for _, l := range s.Cfg.SIP.Listen {
		if strings.EqualFold(l.Transport, transport) {
			return netip.MustParseAddrPort(l.Addr)
		}
	}
	s.t.Fatalf("no %s listener in the config", transport)
	return netip.AddrPort{}
}

// GoMem reads sipd's Go heap in use, after a collection, and its
// goroutine count from the profiles; the config must set http.pprof.
func (s *Sipd) GoMem() (heapInuse int64, goroutines int) {
	s.t.Helper()
	code, b := s.Do("GET", "/debug/pprof/heap?debug=1&gc=1", nil, nil)
	if code != 200 {
		s.t.Fatalf("heap profile: %d (is http.pprof on?)", code)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			fmt.Sscan(rest, &heapInuse)
		}
	}
	code, b = s.Do("GET", "/debug/pprof/goroutine?debug=1", nil, nil)
	if code != 200 {
		s.t.Fatalf("goroutine profile: %d", code)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	fmt.Sscan(strings.TrimPrefix(first, "goroutine profile: total "), &goroutines)
	return heapInuse, goroutines
}
