package sipserver

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"sipxdp/internal/freeport"
	"sipxdp/internal/testenv"
	"sipxdp/sipd/sipconf"
)

const usersText = "alice password=alicepw\nbob password=bobpw\ncarol password=carolpw\n"

// testServer runs a server on loopback with random ports until the test
// ends; edit adjusts the config first.
func testServer(t testing.TB, edit func(*sipconf.Config)) *Server {
	t.Helper()
	return testServerWith(t, edit, Options{})
}

// testServerWith is testServer with Options (a media controller, the
// relay's size).
func testServerWith(t testing.TB, edit func(*sipconf.Config), opt Options) *Server {
	t.Helper()
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte(usersText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := sipconf.Default()
	cfg.Domains = []string{"example.org"}
	cfg.Listen = []sipconf.Listen{{Transport: "udp", Addr: "127.0.0.1:0"}, {Transport: "tcp", Addr: "127.0.0.1:0"}}
	cfg.UsersFile = users
	cfg.Registrar.Store = filepath.Join(dir, "location.json")
	cfg.Dialog.CDRFile = filepath.Join(dir, "cdr.jsonl")
	if edit != nil {
		edit(&cfg)
	}
	level := slog.LevelWarn
	if os.Getenv("SIPD_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ignore := goleak.IgnoreCurrent()
	s, err := New(cfg, log, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("server did not stop within 10s")
			return
		}
		if n := s.Stats().Panics; n > 0 {
			t.Errorf("%d handler panics (see the log)", n)
		}
		goleak.VerifyNone(t, ignore)
	})
	return s
}

func needSipp(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("sipp")
	if err != nil {
		testenv.Unavailable(t, "sipp is not installed (Debian package sip-tester; scripts/install-deps.sh installs it)")
	}
	return p
}

// freePort finds a port free for both UDP and TCP on loopback.
func freePort(t *testing.T) int {
	t.Helper()
	p, err := freeport.Loopback(freeport.Both)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sipp is one sipp process started by a test.
type sipp struct {
	cmd  *exec.Cmd
	out  *strings.Builder
	done chan error
}

// startSipp runs one bounded sipp: a single call (-m 1), a global timeout,
// and a context deadline that kills it (by its PID, through exec) if it
// hangs anyway.
func startSipp(t *testing.T, timeout time.Duration, args ...string) *sipp {
	t.Helper()
	bin := needSipp(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	base := []string{"-m", "1", "-nostdin", "-timeout", fmt.Sprintf("%ds", int(timeout.Seconds())), "-timeout_error",
		"-max_recv_loops", "1000", "-trace_err", "-error_file", filepath.Join(t.TempDir(), "err.log")}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.Dir = t.TempDir()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start sipp: %v", err)
	}
	s := &sipp{cmd: cmd, out: &out, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); cancel() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	return s
}

// wait returns nil when sipp reported every call successful.
func (s *sipp) wait(t *testing.T) error {
	t.Helper()
	err := <-s.done
	if err != nil {
		errLog := ""
		for _, a := range s.cmd.Args {
			if strings.HasSuffix(a, "err.log") {
				b, _ := os.ReadFile(a)
				errLog = string(b)
			}
		}
		return fmt.Errorf("sipp %v: %w\n%s\nerrors:\n%s", s.cmd.Args[len(s.cmd.Args)-6:], err, tail(s.out.String(), 2000), tail(errLog, 3000))
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func scenario(name string) string {
	p, _ := filepath.Abs(filepath.Join("testdata", name))
	return p
}

func sippTransport(tr string) string {
	if tr == "tcp" {
		return "t1"
	}
	return "u1"
}

func serverAddr(t testing.TB, s *Server, tr string) netip.AddrPort {
	t.Helper()
	a, ok := s.Addr(tr)
	if !ok {
		t.Fatalf("no %s listener", tr)
	}
	return a
}

// register makes user's registration from port with sipp.
func register(t *testing.T, s *Server, tr, user string, port int) {
	t.Helper()
	p := startSipp(t, 15*time.Second, "-sf", scenario("register.xml"), "-t", sippTransport(tr),
		"-i", "127.0.0.1", "-p", strconv.Itoa(port), "-s", user, "-au", user, "-ap", user+"pw",
		serverAddr(t, s, tr).String())
	if err := p.wait(t); err != nil {
		t.Fatalf("register %s over %s: %v", user, tr, err)
	}
}
