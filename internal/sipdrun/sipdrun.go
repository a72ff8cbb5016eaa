// Package sipdrun runs the real sipd binary for the bench and the tests:
// on a configuration edited as a typed *sipd.Config (start from Default),
// written as YAML into a run directory, optionally inside a network
// namespace, under a lowered RLIMIT_NOFILE, through a wrapper such as
// setpriv (another user, chosen capabilities), with extra arguments and
// environment; it waits for /health and stops sipd by its PID.
// internal/sipdtest wraps it for tests.
package sipdrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"sipxdp/internal/freeport"
	"sipxdp/sipd"
	"sipxdp/sipd/sipconf"
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

// Loopback is the embedded default configuration for a bench sipd on
// 127.0.0.1: the API on a free port with pprof on, listen as its one SIP
// listener, media in mode through the userspace relay, and warnings only
// in its log.
func Loopback(listen sipconf.Listen, mode string) (*sipd.Config, error) {
	cfg, err := Default()
	if err != nil {
		return nil, err
	}
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.HTTP.Pprof = true
	cfg.SIP.Listen = []sipconf.Listen{listen}
	cfg.Media.Mode, cfg.Media.Datapath = mode, "userspace"
	cfg.Log.Level = "warn"
	return cfg, nil
}

// Workdir makes dir for a bench run's files, or a new temporary
// directory named after prefix when dir is empty, and builds sipd into it
// unless bin names a binary already. It returns the directory and the
// binary.
func Workdir(ctx context.Context, dir, prefix, bin string) (string, string, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", prefix)
		if err != nil {
			return "", "", fmt.Errorf("output dir: %w", err)
		}
		dir = d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("output dir: %w", err)
	}
	if bin == "" {
		b, err := Build(ctx, dir)
		if err != nil {
			return "", "", err
		}
		bin = b
	}
	return dir, bin, nil
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
	// Wrap is a command that execs sipd in place, innermost (after
	// nsenter and prlimit), such as setpriv dropping to another user.
	// The -uninstall run is not wrapped: it cleans up as the caller.
	Wrap []string
	// Owner, when set, is given the files Start writes (config, users),
	// so that a sipd Wrap runs as that user can read them.
	Owner *Owner
	Args  []string // extra command-line arguments (e.g. -relay-only)
	// Env is added to this process's environment, from which any SIPD_
	// variable is dropped first: sipd reads those as config overrides
	// (and refuses unknown ones), and it must run on the config written.
	Env []string
	// Users is a users file ("alice password=x" lines), written to Dir
	// and named in the config's sip.users_file.
	Users string
}

// Owner is a user and group that own the files Start writes.
type Owner struct{ UID, GID int }

// Sipd is a running sipd child process.
type Sipd struct {
	Cfg *sipd.Config
	// HTTP is the API's base URL; SIP the first SIP listener's address.
	HTTP       string
	SIP        netip.AddrPort
	LogPath    string
	ConfigPath string // the YAML sipd runs on
	opt        Options
	client     *http.Client
	cmd        *exec.Cmd
	exited     chan struct{}
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
		if err := o.write(p, []byte(o.Users)); err != nil {
			return nil, fmt.Errorf("write users: %w", err)
		}
		cfg.SIP.UsersFile = p
	}
	cfg.Resolve()
	text, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("marshal config: %w", err)
	}
	// sipd must run on exactly the config the caller built: sipd merges
	// what it reads onto its default, so a field the text cannot carry,
	// or one the merge fills back in, would change it unseen.
	back, err := sipd.ParseConfig(text)
	if err != nil {
		return nil, fmt.Errorf("config does not survive a round trip: %w\n%s", err, text)
	}
	if again, err := yaml.Marshal(back); err != nil || string(again) != string(text) {
		return nil, fmt.Errorf("config read back differs (%v):\n%s\n---\n%s", err, text, again)
	}
	s := &Sipd{Cfg: cfg, opt: o, ConfigPath: filepath.Join(o.Dir, o.Name+".yaml"), HTTP: "http://" + cfg.HTTP.Listen,
		uninstall: cfg.Media.Mode != sipd.MediaNone && cfg.Media.Datapath != "userspace"}
	if len(cfg.SIP.Listen) > 0 {
		s.SIP, _ = netip.ParseAddrPort(cfg.SIP.Listen[0].Addr)
	}
	if err := o.write(s.ConfigPath, text); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	return s, s.launch(ctx)
}

// write writes a file only its owner reads: this process, or o.Owner.
func (o Options) write(path string, b []byte) error {
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	if o.Owner != nil {
		return os.Chown(path, o.Owner.UID, o.Owner.GID)
	}
	return nil
}

// freePorts gives each listen address with port 0 a port free for its
// transport (UDP, or TCP for the stream ones) in this namespace.
func freePorts(cfg *sipd.Config) error {
	pick := func(addr *string, network string) error {
		ap, err := netip.ParseAddrPort(*addr)
		if err != nil || ap.Port() != 0 {
			return nil
		}
		free, err := freeport.On(network, ap.Addr())
		if err != nil {
			return err
		}
		*addr = free.String()
		return nil
	}
	for i := range cfg.SIP.Listen {
		l := &cfg.SIP.Listen[i]
		network := freeport.TCP
		if strings.EqualFold(l.Transport, "udp") {
			network = freeport.UDP
		}
		if err := pick(&l.Addr, network); err != nil {
			return err
		}
	}
	return pick(&cfg.HTTP.Listen, freeport.TCP)
}

func (s *Sipd) command(daemon bool, extra ...string) *exec.Cmd {
	args := append([]string{s.opt.Binary, "-config", s.ConfigPath}, extra...)
	if daemon {
		args = append(slices.Clone(s.opt.Wrap), args...)
	}
	if daemon && s.opt.NoFile > 0 {
		args = append([]string{"prlimit", fmt.Sprintf("--nofile=%d:%d", s.opt.NoFile, s.opt.NoFile), "--"}, args...)
	}
	if s.opt.NetNS != "" {
		args = append([]string{"nsenter", "--net=" + s.opt.NetNS}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, sipd.EnvPrefix) })
	cmd.Env = append(cmd.Env, s.opt.Env...)
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

// Metric reads one sample of /metrics, named as the text exposition
// names it: the series name and its labels in any order, e.g.
// `sipxdp_sip_refused_total{reason="x"}`, or a histogram's
// `sipxdp_x_seconds_bucket{le="0.5"}`, `_sum` and `_count`. ok is false
// when it is absent.
func (s *Sipd) Metric(ctx context.Context, series string) (v float64, ok bool, err error) {
	b, err := s.Get(ctx, "/metrics")
	if err != nil {
		return 0, false, err
	}
	return metric(b, series)
}

// metric finds series in a text exposition. Both go through
// prometheus/common's parser, so label escaping, the order labels are
// written in and the spelling of a bucket bound do not matter.
func metric(exposition []byte, series string) (float64, bool, error) {
	want, err := parseSeries(series)
	if err != nil {
		return 0, false, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(exposition)))
	if err != nil {
		return 0, false, fmt.Errorf("parse /metrics: %w", err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, smp := range samples(mf.GetName(), mf.GetType(), m) {
				if smp.key == want {
					return smp.v, true, nil
				}
			}
		}
	}
	return 0, false, nil
}

// parseSeries gives a series' key: its name and its labels, sorted.
func parseSeries(series string) (string, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(series + " 0\n"))
	if err != nil || len(mfs) != 1 {
		return "", fmt.Errorf("series %q: want name{label=\"value\",...}: %v", series, err)
	}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		if m.TimestampMs != nil { // "x 1" parsed as x, value 1, time 0
			return "", fmt.Errorf("series %q: a name and labels only, no value", series)
		}
		return seriesKey(mf.GetName(), m.GetLabel(), "", 0), nil
	}
	return "", nil
}

type sample struct {
	key string
	v   float64
}

// samples lists the series one metric writes in the text format.
func samples(name string, typ dto.MetricType, m *dto.Metric) []sample {
	ls := m.GetLabel()
	one := func(v float64) []sample { return []sample{{seriesKey(name, ls, "", 0), v}} }
	switch typ {
	case dto.MetricType_COUNTER:
		return one(m.GetCounter().GetValue())
	case dto.MetricType_GAUGE:
		return one(m.GetGauge().GetValue())
	case dto.MetricType_UNTYPED:
		return one(m.GetUntyped().GetValue())
	case dto.MetricType_HISTOGRAM:
		h := m.GetHistogram()
		out := []sample{{seriesKey(name+"_sum", ls, "", 0), h.GetSampleSum()},
			{seriesKey(name+"_count", ls, "", 0), float64(h.GetSampleCount())}}
		for _, b := range h.GetBucket() {
			out = append(out, sample{seriesKey(name+"_bucket", ls, model.BucketLabel, b.GetUpperBound()), float64(b.GetCumulativeCount())})
		}
		return out
	case dto.MetricType_SUMMARY:
		sm := m.GetSummary()
		out := []sample{{seriesKey(name+"_sum", ls, "", 0), sm.GetSampleSum()},
			{seriesKey(name+"_count", ls, "", 0), float64(sm.GetSampleCount())}}
		for _, q := range sm.GetQuantile() {
			out = append(out, sample{seriesKey(name, ls, model.QuantileLabel, q.GetQuantile()), q.GetValue()})
		}
		return out
	}
	return nil
}

// seriesKey is name and labels in one canonical form; bound, when named,
// is one more label (le or quantile) holding a number. A le or quantile
// label among ls is written as a number too, as the query spells it.
func seriesKey(name string, ls []*dto.LabelPair, bound string, v float64) string {
	m := map[string]string{}
	for _, l := range ls {
		m[l.GetName()] = l.GetValue()
	}
	if bound != "" {
		m[bound] = strconv.FormatFloat(v, 'g', -1, 64)
	}
	for _, k := range []string{model.BucketLabel, model.QuantileLabel} {
		if f, err := strconv.ParseFloat(m[k], 64); err == nil && bound != k {
			m[k] = strconv.FormatFloat(f, 'g', -1, 64)
		}
	}
	var b strings.Builder
	b.WriteString(name)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "\x00%s=%q", k, m[k])
	}
	return b.String()
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

// OpenFiles counts sipd's open file descriptors (sockets included).
func (s *Sipd) OpenFiles() int {
	es, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.PID()))
	return len(es)
}
