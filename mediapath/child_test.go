package mediapath

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"sipxdp/internal/netns"
	"sipxdp/relay"
)

// The stack under test runs in a child process started with
// nsenter --net=/run/netns/RELAY: the re-executed test binary, sent to
// childMain by an environment variable. Setting one thread's namespace is
// not enough: the userspace relay opens its sockets in whichever thread
// calls Upsert, and the engine calls it from its Run goroutine and from
// callers of SetPeer, on threads that may be in any namespace. A whole
// process in the relay namespace is also what a deployment looks like,
// and it can be SIGKILLed to test a restart.
const childEnv = "SIPXDP_MEDIAPATH_CHILD"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childEnv); cfg != "" {
		os.Exit(childMain(cfg))
	}
	os.Exit(m.Run())
}

// childConfig is what the parent passes in childEnv.
type childConfig struct {
	Datapath   string
	Interfaces []string
	PinPath    string
	Timeout    time.Duration
	Learning   time.Duration
	Addresses  []relay.AddressConfig
}

// request is one line on the child's stdin.
type request struct {
	Op     string // create, setpeer, flows, stats, delete, kernelflows, close
	Call   string
	Family relay.Family
	Side   relay.Side
	RTP    netip.AddrPort
	RTCP   netip.AddrPort
	Mux    bool
}

// reply is one line on the child's stdout; the first one says whether the
// stack opened.
type reply struct {
	Err  string          `json:",omitempty"`
	Data json.RawMessage `json:",omitempty"`
}

type readyInfo struct {
	Path, Reason string
	Kernel       bool
}

func childMain(cfgJSON string) int {
	out := json.NewEncoder(os.Stdout)
	fail := func(err error) int {
		out.Encode(reply{Err: err.Error()})
		return 1
	}
	var cfg childConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return fail(fmt.Errorf("parse child config: %w", err))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := Open(Options{Datapath: cfg.Datapath, Interfaces: cfg.Interfaces, PinPath: cfg.PinPath,
		Timeout: cfg.Timeout, Learning: cfg.Learning, Addresses: cfg.Addresses, Logger: log, Workers: 1})
	if err != nil {
		return fail(err)
	}
	// Close stops Run; the child ends with the process anyway.
	go st.Engine.Run(context.Background())
	ready, _ := json.Marshal(readyInfo{Path: st.PathName(), Reason: st.Engine.PathReason(), Kernel: st.Kernel != nil})
	out.Encode(reply{Data: ready})

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			return fail(fmt.Errorf("parse request: %w", err))
		}
		v, err := serve(st, req)
		var r reply
		if err != nil {
			r.Err = err.Error()
		} else if v != nil {
			b, err := json.Marshal(v)
			if err != nil {
				return fail(fmt.Errorf("encode reply to %s: %w", req.Op, err))
			}
			r.Data = b
		}
		if err := out.Encode(r); err != nil {
			return 1
		}
		if req.Op == "close" {
			return 0
		}
	}
	// The parent went away without asking: close as a daemon would.
	st.Close()
	return 0
}

func serve(st *Stack, req request) (any, error) {
	e := st.Engine
	switch req.Op {
	case "create":
		if err := e.CreateSession(req.Call); err != nil {
			return nil, err
		}
		return e.AddStream(req.Call, 0, relay.LegSpec{Address: "a", Family: req.Family},
			relay.LegSpec{Address: "b", Family: req.Family})
	case "setpeer":
		return nil, e.SetPeer(req.Call, 0, req.Side, req.RTP, req.RTCP, req.Mux)
	case "flows":
		return e.Flows(), nil
	case "stats":
		return e.Stats(), nil
	case "delete":
		return e.DeleteSession(req.Call)
	case "kernelflows":
		if st.Kernel == nil {
			return []relay.FlowKey{}, nil
		}
		fs, err := st.Kernel.Flows()
		if err != nil {
			return nil, err
		}
		keys := []relay.FlowKey{}
		for _, f := range fs {
			keys = append(keys, f.Flow.Key)
		}
		return keys, nil
	case "close":
		return nil, st.Close()
	}
	return nil, fmt.Errorf("unknown op %q", req.Op)
}

// child is the parent's handle on a stack process.
type child struct {
	t      testing.TB
	cmd    *exec.Cmd
	in     io.WriteCloser
	lines  chan []byte
	ready  readyInfo
	logf   string
	mu     sync.Mutex
	exited bool
}

// startChild runs the stack in ns and returns the error Open returned in
// the child, if any.
func startChild(t testing.TB, ns *netns.NS, cfg childConfig) (*child, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// TestMain diverts the child before any test runs; should the
	// variable get lost, the child runs no test rather than all of them.
	cmd := ns.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	logf := filepath.Join(t.TempDir(), "stack.log")
	lf, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd.Stderr = lf
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start stack process: %v", err)
	}
	c := &child{t: t, cmd: cmd, in: in, lines: make(chan []byte, 16), logf: logf}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			c.lines <- bytes.Clone(sc.Bytes())
		}
	}()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			if b, err := os.ReadFile(logf); err == nil {
				t.Logf("stack log (pid %d):\n%s", cmd.Process.Pid, b)
			}
		}
	})
	var r reply
	if err := c.read(&r); err != nil {
		return nil, err
	}
	if r.Err != "" {
		return nil, errors.New(r.Err)
	}
	if err := json.Unmarshal(r.Data, &c.ready); err != nil {
		t.Fatal(err)
	}
	return c, nil
}

func (c *child) read(r *reply) error {
	select {
	case line, ok := <-c.lines:
		if !ok {
			return errors.New("stack process closed its output")
		}
		return json.Unmarshal(line, r)
	case <-time.After(20 * time.Second):
		return errors.New("stack process did not answer within 20s")
	}
}

// do sends one request and decodes the reply's data into out (if not nil).
func (c *child) do(req request, out any) error {
	b, _ := json.Marshal(req)
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("send %s: %w", req.Op, err)
	}
	var r reply
	if err := c.read(&r); err != nil {
		return fmt.Errorf("%s: %w", req.Op, err)
	}
	if r.Err != "" {
		return fmt.Errorf("%s: %s", req.Op, r.Err)
	}
	if out != nil {
		if err := json.Unmarshal(r.Data, out); err != nil {
			return fmt.Errorf("decode %s reply: %w", req.Op, err)
		}
	}
	return nil
}

func (c *child) must(req request, out any) {
	c.t.Helper()
	if err := c.do(req, out); err != nil {
		c.t.Fatal(err)
	}
}

func (c *child) flows() []relay.FlowInfo {
	c.t.Helper()
	var fs []relay.FlowInfo
	c.must(request{Op: "flows"}, &fs)
	return fs
}

func (c *child) stats() relay.Totals {
	c.t.Helper()
	var st relay.Totals
	c.must(request{Op: "stats"}, &st)
	return st
}

func (c *child) kernelFlows() []relay.FlowKey {
	c.t.Helper()
	var ks []relay.FlowKey
	c.must(request{Op: "kernelflows"}, &ks)
	return ks
}

// close asks the stack to close and waits for the process to end.
func (c *child) close() {
	c.t.Helper()
	c.must(request{Op: "close"}, nil)
	c.wait()
}

func (c *child) wait() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exited {
		return
	}
	c.exited = true
	c.in.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// Only our own child, by its PID (nsenter execs, so it is the
		// test binary itself).
		c.cmd.Process.Kill()
		<-done
	}
}

// sigkill kills the stack process as a crash would: no Close, no cleanup.
func (c *child) sigkill() {
	c.t.Helper()
	if err := syscall.Kill(c.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		c.t.Fatalf("kill stack process %d: %v", c.cmd.Process.Pid, err)
	}
	c.wait()
}

func (c *child) kill() {
	c.mu.Lock()
	exited := c.exited
	c.mu.Unlock()
	if !exited {
		c.cmd.Process.Kill()
		c.wait()
	}
}
