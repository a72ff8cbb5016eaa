package kamailio

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sipxdp/internal/netns"
)

// nsPrefix names this package's namespaces, so a later run removes what
// a crashed one left.
const nsPrefix = "sxkm-"

// netNS is one throw-away network namespace with only lo, up. Everything
// of the test runs in it: Kamailio, sipp, sipd and the test's own sockets,
// all on 127.0.0.1. Its ports are all free, its lo is its own (the tc
// program sipd attaches there touches nothing outside), and deleting it
// takes every socket and hook with it.
type netNS struct{ *netns.NS }

func newNetNS(t *testing.T) *netNS { return &netNS{netns.Lone(t, nsPrefix)} }

// listenUDP opens a UDP socket in the namespace (with a large receive
// buffer) that is closed with the test.
func (n *netNS) listenUDP(t *testing.T, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := n.ListenUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpBound reports whether something listens on UDP port in the namespace
// (the thread's own /proc view of its namespace's sockets).
func (n *netNS) udpBound(port uint16) bool {
	found := false
	_ = n.Do(func() error {
		f, err := os.Open("/proc/thread-self/net/udp")
		if err != nil {
			return err
		}
		defer f.Close()
		want := fmt.Sprintf(":%04X ", port)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 1 && strings.HasSuffix(fields[1]+" ", want) {
				found = true
			}
		}
		return nil
	})
	return found
}

// proc is one process the test started, in the namespace (nsenter execs
// the program in place, so the PID is the program's).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // set before done closes
}

// start runs bin in the namespace with its output in DIR/name.log and
// registers its end with t.Cleanup: SIGTERM to its PID, SIGKILL after 5 s.
// On failure the log's tail goes to the test log.
func (n *netNS) start(t *testing.T, dir, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	lf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	p.cmd = n.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	// Should the test binary die, take the child with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%s log (%s), last lines:\n%s", name, p.log, tailFile(p.log, 40))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) stop(t *testing.T) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Errorf("%s (pid %d) did not stop on SIGTERM in 5 s; killing it", p.name, p.cmd.Process.Pid)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// wait waits up to d for the process to end and returns how it ended.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %v", p.name, d)
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}
