package sipload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"sipxdp/bench/mem"
	"sipxdp/internal/freeport"
)

// BuildSipd compiles sipd into dir and returns the binary's path. It uses
// the package path, so it works from any directory inside the module.
func BuildSipd(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "sipd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "sipxdp/cmd/sipd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build sipd (run inside the sipxdp module, or give a binary): %w\n%s", err, out)
	}
	return bin, nil
}

// DaemonConfig is how to run sipd for a load test.
type DaemonConfig struct {
	Binary   string // sipd executable
	Dir      string // for the config, users file and log
	Mode     string // media.mode: none or all
	Datapath string // media.datapath: userspace or auto
	UASCount int
	Password string
	// Relay port range; it stays below 32768 so it is outside the
	// ephemeral range the load generator's own sockets come from.
	PortMin, PortMax int
}

// Daemon is a running sipd child process.
type Daemon struct {
	SIP     netip.AddrPort
	HTTP    string // base URL of the API
	LogPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	// Kernel datapaths pin maps and links, which outlive the process by
	// design; Stop removes them with "sipd -uninstall" on the same config.
	uninstall *exec.Cmd
	once      sync.Once
	client    *http.Client
}

// Health is the part of sipd's /health the bench reads.
type Health struct {
	SIP *struct {
		ActiveCalls    int    `json:"active_calls"`
		CallsInSetup   int    `json:"calls_in_setup"`
		CallsCompleted uint64 `json:"calls_completed"`
		CallsFailed    uint64 `json:"calls_failed"`
		Registrations  int    `json:"registrations"`
	} `json:"sip"`
	Media struct {
		Path     string `json:"path"`
		Sessions int    `json:"sessions"`
		Flows    int    `json:"flows"`
		Packets  uint64 `json:"packets"`
		Bytes    uint64 `json:"bytes"`
	} `json:"media"`
}

func freePort(network string) (int, error) { return freeport.Loopback(network) }

// replace substitutes old with new in s once and fails when old is
// missing, so a change to the default config is noticed rather than
// silently ignored.
func replace(s, old, new string) (string, error) {
	if !strings.Contains(s, old) {
		return "", fmt.Errorf("default config has no %q", old)
	}
	return strings.Replace(s, old, new, 1), nil
}

// StartDaemon writes a config derived from the binary's own default and
// starts sipd on loopback with random free SIP (UDP) and HTTP ports.
func StartDaemon(ctx context.Context, dc DaemonConfig) (*Daemon, error) {
	def, err := exec.CommandContext(ctx, dc.Binary, "-print-default-config").Output()
	if err != nil {
		return nil, fmt.Errorf("sipd default config: %w", err)
	}
	sipPort, err := freePort("udp")
	if err != nil {
		return nil, fmt.Errorf("free sip port: %w", err)
	}
	httpPort, err := freePort("tcp")
	if err != nil {
		return nil, fmt.Errorf("free http port: %w", err)
	}
	users := filepath.Join(dc.Dir, "users")
	if err := os.WriteFile(users, []byte(UsersFile(dc.UASCount, dc.Password)), 0o600); err != nil {
		return nil, fmt.Errorf("write users: %w", err)
	}
	text := string(def)
	for _, r := range [][2]string{
		{"state_dir: /var/lib/sipd", "state_dir: " + filepath.Join(dc.Dir, "state")},
		{"listen: 127.0.0.1:8080", fmt.Sprintf("listen: 127.0.0.1:%d", httpPort)},
		// UDP only: a free UDP port need not be free for TCP.
		{"    - transport: udp\n      addr: 127.0.0.1:5060\n    - transport: tcp\n      addr: 127.0.0.1:5060",
			fmt.Sprintf("    - {transport: udp, addr: \"127.0.0.1:%d\"}", sipPort)},
		{"mode: all", "mode: " + dc.Mode},
		{"datapath: auto", "datapath: " + dc.Datapath},
		// A pin path of our own, so a bench run never touches an installed
		// sipd's pinned maps.
		{"pin_path: /sys/fs/bpf/sipxdp", fmt.Sprintf("pin_path: /sys/fs/bpf/sipxdp-bench-%d", os.Getpid())},
		{"port_min: 20000", fmt.Sprintf("port_min: %d", dc.PortMin)},
		{"port_max: 29999", fmt.Sprintf("port_max: %d", dc.PortMax)},
		{`users_file: ""`, "users_file: " + users},
		{"level: info", "level: warn"},
	} {
		if text, err = replace(text, r[0], r[1]); err != nil {
			return nil, err
		}
	}
	cfgPath := filepath.Join(dc.Dir, "sipd.yaml")
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	return Launch(ctx, LaunchConfig{Binary: dc.Binary, ConfigPath: cfgPath, LogPath: filepath.Join(dc.Dir, "sipd.log"),
		HTTP: fmt.Sprintf("http://127.0.0.1:%d", httpPort), Uninstall: dc.Datapath != "userspace",
		SIP: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sipPort))})
}

// LaunchConfig is how to start sipd on a config already written.
type LaunchConfig struct {
	Binary     string
	ConfigPath string
	LogPath    string // sipd's stdout and stderr
	HTTP       string // base URL of its API, as the config sets it
	SIP        netip.AddrPort
	// NetNS is a network namespace (/run/netns/NAME) to run sipd in, with
	// nsenter, which execs in place so the PID stays sipd's own. Dial
	// then reaches the API inside it. Empty: this namespace.
	NetNS string
	Dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	// Uninstall runs "sipd -uninstall" after it stops: kernel datapaths
	// pin maps and links, which outlive the process by design.
	Uninstall bool
	// NoFile, when set, is sipd's RLIMIT_NOFILE (soft and hard), set by
	// util-linux's prlimit, which execs sipd in place: a test can run a
	// connection flood against a low limit cheaply.
	NoFile uint64
	// Args are extra command-line arguments (e.g. -relay-only).
	Args []string
	// Wrap is a command that execs sipd in place, innermost (after
	// nsenter and prlimit), such as setpriv dropping to another user. The
	// -uninstall run is not wrapped: it cleans up as the caller.
	Wrap []string
}

// Launch starts sipd and waits up to 15 s for its /health.
func Launch(ctx context.Context, lc LaunchConfig) (*Daemon, error) {
	argv := func(daemon bool, extra ...string) *exec.Cmd {
		args := append([]string{lc.Binary, "-config", lc.ConfigPath}, extra...)
		if daemon {
			args = append(append([]string{}, lc.Wrap...), args...)
		}
		if daemon && lc.NoFile > 0 {
			args = append([]string{"prlimit", fmt.Sprintf("--nofile=%d:%d", lc.NoFile, lc.NoFile), "--"}, args...)
		}
		if lc.NetNS != "" {
			args = append([]string{"nsenter", "--net=" + lc.NetNS}, args...)
		}
		return exec.Command(args[0], args[1:]...)
	}
	d := &Daemon{SIP: lc.SIP, HTTP: lc.HTTP, LogPath: lc.LogPath, exited: make(chan struct{}),
		client: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: lc.Dial}}}
	if lc.Uninstall {
		d.uninstall = argv(false, "-uninstall")
	}
	logf, err := os.Create(d.LogPath)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	defer logf.Close()
	// Not CommandContext: the caller stops the child with Stop, by its PID.
	d.cmd = argv(true, lc.Args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sipd: %w", err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := d.Health(ctx); err == nil {
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("sipd exited at start: %s", tailFile(d.LogPath))
		case <-ctx.Done():
			d.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.Stop()
			return nil, fmt.Errorf("sipd not ready in 15 s: %s", tailFile(d.LogPath))
		}
	}
}

// PID is sipd's process ID.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// RSS is sipd's resident set in bytes, from /proc.
func (d *Daemon) RSS() (int64, error) {
	v, err := mem.RSS(d.PID())
	return int64(v), err
}

// OpenFiles counts sipd's open file descriptors (sockets included).
func (d *Daemon) OpenFiles() int {
	es, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.PID()))
	return len(es)
}

func tailFile(p string) string {
	b, _ := os.ReadFile(p)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Health reads /health.
func (d *Daemon) Health(ctx context.Context) (Health, error) {
	var h Health
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", d.HTTP+"/health", nil)
	if err != nil {
		return h, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return h, fmt.Errorf("get health: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return h, fmt.Errorf("decode health: %w", err)
	}
	return h, nil
}

// Exited is closed when the process has ended.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// Kill ends the child with SIGKILL, as a crash would, and waits for it. It
// leaves pinned BPF state in place (a restarted sipd picks it up); Stop
// after Kill still removes it.
func (d *Daemon) Kill() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Kill()
	<-d.exited
}

// Stop ends the child: SIGTERM, then SIGKILL after 10 s; then it removes
// any pinned BPF state. Only this process is signalled, by its own PID.
func (d *Daemon) Stop() error {
	err := d.stop()
	d.once.Do(func() {
		d.client.CloseIdleConnections()
		if d.uninstall == nil {
			return
		}
		if out, uerr := d.uninstall.CombinedOutput(); uerr != nil && err == nil {
			err = fmt.Errorf("sipd -uninstall: %w\n%s", uerr, out)
		}
	})
	return err
}

func (d *Daemon) stop() error {
	select {
	case <-d.exited:
		return nil
	default:
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal sipd: %w", err)
	}
	select {
	case <-d.exited:
		return nil
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		return errors.New("sipd did not stop in 10 s; killed")
	}
}
