// Package sipdtest runs the real sipd binary for tests: built once per
// test process, started through internal/sipdrun on a configuration the
// test edits as Go values (derived from the embedded default), optionally
// inside a network namespace, under a lowered RLIMIT_NOFILE or as another
// user with chosen capabilities, and stopped by its PID when the test
// ends. Every helper fails the test instead of returning an error.
package sipdtest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sipxdp/internal/netns"
	"sipxdp/internal/sipdrun"
	"sipxdp/sipd"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// Binary builds sipd once for the test process and returns its path. The
// binary goes to one place per package directory, replaced by each test
// process (renamed into place, so a process still running the old one
// keeps it), rather than to a new directory each time that nothing
// removes.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { buildBin, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("build sipd: %v", buildErr)
	}
	return buildBin
}

func build() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(wd))
	shared := filepath.Join(os.TempDir(), fmt.Sprintf("sipdtest-%x", sum[:6]))
	if err := os.MkdirAll(shared, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(shared, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := sipdrun.Build(ctx, tmp)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(shared, "sipd")
	return dst, os.Rename(bin, dst)
}

// Config returns the embedded default configuration, parsed.
func Config(t testing.TB) *sipd.Config {
	t.Helper()
	cfg, err := sipdrun.Default()
	if err != nil {
		t.Fatal(err)
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
	// Dir holds the config, users file and log (empty: a new t.TempDir,
	// or with As one that user owns). Restarting on the same Dir keeps
	// whatever sipd keeps there.
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

// TempDir is a new directory under the system's temporary directory,
// owned by c and removed with the test: t.TempDir's parent is the test
// user's alone, out of c's reach.
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

// Sipd is a running sipd child.
type Sipd struct {
	*sipdrun.Sipd
	t testing.TB
}

// Start starts sipd on cfg (see sipdrun.Start); the test's cleanup stops
// it by its PID and, if the test failed, logs the end of its log.
func Start(t testing.TB, cfg *sipd.Config, o Options) *Sipd {
	t.Helper()
	ro := sipdrun.Options{Binary: Binary(t), Dir: o.Dir, NoFile: o.NoFile, Args: o.Args}
	if o.As != nil {
		ro.Wrap, ro.Owner = o.As.Setpriv(), &sipdrun.Owner{UID: o.As.UID, GID: o.As.GID}
	}
	switch {
	case ro.Dir != "":
	case o.As != nil:
		ro.Dir = o.As.TempDir(t)
	default:
		ro.Dir = t.TempDir()
	}
	if o.NS != nil {
		ro.NetNS, ro.Dial = o.NS.Path, o.NS.DialContext
	}
	var users strings.Builder
	for _, u := range slices.Sorted(maps.Keys(o.Users)) {
		fmt.Fprintf(&users, "%s password=%s\n", u, o.Users[u])
	}
	ro.Users = users.String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := sipdrun.Start(ctx, cfg, ro)
	if err != nil {
		t.Fatalf("start sipd: %v", err)
	}
	s := &Sipd{Sipd: d, t: t}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop sipd: %v", err)
		}
		if t.Failed() {
			t.Logf("sipd log %s:\n%s", d.LogPath, d.Tail(6000))
		}
	})
	return s
}

// Restart starts sipd again on the same configuration and directory,
// after Stop or Kill.
func (s *Sipd) Restart() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Sipd.Restart(ctx); err != nil {
		s.t.Fatalf("restart sipd: %v", err)
	}
}

// Do sends an API request and returns the status and body. It sends the
// configured http.token as a bearer token unless hdr has an
// Authorization entry (an empty one sends none).
func (s *Sipd) Do(method, path string, hdr map[string]string, body io.Reader) (int, []byte) {
	s.t.Helper()
	code, b, err := s.Sipd.Do(context.Background(), method, path, hdr, body)
	if err != nil {
		s.t.Fatal(err)
	}
	return code, b
}

// GetJSON reads an API document into v, failing the test unless it
// answers 200.
func (s *Sipd) GetJSON(path string, v any) {
	s.t.Helper()
	if err := s.Sipd.GetJSON(context.Background(), path, v); err != nil {
		s.t.Fatal(err)
	}
}

// Health reads /health.
func (s *Sipd) Health() sipd.Health {
	s.t.Helper()
	h, err := s.Sipd.Health(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return h
}

// Metric reads one sample of /metrics: the value on the line that starts
// with series (name and labels as written, e.g.
// `sipxdp_sip_refused_total{reason="x"}`); ok is false when absent.
func (s *Sipd) Metric(series string) (float64, bool) {
	s.t.Helper()
	v, ok, err := s.Sipd.Metric(context.Background(), series)
	if err != nil {
		s.t.Fatal(err)
	}
	return v, ok
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
	m, err := s.Sipd.GoMem(context.Background(), true)
	if err != nil {
		s.t.Fatal(err)
	}
	return m.HeapInuse, m.Goroutines
}
