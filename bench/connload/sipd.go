package connload

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sipxdp/bench/sipload"
	"sipxdp/internal/freeport"
	"sipxdp/internal/testcert"
)

// sipd is one sipd run with its SIP address and API.
type sipd struct {
	d    *sipload.Daemon
	sip  string // host:port of the TCP or TLS listener
	http string
}

// replaceOnce substitutes old with new once and fails when old is missing,
// so a change to sipd's default config is noticed.
func replaceOnce(s, old, new string) (string, error) {
	if !strings.Contains(s, old) {
		return "", fmt.Errorf("sipd default config has no %q", old)
	}
	return strings.Replace(s, old, new, 1), nil
}

// startSipd writes a config derived from "sipd -print-default-config" with
// one listener of the given transport, users prefix0..prefixN-1, pprof on,
// and starts it.
func startSipd(ctx context.Context, bin, dir, transport string, users map[string]int) (*sipd, error) {
	def, err := exec.CommandContext(ctx, bin, "-print-default-config").Output()
	if err != nil {
		return nil, fmt.Errorf("sipd -print-default-config: %w", err)
	}
	sipPort, err := freeport.Loopback(freeport.TCP)
	if err != nil {
		return nil, err
	}
	httpPort, err := freeport.Loopback(freeport.TCP)
	if err != nil {
		return nil, err
	}
	var ub strings.Builder
	for prefix, n := range users {
		for i := range n {
			fmt.Fprintf(&ub, "%s%d password=%s\n", prefix, i, password)
		}
	}
	usersPath := filepath.Join(dir, "users")
	if err := os.WriteFile(usersPath, []byte(ub.String()), 0o600); err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("    - {transport: tcp, addr: \"127.0.0.1:%d\"}", sipPort)
	if transport == "TLS" {
		cert, key, err := testcert.Generate(dir, netip.MustParseAddr("127.0.0.1"))
		if err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
		listen = fmt.Sprintf("    - {transport: tls, addr: \"127.0.0.1:%d\", cert: %q, key: %q}", sipPort, cert, key)
	}
	text := string(def)
	for _, r := range [][2]string{
		{"state_dir: /var/lib/sipd", "state_dir: " + filepath.Join(dir, "state")},
		{"listen: 127.0.0.1:8080", fmt.Sprintf("listen: 127.0.0.1:%d", httpPort)},
		{"pprof: false", "pprof: true"},
		{"    - transport: udp\n      addr: 127.0.0.1:5060\n    - transport: tcp\n      addr: 127.0.0.1:5060", listen},
		{"mode: all", "mode: none"},
		{"datapath: auto", "datapath: userspace"},
		{`users_file: ""`, "users_file: " + usersPath},
		{"level: info", "level: warn"},
	} {
		if text, err = replaceOnce(text, r[0], r[1]); err != nil {
			return nil, err
		}
	}
	cfg := filepath.Join(dir, "sipd.yaml")
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return nil, err
	}
	httpURL := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	d, err := sipload.Launch(ctx, sipload.LaunchConfig{Binary: bin, ConfigPath: cfg, LogPath: filepath.Join(dir, "sipd.log"),
		HTTP: httpURL, SIP: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sipPort))})
	if err != nil {
		return nil, err
	}
	return &sipd{d: d, sip: fmt.Sprintf("127.0.0.1:%d", sipPort), http: httpURL}, nil
}

func (s *sipd) get(path string) ([]byte, error) {
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get(s.http + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// goMem is the part of sipd's runtime.MemStats that the heap profile's
// debug text carries, plus its goroutine count.
type goMem struct {
	HeapInuse, StackInuse int64
	Goroutines            int
}

func (s *sipd) goMem() (goMem, error) {
	var m goMem
	b, err := s.get("/debug/pprof/heap?debug=1")
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		for name, p := range map[string]*int64{"# HeapInuse = ": &m.HeapInuse, "# Stack = ": &m.StackInuse} {
			if rest, ok := strings.CutPrefix(line, name); ok {
				v, _, _ := strings.Cut(rest, " ")
				*p, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	g, err := s.get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return m, err
	}
	first, _, _ := strings.Cut(string(g), "\n")
	m.Goroutines, _ = strconv.Atoi(strings.TrimPrefix(first, "goroutine profile: total "))
	return m, nil
}

// saveHeap writes sipd's heap profile (for go tool pprof) to path.
func (s *sipd) saveHeap(path string) error {
	b, err := s.get("/debug/pprof/heap")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
