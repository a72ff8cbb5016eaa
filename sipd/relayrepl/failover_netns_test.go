package relayrepl_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"sipxdp/internal/netns"
	"sipxdp/internal/redistest"
	"sipxdp/internal/sipdtest"
	"sipxdp/ng"
	"sipxdp/sipd"
	"sipxdp/sipd/relayrepl"
	"sipxdp/sipd/sdprewrite"
)

// The failover LAN: every host a namespace with one veth into a bridge
// (in a namespace of its own), all on lanNet.
var (
	lanBits   = 24
	redisIP   = netip.MustParseAddr("10.77.0.2")
	relayIPs  = [2]netip.Addr{netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("10.77.0.12")}
	callerIP  = netip.MustParseAddr("10.77.0.21")
	calleeIP  = netip.MustParseAddr("10.77.0.22")
	floating  = netip.MustParseAddr("10.77.0.100")
	lanPrefix = "sxfo-"
)

const (
	redisPort = 6379
	group     = "vip1"
	calls     = 3
	// Packets go every tick both ways on every call, as a phone's 20 ms
	// frames.
	tick = 20 * time.Millisecond
)

// lan is the test's network.
type lan struct {
	br, redis, caller, callee *netns.NS
	relays                    [2]*netns.NS
}

// newLAN builds the bridge and hosts; they go with the test.
func newLAN(t *testing.T) *lan {
	t.Helper()
	l := &lan{br: netns.Lone(t, lanPrefix)}
	run := func(ns *netns.NS, args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %v: %v: %s", ns.Name, args, err, out)
		}
	}
	run(l.br, "link", "add", "br0", "type", "bridge")
	run(l.br, "link", "set", "br0", "up")
	host := func(name string, a netip.Addr) *netns.NS {
		ns := netns.Lone(t, lanPrefix)
		run(l.br, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
		run(l.br, "link", "set", name, "master", "br0", "up")
		run(ns, "addr", "add", fmt.Sprintf("%s/%d", a, lanBits), "dev", "eth0")
		run(ns, "link", "set", "eth0", "up")
		return ns
	}
	l.redis = host("redis", redisIP)
	l.relays[0] = host("relay1", relayIPs[0])
	l.relays[1] = host("relay2", relayIPs[1])
	for _, ns := range l.relays {
		// The kernel's FIB lookup routes only where forwarding is on; a
		// relay host has it on (the relay sends packets on to others).
		for _, k := range []string{"net.ipv4.conf.all.forwarding", "net.ipv4.conf.eth0.forwarding"} {
			if err := ns.Sysctl(k, "1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	l.caller = host("caller", callerIP)
	l.callee = host("callee", calleeIP)
	return l
}

// startRelay runs relay i as a relay-only sipd on the tc hook, with its
// calls replicated in group.
func startRelay(t *testing.T, l *lan, i int, datapath string) *sipdtest.Sipd {
	t.Helper()
	cfg := sipdtest.Config(t)
	ip := relayIPs[i]
	cfg.HTTP.Listen = netip.AddrPortFrom(ip, 8080).String()
	// Both nodes listen for NG on the floating address (bound with
	// IP_FREEBIND): the proxy reaches whichever holds it.
	cfg.NG.Listen = netip.AddrPortFrom(floating, 2223).String()
	cfg.NG.Allow = []string{"10.77.0.0/24"}
	cfg.HTTP.Allow = []string{"10.77.0.0/24"}
	cfg.NG.Redis = fmt.Sprintf("redis://%s/0", netip.AddrPortFrom(redisIP, redisPort))
	cfg.NG.RedisGroup, cfg.NG.RedisNode = group, fmt.Sprintf("relay%d", i+1)
	cfg.Media.Datapath = datapath
	cfg.Media.Interfaces = []string{"eth0"}
	cfg.Media.Timeout = sipd.Duration(60 * time.Second)
	cfg.Media.Addresses = []sipd.AddressConfig{{Name: "lan", Local: floating.String(), PortMin: 30000, PortMax: 30099}}
	cfg.Log.Level = "debug"
	return sipdtest.Start(t, cfg, sipdtest.Options{NS: l.relays[i], Args: []string{"-relay-only"}})
}

// ngClient talks NG to a relay from the caller's namespace.
func ngClient(t *testing.T, from *netns.NS, relay netip.Addr) *ng.Client {
	t.Helper()
	var c *ng.Client
	if err := from.Do(func() error {
		var err error
		c, err = ng.Dial(netip.AddrPortFrom(relay, 2223).String(), ng.ClientOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func sdpOf(a netip.Addr, port int) []byte {
	return fmt.Appendf(nil, "v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", a, a, port)
}

// relayed is the address a rewritten SDP sends to.
func relayed(t *testing.T, body []byte) netip.AddrPort {
	t.Helper()
	ms, err := sdprewrite.Parse(body)
	if err != nil || len(ms) == 0 {
		t.Fatalf("rewritten sdp %q: %v", body, err)
	}
	return netip.AddrPortFrom(ms[0].Addr, ms[0].Port)
}

// leg is one direction of a call's RTP: a socket that sends to the relay
// and one that receives what the relay forwarded from the other side.
type flowPair struct {
	id                     string
	callerConn, calleeConn *net.UDPConn
	toA, toB               netip.AddrPort // relay ports the caller and callee send to
}

// counts of sequence numbers received per direction.
type seen struct {
	mu  sync.Mutex
	got map[string]map[uint32]bool
}

func (s *seen) add(key string, seq uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.got[key]
	if m == nil {
		m = map[uint32]bool{}
		s.got[key] = m
	}
	m[seq] = true
}

// missing counts the sequence numbers of [from, to) key did not get.
func (s *seen) missing(key string, from, to uint32) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for q := from; q < to; q++ {
		if !s.got[key][q] {
			n++
		}
	}
	return n
}

// setup offers and answers a call on relay over NG and opens its
// sockets.
func setup(t *testing.T, l *lan, c *ng.Client, i int) *flowPair {
	t.Helper()
	ctx := context.Background()
	fp := &flowPair{id: fmt.Sprintf("failover-%d", i)}
	aPort, bPort := 40000+2*i, 42000+2*i
	offer, err := c.Offer(ctx, &ng.Command{CallID: fp.id, FromTag: "a" + fp.id, SDP: sdpOf(callerIP, aPort)})
	if err != nil {
		t.Fatalf("offer: %v", err)
	}
	answer, err := c.Answer(ctx, &ng.Command{CallID: fp.id, FromTag: "a" + fp.id, ToTag: "b" + fp.id, SDP: sdpOf(calleeIP, bPort)})
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	// The offer goes to the callee: it sends there; the answer to the
	// caller.
	fp.toB, fp.toA = relayed(t, offer), relayed(t, answer)
	if fp.toA.Addr() != floating || fp.toB.Addr() != floating {
		t.Fatalf("relay ports %v and %v are not on the floating address %v", fp.toA, fp.toB, floating)
	}
	if fp.callerConn, err = l.caller.ListenUDP(netip.AddrPortFrom(callerIP, uint16(aPort))); err != nil {
		t.Fatal(err)
	}
	if fp.calleeConn, err = l.callee.ListenUDP(netip.AddrPortFrom(calleeIP, uint16(bPort))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fp.callerConn.Close(); fp.calleeConn.Close() })
	return fp
}

// receive records what conn gets under key until it is closed.
func receive(conn *net.UDPConn, key string, s *seen) {
	buf := make([]byte, 2048)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		if n >= 16 {
			s.add(key, binary.BigEndian.Uint32(buf[12:16]))
		}
	}
}

// rtp is a 172-byte RTP packet whose SSRC field carries seq (so the
// sequence number never wraps in a test).
func rtp(seq uint32) []byte {
	b := make([]byte, 172)
	b[0] = 0x80
	binary.BigEndian.PutUint16(b[2:], uint16(seq))
	binary.BigEndian.PutUint32(b[12:], seq)
	return b
}

// garp announces a on dev of ns as keepalived does when it takes a
// virtual address: a gratuitous ARP request, broadcast, sender and
// target both a.
func garp(t *testing.T, ns *netns.NS, dev string, a netip.Addr) {
	t.Helper()
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		bcast := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		f := make([]byte, 0, 42)
		f = append(f, bcast...)
		f = append(f, ifi.HardwareAddr...)
		f = append(f, 0x08, 0x06)                // ARP
		f = append(f, 0, 1, 0x08, 0, 6, 4, 0, 1) // Ethernet, IPv4, request
		ip := a.As4()
		f = append(f, ifi.HardwareAddr...)
		f = append(f, ip[:]...)
		f = append(f, 0, 0, 0, 0, 0, 0)
		f = append(f, ip[:]...)
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], bcast)
		for range 3 {
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("gratuitous arp: %v", err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func waitUntil(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func metric(t *testing.T, s *sipdtest.Sipd, series string) float64 {
	t.Helper()
	v, _ := s.Metric(series)
	return v
}

// TestRelayFailover: calls set up over NG on relay1, which holds the
// floating address, carry RTP both ways on the kernel hook (tc, then
// XDP); relay2 follows them through Redis. relay1 is killed and its link taken down, the
// address added on relay2 with a gratuitous ARP, as keepalived would: RTP
// goes on through relay2's kernel with only what the move costs lost,
// none of it through relay2's userspace relay. relay2 then answers query
// for the calls. With Redis killed it keeps them flowing and takes a new
// one, counting errors; Redis back (empty), it writes its calls again;
// its deletes remove the calls and their keys.
func TestRelayFailover(t *testing.T) {
	for _, dp := range []string{"tc", "xdp-generic"} {
		t.Run(dp, func(t *testing.T) { testRelayFailover(t, dp) })
	}
}

func testRelayFailover(t *testing.T, datapath string) {
	l := newLAN(t)
	if datapath != "tc" {
		// Local sockets on veth send partial checksums XDP cannot see
		// (docs/ARCHITECTURE.md); a real NIC delivers full ones.
		for _, ns := range []*netns.NS{l.caller, l.callee} {
			if err := ns.SetTxChecksum("eth0", false); err != nil {
				t.Fatal(err)
			}
		}
	}
	rs := redistest.StartIn(t, l.redis, netip.AddrPortFrom(redisIP, redisPort))
	run := func(ns *netns.NS, args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %v: %v: %s", ns.Name, args, err, out)
		}
	}
	run(l.relays[0], "addr", "add", floating.String()+"/32", "dev", "eth0")
	r1 := startRelay(t, l, 0, datapath)
	r2 := startRelay(t, l, 1, datapath)
	waitUntil(t, "relay1 active", 5*time.Second, func() bool {
		h := r1.Health()
		return h.Replication != nil && h.Replication.Role == relayrepl.RoleActive
	})
	if h := r2.Health(); h.Replication == nil || h.Replication.Role != relayrepl.RoleStandby {
		t.Fatalf("relay2 replication %+v: want standby", h.Replication)
	}

	// One NG client to the floating address, as a proxy's media.relays
	// names it: before the move it reaches relay1, after it relay2.
	vip := ngClient(t, l.caller, floating)
	ng1, ng2 := vip, vip
	var fps []*flowPair
	s := &seen{got: map[string]map[uint32]bool{}}
	for i := range calls {
		fp := setup(t, l, ng1, i)
		fps = append(fps, fp)
		go receive(fp.calleeConn, fp.id+">", s)
		go receive(fp.callerConn, fp.id+"<", s)
	}

	// The sender: one packet per call and direction per tick, numbered.
	var seq struct {
		sync.Mutex
		n uint32
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(tick)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			seq.Lock()
			n := seq.n
			seq.n++
			seq.Unlock()
			for _, fp := range fps {
				fp.callerConn.WriteToUDPAddrPort(rtp(n), fp.toA)
				fp.calleeConn.WriteToUDPAddrPort(rtp(n), fp.toB)
			}
		}
	}()
	stopped := false
	stopSending := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopSending()
	now := func() uint32 { seq.Lock(); defer seq.Unlock(); return seq.n }

	// Up on relay1, followed by relay2 with locked latches.
	time.Sleep(time.Second)
	for _, fp := range fps {
		for _, dir := range []string{">", "<"} {
			if m := s.missing(fp.id+dir, 5, now()-5); m > 2 {
				t.Fatalf("%s%s: %d packets missing through relay1 before the switch", fp.id, dir, m)
			}
		}
	}
	waitUntil(t, "relay2 following the calls", 10*time.Second, func() bool {
		return r2.Health().Replication.Followed == calls
	})
	// The locks reach Redis after the first packets: relay2 re-reads them.
	time.Sleep(500 * time.Millisecond)
	r2kern0 := metric(t, r2, `sipxdp_media_packets_total{path="kernel"}`)
	r2user0 := metric(t, r2, `sipxdp_userspace_forwarded_packets_total`)

	// The switch.
	before := now()
	r1.Kill()
	run(l.relays[0], "link", "set", "eth0", "down")
	run(l.relays[1], "addr", "add", floating.String()+"/32", "dev", "eth0")
	garp(t, l.relays[1], "eth0", floating)
	moved := now()
	t.Logf("address moved in %d ticks", moved-before)
	time.Sleep(2 * time.Second)
	after := now()
	for _, fp := range fps {
		for _, dir := range []string{">", "<"} {
			lost := s.missing(fp.id+dir, before-2, after-5)
			t.Logf("%s%s: %d of %d packets lost across the switch", fp.id, dir, lost, after-5-(before-2))
			// The move itself takes a few ticks (kill, link down, addr
			// add, ARP); a re-setup (learning in userspace, restoring
			// calls) would cost seconds.
			if lost > 15 {
				t.Errorf("%s%s: %d packets lost across the switch: more than the address move costs", fp.id, dir, lost)
			}
			if late := s.missing(fp.id+dir, after-40, after-5); late > 0 {
				t.Errorf("%s%s: %d packets missing well after the switch", fp.id, dir, late)
			}
		}
	}
	r2kern := metric(t, r2, `sipxdp_media_packets_total{path="kernel"}`) - r2kern0
	r2user := metric(t, r2, `sipxdp_userspace_forwarded_packets_total`) - r2user0
	t.Logf("relay2 after the switch: %.0f packets in the kernel, %.0f in userspace", r2kern, r2user)
	if want := float64(2 * calls * int(after-moved-10)); r2kern < want {
		t.Errorf("relay2's kernel forwarded %.0f packets, want at least %.0f", r2kern, want)
	}
	// XDP passes a flow's first packet up when relay2 has not resolved
	// its next hop yet: one per direction and call at most.
	if r2user > 2*calls {
		t.Errorf("relay2's userspace relay forwarded %.0f packets after the switch: the kernel should have", r2user)
	}
	waitUntil(t, "relay2 active", 5*time.Second, func() bool {
		h := r2.Health().Replication
		return h.Role == relayrepl.RoleActive && h.TakenOver == calls
	})
	ctx := context.Background()
	for _, fp := range fps {
		ci, err := ng2.Query(ctx, &ng.Command{CallID: fp.id})
		if err != nil {
			t.Fatalf("query %s on relay2: %v", fp.id, err)
		}
		if len(ci.Tags) != 2 || ci.RTP.Packets == 0 {
			t.Errorf("query %s on relay2: %+v, want both tags and packets", fp.id, ci)
		}
	}

	// Redis down: the calls go on, a new call is answered, errors count.
	// A client from inside Redis's namespace, to see the keys written.
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr, Dialer: l.redis.DialContext, MaxRetries: -1, DialTimeout: time.Second})
	defer rc.Close()
	rs.Stop()
	errs0 := metric(t, r2, "sipxdp_relay_replication_errors_total")
	waitUntil(t, "relay2 sees redis down", 5*time.Second, func() bool {
		return metric(t, r2, "sipxdp_relay_replication_down") == 1
	})
	extra := setup(t, l, ng2, calls)
	if h := r2.Health(); h.Status != "degraded" || h.Replication.Redis != "down" {
		t.Errorf("health with redis down: %s, replication %+v", h.Status, h.Replication)
	}
	mark := now()
	time.Sleep(500 * time.Millisecond)
	for _, fp := range fps {
		if m := s.missing(fp.id+">", mark, now()-5); m > 0 {
			t.Errorf("%s: %d packets missing with redis down", fp.id, m)
		}
	}
	if e := metric(t, r2, "sipxdp_relay_replication_errors_total"); e <= errs0 {
		t.Errorf("replication errors %v with redis down, were %v", e, errs0)
	}
	rs.Restart(t)
	waitUntil(t, "every call written again", 10*time.Second, func() bool {
		n := 0
		for _, id := range []string{fps[0].id, fps[1].id, fps[2].id, extra.id} {
			n += int(rc.Exists(ctx, relayrepl.CallKey(group, id)).Val())
		}
		return n == calls+1
	})
	stopSending()

	// Deletes on relay2 remove the calls and their keys.
	for _, fp := range append(fps, extra) {
		if _, err := ng2.Delete(ctx, &ng.Command{CallID: fp.id, FromTag: "a" + fp.id}); err != nil {
			t.Fatalf("delete %s on relay2: %v", fp.id, err)
		}
		if _, err := ng2.Query(ctx, &ng.Command{CallID: fp.id}); err == nil {
			t.Errorf("query %s after delete: still there", fp.id)
		}
	}
	waitUntil(t, "keys deleted", 5*time.Second, func() bool {
		keys, err := rc.Keys(ctx, relayrepl.KeyPrefix(group)+"call:*").Result()
		return err == nil && len(keys) == 0
	})
}
