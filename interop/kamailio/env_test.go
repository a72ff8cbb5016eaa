package kamailio

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"sipxdp/internal/netnstest"
)

// nsPrefix names this package's namespaces (prefix + PID + counter), so a
// later run removes what a crashed one left.
const nsPrefix = "sxkm-"

var nsCounter atomic.Uint64

// netNS is one throw-away network namespace with only lo, up. Everything
// of the test runs in it: Kamailio, sipp, sipd and the test's own sockets,
// all on 127.0.0.1. Its ports are all free, its lo is its own (the tc
// program sipd attaches there touches nothing outside), and deleting it
// takes every socket and hook with it.
type netNS struct {
	name string
	h    vnetns.NsHandle
}

func (n *netNS) path() string { return filepath.Join(netnstest.NetnsDir, n.name) }

func newNetNS(t *testing.T) *netNS {
	t.Helper()
	netnstest.RemoveStale(t, nsPrefix)
	name := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nsCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("create namespace %s: %v: %s", name, err, out)
	}
	n := &netNS{name: name, h: -1}
	t.Cleanup(func() {
		if n.h >= 0 {
			n.h.Close()
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("remove namespace %s: %v: %s", name, err, out)
		}
	})
	h, err := vnetns.GetFromName(name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	n.h = h
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", name, err, out)
	}
	return n
}

// do runs fn on a locked OS thread inside the namespace. Sockets fn opens
// stay in the namespace. A thread that cannot switch back stays locked and
// is retired with its goroutine.
func (n *netNS) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := vnetns.Set(n.h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", n.name, err)
			return
		}
		err = fn()
		if vnetns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// listenUDP opens a UDP socket in the namespace with a large receive
// buffer, so a test goroutine off the CPU for a moment loses nothing.
func (n *netNS) listenUDP(t *testing.T, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := n.do(func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return err
		}
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		}); err != nil || serr != nil {
			return fmt.Errorf("receive buffer: %w", errors.Join(err, serr))
		}
		return nil
	})
	if err != nil {
		if c != nil {
			c.Close()
		}
		t.Fatalf("listen udp %s in %s: %v", addr, n.name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// httpClient dials inside the namespace.
func (n *netNS) httpClient() *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := n.do(func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		DisableKeepAlives: true,
	}
	return &http.Client{Transport: tr, Timeout: 3 * time.Second}
}

// udpBound reports whether something listens on UDP port in the namespace
// (the thread's own /proc view of its namespace's sockets).
func (n *netNS) udpBound(port uint16) bool {
	found := false
	_ = n.do(func() error {
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
	p.cmd = exec.Command("nsenter", append([]string{"--net=" + n.path(), "--", bin}, args...)...)
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
