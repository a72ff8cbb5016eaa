// Package browser runs headless Chromium for the WebRTC tests: a test
// page served by the test, opened in a Chromium that the test starts as a
// child process inside a network namespace and stops by its PID.
//
// Chromium's WebRTC gathers no ICE candidates on loopback interfaces, so
// the browser has to sit in a namespace with a veth address
// (internal/netns). The page itself is served on 127.0.0.1 inside that
// namespace: a loopback origin is a secure context, so getUserMedia works
// over plain http, and a page on http may open both ws:// and wss://.
//
// The page and the test talk over the page's own origin: the page POSTs
// events (JSON: seq, type, data) to /event and long-polls /command for
// what to do next. Its console output arrives as "console" events, and
// Chromium's own log (--enable-logging=stderr) goes to a file; both are
// printed when the test fails.
package browser

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sipxdp/internal/netns"
	"sipxdp/internal/testenv"
)

// EnvChromium names a Chromium binary to use instead of the one found.
const EnvChromium = "SIPXDP_CHROMIUM"

// Binary finds Chromium: $SIPXDP_CHROMIUM, Debian's binary behind its
// /usr/bin/chromium wrapper script (so the PID the test holds is the
// browser's own), or chromium in $PATH.
func Binary() (string, error) {
	if p := os.Getenv(EnvChromium); p != "" {
		return p, nil
	}
	if _, err := os.Stat("/usr/lib/chromium/chromium"); err == nil {
		return "/usr/lib/chromium/chromium", nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("chromium is not installed (Debian package chromium; scripts/install-deps.sh installs it)")
}

// Require skips the test when it cannot run a browser (not root, no
// Chromium), or fails it under CI, and returns the Chromium binary.
func Require(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: starts headless Chromium in a network namespace")
	}
	testenv.RequireRoot(t)
	bin, err := Binary()
	if err != nil {
		testenv.Unavailable(t, err.Error())
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		testenv.Unavailable(t, "nsenter is not installed (Debian package util-linux)")
	}
	return bin
}

// Args are Chromium's command-line flags for a test: headless, a fake
// microphone and no permission prompt, autoplay without a gesture, the
// test's self-signed certificates accepted, and nothing that would reach
// out to the network on its own. userDataDir is the throw-away profile.
func Args(userDataDir string, root bool) []string {
	args := []string{
		"--headless",
		"--user-data-dir=" + userDataDir,
		"--use-fake-device-for-media-stream",
		"--use-fake-ui-for-media-stream",
		"--autoplay-policy=no-user-gesture-required",
		"--ignore-certificate-errors",
		// Real host candidates, not mDNS names the relay cannot resolve.
		"--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter,OptimizationHints,Translate",
		"--enable-logging=stderr",
		"--v=0",
		"--no-first-run",
		"--no-default-browser-check",
		"--disable-gpu",
		"--disable-dev-shm-usage",
		"--disable-extensions",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-default-apps",
		"--disable-domain-reliability",
		"--disable-sync",
		"--no-pings",
		"--metrics-recording-only",
		"--password-store=basic",
		"--use-mock-keychain",
	}
	if root {
		// Chromium refuses to run as root with its sandbox on.
		args = append(args, "--no-sandbox")
	}
	return args
}

// Env is Chromium's environment: env with HOME, TMPDIR and
// XDG_RUNTIME_DIR moved into dir and the other XDG base directories
// dropped, so that what Chromium keeps outside its profile (crash
// reports, the NSS database, dconf, PulseAudio's runtime directory, its
// temporary files) lands in the test's directory, not in the user's home
// or /tmp. The caller creates dir/tmp and dir/run.
func Env(env []string, dir string) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		if strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "TMPDIR=") || strings.HasPrefix(kv, "XDG_") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "HOME="+dir, "TMPDIR="+filepath.Join(dir, "tmp"), "XDG_RUNTIME_DIR="+filepath.Join(dir, "run"))
}

// Config is what Open needs.
type Config struct {
	// NS is where Chromium runs and the page is served (on 127.0.0.1);
	// it needs a non-loopback interface for ICE.
	NS *netns.NS
	// Binary is Chromium (Require returns it).
	Binary string
	// PageDir is served at /; the page is PageDir/index.html.
	PageDir string
	// Files are more files to serve, by URL path ("/jssip.js").
	Files map[string]string
	// Query is the page's parameters.
	Query url.Values
	// Dir holds the profile and Chromium's log (empty: t.TempDir()).
	Dir string
}

// Event is one thing the page reported.
type Event struct {
	Seq  int             `json:"seq"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// Decode reads the event's data into v.
func (e Event) Decode(v any) error {
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("page event %s: %w", e.Type, err)
	}
	return nil
}

func (e Event) String() string { return fmt.Sprintf("#%d %s %s", e.Seq, e.Type, e.Data) }

// ParseEvent reads the body of one POST /event.
func ParseEvent(b []byte) (Event, error) {
	var e Event
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		return Event{}, fmt.Errorf("page event: %w", err)
	}
	if d.More() {
		return Event{}, errors.New("page event: more than one JSON value")
	}
	if e.Type == "" {
		return Event{}, errors.New("page event: no type")
	}
	if len(e.Data) == 0 || string(e.Data) == "null" {
		e.Data = json.RawMessage("{}")
	}
	return e, nil
}

// Page is the test page open in a running Chromium.
type Page struct {
	t       testing.TB
	URL     string // the page, with its query
	Origin  string // http://127.0.0.1:port
	logPath string

	mu      sync.Mutex
	events  []Event
	changed chan struct{} // closed and replaced on each new event
	used    map[int]bool  // events Await has returned

	cmds chan json.RawMessage
	srv  *http.Server
	cmd  *exec.Cmd
	done chan struct{}
}

// Open serves the page in c.NS and opens it in a new Chromium there. The
// test's cleanup stops Chromium (SIGTERM to its PID, then SIGKILL to its
// process group) and the server, and prints the page's console and
// Chromium's log if the test failed.
func Open(t testing.TB, c Config) *Page {
	t.Helper()
	if c.Dir == "" {
		c.Dir = t.TempDir()
	}
	p := newPage(t)
	p.logPath = filepath.Join(c.Dir, "chromium.log")
	var ln net.Listener
	if err := c.NS.Do(func() (err error) {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("page server in %s: %v", c.NS.Name, err)
	}
	p.Origin = "http://" + ln.Addr().String()
	p.URL = p.Origin + "/index.html?" + c.Query.Encode()
	p.srv = &http.Server{Handler: p.handler(c), ReadHeaderTimeout: 5 * time.Second}
	go p.srv.Serve(ln)
	t.Cleanup(func() {
		p.srv.Close()
	})

	lf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	args := append(Args(filepath.Join(c.Dir, "profile"), os.Geteuid() == 0), p.URL)
	// nsenter execs Chromium in place: the PID is the browser's.
	p.cmd = exec.Command("nsenter", append([]string{"--net=" + c.NS.Path, "--", c.Binary}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	p.cmd.Dir = c.Dir
	for _, d := range []string{"tmp", "run"} {
		if err := os.Mkdir(filepath.Join(c.Dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	p.cmd.Env = Env(os.Environ(), c.Dir)
	// Its own process group, so the renderer, GPU and utility processes
	// it forks can be ended with it should it not take them down itself.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("page console and events:\n%s", p.Transcript(40))
			t.Logf("chromium log %s, last lines:\n%s", p.logPath, TailFile(p.logPath, 40))
		}
	})
	return p
}

func newPage(t testing.TB) *Page {
	return &Page{t: t, changed: make(chan struct{}), used: map[int]bool{}, cmds: make(chan json.RawMessage, 16),
		done: make(chan struct{})}
}

func (p *Page) handler(c Config) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServer(http.Dir(c.PageDir)))
	for path, file := range c.Files {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, file) })
	}
	mux.HandleFunc("POST /event", func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, 1<<20)); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		e, err := ParseEvent(buf.Bytes())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		p.events = append(p.events, e)
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /command", func(w http.ResponseWriter, r *http.Request) {
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		select {
		case cmd := <-p.cmds:
			w.Header().Set("Content-Type", "application/json")
			w.Write(cmd)
		case <-t.C:
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
		}
	})
	return mux
}

// stop ends Chromium: SIGTERM to the browser's PID, then after 5 s
// SIGKILL to the process group it leads (its helpers included).
func (p *Page) stop() {
	pid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.t.Logf("chromium (pid %d) did not exit on SIGTERM in 5 s; killing its process group", pid)
		}
	}
	// Helpers left behind (a renderer that outlived the browser) share
	// the group; none is expected, so this is usually a no-op.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.t.Errorf("chromium (pid %d) still running after SIGKILL", pid)
	}
}

// Command sends the page a command: {"op": op} plus args.
func (p *Page) Command(op string, args map[string]any) {
	p.t.Helper()
	m := map[string]any{"op": op}
	for k, v := range args {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		p.t.Fatal(err)
	}
	select {
	case p.cmds <- b:
	default:
		p.t.Fatalf("page command %s: queue full (is the page polling /command?)", op)
	}
}

// Events is a copy of everything the page reported so far, in order.
func (p *Page) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Event(nil), p.events...)
}

// Await waits for the first event of one of types that Await has not
// returned yet. An event of a type in fatal ends the wait with a test
// failure (a call that failed while the test waits for it to be
// answered), as does Chromium exiting or the timeout.
func (p *Page) Await(timeout time.Duration, types []string, fatal ...string) Event {
	p.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		changed := p.changed
		for _, e := range p.events {
			if p.used[e.Seq] {
				continue
			}
			for _, f := range fatal {
				if e.Type == f {
					p.used[e.Seq] = true
					p.mu.Unlock()
					p.t.Fatalf("page reported %s while waiting for %v", e, types)
				}
			}
			for _, want := range types {
				if e.Type == want {
					p.used[e.Seq] = true
					p.mu.Unlock()
					return e
				}
			}
		}
		p.mu.Unlock()
		select {
		case <-changed:
		case <-p.done:
			p.t.Fatalf("chromium exited while waiting for %v: %v", types, p.cmd.ProcessState)
		case <-deadline.C:
			p.t.Fatalf("no %v from the page within %v", types, timeout)
		}
	}
}

// Seen returns the latest event of one of types, whether Await has
// returned it or not; ok is false when there is none. A test reads it to
// say why something it waited for did not happen.
func (p *Page) Seen(types ...string) (Event, bool) {
	es := p.Events()
	for i := len(es) - 1; i >= 0; i-- {
		for _, t := range types {
			if es[i].Type == t {
				return es[i], true
			}
		}
	}
	return Event{}, false
}

// Transcript is what the page reported, for a failure: every event but
// the last n console lines and the last three stats only (JsSIP's debug
// log and a stats report every half second would drown the rest).
func (p *Page) Transcript(n int) string {
	es := p.Events()
	keep := map[string]int{"console": n, "stats": 3}
	var out []string
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		if left, limited := keep[e.Type]; limited {
			if left == 0 {
				continue
			}
			keep[e.Type]--
		}
		line := e.String()
		var c struct{ Level, Text string }
		if e.Type == "console" && json.Unmarshal(e.Data, &c) == nil {
			line = fmt.Sprintf("#%d console.%s: %s", e.Seq, c.Level, c.Text)
		}
		out = append(out, line)
	}
	slices.Reverse(out)
	return strings.Join(out, "\n")
}

// ConsoleErrors are the page's console.error lines so far.
func (p *Page) ConsoleErrors() []string {
	var out []string
	for _, e := range p.Events() {
		var c struct{ Level, Text string }
		if e.Type == "console" && json.Unmarshal(e.Data, &c) == nil && c.Level == "error" {
			out = append(out, c.Text)
		}
	}
	return out
}

// Exited reports whether Chromium has ended.
func (p *Page) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// TailFile is the last n lines of a log file, for a failure message.
func TailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}
