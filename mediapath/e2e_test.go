package mediapath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"sipxdp/internal/netns"
	"sipxdp/internal/testenv"
	"sipxdp/relay"
)

const nsPrefix = "sxmp-"

// Real sending ports of the two ends, and the different ports they
// announce in SDP, as a NAT would make them.
const (
	callerPort, callerAnnounced = 6000, 7000
	calleePort, calleeAnnounced = 8000, 9000
)

var pinSeq atomic.Uint64

// pinPath is unique per test so parallel packages and reruns never share
// pinned objects; it is uninstalled when the test ends.
func pinPath(t *testing.T) string {
	removeStalePins(t)
	p := fmt.Sprintf("/sys/fs/bpf/sipxdp-test-%d-%d", os.Getpid(), pinSeq.Add(1))
	t.Cleanup(func() {
		if err := Uninstall(p); err != nil {
			t.Errorf("uninstall %s: %v", p, err)
		}
	})
	return p
}

// removeStalePins uninstalls pin directories of test processes that died
// before their cleanup ran.
func removeStalePins(t *testing.T) {
	dirs, _ := filepath.Glob("/sys/fs/bpf/sipxdp-test-*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(filepath.Base(d), "sipxdp-test-"), "-", 2)[0])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		t.Logf("removing stale pins %s", d)
		if err := Uninstall(d); err != nil {
			t.Logf("remove stale pins %s: %v", d, err)
		}
	}
}

func requireTools(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tool := range []string{"ip", "nsenter", "ethtool", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, tool+" not installed")
		}
	}
}

// stackConfig relays between the relay's two links: leg A ("a") faces
// the caller, leg B ("b") the callee, in both families.
func stackConfig(mode, pin string, timeout time.Duration) childConfig {
	return childConfig{
		Datapath:   mode,
		Interfaces: []string{netns.RelayA, netns.RelayB},
		PinPath:    pin,
		Timeout:    timeout,
		// The phones here send from their announced IP on another port,
		// so their flows latch provisionally and lock when the window
		// closes: a short one keeps the tests about the datapaths quick.
		Learning: 200 * time.Millisecond,
		Addresses: []relay.AddressConfig{
			{Name: "a", Local: netns.V4.RelayA, PortMin: 40000, PortMax: 40099},
			{Name: "b", Local: netns.V4.RelayB, PortMin: 42000, PortMax: 42099},
			{Name: "a", Local: netns.V6.RelayA, PortMin: 40000, PortMax: 40099},
			{Name: "b", Local: netns.V6.RelayB, PortMin: 42000, PortMax: 42099},
		},
	}
}

// rtp builds packet seq of one direction: a 12-byte RTP header and 160
// bytes of payload derived from seq, so a receiver can check every byte.
func rtp(ssrc uint32, seq uint32) []byte {
	b := make([]byte, 172)
	b[0] = 0x80
	binary.BigEndian.PutUint16(b[2:], uint16(seq))
	binary.BigEndian.PutUint32(b[4:], seq*160)
	binary.BigEndian.PutUint32(b[8:], ssrc)
	binary.BigEndian.PutUint32(b[12:], seq) // the full sequence, past 16 bits
	for i := 16; i < len(b); i++ {
		b[i] = byte(int(seq)*7 + i)
	}
	return b
}

// receiver counts what arrives on one socket: every packet must come from
// src and be one of ssrc's packets, intact.
type receiver struct {
	conn *net.UDPConn
	src  netip.AddrPort
	ssrc uint32

	mu    sync.Mutex
	seen  map[uint32]int
	bad   []string
	done  chan struct{}
	total atomic.Int64
}

func newReceiver(conn *net.UDPConn, src netip.AddrPort, ssrc uint32) *receiver {
	r := &receiver{conn: conn, src: src, ssrc: ssrc, seen: map[uint32]int{}, done: make(chan struct{})}
	go r.run()
	return r
}

func (r *receiver) run() {
	defer close(r.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed, or the deadline set by stop
		}
		p := buf[:n]
		r.mu.Lock()
		switch {
		case unmapAP(from) != r.src:
			r.bad = append(r.bad, fmt.Sprintf("packet from %s, want %s", from, r.src))
		case n != 172 || binary.BigEndian.Uint32(p[8:]) != r.ssrc:
			r.bad = append(r.bad, fmt.Sprintf("foreign packet of %d bytes", n))
		default:
			seq := binary.BigEndian.Uint32(p[12:])
			if !bytes.Equal(p, rtp(r.ssrc, seq)) {
				r.bad = append(r.bad, fmt.Sprintf("packet %d altered", seq))
			}
			r.seen[seq]++
		}
		r.mu.Unlock()
		r.total.Add(1)
	}
}

func unmapAP(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// wait returns once n packets arrived or the deadline passed.
func (r *receiver) wait(n int, d time.Duration) {
	end := time.Now().Add(d)
	for r.total.Load() < int64(n) && time.Now().Before(end) {
		time.Sleep(5 * time.Millisecond)
	}
}

// check stops the receiver and reports loss, duplicates and bad packets
// of the sequence numbers [from, to).
func (r *receiver) check(t *testing.T, what string, from, to uint32) {
	t.Helper()
	r.wait(int(to-from), 3*time.Second)
	// Straggler duplicates would show up within this grace.
	time.Sleep(100 * time.Millisecond)
	r.conn.SetReadDeadline(time.Now())
	<-r.done
	r.conn.SetReadDeadline(time.Time{})
	r.mu.Lock()
	defer r.mu.Unlock()
	var lost, dup []uint32
	for s := from; s < to; s++ {
		switch r.seen[s] {
		case 0:
			lost = append(lost, s)
		case 1:
		default:
			dup = append(dup, s)
		}
	}
	extra := len(r.seen) - int(to-from) + len(lost)
	if len(lost) > 0 {
		t.Errorf("%s: lost %d of %d packets (first %v)", what, len(lost), to-from, lost[:min(10, len(lost))])
	}
	if len(dup) > 0 || extra > 0 {
		t.Errorf("%s: %d duplicated, %d unexpected sequence numbers", what, len(dup), extra)
	}
	if len(r.bad) > 0 {
		t.Errorf("%s: %d bad packets (first: %s)", what, len(r.bad), r.bad[0])
	}
}

// send sends packets [from, to) of ssrc to dst at about pps, bounded by
// count, and returns the first error.
func send(conn *net.UDPConn, dst netip.AddrPort, ssrc uint32, from, to uint32, pps int) error {
	const burst = 10
	gap := time.Second * burst / time.Duration(pps)
	next := time.Now()
	for s := from; s < to; s++ {
		if _, err := conn.WriteToUDPAddrPort(rtp(ssrc, s), dst); err != nil {
			return fmt.Errorf("send packet %d to %s: %w", s, dst, err)
		}
		if (s-from)%burst == burst-1 {
			next = next.Add(gap)
			time.Sleep(time.Until(next))
		}
	}
	return nil
}

// call is one relayed call between the caller and callee namespaces.
type call struct {
	tp               *netns.Topo
	id               string
	fam              netns.Addrs
	ports            relay.StreamPorts
	relayA, relayB   netip.AddrPort // the relay's RTP address on each leg
	callerC, calleeC *net.UDPConn   // the real sending sockets
}

const ssrcAB, ssrcBA = 0xA0B0, 0xB0A0

// setupCall creates a session with one stream, tells the stack about both
// sides with announced ports that differ from the real ones, and sends one
// packet each way so both legs latch. The first A→B packet goes to the
// callee's announced port, since B has not latched yet: it is caught there
// and checked, not lost.
func setupCall(t *testing.T, tp *netns.Topo, c *child, id string, fam netns.Addrs) *call {
	t.Helper()
	return setupCallFamilies(t, tp, c, id, fam, fam)
}

func family(a netns.Addrs) relay.Family {
	if a.Name == "ipv6" {
		return relay.IPv6
	}
	return relay.IPv4
}

// setupCallFamilies is setupCall with the caller and leg A on famA, the
// callee and leg B on famB.
func setupCallFamilies(t *testing.T, tp *netns.Topo, c *child, id string, famA, famB netns.Addrs) *call {
	t.Helper()
	cl := &call{tp: tp, id: id, fam: famA}
	c.must(request{Op: "create", Call: id, Family: family(famA), FamilyB: family(famB)}, &cl.ports)
	cl.relayA = netip.AddrPortFrom(famA.RelayA, cl.ports.A.RTP)
	cl.relayB = netip.AddrPortFrom(famB.RelayB, cl.ports.B.RTP)
	if cl.ports.A.Local != famA.RelayA || cl.ports.B.Local != famB.RelayB {
		t.Fatalf("legs on %s and %s, want %s and %s", cl.ports.A.Local, cl.ports.B.Local, famA.RelayA, famB.RelayB)
	}
	for _, s := range []struct {
		side relay.Side
		ap   netip.AddrPort
	}{{relay.SideA, netip.AddrPortFrom(famA.Caller, callerAnnounced)}, {relay.SideB, netip.AddrPortFrom(famB.Callee, calleeAnnounced)}} {
		c.must(request{Op: "setpeer", Call: id, Side: s.side, RTP: s.ap, Mux: true}, nil)
	}
	var err error
	if cl.callerC, err = tp.Caller.ListenUDP(netip.AddrPortFrom(famA.Caller, callerPort)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.callerC.Close() })
	if cl.calleeC, err = tp.Callee.ListenUDP(netip.AddrPortFrom(famB.Callee, calleePort)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.calleeC.Close() })
	announced, err := tp.Callee.ListenUDP(netip.AddrPortFrom(famB.Callee, calleeAnnounced))
	if err != nil {
		t.Fatal(err)
	}
	defer announced.Close()

	// Packet 0 each way latches a leg.
	pre := newReceiver(announced, cl.relayB, ssrcAB)
	if err := send(cl.callerC, cl.relayA, ssrcAB, 0, 1, 1000); err != nil {
		t.Fatal(err)
	}
	pre.check(t, "A→B before B latched, at the announced port", 0, 1)
	if t.Failed() {
		udp, _ := tp.Relay.UDPCounters()
		t.Logf("relay namespace UDP counters %v; stack counters %+v", udp, c.stats())
	}
	waitFlows(t, c, id, func(fs []relay.FlowInfo) bool { return latched(fs, relay.SideA) })
	back := newReceiver(cl.callerC, cl.relayA, ssrcBA)
	if err := send(cl.calleeC, cl.relayB, ssrcBA, 0, 1, 1000); err != nil {
		t.Fatal(err)
	}
	back.check(t, "B→A, to A's latched source", 0, 1)
	waitFlows(t, c, id, func(fs []relay.FlowInfo) bool {
		return latched(fs, relay.SideA) && latched(fs, relay.SideB) && dstIs(fs, relay.SideA, netip.AddrPortFrom(famB.Callee, calleePort))
	})
	return cl
}

func latched(fs []relay.FlowInfo, side relay.Side) bool {
	for _, f := range fs {
		if f.Side == side && f.Component == "rtp" && f.State != relay.StateLearning {
			return true
		}
	}
	return false
}

func dstIs(fs []relay.FlowInfo, side relay.Side, dst netip.AddrPort) bool {
	for _, f := range fs {
		if f.Side == side && f.Component == "rtp" && f.Dst == dst {
			return true
		}
	}
	return false
}

func callFlows(fs []relay.FlowInfo, id string) []relay.FlowInfo {
	var out []relay.FlowInfo
	for _, f := range fs {
		if f.CallID == id {
			out = append(out, f)
		}
	}
	return out
}

// waitFlows polls the stack's flow list of one call until ok, for at most
// 5s.
func waitFlows(t *testing.T, c *child, id string, ok func([]relay.FlowInfo) bool) []relay.FlowInfo {
	t.Helper()
	end := time.Now().Add(5 * time.Second)
	for {
		fs := callFlows(c.flows(), id)
		if ok(fs) {
			return fs
		}
		if time.Now().After(end) {
			t.Fatalf("flows of %s did not reach the expected state within 5s: %+v", id, fs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stream sends packets [from, to) both ways at pps and checks each end
// got all of them from the relay's other-leg address.
func (cl *call) stream(t *testing.T, from, to uint32, pps int, during func()) {
	t.Helper()
	atCallee := newReceiver(cl.calleeC, cl.relayB, ssrcAB)
	atCaller := newReceiver(cl.callerC, cl.relayA, ssrcBA)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, d := range []struct {
		conn *net.UDPConn
		dst  netip.AddrPort
		ssrc uint32
	}{{cl.callerC, cl.relayA, ssrcAB}, {cl.calleeC, cl.relayB, ssrcBA}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- send(d.conn, d.dst, d.ssrc, from, to, pps)
		}()
	}
	if during != nil {
		during()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	atCallee.check(t, "A→B at the callee", from, to)
	atCaller.check(t, "B→A at the caller", from, to)
	if t.Failed() {
		for _, ns := range []*netns.NS{cl.tp.Caller, cl.tp.Relay, cl.tp.Callee} {
			c, _ := ns.UDPCounters()
			t.Logf("UDP counters of %s: %v", ns.Name, c)
		}
	}
}

func csumErrors(t *testing.T, ns *netns.NS) uint64 {
	t.Helper()
	c, err := ns.UDPCounters()
	if err != nil {
		t.Fatal(err)
	}
	return c["Udp:InCsumErrors"] + c["Udp6InCsumErrors"]
}

func TestRelayEndToEnd(t *testing.T) {
	requireTools(t)
	for _, mode := range []string{XDP, XDPGeneric, TC, Userspace} {
		for _, fam := range []netns.Addrs{netns.V4, netns.V6} {
			t.Run(mode+"/"+fam.Name, func(t *testing.T) { endToEnd(t, mode, fam, fam, false) })
		}
	}
}

// TestRelayCrossFamily is a call between a caller on IPv4 and a callee on
// IPv6, the relay holding an address of each family: RTP each way is
// translated between IPv4 and IPv6 by the tc, generic and native XDP
// programs, and by the userspace relay's sockets, and arrives with checksums the
// receivers verify (the capture recomputes each one).
func TestRelayCrossFamily(t *testing.T) {
	requireTools(t)
	for _, mode := range []string{XDP, XDPGeneric, TC, Userspace} {
		t.Run(mode, func(t *testing.T) { endToEnd(t, mode, netns.V4, netns.V6, false) })
	}
}

// TestRelayCrossFamilyNoChecksum is TestRelayCrossFamily with a caller
// that sends IPv4 UDP without a checksum (SO_NO_CHECK), as some phones and
// gateways do. IPv6 requires one, and the callee's stack drops a datagram
// whose checksum is zero or wrong: after the handoff, when no relay socket
// is left to add one, the programs must sum each datagram themselves.
// bpf's TestNetnsRelay shows that such a sender's datagrams really leave
// without a checksum.
func TestRelayCrossFamilyNoChecksum(t *testing.T) {
	requireTools(t)
	for _, mode := range []string{XDP, XDPGeneric, TC, Userspace} {
		t.Run(mode, func(t *testing.T) { endToEnd(t, mode, netns.V4, netns.V6, true) })
	}
}

// noUDPChecksum makes c send without a UDP checksum (IPv4 only).
func noUDPChecksum(t *testing.T, c *net.UDPConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_NO_CHECK, 1)
	}); err != nil || serr != nil {
		t.Fatalf("SO_NO_CHECK: %v %v", err, serr)
	}
}

// endToEnd relays a call with the caller on famA and the callee on famB
// through the stack on mode, and checks every packet, the checksums at both
// ends, the path each flow took and the counters. With noChecksum the
// caller sends without UDP checksums once the call is set up.
func endToEnd(t *testing.T, mode string, famA, famB netns.Addrs, noChecksum bool) {
	const packets = 1000
	tp := netns.New(t, netns.Config{Prefix: nsPrefix})
	kernel := mode != Userspace
	if mode == XDP || mode == XDPGeneric {
		var pass netns.Pass
		if mode == XDP {
			pass = PeerPass
		}
		tp.PrepareXDP(t, pass)
	}
	c, err := startChild(t, tp.Relay, stackConfig(mode, pinPath(t), 30*time.Second))
	if err != nil {
		t.Fatalf("open %s stack: %v", mode, err)
	}
	if c.ready.Path != mode || c.ready.Kernel != kernel {
		t.Fatalf("stack runs %q (kernel %v), want %q", c.ready.Path, c.ready.Kernel, mode)
	}
	csumCaller, csumCallee := csumErrors(t, tp.Caller), csumErrors(t, tp.Callee)

	cl := setupCallFamilies(t, tp, c, "e2e", famA, famB)
	if noChecksum {
		noUDPChecksum(t, cl.callerC)
	}
	capCaller, err := tp.Caller.CaptureUDP(netns.CallerIf, callerPort)
	if err != nil {
		t.Fatal(err)
	}
	defer capCaller.Stop()
	capCallee, err := tp.Callee.CaptureUDP(netns.CalleeIf, calleePort)
	if err != nil {
		t.Fatal(err)
	}
	defer capCallee.Stop()
	cl.stream(t, 1, 1+packets, 1000, nil)
	for _, cp := range []struct {
		name string
		res  netns.CaptureResult
	}{{"caller", capCaller.Stop()}, {"callee", capCallee.Stop()}} {
		r := cp.res
		t.Logf("checksums at the %s: %d full, %d partial, %d bad", cp.name, r.Full, r.Partial, r.Bad)
		if r.Bad != 0 {
			t.Errorf("%s received %d packets with a wrong UDP checksum (first: %s)", cp.name, r.Bad, r.FirstBad)
		}
		if r.Full+r.Partial != packets {
			t.Errorf("%s: capture saw %d good packets, want %d", cp.name, r.Full+r.Partial, packets)
		}
		if (mode == XDP || mode == XDPGeneric) && r.Partial != 0 {
			t.Errorf("%s: %d partial checksums with tx offload off", cp.name, r.Partial)
		}
		if noChecksum && kernel && cp.name == "callee" {
			// Every checksum the callee gets was made by the program.
			if r.Full != packets {
				t.Errorf("callee: %d full checksums, want %d from a caller that sends none", r.Full, packets)
			}
			continue
		}
		if mode == TC && r.Partial == 0 {
			t.Errorf("%s: tc run saw no CHECKSUM_PARTIAL packets: the case tc must handle was not exercised", cp.name)
		}
	}

	want := relay.PathUserspace
	if kernel {
		want = relay.PathKernel
	}
	fs := callFlows(c.flows(), "e2e")
	if len(fs) != 2 {
		t.Fatalf("flows %+v, want the two RTP directions (rtcp-mux)", fs)
	}
	for _, f := range fs {
		if f.Path != want || f.State != relay.StateActive {
			t.Errorf("flow %s (side %s) on %s, %s; want %s, active", f.Local, f.Side, f.Path, f.State, want)
		}
		if f.Packets != 1+packets || f.Bytes != (1+packets)*172 {
			t.Errorf("flow %s counted %d packets, %d bytes; want %d, %d",
				f.Local, f.Packets, f.Bytes, 1+packets, (1+packets)*172)
		}
	}
	st := c.stats()
	if got := st.KernelPackets + st.UserspacePackets; got != 2*(1+packets) {
		t.Errorf("engine counted %d kernel + %d userspace packets, want %d in all",
			st.KernelPackets, st.UserspacePackets, 2*(1+packets))
	}
	if kernel {
		// Only the two latching packets needed userspace.
		if st.KernelPackets != 2*packets || st.UserspacePackets != 2 {
			t.Errorf("kernel forwarded %d, userspace %d; want %d and 2",
				st.KernelPackets, st.UserspacePackets, 2*packets)
		}
		t.Logf("kernel counters: %v", st.KernelCounters)
		// The two latching packets are the only learning passes;
		// the pinned maps are this test's own, so the counters
		// start at zero.
		kc := st.KernelCounters
		if kc["learning"] != 2 || kc["redirect"] != 2*packets {
			t.Errorf("kernel counted %d learning passes and %d redirects, want 2 and %d",
				kc["learning"], kc["redirect"], 2*packets)
		}
		for _, name := range []string{"no_flow", "wrong_source", "fib", "aborted", "no_egress"} {
			if kc[name] != 0 {
				t.Errorf("kernel counter %s = %d, want 0", name, kc[name])
			}
		}
	} else if st.KernelPackets != 0 {
		t.Errorf("userspace stack counted %d kernel packets", st.KernelPackets)
	}
	// Weaker than the capture (a veth receiver trusts partial
	// and veth-marked checksums), but it is what a real
	// endpoint's stack would count.
	if d := csumErrors(t, tp.Caller) - csumCaller; d != 0 {
		t.Errorf("caller namespace counted %d UDP checksum errors", d)
	}
	if d := csumErrors(t, tp.Callee) - csumCallee; d != 0 {
		t.Errorf("callee namespace counted %d UDP checksum errors", d)
	}

	c.must(request{Op: "delete", Call: "e2e"}, nil)
	if ks := c.kernelFlows(); len(ks) != 0 {
		t.Errorf("kernel map holds %v after DeleteSession", ks)
	}
	if n := c.stats().UserspaceSockets; n != 0 {
		t.Errorf("userspace relay holds %d sockets after DeleteSession", n)
	}
	c.close()
}

// With eBPF unusable (here: an interface that does not exist), Auto falls
// back to userspace, says why, and still relays.
func TestAutoFallsBackToUserspace(t *testing.T) {
	requireTools(t)
	tp := netns.New(t, netns.Config{Prefix: nsPrefix})
	cfg := stackConfig(Auto, pinPath(t), 30*time.Second)
	cfg.Interfaces = []string{"nosuchif0"}
	c, err := startChild(t, tp.Relay, cfg)
	if err != nil {
		t.Fatalf("auto must not fail when the kernel path does: %v", err)
	}
	if c.ready.Path != Userspace || c.ready.Kernel {
		t.Fatalf("path %q (kernel %v), want userspace", c.ready.Path, c.ready.Kernel)
	}
	if !strings.Contains(c.ready.Reason, "nosuchif0") {
		t.Errorf("reason %q does not name the failing interface", c.ready.Reason)
	}
	if st := c.stats(); st.Path != Userspace || st.PathReason != c.ready.Reason {
		t.Errorf("stats report path %q, reason %q", st.Path, st.PathReason)
	}
	cl := setupCall(t, tp, c, "fallback", netns.V4)
	cl.stream(t, 1, 201, 1000, nil)
	for _, f := range callFlows(c.flows(), "fallback") {
		if f.Path != relay.PathUserspace {
			t.Errorf("flow %s on %s", f.Local, f.Path)
		}
	}
	c.close()

	// Asked for by name, a kernel hook that cannot load is an error.
	cfg.Datapath = TC
	if _, err := startChild(t, tp.Relay, cfg); err == nil {
		t.Fatal("tc on a missing interface opened")
	} else if !strings.Contains(err.Error(), "nosuchif0") {
		t.Errorf("error %q does not name the interface", err)
	}
}
