// Package childproc re-executes the running binary as a child of a
// registered role. The bench spreads load over processes with it, so each
// load generator, sink or relay has its own line in /proc and its own CPU
// figure; namespace tests run a daemon in a namespace with it, as a whole
// process (a thread's setns is not enough when sockets are opened from
// any goroutine), which they can also SIGKILL to test a restart.
//
// One mechanism and one wire format:
//   - The role is named in the environment ($SIPXDP_CHILD); the
//     binary's main (bench.Main) calls Run first, a test binary's
//     TestMain calls Main.
//   - Parameters are the first line of stdin, JSON. Later lines of stdin
//     are commands, JSON, for children that take them (Next); EOF means
//     finish.
//   - Results are JSON lines on stdout, each a Msg: an event name such as
//     "ready", "progress" or "result", an error, and a result document.
//     Logs go to stderr.
//   - SIGTERM asks a child to finish and report (Context); SIGINT is
//     ignored, as the children run in their own process group and a
//     terminal's Ctrl-C belongs to the parent.
//   - A child that runs once and reports is written as a function of its
//     parameters and wrapped in Serve, which does the rest. One that
//     answers requests answers each command with Reply; the parent's Call
//     sends a command and waits for that reply.
package childproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Env names the role a re-executed binary runs.
const Env = "SIPXDP_CHILD"

var roles = map[string]func() int{}

// Register names a role's entry point, from an init function. main
// returns the exit code.
func Register(role string, main func() int) {
	if _, dup := roles[role]; dup {
		panic("childproc: role " + role + " registered twice")
	}
	roles[role] = main
}

// Run runs the role named in the environment, if any: ok is false when
// this process is no child.
func Run() (code int, ok bool) {
	role := os.Getenv(Env)
	if role == "" {
		return 0, false
	}
	main, found := roles[role]
	if !found {
		fmt.Fprintf(os.Stderr, "child: no role %q in this binary\n", role)
		return 2, true
	}
	return main(), true
}

// Main is a test binary's TestMain, for packages whose tests start
// children of the test binary: it runs the role named in the
// environment, else the tests (m, a *testing.M), and exits.
func Main(m interface{ Run() int }) {
	if code, ok := Run(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// Msg is one line a child writes on stdout.
type Msg struct {
	Event  string          `json:"event"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Decode reads the message's result into v.
func (m Msg) Decode(v any) error {
	if len(m.Result) == 0 {
		return fmt.Errorf("%s: no result", m.Event)
	}
	if err := json.Unmarshal(m.Result, v); err != nil {
		return fmt.Errorf("%s result: %w", m.Event, err)
	}
	return nil
}

// The child's side.

var (
	stdinOnce sync.Once
	stdin     *bufio.Reader
	stdoutMu  sync.Mutex
)

func readLine(v any) error {
	stdinOnce.Do(func() { stdin = bufio.NewReader(os.Stdin) })
	line, err := stdin.ReadBytes('\n')
	if err != nil && (len(line) == 0 || !errors.Is(err, io.EOF)) {
		return err
	}
	return json.Unmarshal(line, v)
}

// Serve makes the entry point of a child that reads parameters, runs and
// reports once: it reads the parameters into a P, calls run with Context
// and emits what run returns as the "result" (an error before any result
// with a nil one). The code is 2 for unreadable parameters, 1 when run
// fails, else 0.
func Serve[P any](run func(ctx context.Context, p P) (any, error)) func() int {
	return func() int {
		var p P
		if err := Params(&p); err != nil {
			Emit("result", nil, err)
			return 2
		}
		ctx, stop := Context()
		defer stop()
		res, err := run(ctx, p)
		Emit("result", res, err)
		if err != nil {
			return 1
		}
		return 0
	}
}

// Params reads the child's parameters, the first line of stdin, into v.
func Params(v any) error {
	if err := readLine(v); err != nil {
		return fmt.Errorf("child parameters: %w", err)
	}
	return nil
}

// Next reads the next command from stdin into v; false at EOF (or on a
// line that is not one), when the child should finish.
func Next(v any) bool { return readLine(v) == nil }

// Emit writes one message on stdout; safe from several goroutines.
func Emit(event string, result any, err error) {
	m := Msg{Event: event}
	if err != nil {
		m.Error = err.Error()
	}
	if result != nil {
		b, merr := json.Marshal(result)
		if merr != nil {
			m.Error = fmt.Sprintf("marshal result: %v", merr)
		}
		m.Result = b
	}
	b, _ := json.Marshal(m)
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// Reply answers the command just read (Next) for a parent's Call: one
// reply per command, in order.
func Reply(result any, err error) { Emit("reply", result, err) }

// Context ends on SIGTERM, the parent's way of saying "finish and
// report"; SIGINT is ignored.
func Context() (context.Context, context.CancelFunc) {
	signal.Ignore(syscall.SIGINT)
	return signal.NotifyContext(context.Background(), syscall.SIGTERM)
}

// The parent's side.

// Spec is how to start a child.
type Spec struct {
	Role   string // a registered role
	Name   string // for logs and errors (empty: Role)
	Params any    // sent as the first line of stdin
	// NetNS is a network namespace (/run/netns/NAME) to run the child
	// in, with nsenter rather than `ip netns exec`: the latter remounts
	// /sys and hides bpffs, where the kernel datapath pins its objects.
	// nsenter execs in place, so the PID is the child's own.
	NetNS string
	// Stderr takes the child's logs (nil: this process's stderr, each
	// line prefixed with [Name]).
	Stderr io.Writer
}

// Proc is a running child.
type Proc struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	inMu sync.Mutex
	msgs chan Msg
	done chan struct{} // closed when the process has been waited for
	err  error         // exit status, valid after done
}

// Start starts a child of this executable.
func Start(s Spec) (*Proc, error) {
	if s.Name == "" {
		s.Name = s.Role
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary: %w", err)
	}
	params, err := json.Marshal(s.Params)
	if err != nil {
		return nil, fmt.Errorf("%s parameters: %w", s.Name, err)
	}
	argv := []string{exe}
	if s.NetNS != "" {
		argv = append([]string{"nsenter", "--net=" + s.NetNS}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), Env+"="+s.Role)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: Ctrl-C reaches only the bench, which then
		// stops the children in order and still collects their results.
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	p := &Proc{name: s.Name, cmd: cmd, msgs: make(chan Msg, 8), done: make(chan struct{})}
	if p.in, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("%s stdin: %w", s.Name, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%s stdout: %w", s.Name, err)
	}
	var stderr io.Reader
	if s.Stderr != nil {
		cmd.Stderr = s.Stderr
	} else if stderr, err = cmd.StderrPipe(); err != nil {
		return nil, fmt.Errorf("%s stderr: %w", s.Name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	if stderr != nil {
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				fmt.Fprintf(os.Stderr, "[%s] %s\n", s.Name, sc.Text())
			}
		}()
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			var m Msg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				fmt.Fprintf(os.Stderr, "[%s] %s\n", s.Name, sc.Text())
				continue
			}
			p.msgs <- m
		}
		close(p.msgs)
		p.err = cmd.Wait()
		close(p.done)
	}()
	// A child that ends before reading its parameters (a role that fails
	// at once, an unknown role) has closed the pipe: that is no error of
	// Start's, as what it printed and its exit status reach Await.
	if err := p.Send(json.RawMessage(params)); err != nil && !errors.Is(err, syscall.EPIPE) {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// PID is the child's process ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Msgs delivers the child's messages; it is closed when the child's
// stdout ends. Read it instead of Await to see every event.
func (p *Proc) Msgs() <-chan Msg { return p.msgs }

// Wait waits for the child to exit, after Msgs is drained, and returns its
// exit status.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Send writes a command line to the child's stdin.
func (p *Proc) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s command: %w", p.name, err)
	}
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("%s stdin: %w", p.name, err)
	}
	return nil
}

// Call sends a command and waits up to timeout for its Reply, which it
// decodes into out (nil: no result wanted). A reply with an error is an
// error.
func (p *Proc) Call(ctx context.Context, cmd, out any, timeout time.Duration) error {
	if err := p.Send(cmd); err != nil {
		return err
	}
	m, err := p.Await(ctx, "reply", timeout)
	if err != nil || out == nil {
		return err
	}
	return m.Decode(out)
}

// Await waits for the named event; other events are skipped. An event
// carrying an error, an early exit, ctx's end or the timeout (0: none) is
// an error.
func (p *Proc) Await(ctx context.Context, event string, timeout time.Duration) (Msg, error) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return Msg{}, ctx.Err()
		case <-expired:
			return Msg{}, fmt.Errorf("%s: no %q within %s", p.name, event, timeout)
		case m, ok := <-p.msgs:
			if !ok {
				return Msg{}, fmt.Errorf("%s exited before %q: %v", p.name, event, p.Wait())
			}
			if m.Error != "" {
				return m, fmt.Errorf("%s: %s", p.name, m.Error)
			}
			if m.Event == event {
				return m, nil
			}
		}
	}
}

// Stop asks the child to finish (SIGTERM) and returns its "result".
func (p *Proc) Stop(ctx context.Context, timeout time.Duration) (Msg, error) {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return Msg{}, fmt.Errorf("stop %s: %w", p.name, err)
	}
	return p.Await(ctx, "result", timeout)
}

// Close ends the child's stdin, which tells a child reading commands to
// finish, and waits up to timeout for it to exit before Kill; the error
// says it had to be killed.
func (p *Proc) Close(timeout time.Duration) error {
	p.inMu.Lock()
	p.in.Close()
	p.inMu.Unlock()
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	p.Kill()
	return fmt.Errorf("%s (pid %d) did not exit within %s of the end of its input; killed", p.name, p.PID(), timeout)
}

// Crash SIGKILLs the child at once, as a crash would: no handler runs and
// nothing is cleaned up, which is what a restart test needs. Wait reaps it.
func (p *Proc) Crash() error {
	if err := p.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("kill %s (pid %d): %w", p.name, p.PID(), err)
	}
	return nil
}

// Kill ends the child if it is still running and reaps it: SIGTERM, then
// SIGKILL after 3 s. Only this child's PID is signalled. Messages not yet
// read are dropped, so a child still printing cannot hold up its reaping.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	go func() {
		for range p.msgs {
		}
	}()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(3 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		slog.Warn("child did not exit after SIGKILL", "name", p.name, "pid", p.PID())
	}
}
