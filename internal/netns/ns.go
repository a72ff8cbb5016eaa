package netns

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is one named network namespace of a topology.
type NS struct {
	Name string
	Path string // the bind-mounted namespace file, for nsenter --net=PATH
	h    netns.NsHandle
}

func (n *NS) open() error {
	h, err := netns.GetFromPath(n.Path)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", n.Name, err)
	}
	n.h = h
	return nil
}

func (n *NS) close() {
	if n.h >= 0 {
		n.h.Close()
		n.h = -1
	}
}

// Do runs fn on a locked OS thread inside the namespace and moves the
// thread back afterwards. Sockets and netlink handles opened by fn keep
// this namespace after Do returns; goroutines fn starts do not inherit it.
func (n *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(n.h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", n.Name, err)
	}
	defer func() {
		// A thread that cannot go back stays locked, so the runtime
		// retires it with the goroutine instead of reusing it elsewhere.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

// ListenUDP opens a UDP socket bound inside the namespace.
func (n *NS) ListenUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return err
		}
		// A test process on a busy 2-CPU machine can be off the CPU for
		// tens of milliseconds; the default buffer (about 280 small
		// datagrams) would then drop packets the relay delivered, and a
		// loss check would blame the relay.
		rc, err := c.SyscallConn()
		if err != nil {
			c.Close()
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		}); err != nil || serr != nil {
			c.Close()
			return fmt.Errorf("set receive buffer: %w", errors.Join(err, serr))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listen udp %s in %s: %w", addr, n.Name, err)
	}
	return c, nil
}

// Exec runs a command inside the namespace with nsenter, which, unlike
// ip netns exec, leaves /sys (and so bpffs) as it is.
func (n *NS) Exec(name string, args ...string) ([]byte, error) {
	return exec.Command("nsenter", append([]string{"--net=" + n.Path, name}, args...)...).CombinedOutput()
}

// Command returns a command that runs inside the namespace with nsenter.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.Path, "--", name}, args...)...)
}

// SetTxChecksum switches tx checksum offload of dev on or off. With it on,
// packets sent by local sockets over veth keep a partial UDP checksum.
func (n *NS) SetTxChecksum(dev string, on bool) error {
	v := "off"
	if on {
		v = "on"
	}
	if out, err := n.Exec("ethtool", "-K", dev, "tx", v); err != nil {
		return fmt.Errorf("ethtool -K %s tx %s in %s: %w: %s", dev, v, n.Name, err, out)
	}
	return nil
}

// Sysctl sets a sysctl inside the namespace: /proc/sys/net follows the
// network namespace of the thread that opens it.
func (n *NS) Sysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if err := n.Do(func() error { return os.WriteFile(path, []byte(value), 0) }); err != nil {
		return fmt.Errorf("set %s=%s in %s: %w", key, value, n.Name, err)
	}
	return nil
}

// Handle opens a netlink handle working inside the namespace. Close it.
func (n *NS) Handle() (*netlink.Handle, error) {
	nh, err := netlink.NewHandleAt(n.h)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n.Name, err)
	}
	return nh, nil
}

// Counters are an interface's packet counters.
type Counters struct {
	RxPackets, TxPackets, RxDropped, TxDropped uint64
}

// ReadCounters reads an interface's counters through a handle from
// Handle; keeping the handle open makes repeated reads cheap inside a
// measurement.
func ReadCounters(h *netlink.Handle, ifname string) (Counters, error) {
	link, err := h.LinkByName(ifname)
	if err != nil {
		return Counters{}, fmt.Errorf("link %s: %w", ifname, err)
	}
	s := link.Attrs().Statistics
	if s == nil {
		return Counters{}, fmt.Errorf("link %s: no statistics", ifname)
	}
	return Counters{RxPackets: s.RxPackets, TxPackets: s.TxPackets, RxDropped: s.RxDropped, TxDropped: s.TxDropped}, nil
}

// UDPCounters reads the namespace's UDP MIB: the Udp line of
// /proc/net/snmp and the Udp6 entries of /proc/net/snmp6, keyed as the
// kernel names them ("Udp:InCsumErrors", "Udp6InCsumErrors").
func (n *NS) UDPCounters() (map[string]uint64, error) {
	out := map[string]uint64{}
	err := n.Do(func() error {
		// thread-self, not self: /proc/self/net follows the namespace of
		// the process's main thread, not of this locked thread.
		if err := readSNMP("/proc/thread-self/net/snmp", out); err != nil {
			return err
		}
		return readSNMP6("/proc/thread-self/net/snmp6", out)
	})
	if err != nil {
		return nil, fmt.Errorf("udp counters of %s: %w", n.Name, err)
	}
	return out, nil
}

func readSNMP(path string, out map[string]uint64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := parseSNMP(b, "Udp:", out); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// parseSNMP reads the counters of one protocol from /proc/net/snmp's
// text: a header line of names, then a line of values, both starting
// with proto ("Udp:"). They are keyed proto+name.
func parseSNMP(b []byte, proto string, out map[string]uint64) error {
	var header []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != proto {
			continue
		}
		if header == nil {
			header = fields
			continue
		}
		for i := 1; i < len(fields) && i < len(header); i++ {
			v, err := strconv.ParseUint(fields[i], 10, 64)
			if err != nil {
				return fmt.Errorf("parse %s: %w", header[i], err)
			}
			out[proto+header[i]] = v
		}
		return sc.Err()
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("no " + proto + " lines")
}

func readSNMP6(path string, out map[string]uint64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasPrefix(f[0], "Udp6") {
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return fmt.Errorf("parse %s %s: %w", path, f[0], err)
			}
			out[f[0]] = v
		}
	}
	return nil
}

// DialContext connects from inside the namespace; the connection keeps
// the namespace after the call returns. Its signature fits
// http.Transport.DialContext, for reaching a daemon's API inside it.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s in %s: %w", network, addr, n.Name, err)
	}
	return c, nil
}

// DialFrom connects from local (port chosen by the kernel) inside the
// namespace, within timeout.
func (n *NS) DialFrom(network string, local netip.Addr, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}
		var err error
		c, err = d.Dial(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from %s in %s: %w", network, addr, local, n.Name, err)
	}
	return c, nil
}

// AllowSpoofed switches reverse-path filtering off in the namespace, so
// it accepts packets whose source it would route elsewhere, as a server
// on the internet does for packets with a forged source. A test that
// spoofs must call it on the receiving namespace: with rp_filter on
// (inherited from the host on some systems) the forged packets would
// vanish and the test would prove nothing.
func (n *NS) AllowSpoofed(t testing.TB) {
	t.Helper()
	// Per-interface values count too (the kernel uses the larger of all
	// and the interface's); /proc/sys/net lists the namespace's own.
	var devs []os.DirEntry
	if err := n.Do(func() (err error) {
		devs, err = os.ReadDir("/proc/sys/net/ipv4/conf")
		return err
	}); err != nil {
		t.Fatalf("list interfaces of %s: %v", n.Name, err)
	}
	for _, d := range devs {
		if err := n.Sysctl("net.ipv4.conf."+d.Name()+".rp_filter", "0"); err != nil {
			t.Fatal(err)
		}
	}
}
