package usrelay

import (
	"bufio"
	"context"
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
	"unsafe"

	"golang.org/x/sys/unix"

	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

// The CPU measurement runs the sender and the receiver as child processes
// (this test binary re-executed with perfRoleEnv set), so the test
// process's own CPU time is the relay's alone.
const perfRoleEnv = "SIPXDP_PERF_ROLE"

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// procCPU returns utime+stime of this process from /proc/self/stat.
func procCPU(t *testing.T) time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatalf("read /proc/self/stat: %v", err)
	}
	// Fields after the parenthesised command name, which may hold spaces.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	// USER_HZ is 100 on Linux for every architecture Go supports here.
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func rusageSelf() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// systemIdle returns idle+iowait from /proc/stat, which the design notes
// say is the trustworthy part of it.
func systemIdle() time.Duration {
	b, _ := os.ReadFile("/proc/stat")
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	idle, _ := strconv.ParseUint(f[4], 10, 64)
	iow, _ := strconv.ParseUint(f[5], 10, 64)
	return time.Duration(idle+iow) * 10 * time.Millisecond
}

// ksoftirqdCPU sums the CPU time of the ksoftirqd threads. Under load the
// kernel defers network softirq work to them, and the loopback delivery
// the relay would otherwise pay for inside sendmmsg leaves its account.
func ksoftirqdCPU() time.Duration {
	var sum time.Duration
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil || !strings.Contains(string(b), "(ksoftirqd/") {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		sum += time.Duration(ut+st) * 10 * time.Millisecond
	}
	return sum
}

func TestRelayCPUPerPacket(t *testing.T) {
	if os.Getenv("SIPXDP_PERF") != "1" {
		t.Skip("CPU measurement: takes ~12 s and wants an otherwise idle machine; set SIPXDP_PERF=1 to run")
	}
	pps := envInt("SIPXDP_PERF_PPS", 100000)
	secs := envInt("SIPXDP_PERF_SECONDS", 10)
	nflows := envInt("SIPXDP_PERF_FLOWS", 200)
	workers := envInt("SIPXDP_PERF_WORKERS", 0)
	batch := envInt("SIPXDP_PERF_BATCH", 0)
	total := pps * secs
	if v := os.Getenv("SIPXDP_PERF_EPOLL"); v != "" {
		defer func(old bool) { edgeTriggered = old }(edgeTriggered)
		edgeTriggered = v == "edge"
	}
	if v := os.Getenv("SIPXDP_PERF_WAIT"); v != "" {
		defer func(old bool) { waitInRuntime = old }(waitInRuntime)
		waitInRuntime = v == "runtime"
	}
	if v := os.Getenv("SIPXDP_PERF_SYSCALL"); v != "" {
		defer func(old bool) { rawSyscalls = old }(rawSyscalls)
		rawSyscalls = v == "raw"
	}

	if v := os.Getenv("SIPXDP_PERF_SENDTO"); v != "" {
		defer func(old bool) { singleSendto = old }(singleSendto)
		singleSendto = v == "1"
	}
	if v := os.Getenv("SIPXDP_PERF_COALESCE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SIPXDP_PERF_COALESCE: %v", err)
		}
		defer func(old time.Duration) { coalesce = old }(coalesce)
		coalesce = d
	}

	r, err := New(Config{Workers: workers, Batch: batch})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
	defer cancel()
	start := func(role string, env ...string) (*exec.Cmd, *bufio.Scanner) {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), append(env, perfRoleEnv+"="+role)...)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", role, err)
		}
		t.Cleanup(func() {
			// Only our own child, by PID, and only if still running.
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		sc := bufio.NewScanner(out)
		return cmd, sc
	}
	line := func(sc *bufio.Scanner, role string) string {
		if !sc.Scan() {
			t.Fatalf("%s exited early: %v", role, sc.Err())
		}
		return sc.Text()
	}

	// A receiver blocked in recvmmsg is woken per datagram, and on
	// loopback that wakeup runs in the relay's sendmmsg and is billed to
	// the relay (~10 % here). A real phone is on another host, so by
	// default the receiver polls and nothing waits on its socket.
	rxMode := os.Getenv("SIPXDP_PERF_RECEIVER")
	if rxMode == "" {
		rxMode = "poll"
	}
	recvCmd, recvOut := start("receiver", fmt.Sprintf("SIPXDP_PERF_MAXSECS=%d", secs+10), "SIPXDP_PERF_RECEIVER="+rxMode)
	rxAddr := netip.MustParseAddrPort(strings.TrimPrefix(line(recvOut, "receiver"), "ready "))

	senderAddr := freePort(t, "127.0.0.1")
	targets := make([]string, nflows)
	for i := 0; i < nflows; i++ {
		in, out := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
		// Learning: each flow latches the sender on its first datagram,
		// as a NATed phone would.
		f := relay.Flow{Key: relay.FlowKey{Local: in}, Learning: true, Peer: senderAddr, Out: out, Dst: rxAddr}
		if err := r.Upsert(f); err != nil {
			t.Fatalf("upsert flow %d: %v", i, err)
		}
		targets[i] = in.String()
	}
	t.Logf("relay: %d flows, %d sockets, workers=%d batch=%d edge-triggered=%v raw-syscalls=%v wait-in-runtime=%v coalesce=%v sendto=%v; receiver %s",
		nflows, r.Sockets(), r.cfg.Workers, r.cfg.Batch, edgeTriggered, rawSyscalls, waitInRuntime, coalesce, singleSendto, rxMode)

	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("load average before the run: %s", strings.TrimSpace(string(b)))
	}
	var ms0, ms1 runtime.MemStats
	cpu0, ru0, idle0, ksi0, wall0 := procCPU(t), rusageSelf(), systemIdle(), ksoftirqdCPU(), time.Now()
	runtime.ReadMemStats(&ms0)
	sendCmd, sendOut := start("sender",
		"SIPXDP_PERF_FROM="+senderAddr.String(),
		"SIPXDP_PERF_TO="+strings.Join(targets, ","),
		fmt.Sprintf("SIPXDP_PERF_RATE=%d", pps),
		fmt.Sprintf("SIPXDP_PERF_COUNT=%d", total),
		fmt.Sprintf("SIPXDP_PERF_MAXSECS=%d", secs+5))
	sent, _ := strconv.Atoi(strings.TrimPrefix(line(sendOut, "sender"), "sent "))
	if err := sendCmd.Wait(); err != nil {
		t.Fatalf("sender: %v", err)
	}
	sendWall := time.Since(wall0)
	// Let the relay drain what is queued before stopping the clock.
	for last := r.Counters()["received"]; ; {
		time.Sleep(100 * time.Millisecond)
		now := r.Counters()["received"]
		if now == last {
			break
		}
		last = now
	}
	runtime.ReadMemStats(&ms1)
	cpu1, ru1, idle1, ksi1, wall1 := procCPU(t), rusageSelf(), systemIdle(), ksoftirqdCPU(), time.Now()
	rx, _ := strconv.Atoi(strings.TrimPrefix(line(recvOut, "receiver"), "received "))
	recvCmd.Wait()

	c := r.Counters()
	wall := wall1.Sub(wall0)
	relayCPU := cpu1 - cpu0
	ruCPU := ru1 - ru0
	busy := time.Duration(2)*wall - (idle1 - idle0)
	var chu unix.Rusage
	unix.Getrusage(unix.RUSAGE_CHILDREN, &chu)
	childCPU := time.Duration(chu.Utime.Nano() + chu.Stime.Nano())
	perPkt := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(c["received"]) }
	loss := 1 - float64(rx)/float64(sent)
	t.Logf("sent %d in %v (%.0f pps offered), relay received %d, forwarded %d, receiver got %d: loss %.3f%%",
		sent, sendWall.Round(time.Millisecond), float64(sent)/sendWall.Seconds(), c["received"], c["forwarded"], rx, 100*loss)
	t.Logf("relay CPU (/proc/self/stat): %v = %.2f µs/packet, %.2f cores", relayCPU, perPkt(relayCPU), relayCPU.Seconds()/wall.Seconds())
	t.Logf("relay CPU (getrusage self):  %v = %.2f µs/packet", ruCPU.Round(time.Millisecond), perPkt(ruCPU))
	t.Logf("sender+receiver CPU %v, system busy %v over %v wall: %v busy outside this test (other load skews the figures)",
		childCPU.Round(time.Millisecond), busy.Round(time.Millisecond), wall.Round(time.Millisecond),
		(busy - relayCPU - childCPU).Round(time.Millisecond))
	t.Logf("ksoftirqd CPU during the run: %v (network work deferred there is missing from the figures above)", ksi1-ksi0)
	t.Logf("counters: %v", c)
	// Starting the sender and the test's polling of Counters() allocate a
	// little; the relay's loop should add nothing per datagram.
	t.Logf("heap allocations in this process during the run: %d (%.5f per datagram)",
		ms1.Mallocs-ms0.Mallocs, float64(ms1.Mallocs-ms0.Mallocs)/float64(c["received"]))
	t.Logf("datagrams per epoll wakeup %.2f, per recvmmsg %.2f, per sendmmsg %.2f",
		float64(c["received"])/float64(c["epoll_wakeups"]), float64(c["received"])/float64(c["recvmmsg_calls"]),
		float64(c["forwarded"])/float64(c["sendmmsg_calls"]))
	if c["latched"] != uint64(nflows) {
		t.Errorf("latched %d flows, want %d", c["latched"], nflows)
	}
	if us := perPkt(relayCPU); us > 12 {
		t.Errorf("%.2f µs of relay CPU per packet: above 12 µs, the design does not hold", us)
	} else if us > 6 {
		t.Logf("NOTE: %.2f µs/packet is above the 6 µs target", us)
	}
}

// perfChild runs a sender or receiver role and returns the exit code.
func perfChild(role string) int {
	var err error
	switch role {
	case "receiver":
		err = perfReceiver()
	case "sender":
		err = perfSender()
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "perf %s: %v\n", role, err)
		return 1
	}
	return 0
}

// perfReceiver counts datagrams on one socket until 1 s passes without any
// after the first, or its time limit runs out.
func perfReceiver() error {
	maxSecs := envInt("SIPXDP_PERF_MAXSECS", 30)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, 32<<20)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	sa, _ := unix.Getsockname(fd)
	fmt.Printf("ready 127.0.0.1:%d\n", sa.(*unix.SockaddrInet4).Port)
	tv := unix.Timeval{Usec: 200000}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	poll := os.Getenv("SIPXDP_PERF_RECEIVER") != "block"
	flags := uintptr(unix.MSG_WAITFORONE)
	if poll {
		flags = unix.MSG_DONTWAIT
	}

	w := &worker{batch: 64}
	w.initBuffers(64)
	deadline := time.Now().Add(time.Duration(maxSecs) * time.Second)
	var count int
	var lastRx time.Time
	for time.Now().Before(deadline) {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&w.rhdr[0])),
			64, flags, 0, 0)
		if errno == 0 && n > 0 {
			count += int(n)
			lastRx = time.Now()
			continue
		}
		if poll {
			time.Sleep(500 * time.Microsecond)
		}
		if count > 0 && time.Since(lastRx) > time.Second {
			break
		}
	}
	fmt.Printf("received %d\n", count)
	return nil
}

// perfSender sends RATE datagrams/s of 172-byte RTP round-robin to the
// targets with sendmmsg, paced against the clock, until COUNT are sent or
// MAXSECS pass.
func perfSender() error {
	from := netip.MustParseAddrPort(os.Getenv("SIPXDP_PERF_FROM"))
	var to []netip.AddrPort
	for _, s := range strings.Split(os.Getenv("SIPXDP_PERF_TO"), ",") {
		to = append(to, netip.MustParseAddrPort(s))
	}
	for _, a := range append([]netip.AddrPort{from}, to...) {
		if !a.Addr().IsLoopback() {
			return fmt.Errorf("refusing to send to or from non-loopback %s", a)
		}
	}
	rate := envInt("SIPXDP_PERF_RATE", 100000)
	count := envInt("SIPXDP_PERF_COUNT", rate*10)
	maxSecs := envInt("SIPXDP_PERF_MAXSECS", 15)
	// The pacing tick: 200 µs sends ~10 datagrams at once at 50,000 pps,
	// which a relay finds together on one wakeup; a real call mix arrives
	// spread out, which SIPXDP_PERF_TICK=20us approximates.
	tick := 200 * time.Microsecond
	if d, err := time.ParseDuration(os.Getenv("SIPXDP_PERF_TICK")); err == nil && d > 0 {
		tick = d
	}

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, 8<<20)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: from.Addr().As4(), Port: int(from.Port())}); err != nil {
		return fmt.Errorf("bind %s: %w", from, err)
	}
	const batch = 64
	hdr := make([]unix.Mmsghdr, batch)
	iov := make([]unix.Iovec, batch)
	names := make([]sockaddr, len(to))
	payloads := make([][]byte, batch)
	for i := range to {
		names[i], _ = encodeSockaddr(to[i], false)
	}
	for i := 0; i < batch; i++ {
		payloads[i] = relaytest.RTPPayload(uint16(i), 160)
		iov[i].Base = &payloads[i][0]
		iov[i].SetLen(len(payloads[i]))
		hdr[i].Hdr.Iov = &iov[i]
		hdr[i].Hdr.Iovlen = 1
		hdr[i].Hdr.Namelen = unix.SizeofSockaddrInet4
	}
	start := time.Now()
	deadline := start.Add(time.Duration(maxSecs) * time.Second)
	sent, next := 0, 0
	for sent < count && time.Now().Before(deadline) {
		due := int(time.Since(start).Seconds() * float64(rate))
		if due > count {
			due = count
		}
		for sent < due {
			n := min(due-sent, batch)
			for i := 0; i < n; i++ {
				hdr[i].Hdr.Name = &names[next][0]
				next = (next + 1) % len(names)
			}
			m, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdr[0])), uintptr(n), 0, 0, 0)
			if errno != 0 && errno != unix.EINTR {
				return fmt.Errorf("sendmmsg: %w", errno)
			}
			sent += int(m)
		}
		time.Sleep(tick)
	}
	fmt.Printf("sent %d\n", sent)
	return nil
}

var _ = net.IPv4len
