package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	vnetns "github.com/vishvananda/netns"

	"sipxdp/bench/netns"
	"sipxdp/bench/sipload"
)

// benchDomain is the users' domain in the calls bench: a name, so callers
// and callees reach sipd on different addresses yet share one location
// table.
const benchDomain = "bench.sipxdp.test"

// sipdSetup is what one scenario's sipd runs with.
type sipdSetup struct {
	Binary   string
	Dir      string // config, users file and log go here
	Name     string // scenario-level tag for file names
	Mode     string // media.mode
	Datapath string // media.datapath
	PinPath  string
	Line     *netns.Line
	UASCount int
	Password string
	PortMin  int
	PortMax  int
	Exempt   []string // networks the flood protection must not ban: the load generators
}

// sipdConfig derives sipd's config for the topology from the binary's own
// embedded default, failing when an expected line is gone so a change to
// the default is noticed rather than silently ignored.
func sipdConfig(def string, s sipdSetup, usersPath string) (string, error) {
	l := s.Line
	left, right := l.RelayLeftAddr.String(), l.RelayRightAddr.String()
	text := def
	for _, r := range [][2]string{
		{"mode: all", "mode: " + s.Mode},
		{"datapath: auto", "datapath: " + s.Datapath},
		{"interfaces: []", fmt.Sprintf("interfaces: [%s, %s]", l.RelayLeftIf, l.RelayRightIf)},
		{"pin_path: /sys/fs/bpf/sipxdp", "pin_path: " + s.PinPath},
		{`    - name: default
      local: 127.0.0.1
      advertised: ""
      port_min: 20000
      port_max: 29999`, fmt.Sprintf(`    - {name: callers, local: "%s", port_min: %d, port_max: %d}
    - {name: callees, local: "%s", port_min: %d, port_max: %d}`, left, s.PortMin, s.PortMax, right, s.PortMin, s.PortMax)},
		{"domains: [localhost, 127.0.0.1]", fmt.Sprintf("domains: [%s, %s, %s]", benchDomain, left, right)},
		{`    - transport: udp
      addr: 127.0.0.1:5060
    - transport: tcp
      addr: 127.0.0.1:5060`, fmt.Sprintf(`    - {transport: udp, addr: "%s:5060"}
    - {transport: udp, addr: "%s:5060"}`, left, right)},
		{`users_file: ""`, "users_file: " + usersPath},
		{"level: info", "level: warn"},
		{`exempt: [127.0.0.0/8, "::1/128"]`, fmt.Sprintf(`exempt: [127.0.0.0/8, "::1/128", %s]`, strings.Join(s.Exempt, ", "))},
	} {
		if !strings.Contains(text, r[0]) {
			return "", fmt.Errorf("sipd default config has no %q", r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	return text, nil
}

// nsSipd is sipd running inside the topology's relay namespace.
type nsSipd struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	cfgPath string
	binary  string
	nsPath  string
	client  *http.Client
	once    sync.Once
}

func startSipdInNS(ctx context.Context, s sipdSetup) (*nsSipd, error) {
	def, err := exec.CommandContext(ctx, s.Binary, "-print-default-config").Output()
	if err != nil {
		return nil, fmt.Errorf("sipd default config: %w", err)
	}
	users := filepath.Join(s.Dir, "users")
	if err := os.WriteFile(users, []byte(sipload.UsersFile(s.UASCount, s.Password)), 0o600); err != nil {
		return nil, fmt.Errorf("write users: %w", err)
	}
	text, err := sipdConfig(string(def), s, users)
	if err != nil {
		return nil, err
	}
	d := &nsSipd{
		cfgPath: filepath.Join(s.Dir, "sipd_"+s.Name+".yaml"),
		logPath: filepath.Join(s.Dir, "sipd_"+s.Name+".log"),
		binary:  s.Binary, nsPath: s.Line.Relay.Path, exited: make(chan struct{}),
	}
	if err := os.WriteFile(d.cfgPath, []byte(text), 0o600); err != nil {
		return nil, fmt.Errorf("write sipd config: %w", err)
	}
	d.client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: dialInNS(d.nsPath)}}
	logf, err := os.Create(d.logPath)
	if err != nil {
		return nil, fmt.Errorf("create sipd log: %w", err)
	}
	defer logf.Close()
	// nsenter execs sipd in place, so the PID is sipd's own and its
	// /proc/PID/stat is what the bench samples.
	d.cmd = exec.Command("nsenter", "--net="+d.nsPath, s.Binary, "-config", d.cfgPath)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sipd: %w", err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := d.health(ctx); err == nil {
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("sipd exited at start: %s", tailFile(d.logPath, 2000))
		case <-ctx.Done():
			d.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("sipd not ready in 15 s: %s", tailFile(d.logPath, 2000))
		}
	}
}

func (d *nsSipd) pid() int { return d.cmd.Process.Pid }

// dialInNS dials from inside the namespace at nsPath: the socket is made
// on a thread switched into it, and a socket keeps its namespace for life.
// The thread is switched back before Go may reuse it; if that fails it
// stays locked and ends with the goroutine. (Ending threads is avoided
// otherwise: a child started with Pdeathsig from a thread gets killed when
// that thread exits.)
func dialInNS(nsPath string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := vnetns.Get()
			if err != nil {
				runtime.UnlockOSThread()
				ch <- res{nil, fmt.Errorf("current netns: %w", err)}
				return
			}
			defer orig.Close()
			h, err := vnetns.GetFromPath(nsPath)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- res{nil, fmt.Errorf("open netns %s: %w", nsPath, err)}
				return
			}
			defer h.Close()
			if err := vnetns.Set(h); err != nil {
				ch <- res{nil, fmt.Errorf("enter netns %s: %w", nsPath, err)}
				return
			}
			var dl net.Dialer
			c, err := dl.DialContext(ctx, network, addr)
			if vnetns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// health reads sipd's /health inside its namespace.
func (d *nsSipd) health(ctx context.Context) (sipload.Health, error) {
	var h sipload.Health
	req, err := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:8080/health", nil)
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

// stop ends sipd with SIGTERM (SIGKILL after 10 s), then removes whatever
// it pinned with "sipd -uninstall" on the same config. Only sipd's own PID
// is signalled.
func (d *nsSipd) stop() error {
	var err error
	d.once.Do(func() {
		select {
		case <-d.exited:
		default:
			if serr := d.cmd.Process.Signal(syscall.SIGTERM); serr != nil && !errors.Is(serr, os.ErrProcessDone) {
				err = fmt.Errorf("signal sipd: %w", serr)
			}
			select {
			case <-d.exited:
			case <-time.After(10 * time.Second):
				d.cmd.Process.Kill()
				<-d.exited
				err = errors.New("sipd did not stop in 10 s; killed")
			}
		}
		d.client.CloseIdleConnections()
		cmd := exec.Command("nsenter", "--net="+d.nsPath, d.binary, "-config", d.cfgPath, "-uninstall")
		if out, uerr := cmd.CombinedOutput(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("sipd -uninstall: %w: %s", uerr, out))
		}
	})
	return err
}

func tailFile(p string, n int) string {
	b, _ := os.ReadFile(p)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
