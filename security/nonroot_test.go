package security

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sipxdp/internal/sipdtest"
	"sipxdp/internal/testenv"
	"sipxdp/mediapath"
	"sipxdp/relay"
	"sipxdp/sipd"
)

// sipd as a daemon user (issue 12, "Running without root"): with the
// capabilities the packaged units grant it loads the kernel path, pins
// its maps as its own, relays, and adopts its flows after a restart;
// without them it relays in userspace and says why; a pin directory it
// cannot use is named with what to fix; relayctl reads the pins as the
// same user. Privilege reduction is a defence, so it lives with the other
// attack-surface tests.

// unitCaps are the capabilities the packaged units give sipd's user, as
// setpriv spells them.
var unitCaps = []string{"bpf", "net_admin", "net_bind_service", "perfmon"}

// daemonUID is a throwaway user with no passwd entry (nothing in sipd may
// need one); otherUID is a second user, who must not read the pins.
const (
	daemonUID = 61234
	otherUID  = 61235
)

// daemonUser is the user sipd runs as, with caps. Setting it up (users,
// mounts, namespaces) takes root.
func daemonUser(t *testing.T, caps ...string) *sipdtest.Cred {
	t.Helper()
	testenv.RequireRoot(t)
	for _, id := range []int{daemonUID, otherUID} {
		if u, err := user.LookupId(strconv.Itoa(id)); err == nil {
			testenv.Unavailable(t, fmt.Sprintf("uid %d is %s on this machine; the test needs a uid nobody uses", id, u.Username))
		}
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		testenv.Unavailable(t, fmt.Sprintf("setpriv (util-linux) runs sipd as the daemon user: %v", err))
	}
	return &sipdtest.Cred{UID: daemonUID, GID: daemonUID, Caps: caps}
}

// withUser runs sipd as c.
func withUser(c *sipdtest.Cred) envOpt { return func(o *sipdtest.Options) { o.As = c } }

// bpffsFor mounts a bpffs of the test's own, its root with the given
// owner and mode, and returns its path: the host's /sys/fs/bpf is left as
// it is, and a pin directory below the mount is reached only as the test
// sets it up.
func bpffsFor(t *testing.T, uid, gid int, mode uint32) string {
	t.Helper()
	dir, err := os.MkdirTemp("", fmt.Sprintf("sipxdp-nonroot-%d-", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpffs", dir, "bpf", 0, ""); err != nil {
		os.Remove(dir)
		t.Fatalf("mount bpffs at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		os.Remove(dir)
	})
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	// MkdirTemp's parent is /tmp, which every user may search.
	return dir
}

// preparedPinDir lays a bpffs out as the packaged units prepare
// /sys/fs/bpf (README, "Running as a non-root user"): systemd's mode 1700
// plus search for others, and the pin directory the daemon user's.
func preparedPinDir(t *testing.T, cred *sipdtest.Cred) string {
	t.Helper()
	pin := filepath.Join(bpffsFor(t, 0, 0, 0o1701), "sipxdp")
	if out, err := exec.Command("install", "-d", "-o", strconv.Itoa(cred.UID), "-g", strconv.Itoa(cred.GID), "-m", "0750", pin).CombinedOutput(); err != nil {
		t.Fatalf("install -d %s: %v: %s", pin, err, out)
	}
	return pin
}

// kernelDatapath puts the relay on datapath with its pins at pin.
func kernelDatapath(dp, pin string) func(*sipd.Config) {
	return func(c *sipd.Config) {
		c.Media.Datapath = dp
		c.Media.PinPath = pin
	}
}

// With the units' capabilities and nothing else, sipd as a user with no
// passwd entry, in a pin directory it makes or one root prepared for it:
// takes the kernel hook the config asks for (auto picks tc on veth),
// serves its API on port 80 (CAP_NET_BIND_SERVICE), relays a
// call's RTP in the kernel, pins maps and links as its own user with
// modes that keep them its own, keeps the call's media going while it is
// stopped, lets relayctl read the pins as the same user (and not as
// another), after a restart as the same user adopts the flows and
// forwards on them in the kernel, and removes its pins with -uninstall.
func TestNonRootKernelPath(t *testing.T) {
	for _, tc := range []struct {
		datapath, want string
		xdp            bool
		// prepared: root made the pin directory, as README says for
		// /sys/fs/bpf; otherwise sipd makes it in a bpffs of its own.
		prepared bool
	}{
		{"auto", "tc", false, false},
		{"xdp", "xdp", true, true},
	} {
		t.Run(tc.datapath, func(t *testing.T) {
			cred := daemonUser(t, unitCaps...)
			var pin string
			if tc.prepared {
				pin = preparedPinDir(t, cred)
			} else {
				pin = filepath.Join(bpffsFor(t, cred.UID, cred.GID, 0o750), "sipxdp")
			}
			e := newEnv(t, func(c *sipd.Config) {
				kernelDatapath(tc.datapath, pin)(c)
				c.HTTP.Listen = "127.0.0.1:80"
			}, withUser(cred))
			if tc.xdp {
				e.tp.PrepareXDP(t, mediapath.PeerPass)
			}
			if h := e.sipd.Health(); h.Media.Path != tc.want {
				t.Fatalf("media path %q (%s), want %s", h.Media.Path, h.Media.Reason, tc.want)
			}
			checkRunsAs(t, e.sipd.PID(), cred)

			callerMedia, calleeMedia, alice, bob := e.phones()
			c := e.relayedCall(callerMedia, calleeMedia, 0)
			alice.talk(c.callerRelay, 30*time.Second)
			bob.talk(c.calleeRelay, 30*time.Second)
			waitKernelFlows(t, c)
			inKernel(t, e, "before the restart", alice, bob)
			checkPins(t, pin, cred, tc.want)

			// A clean stop (systemctl stop): the pins stay and the kernel
			// goes on relaying.
			if err := syscall.Kill(e.sipd.PID(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			<-e.sipd.Exited()
			relayed(t, "with sipd stopped", bob, alice)
			checkRelayctl(t, e, pin, cred, c)

			e.sipd.Restart()
			checkRunsAs(t, e.sipd.PID(), cred)
			if h := e.sipd.Health(); h.Media.Path != tc.want {
				t.Fatalf("after the restart: media path %q (%s), want %s", h.Media.Path, h.Media.Reason, tc.want)
			}
			if !strings.Contains(e.sipd.Log(), "adopted kernel flows") {
				t.Error("the restarted sipd did not log adopting the kernel flows")
			}
			waitKernelFlows(t, c)
			inKernel(t, e, "after the restart", alice, bob)
			checkPins(t, pin, cred, tc.want)
			alice.hush()
			bob.hush()
			c.hangup()

			// sipd -uninstall as the same user removes every pin; a
			// directory root prepared stays for the next start.
			if err := syscall.Kill(e.sipd.PID(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			<-e.sipd.Exited()
			if out, err := runSipd(t, e, cred, "-uninstall"); err != nil {
				t.Fatalf("sipd -uninstall as the daemon user: %v\n%s", err, out)
			}
			ents, err := os.ReadDir(pin)
			switch {
			case tc.prepared && err != nil:
				t.Errorf("the pin directory root prepared is gone after -uninstall: %v", err)
			case tc.prepared && len(ents) > 0:
				t.Errorf("after -uninstall %s still holds %v", pin, ents)
			case !tc.prepared && !errors.Is(err, os.ErrNotExist):
				t.Errorf("after -uninstall the pin directory sipd made is still there (%v, %v)", ents, err)
			}
		})
	}
}

// relayed checks that what from sends for a second reaches to. The
// machine may be busy, so it compares with what was sent rather than with
// the clock, and gives late packets time to be read.
func relayed(t *testing.T, when string, from, to *rtpPhone) int64 {
	t.Helper()
	sent0, got0 := from.sent.Load(), to.rx.count(from.ssrc)
	time.Sleep(time.Second)
	sent := from.sent.Load() - sent0
	if sent < 10 {
		t.Fatalf("%s: the phone sent only %d packets in a second", when, sent)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := int64(to.rx.count(from.ssrc) - got0)
		if got >= sent*9/10 {
			return sent
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %d of the %d packets sent arrived", when, got, sent)
			return sent
		}
	}
}

// inKernel checks that the call's audio flows both ways and that the
// kernel forwarded it: its packet count grows by what the phones sent.
func inKernel(t *testing.T, e *env, when string, alice, bob *rtpPhone) {
	t.Helper()
	before := e.sipd.Health().Media.KernelPackets
	sent := relayed(t, when, alice, bob)
	sent += relayed(t, when, bob, alice)
	// Both phones send all along; the one-way windows are a floor.
	if n := e.sipd.Health().Media.KernelPackets - before; n < uint64(sent)*9/10 {
		t.Errorf("%s: the kernel forwarded %d packets while the phones sent at least %d", when, n, sent)
	}
}

// waitKernelFlows waits (past the learning window) until every RTP flow
// of the call forwards in the kernel, and returns the call's flows.
func waitKernelFlows(t *testing.T, c *liveCall) []sipd.FlowJSON {
	t.Helper()
	deadline := time.Now().Add(8 * time.Second)
	for {
		fs := c.flows()
		n := 0
		for _, f := range fs {
			if f.Component == "rtp" && f.Path == relay.PathKernel {
				n++
			}
		}
		if n == 2 {
			return fs
		}
		if time.Now().After(deadline) {
			t.Fatalf("the call's RTP flows are not both on the kernel path: %+v", fs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkRunsAs fails unless the process runs as cred with exactly its
// capabilities.
func checkRunsAs(t *testing.T, pid int, cred *sipdtest.Cred) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Uid:": strconv.Itoa(cred.UID), "Gid:": strconv.Itoa(cred.GID), "CapEff:": fmt.Sprintf("%016x", capMask(t, cred.Caps))}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && want[f[0]] != "" {
			for _, v := range f[1:] {
				if v != want[f[0]] {
					t.Errorf("sipd's %s %s, want %s", f[0], strings.Join(f[1:], " "), want[f[0]])
					break
				}
			}
		}
	}
}

func capMask(t *testing.T, caps []string) uint64 {
	bits := map[string]int{"bpf": unix.CAP_BPF, "net_admin": unix.CAP_NET_ADMIN,
		"net_bind_service": unix.CAP_NET_BIND_SERVICE, "perfmon": unix.CAP_PERFMON}
	var m uint64
	for _, c := range caps {
		b, ok := bits[c]
		if !ok {
			t.Fatalf("capability %q not known to the test", c)
		}
		m |= 1 << b
	}
	return m
}

// checkPins: the pin directory is the daemon user's with mode 0750, and
// every map and the hook's links in it are the user's with mode 0600.
func checkPins(t *testing.T, pin string, cred *sipdtest.Cred, hook string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(pin, &st); err != nil {
		t.Fatal(err)
	}
	if int(st.Uid) != cred.UID || int(st.Gid) != cred.GID || st.Mode&0o7777 != 0o750 {
		t.Errorf("pin directory %s: uid %d gid %d mode %04o, want %d %d 0750", pin, st.Uid, st.Gid, st.Mode&0o7777, cred.UID, cred.GID)
	}
	want := []string{"flows", "counters", "tx_ports", "link_" + hook + "_ra", "link_" + hook + "_rb"}
	for _, name := range want {
		p := filepath.Join(pin, name)
		if err := unix.Stat(p, &st); err != nil {
			t.Errorf("pin %s: %v", name, err)
			continue
		}
		if int(st.Uid) != cred.UID || int(st.Gid) != cred.GID || st.Mode&0o777 != 0o600 {
			t.Errorf("pin %s: uid %d gid %d mode %04o, want %d %d 0600", p, st.Uid, st.Gid, st.Mode&0o777, cred.UID, cred.GID)
		}
	}
}

// relayctlBinary builds relayctl where any user may run it, removed with
// the test.
func relayctlBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "relayctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "relayctl")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "sipxdp/cmd/relayctl").CombinedOutput(); err != nil {
		t.Fatalf("build relayctl: %v\n%s", err, out)
	}
	return bin
}

// checkRelayctl runs relayctl's pinned-map fallback while sipd is down:
// as the daemon user with CAP_BPF it lists the call's kernel flows; on
// kernels from 6.5 it needs no capability at all; another user, even with
// CAP_BPF, is refused by the pins' mode and told why.
func checkRelayctl(t *testing.T, e *env, pin string, cred *sipdtest.Cred, c *liveCall) {
	t.Helper()
	bin := relayctlBinary(t)
	run := func(as sipdtest.Cred) (string, error) {
		args := append(as.Setpriv(), bin, "-api", "http://"+e.sipd.Cfg.HTTP.Listen, "-pin", pin, "flows", "-interval", "0")
		out, err := e.tp.Relay.Command(args[0], args[1:]...).CombinedOutput()
		return string(out), err
	}
	cases := []struct {
		name string
		as   sipdtest.Cred
		ok   bool
	}{
		{"daemon user with CAP_BPF", sipdtest.Cred{UID: cred.UID, GID: cred.GID, Caps: []string{"bpf"}}, true},
		{"another user with CAP_BPF", sipdtest.Cred{UID: otherUID, GID: otherUID, Caps: []string{"bpf"}}, false},
	}
	if kernelAtLeast(t, 6, 5) {
		// From 6.5 kernel.unprivileged_bpf_disabled guards only map and
		// program creation; opening a pin is the file's mode alone.
		cases = append(cases, struct {
			name string
			as   sipdtest.Cred
			ok   bool
		}{"daemon user without capabilities", sipdtest.Cred{UID: cred.UID, GID: cred.GID}, true})
	}
	for _, k := range cases {
		out, err := run(k.as)
		switch {
		case k.ok && err != nil:
			t.Errorf("relayctl flows as %s: %v\n%s", k.name, err, out)
		case k.ok:
			for _, want := range []string{"pinned maps at " + pin, c.callerRelay.String(), c.calleeRelay.String(), "kernel"} {
				if !strings.Contains(out, want) {
					t.Errorf("relayctl flows as %s lacks %q:\n%s", k.name, want, out)
				}
			}
		case err == nil:
			t.Errorf("relayctl flows as %s read the daemon user's pins:\n%s", k.name, out)
		case !strings.Contains(out, "permission denied") || !strings.Contains(out, "run relayctl as that user"):
			t.Errorf("relayctl flows as %s failed without saying whose the pins are:\n%s", k.name, out)
		}
	}
}

// kernelAtLeast reports whether the running kernel is major.minor or
// newer.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", u.Release, err)
	}
	return ma > major || ma == major && mi >= minor
}

// With no capabilities, the same user: datapath auto relays the call in
// userspace, and both the log and /health say it is for want of the
// capabilities (the log also that the relay's socket buffers are capped);
// datapath tc, asked for by name, refuses to start and says the same.
func TestNonRootWithoutCapabilities(t *testing.T) {
	cred := daemonUser(t)
	pin := filepath.Join(bpffsFor(t, cred.UID, cred.GID, 0o750), "sipxdp")
	e := newEnv(t, kernelDatapath("auto", pin), withUser(cred))
	checkRunsAs(t, e.sipd.PID(), cred)
	h := e.sipd.Health()
	for _, want := range []string{"kernel path needs CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON", "operation not permitted"} {
		if !strings.Contains(h.Media.Reason, want) {
			t.Errorf("/health media reason %q lacks %q", h.Media.Reason, want)
		}
	}
	if h.Media.Path != "userspace" {
		t.Errorf("media path %q, want userspace", h.Media.Path)
	}
	if log := e.sipd.Log(); !strings.Contains(log, "relaying in userspace") || !strings.Contains(log, "missing CAP_BPF") {
		t.Errorf("the log does not say why the relay is in userspace:\n%s", log)
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("without the capabilities sipd still made %s (%v)", pin, err)
	}
	callerMedia, calleeMedia, alice, bob := e.phones()
	c := e.relayedCall(callerMedia, calleeMedia, 0)
	alice.talk(c.callerRelay, 2*time.Second)
	bob.talk(c.calleeRelay, 2*time.Second)
	time.Sleep(2500 * time.Millisecond)
	c.checkAudio(alice, bob, "in userspace")
	c.hangup()
	if !strings.Contains(e.sipd.Log(), "relay socket buffers are capped") {
		t.Error("the log does not say the relay's socket buffers are capped for want of CAP_NET_ADMIN")
	}

	if err := syscall.Kill(e.sipd.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-e.sipd.Exited()
	out, err := runSipd(t, e, cred, "-datapath", "tc")
	if err == nil {
		t.Fatalf("sipd with datapath tc and no capabilities started:\n%s", out)
	}
	for _, want := range []string{"media.datapath tc", "missing CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON"} {
		if !strings.Contains(out, want) {
			t.Errorf("sipd's refusal lacks %q:\n%s", want, out)
		}
	}
}

// runSipd runs sipd once more on e's config, as cred, with args, and
// waits for it to exit; it returns the output and the exit error.
func runSipd(t *testing.T, e *env, cred *sipdtest.Cred, args ...string) (string, error) {
	t.Helper()
	argv := append(cred.Setpriv(), append([]string{sipdtest.Binary(t), "-config", e.sipd.ConfigPath}, args...)...)
	cmd := e.tp.Relay.Command(argv[0], argv[1:]...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("sipd %v did not exit in 15 s:\n%s", args, out.String())
		return "", nil
	}
}

// A pin path the daemon user cannot use: with the capabilities, datapath
// auto falls back to userspace and /health names what is wrong and what
// to do, rather than a bare EACCES or a failed mount.
func TestNonRootPinPathUnusable(t *testing.T) {
	for _, tc := range []struct {
		name string
		pin  func(t *testing.T, cred *sipdtest.Cred) string
		want []string
	}{
		{"bpffs not searchable", func(t *testing.T, cred *sipdtest.Cred) string {
			// As systemd mounts /sys/fs/bpf: root's, mode 0700.
			return filepath.Join(bpffsFor(t, 0, 0, 0o700), "sipxdp")
		}, []string{"not searchable by uid 61234", "Running as a non-root user"}},
		{"bpffs not writable", func(t *testing.T, cred *sipdtest.Cred) string {
			return filepath.Join(bpffsFor(t, 0, 0, 0o755), "sipxdp")
		}, []string{"create pin directory", "install -d -o 61234 -g 61234 -m 0750"}},
		{"pin directory of another user", func(t *testing.T, cred *sipdtest.Cred) string {
			p := filepath.Join(bpffsFor(t, 0, 0, 0o755), "sipxdp")
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"owned by uid 0 gid 0", "chown 61234:61234"}},
		{"no bpffs", func(t *testing.T, cred *sipdtest.Cred) string {
			// A directory the user owns, on /tmp's file system.
			return filepath.Join(cred.TempDir(t), "sipxdp")
		}, []string{"on no bpffs", "needs CAP_SYS_ADMIN", "mount -t bpf bpffs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred := daemonUser(t, unitCaps...)
			pin := tc.pin(t, cred)
			e := newEnv(t, kernelDatapath("auto", pin), withUser(cred))
			h := e.sipd.Health()
			if h.Media.Path != "userspace" {
				t.Fatalf("media path %q (%s), want userspace", h.Media.Path, h.Media.Reason)
			}
			for _, want := range tc.want {
				if !strings.Contains(h.Media.Reason, want) {
					t.Errorf("/health media reason lacks %q:\n%s", want, h.Media.Reason)
				}
			}
		})
	}
}
