// Package redistest runs Debian's redis-server for tests: one child
// process per call on a free 127.0.0.1 port, or on a given address inside
// a network namespace (StartIn), persisting nothing, in a temporary
// directory, stopped by its PID when the test ends. Without
// redis-server the test is skipped (failed under CI=true, where
// scripts/install-deps.sh has installed it).
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sipxdp/internal/freeport"
	"sipxdp/internal/netns"
	"sipxdp/internal/testenv"
)

// Server is a running redis-server.
type Server struct {
	// Addr is its host:port; URL the same as a redis:// URL of database 0.
	Addr, URL string
	dir       string
	bin       string
	port      int
	bind      string    // the address it listens on; empty: 127.0.0.1
	ns        *netns.NS // where it runs; nil: this namespace
	cmd       *exec.Cmd
	exited    chan struct{}
}

// Start starts a redis-server and waits until it answers PING. It is
// stopped when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Launch(t.TempDir())
	if errors.Is(err, exec.ErrNotFound) {
		testenv.Unavailable(t, "redis-server is not installed (scripts/install-deps.sh installs it)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Launch is Start for a caller without a test, such as the bench: dir
// holds its log, and the caller stops it with Stop. Without redis-server
// in $PATH the error wraps exec.ErrNotFound.
func Launch(dir string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server (scripts/install-deps.sh installs it): %w", err)
	}
	port, err := freeport.Loopback(freeport.TCP)
	if err != nil {
		return nil, err
	}
	// redis-server changes into --dir before it opens --logfile, so a
	// relative dir (a bench's output directory) would name the log twice.
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("redis dir: %w", err)
	}
	s := &Server{dir: dir, bin: bin, port: port}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.URL = "redis://" + s.Addr + "/0"
	if err := s.launch(); err != nil {
		return nil, err
	}
	return s, nil
}

// PID is the running server's process ID.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// launch starts the process and waits up to 10 s for PING.
func (s *Server) launch() error {
	// Nothing is saved: the tests' data lives as long as the process.
	bind := s.bind
	if bind == "" {
		bind = "127.0.0.1"
	}
	args := []string{"--bind", bind, "--port", strconv.Itoa(s.port),
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log")}
	if s.bind != "" {
		// Protected mode answers clients from other addresses with an
		// error unless a password is set; this server lives in a test
		// namespace that only the test's hosts reach.
		args = append(args, "--protected-mode", "no")
	}
	if s.ns != nil {
		// nsenter execs redis-server in place: the PID is the server's,
		// and Stop kills it.
		s.cmd = s.ns.Command(s.bin, args...)
	} else {
		s.cmd = exec.Command(s.bin, args...)
	}
	// Its own process group, so a terminal's Ctrl-C reaches only the test,
	// and killed with the test process should that die first.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	s.exited = make(chan struct{})
	exited := s.exited
	go func() { s.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.Ping()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited at start: %s", s.log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("redis-server not answering PING in 10 s (%v): %s", err, s.log())
		}
	}
}

// Ping sends one inline PING, from the server's namespace. Written out
// rather than through a client library: this package only needs to know
// the server is up, and it keeps the helper free of the client the code
// under test uses.
func (s *Server) Ping() error {
	c, err := s.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// dial connects from the server's namespace, with a second to answer.
func (s *Server) dial() (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var c net.Conn
	var err error
	if s.ns != nil {
		c, err = s.ns.DialContext(ctx, "tcp", s.Addr)
	} else {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", s.Addr)
	}
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(time.Second))
	return c, nil
}

// UsedMemory is INFO memory's used_memory: what the data takes, not the
// process's RSS. Tests and benchmarks read it before and after writing
// keys to measure what the keys cost.
func (s *Server) UsedMemory() (int64, error) {
	c, err := s.dial()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := c.Write([]byte("INFO memory\r\n")); err != nil {
		return 0, err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "$"))
	if err != nil || !strings.HasPrefix(line, "$") || n < 0 || n > 1<<20 {
		return 0, fmt.Errorf("INFO memory answered %q", line)
	}
	info := make([]byte, n)
	if _, err := io.ReadFull(r, info); err != nil {
		return 0, fmt.Errorf("INFO memory: %w", err)
	}
	return usedMemory(string(info))
}

func (s *Server) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return string(b[max(0, len(b)-2000):])
}

// Stop ends redis-server with SIGKILL, by its PID, and waits for it: its
// data is lost, as on a crash. Stopping twice is a no-op.
func (s *Server) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return
	}
	<-s.exited
}

// Restart starts a stopped server again on the same address, empty.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	select {
	case <-s.exited:
	default:
		t.Fatal("redistest: restart of a running server")
	}
	if err := s.launch(); err != nil {
		t.Fatal(err)
	}
}

// StartIn starts a redis-server inside ns, listening on addr (an address
// of ns), as a host of its own on a test network runs it, and waits
// until it answers PING. It is stopped when t ends.
func StartIn(t testing.TB, ns *netns.NS, addr netip.AddrPort) *Server {
	t.Helper()
	s, err := LaunchIn(t.TempDir(), ns, addr)
	if errors.Is(err, exec.ErrNotFound) {
		testenv.Unavailable(t, "redis-server is not installed (scripts/install-deps.sh installs it)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// LaunchIn is StartIn for a caller without a test, such as the bench:
// dir holds its log, and the caller stops it with Stop.
func LaunchIn(dir string, ns *netns.NS, addr netip.AddrPort) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server (scripts/install-deps.sh installs it): %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("redis dir: %w", err)
	}
	s := &Server{dir: dir, bin: bin, port: int(addr.Port()), bind: addr.Addr().String(), ns: ns,
		Addr: addr.String(), URL: "redis://" + addr.String() + "/0"}
	if err := s.launch(); err != nil {
		return nil, err
	}
	return s, nil
}

// usedMemory reads used_memory from the text of INFO memory.
func usedMemory(info string) (int64, error) {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("redis INFO used_memory %q: not a byte count", v)
			}
			return n, nil
		}
	}
	return 0, errors.New("redis INFO: no used_memory")
}
