package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	vnetns "github.com/vishvananda/netns"

	"sipxdp/bench/sipload"
	"sipxdp/internal/netns"
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
	Line     *netns.Topo
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
	left, right := l.V4.RelayA.String(), l.V4.RelayB.String()
	text := def
	for _, r := range [][2]string{
		{"state_dir: /var/lib/sipd", "state_dir: " + filepath.Join(s.Dir, "state")},
		{"mode: all", "mode: " + s.Mode},
		{"datapath: auto", "datapath: " + s.Datapath},
		{"interfaces: []", fmt.Sprintf("interfaces: [%s, %s]", netns.RelayA, netns.RelayB)},
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

func startSipdInNS(ctx context.Context, s sipdSetup) (*sipload.Daemon, error) {
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
	cfgPath := filepath.Join(s.Dir, "sipd_"+s.Name+".yaml")
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		return nil, fmt.Errorf("write sipd config: %w", err)
	}
	// The API stays on the default's 127.0.0.1:8080, inside the namespace.
	return sipload.Launch(ctx, sipload.LaunchConfig{Binary: s.Binary, ConfigPath: cfgPath,
		LogPath: filepath.Join(s.Dir, "sipd_"+s.Name+".log"), HTTP: "http://127.0.0.1:8080",
		NetNS: s.Line.Relay.Path, Dial: dialInNS(s.Line.Relay.Path), Uninstall: s.Datapath != "userspace",
		SIP: netip.AddrPortFrom(s.Line.V4.RelayA, 5060)})
}

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
