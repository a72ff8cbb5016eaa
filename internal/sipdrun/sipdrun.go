// Package sipdrun runs the real sipd binary for the bench and the tests:
// on a configuration edited as a typed *sipd.Config (start from Default),
// written as YAML into a run directory, optionally inside a network
// namespace, under a lowered RLIMIT_NOFILE, with extra arguments and
// environment; it waits for /health and stops sipd by its PID.
// internal/sipdtest wraps it for tests.
package sipdrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"sipxdp/sipd"
)

// Build compiles sipd into dir and returns the binary's path. It uses the
// package path, so it works from any directory inside the module. Without
// go in $PATH (sudo's secure_path) it tries $GOROOT's, then
// /usr/local/go's.
func Build(ctx context.Context, dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "/usr/local/go/bin/go"
		}
	}
	bin := filepath.Join(dir, "sipd")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "sipxdp/cmd/sipd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build sipd (run inside the sipxdp module, or give a binary): %w\n%s", err, out)
	}
	return bin, nil
}

// Default returns the embedded default configuration, parsed, for the
// caller to edit.
func Default() (*sipd.Config, error) {
	cfg, err := sipd.ParseConfig(sipd.DefaultConfigYAML())
	if err != nil {
		return nil, fmt.Errorf("default config: %w", err)
	}
	return cfg, nil
}

// DialFunc dials the API, from inside sipd's namespace when it has one.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Options of Start.
type Options struct {
	Binary string // sipd executable
	// Dir holds the config, users file, state and log. Restarting on the
	// same Dir keeps whatever sipd keeps there.
	Dir string
	// Name names the files: Name.yaml, Name-users, Name.log and, after
	// a restart, Name-N.log (empty: "sipd").
	Name string
	// NetNS is a network namespace (/run/netns/NAME) to run sipd in, with
	// nsenter, which execs in place so the PID stays sipd's own; Dial then
	// reaches the API inside it. Empty: this namespace.
	NetNS string
	Dial  DialFunc
	// NoFile, when set, is sipd's RLIMIT_NOFILE (soft and hard), set by
	// util-linux's prlimit, which also execs in place: a test can run a
	// connection flood against a low limit cheaply.
	NoFile uint64
	Args   []string // extra command-line arguments (e.g. -relay-only)
	Env    []string // added to this process's environment
	// Users is a users file ("alice password=x" lines), written to Dir
	// and named in the config's sip.users_file.
	Users string
}

// Sipd is a running sipd child process.
type Sipd struct {
	Cfg *sipd.Config
	// HTTP is the API's base URL; SIP the first SIP listener's address.
	HTTP    string
	SIP     netip.AddrPort
	LogPath string
	opt     Options
	cfgPath string
	client  *http.Client
	cmd     *exec.Cmd
	exited  chan struct{}
	// Kernel datapaths pin maps and links, which outlive the process by
	// design; Stop removes them with "sipd -uninstall" on the same config.
	uninstall bool
	stopOnce  sync.Once
	launches  int
}

var pinSeq atomic.Uint64

// Start writes cfg into o.Dir and starts sipd on it. It fills in what
// must not be the machine's own: the default state_dir becomes Dir/state
// and the default pin path one of this process. A listen address with
// port 0 (sip.listen, http.listen) gets a port free in this namespace.
// cfg is edited in place and kept as s.Cfg.
func Start(ctx context.Context, cfg *sipd.Config, o Options) (*Sipd, error) {
	if o.Name == "" {
		o.Name = "sipd"
	}
	if cfg.StateDir == sipd.DefaultStateDir {
		cfg.StateDir = filepath.Join(o.Dir, "state")
	}
	def, err := Default()
	if err != nil {
		return nil, err
	}
	if cfg.Media.PinPath == def.Media.PinPath {
		// The sipxdp-test-PID- prefix lets mediapath's tests remove the
		// pins of a process that died before its cleanup.
		cfg.Media.PinPath = fmt.Sprintf("/sys/fs/bpf/sipxdp-test-%d-run-%d", os.Getpid(), pinSeq.Add(1))
	}
	if err := freePorts(cfg); err != nil {
		return nil, err
	}
	if o.Users != "" {
		p := filepath.Join(o.Dir, o.Name+"-users")
		if err := os.WriteFile(p, []byte(o.Users), 0o600); err != nil {
			return nil, fmt.Errorf("write users: %w", err)
		}
		cfg.SIP.UsersFile = p
	}
	cfg.Resolve()
	text, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("marshal config: %w", err)
	}
	// sipd parses what it is given; a config that does not survive the
	// round trip would fail there with a less helpful message.
	if _, err := sipd.ParseConfig(text); err != nil {
		return nil, fmt.Errorf("config does not survive a round trip: %w\n%s", err, text)
	}
	s := &Sipd{Cfg: cfg, opt: o, cfgPath: filepath.Join(o.Dir, o.Name+".yaml"), HTTP: "http://" + cfg.HTTP.Listen,
		uninstall: cfg.Media.Mode != sipd.MediaNone && cfg.Media.Datapath != "userspace"}
	if len(cfg.SIP.Listen) > 0 {
		s.SIP, _ = netip.ParseAddrPort(cfg.SIP.Listen[0].Addr)
	}
	if err := os.WriteFile(s.cfgPath, text, 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	return s, s.launch(ctx)
}

// freePorts gives each listen address with port 0 a free port; UDP and
// TCP listeners on one address share the port when it is free for both.
func freePorts(cfg *sipd.Config) error {
	for i := range cfg.SIP.Listen {
		l := &cfg.SIP.Listen[i]
		ap, err := netip.ParseAddrPort(l.Addr)
		if err != nil || ap.Port() != 0 {
			continue
		}
		network := "tcp"
		if strings.EqualFold(l.Transport, "udp") {
			network = "udp"
		}
		p, err := freePort(network, ap.Addr())
		if err != nil {
			return err
		}
		l.Addr = netip.AddrPortFrom(ap.Addr(), p).String()
	}
	if ap, err := netip.ParseAddrPort(cfg.HTTP.Listen); err == nil && ap.Port() == 0 {
		p, err := freePort("tcp", ap.Addr())
		if err != nil {
			return err
		}
		cfg.HTTP.Listen = netip.AddrPortFrom(ap.Addr(), p).String()
	}
	return nil
}

func freePort(network string, a netip.Addr) (uint16, error) {
	var c io.Closer
	var addr net.Addr
	if network == "udp" {
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			return 0, fmt.Errorf("free udp port on %s: %w", a, err)
		}
		c, addr = u, u.LocalAddr()
	} else {
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			return 0, fmt.Errorf("free tcp port on %s: %w", a, err)
		}
		c, addr = l, l.Addr()
	}
	defer c.Close()
	ap, err := netip.ParseAddrPort(addr.String())
	return ap.Port(), err
}

func (s *Sipd) command(daemon bool, extra ...string) *exec.Cmd {
	args := append([]string{s.opt.Binary, "-config", s.cfgPath}, extra...)
	if daemon && s.opt.NoFile > 0 {
		args = append([]string{"prlimit", fmt.Sprintf("--nofile=%d:%d", s.opt.NoFile, s.opt.NoFile), "--"}, args...)
	}
	if s.opt.NetNS != "" {
		args = append([]string{"nsenter", "--net=" + s.opt.NetNS}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	if len(s.opt.Env) > 0 {
		cmd.Env = append(os.Environ(), s.opt.Env...)
	}
	return cmd
}

// launch starts sipd and waits up to 15 s for its /health.
func (s *Sipd) launch(ctx context.Context) error {
	s.client = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: s.opt.Dial}}
	s.exited = make(chan struct{})
	s.stopOnce = sync.Once{}
	s.launches++
	s.LogPath = filepath.Join(s.opt.Dir, s.opt.Name+".log")
	if s.launches > 1 {
		s.LogPath = filepath.Join(s.opt.Dir, fmt.Sprintf("%s-%d.log", s.opt.Name, s.launches))
	}
	logf, err := os.Create(s.LogPath)
	if err != nil {
		return fmt.Errorf("create log: %w", err)
	}
	defer logf.Close()
	// Not CommandContext: the caller stops the child with Stop, by its PID.
	s.cmd = s.command(true, s.opt.Args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start sipd: %w", err)
	}
	exited := s.exited
	go func() { s.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := s.Health(ctx); err == nil {
			return nil
		}
		select {
		case <-s.exited:
			err := fmt.Errorf("sipd exited at start: %s", s.Tail(2000))
			// It may have pinned maps before it failed.
			return errors.Join(err, s.Stop())
		case <-ctx.Done():
			s.Stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("sipd not ready in 15 s: %s", s.Tail(2000))
		}
	}
}

// Restart starts sipd again on the same configuration and directory,
// after Stop or Kill, with a new log.
func (s *Sipd) Restart(ctx context.Context) error {
	select {
	case <-s.exited:
	default:
		return errors.New("restart: sipd is still running")
	}
	return s.launch(ctx)
}

// PID is sipd's process ID.
func (s *Sipd) PID() int { return s.cmd.Process.Pid }

// Exited is closed when the process has ended.
func (s *Sipd) Exited() <-chan struct{} { return s.exited }

// Kill ends sipd with SIGKILL, as a crash would, and waits for it. It
// leaves pinned BPF state in place (a restarted sipd picks it up); Stop
// after Kill still removes it.
func (s *Sipd) Kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Kill()
	<-s.exited
}

// Stop ends sipd: SIGTERM, then SIGKILL after 10 s; then it removes any
// pinned BPF state. Only this process is signalled, by its own PID.
func (s *Sipd) Stop() error {
	err := s.stop()
	s.stopOnce.Do(func() {
		s.client.CloseIdleConnections()
		if !s.uninstall {
			return
		}
		if out, uerr := s.command(false, "-uninstall").CombinedOutput(); uerr != nil && err == nil {
			err = fmt.Errorf("sipd -uninstall: %w\n%s", uerr, out)
		}
	})
	return err
}

func (s *Sipd) stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal sipd: %w", err)
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		return errors.New("sipd did not stop in 10 s; killed")
	}
}

// Log returns what sipd has written to its current log so far.
func (s *Sipd) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

// Tail is the last n bytes of the log, for a failure message.
func (s *Sipd) Tail(n int) string {
	l := s.Log()
	return l[max(0, len(l)-n):]
}

// Do sends an API request and returns the status and body. It sends the
// configured http.token as a bearer token unless hdr has an Authorization
// entry (an empty one sends none).
func (s *Sipd) Do(ctx context.Context, method, path string, hdr map[string]string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.HTTP+path, body)
	if err != nil {
		return 0, nil, err
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
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, b, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp.StatusCode, b, nil
}

// Get reads an API document; anything but 200 is an error.
func (s *Sipd) Get(ctx context.Context, path string) ([]byte, error) {
	code, b, err := s.Do(ctx, "GET", path, nil, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return b, fmt.Errorf("GET %s: %d %s", path, code, b)
	}
	return b, nil
}

// GetJSON reads an API document into v.
func (s *Sipd) GetJSON(ctx context.Context, path string, v any) error {
	b, err := s.Get(ctx, path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// Health reads /health.
func (s *Sipd) Health(ctx context.Context) (sipd.Health, error) {
	var h sipd.Health
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return h, s.GetJSON(ctx, "/health", &h)
}

// Metric reads one sample of /metrics: the value on the line that starts
// with series (name and labels as written, e.g.
// `sipxdp_sip_refused_total{reason="x"}`); ok is false when absent.
func (s *Sipd) Metric(ctx context.Context, series string) (v float64, ok bool, err error) {
	b, err := s.Get(ctx, "/metrics")
	if err != nil {
		return 0, false, err
	}
	v, ok = metric(string(b), series)
	return v, ok, nil
}

func metric(exposition, series string) (float64, bool) {
	for line := range strings.SplitSeq(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			f, _, _ := strings.Cut(rest, " ") // a timestamp may follow
			if v, err := strconv.ParseFloat(f, 64); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

// GoMem is sipd's Go memory and goroutines, from its profiles (the config
// must set http.pprof).
type GoMem struct {
	HeapInuse, StackInuse int64
	Goroutines            int
}

// GoMem reads the heap profile's MemStats, after a collection when gc is
// set, and the goroutine count.
func (s *Sipd) GoMem(ctx context.Context, gc bool) (GoMem, error) {
	var m GoMem
	path := "/debug/pprof/heap?debug=1"
	if gc {
		path += "&gc=1"
	}
	b, err := s.Get(ctx, path)
	if err != nil {
		return m, fmt.Errorf("heap profile (is http.pprof on?): %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		for name, p := range map[string]*int64{"# HeapInuse = ": &m.HeapInuse, "# Stack = ": &m.StackInuse} {
			if rest, ok := strings.CutPrefix(line, name); ok {
				v, _, _ := strings.Cut(rest, " ")
				*p, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	g, err := s.Get(ctx, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return m, fmt.Errorf("goroutine profile: %w", err)
	}
	first, _, _ := strings.Cut(string(g), "\n")
	m.Goroutines, _ = strconv.Atoi(strings.TrimPrefix(first, "goroutine profile: total "))
	return m, nil
}

// RSS is sipd's resident set in bytes, from /proc.
func (s *Sipd) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.PID()))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", s.PID())
}

// OpenFiles counts sipd's open file descriptors (sockets included).
func (s *Sipd) OpenFiles() int {
	es, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.PID()))
	return len(es)
}
