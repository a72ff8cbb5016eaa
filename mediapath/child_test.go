package mediapath

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sipxdp/internal/childproc"
	"sipxdp/internal/netns"
	"sipxdp/relay"
)

// The stack under test runs in a child process started in the relay
// namespace (childproc, with nsenter --net=/run/netns/RELAY): the
// re-executed test binary in role stackRole. Setting one thread's
// namespace is not enough: the userspace relay opens its sockets in
// whichever thread calls Upsert, and the engine calls it from its Run
// goroutine and from callers of SetPeer, on threads that may be in any
// namespace. A whole process in the relay namespace is also what a
// deployment looks like, and it can be SIGKILLed to test a restart.
const stackRole = "_mediapath_stack"

func init() { childproc.Register(stackRole, stackChild) }

func TestMain(m *testing.M) { childproc.Main(m) }

// childConfig is the child's parameters.
type childConfig struct {
	Datapath   string
	Interfaces []string
	PinPath    string
	Timeout    time.Duration
	Learning   time.Duration
	Addresses  []relay.AddressConfig
}

// request is one command to the child, answered by one reply.
type request struct {
	Op     string // create, setpeer, options, flows, stats, delete, kernelflows, close
	Call   string
	Family relay.Family
	// FamilyB is leg B's family on create; zero: Family.
	FamilyB relay.Family
	Side    relay.Side
	RTP     netip.AddrPort
	RTCP    netip.AddrPort
	Mux     bool
	// Opts are the side's options for op options.
	Opts relay.SideOptions
}

// readyInfo is the child's "ready" event, sent once the stack opened.
type readyInfo struct {
	Path, Reason string
	Kernel       bool
}

func stackChild() int {
	var cfg childConfig
	if err := childproc.Params(&cfg); err != nil {
		childproc.Emit("ready", nil, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := Open(Options{Datapath: cfg.Datapath, Interfaces: cfg.Interfaces, PinPath: cfg.PinPath,
		Timeout: cfg.Timeout, Learning: cfg.Learning, Addresses: cfg.Addresses, Logger: log, Workers: 1})
	if err != nil {
		childproc.Emit("ready", nil, err)
		return 1
	}
	// Close stops Run; the child ends with the process anyway.
	go st.Engine.Run(context.Background())
	childproc.Emit("ready", readyInfo{Path: st.PathName(), Reason: st.Engine.PathReason(), Kernel: st.Kernel != nil}, nil)
	for {
		var req request
		if !childproc.Next(&req) {
			break
		}
		childproc.Reply(serve(st, req))
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
		famB := req.FamilyB
		if famB == 0 {
			famB = req.Family
		}
		return e.AddStream(req.Call, 0, relay.LegSpec{Address: "a", Family: req.Family},
			relay.LegSpec{Address: "b", Family: famB})
	case "setpeer":
		return nil, e.SetPeer(req.Call, 0, req.Side, req.RTP, req.RTCP, req.Mux)
	case "options":
		return nil, e.SetSideOptions(req.Call, req.Side, req.Opts)
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
	t     testing.TB
	p     *childproc.Proc
	ready readyInfo
}

// replyTimeout bounds the stack's answer to each request.
const replyTimeout = 20 * time.Second

// startChild runs the stack in ns and returns the error Open returned in
// the child, if any.
func startChild(t testing.TB, ns *netns.NS, cfg childConfig) (*child, error) {
	t.Helper()
	logf := filepath.Join(t.TempDir(), "stack.log")
	lf, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	p, err := childproc.Start(childproc.Spec{Role: stackRole, Name: "stack", Params: cfg, NetNS: ns.Path, Stderr: lf})
	if err != nil {
		t.Fatalf("start stack process: %v", err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			if b, err := os.ReadFile(logf); err == nil {
				t.Logf("stack log (pid %d):\n%s", p.PID(), b)
			}
		}
	})
	c := &child{t: t, p: p}
	m, err := p.Await(context.Background(), "ready", replyTimeout)
	if err != nil {
		return nil, err
	}
	if err := m.Decode(&c.ready); err != nil {
		t.Fatal(err)
	}
	return c, nil
}

// do sends one request and decodes the reply's data into out (if not nil).
func (c *child) do(req request, out any) error {
	if err := c.p.Call(context.Background(), req, out, replyTimeout); err != nil {
		return fmt.Errorf("%s: %w", req.Op, err)
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

// close asks the stack to close and waits for the process to end (killed,
// by its PID, after 10 s).
func (c *child) close() {
	c.t.Helper()
	c.must(request{Op: "close"}, nil)
	c.p.Close(10 * time.Second)
}

// sigkill kills the stack process as a crash would: no Close, no cleanup.
func (c *child) sigkill() {
	c.t.Helper()
	if err := c.p.Crash(); err != nil {
		c.t.Fatal(err)
	}
	c.p.Close(10 * time.Second)
}
