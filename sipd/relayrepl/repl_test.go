package relayrepl

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sipxdp/internal/redistest"
	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/media"
	"sipxdp/sipd/ngbackend"
)

// memPath is a datapath that only remembers its flows: two engines on
// one host can then hold the same relay ports, as an active and its
// standby do on two hosts.
type memPath struct {
	mu    sync.Mutex
	flows map[relay.FlowKey]relay.Flow
}

func (m *memPath) Name() string { return "userspace" }
func (m *memPath) Upsert(f relay.Flow) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flows[f.Key] = f
	return nil
}
func (m *memPath) Delete(k relay.FlowKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.flows, k)
	return nil
}
func (m *memPath) Stats(relay.FlowKey) (relay.FlowStats, error) { return relay.FlowStats{}, nil }
func (m *memPath) Close() error                                 { return nil }
func (m *memPath) Counters() map[string]uint64                  { return nil }
func (m *memPath) Sockets() int                                 { return 0 }

var relayAddr = netip.MustParseAddr("192.0.2.10")

// node is a relay-only node: engine, controller, NG backend, replicator.
type node struct {
	eng   *relay.Engine
	ctrl  *media.Controller
	be    ng.Backend
	r     *Replicator
	local atomic.Bool
	stop  func() // kills the node: it writes nothing more
}

func startNode(t *testing.T, url, name string, local bool, timeout time.Duration) *node {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	eng, err := relay.NewEngine(relay.Config{
		Addresses:    []relay.AddressConfig{{Name: "ext", Local: relayAddr, PortMin: 30000, PortMax: 30099}},
		MediaTimeout: timeout, Logger: log, ProcDir: t.TempDir(),
	}, nil, &memPath{flows: map[relay.FlowKey]relay.Flow{}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{eng: eng, ctrl: media.New(media.Config{Mode: media.ModeAll, Engine: eng, Log: log})}
	n.local.Store(local)
	n.r, err = New(Options{URL: url, Group: "g1", Node: name, Addresses: []netip.Addr{relayAddr},
		Ctrl: n.ctrl, Engine: eng, Log: log, Poll: 50 * time.Millisecond,
		Local: func(netip.Addr) bool { return n.local.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	n.be = n.r.Backend(ngbackend.New(n.ctrl, eng, log))
	// As sipd's run.go: a call timed out is written (its key deleted).
	n.ctrl.OnTimeout(func(e media.Ended) { n.r.Changed(e.CallID) })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = eng.Run(ctx) }()
	go func() { defer wg.Done(); n.ctrl.Run(ctx, eng.Events()) }()
	go func() { defer wg.Done(); n.r.Run(ctx) }()
	var once sync.Once
	n.stop = func() { once.Do(func() { cancel(); wg.Wait(); n.r.Close(); eng.Close() }) }
	t.Cleanup(n.stop)
	return n
}

func sdp(ip string, port int) []byte {
	return fmt.Appendf(nil, "v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\n", ip, ip, port)
}

// call sets up a call over NG: offer from a, answer from b.
func (n *node) call(t *testing.T, id string) {
	t.Helper()
	if _, err := n.be.Offer(&ng.Request{Command: "offer", CallID: id, FromTag: "a", SDP: sdp("198.51.100.1", 4000)}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.be.Answer(&ng.Request{Command: "answer", CallID: id, FromTag: "a", ToTag: "b", SDP: sdp("198.51.100.2", 5000)}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStandbyFollowsAndTakesOver: calls set up on the active are
// followed by the standby with the same ports and locked latches, held
// past their media timeout; a delete on the active removes the copy;
// when the address becomes local the standby takes the calls over, times
// them out itself and deletes their keys.
func TestStandbyFollowsAndTakesOver(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	act := startNode(t, rs.URL, "relay1", true, 2*time.Second)
	act.call(t, "before") // written before the standby starts: loaded
	sb := startNode(t, rs.URL, "relay2", false, 2*time.Second)
	waitFor(t, "active role", func() bool { return act.r.Role() == RoleActive })
	act.call(t, "after") // followed through the stream
	act.call(t, "short")
	waitFor(t, "three followed calls", func() bool { return sb.r.Status().Followed == 3 })
	if _, err := act.be.Delete(&ng.Request{Command: "delete", CallID: "short"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deleted call dropped", func() bool { return sb.r.Status().Followed == 2 })

	for _, id := range []string{"before", "after"} {
		want, err := act.eng.Session(id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := sb.eng.Session(id)
		if err != nil {
			t.Fatalf("standby has no %s: %v", id, err)
		}
		if len(got.Streams) != 1 || got.Streams[0].A.LegPorts != want.Streams[0].A.LegPorts || got.Streams[0].B.LegPorts != want.Streams[0].B.LegPorts {
			t.Fatalf("%s: standby ports %+v, active %+v", id, got.Streams, want.Streams)
		}
		for s, leg := range []relay.LegInfo{got.Streams[0].A, got.Streams[0].B} {
			if !leg.RTPLatch.Locked || leg.RTPLatch.Source != leg.PeerRTP {
				t.Errorf("%s side %d: latch %+v, want locked to the announced %v", id, s, leg.RTPLatch, leg.PeerRTP)
			}
		}
	}
	// Far past media.timeout: the active, seeing no packet, times its
	// calls out (and deletes their keys); the standby must not.
	waitFor(t, "active's timeouts", func() bool { return len(act.ctrl.CallIDs(0)) == 0 })
	// They deleted the keys: the copies go too.
	waitFor(t, "copies of timed-out calls dropped", func() bool { return len(sb.ctrl.CallIDs(0)) == 0 })

	// Calls again, then the active dies (stops writing) and the address
	// moves.
	act.call(t, "c1")
	act.call(t, "c2")
	waitFor(t, "two followed calls", func() bool { return sb.r.Status().Followed == 2 })
	act.stop()
	time.Sleep(3 * time.Second) // past media.timeout: still held
	if got := len(sb.ctrl.CallIDs(0)); got != 2 {
		t.Fatalf("standby timed out followed calls: %d left", got)
	}
	sb.local.Store(true)
	waitFor(t, "standby active", func() bool { return sb.r.Role() == RoleActive })
	if st := sb.r.Status(); st.TakenOver != 2 || st.Followed != 0 {
		t.Fatalf("status after take-over %+v: want 2 taken over", st)
	}
	if _, err := sb.be.Query(&ng.Request{Command: "query", CallID: "c1"}); err != nil {
		t.Fatalf("query on the new active: %v", err)
	}
	if _, err := sb.be.Delete(&ng.Request{Command: "delete", CallID: "c1"}); err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	waitFor(t, "c1's key deleted", func() bool { return rc.Exists(ctx, CallKey("g1", "c1")).Val() == 0 })
	// Its own timeouts now: c2 is silent and goes, key and all.
	waitFor(t, "c2 timed out on the new active", func() bool { return len(sb.ctrl.CallIDs(0)) == 0 })
}

// TestRedisDown: with Redis gone the active serves its calls and takes
// new ones, counts errors and reports down; when Redis is back (empty)
// it writes every call again.
func TestRedisDown(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	act := startNode(t, rs.URL, "relay1", true, time.Minute)
	waitFor(t, "active role", func() bool { return act.r.Role() == RoleActive })
	act.call(t, "up")
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	waitFor(t, "key written", func() bool { return rc.Exists(ctx, CallKey("g1", "up")).Val() == 1 })
	rs.Stop()
	act.call(t, "down") // answered without Redis
	waitFor(t, "down reported", func() bool { return act.r.Status().Redis == "down" })
	if st := act.r.Status(); st.Errors == 0 || st.LastError == "" {
		t.Fatalf("status while down %+v: want errors and why", st)
	}
	rs.Restart(t)
	waitFor(t, "up again", func() bool { return act.r.Status().Redis == "up" })
	waitFor(t, "both calls re-written", func() bool {
		return rc.Exists(ctx, CallKey("g1", "up"), CallKey("g1", "down")).Val() == 2
	})
	b, err := rc.Get(ctx, CallKey("g1", "down")).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decodeRecord(b)
	if err != nil || rec.Node != "relay1" {
		t.Fatalf("record %+v, %v", rec, err)
	}
}

// TestNGTakesOver: a standby that gets NG for a call it follows (the
// proxy moved to it) takes over at once, though it does not hold the
// address: the delete is served and the key goes.
func TestNGTakesOver(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	act := startNode(t, rs.URL, "relay1", true, time.Minute)
	sb := startNode(t, rs.URL, "relay2", false, time.Minute)
	waitFor(t, "active role", func() bool { return act.r.Role() == RoleActive })
	act.call(t, "c")
	waitFor(t, "followed call", func() bool { return sb.r.Status().Followed == 1 })
	act.stop()
	if _, err := sb.be.Query(&ng.Request{Command: "query", CallID: "c"}); err != nil {
		t.Fatalf("query on the standby: %v", err)
	}
	if sb.r.Role() != RoleStandby {
		t.Fatal("a query made the standby active")
	}
	if _, err := sb.be.Delete(&ng.Request{Command: "delete", CallID: "c"}); err != nil {
		t.Fatal(err)
	}
	if sb.r.Role() != RoleActive || sb.r.Status().TakenOver != 1 {
		t.Fatalf("after NG delete of a followed call: %+v, want active", sb.r.Status())
	}
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	waitFor(t, "key deleted", func() bool { return rc.Exists(ctx, CallKey("g1", "c")).Val() == 0 })
}

// TestActiveRestart: an active restarted on the same address takes its
// calls back from Redis (same ports) before it writes anything, so their
// keys survive.
func TestActiveRestart(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	old := startNode(t, rs.URL, "relay1", true, time.Minute)
	waitFor(t, "active role", func() bool { return old.r.Role() == RoleActive })
	old.call(t, "c")
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	waitFor(t, "key written", func() bool { return rc.Exists(ctx, CallKey("g1", "c")).Val() == 1 })
	want, err := old.eng.Session("c")
	if err != nil {
		t.Fatal(err)
	}
	old.stop()
	n := startNode(t, rs.URL, "relay1", true, time.Minute)
	waitFor(t, "active again", func() bool { return n.r.Role() == RoleActive })
	got, err := n.eng.Session("c")
	if err != nil {
		t.Fatalf("restarted active lost the call: %v", err)
	}
	if got.Streams[0].A.LegPorts != want.Streams[0].A.LegPorts {
		t.Fatalf("ports %+v, want %+v", got.Streams[0].A.LegPorts, want.Streams[0].A.LegPorts)
	}
	time.Sleep(300 * time.Millisecond) // its first write-back is done
	if rc.Exists(ctx, CallKey("g1", "c")).Val() != 1 {
		t.Fatal("the restarted active deleted its call's key")
	}
}

// TestNoRedisUpdate: an offer or answer with rtpengine's no-redis-update
// flag is not written; the call's next change without it is.
func TestNoRedisUpdate(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	act := startNode(t, rs.URL, "relay1", true, time.Minute)
	waitFor(t, "active role", func() bool { return act.r.Role() == RoleActive })
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	skip := map[string]string{"no-redis-update": ""}
	if _, err := act.be.Offer(&ng.Request{Command: "offer", CallID: "quiet", FromTag: "a", SDP: sdp("198.51.100.1", 4000), Flags: skip}); err != nil {
		t.Fatal(err)
	}
	// A call without the flag, offered after it, is written: once its
	// key is there, the writer has had its chance at "quiet" too.
	if _, err := act.be.Offer(&ng.Request{Command: "offer", CallID: "loud", FromTag: "a", SDP: sdp("198.51.100.1", 4002)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "loud's key", func() bool { return rc.Exists(ctx, CallKey("g1", "loud")).Val() == 1 })
	if rc.Exists(ctx, CallKey("g1", "quiet")).Val() != 0 {
		t.Fatal("an offer with no-redis-update was written to Redis")
	}
	if _, err := act.be.Answer(&ng.Request{Command: "answer", CallID: "quiet", FromTag: "a", ToTag: "b", SDP: sdp("198.51.100.2", 5000), Flags: skip}); err != nil {
		t.Fatal(err)
	}
	if _, err := act.be.Offer(&ng.Request{Command: "offer", CallID: "loud2", FromTag: "a", SDP: sdp("198.51.100.1", 4004)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "loud2's key", func() bool { return rc.Exists(ctx, CallKey("g1", "loud2")).Val() == 1 })
	if rc.Exists(ctx, CallKey("g1", "quiet")).Val() != 0 {
		t.Fatal("an answer with no-redis-update was written to Redis")
	}
	// A re-offer without the flag writes the call.
	if _, err := act.be.Offer(&ng.Request{Command: "offer", CallID: "quiet", FromTag: "a", SDP: sdp("198.51.100.1", 4000)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "quiet's key after a change without the flag", func() bool { return rc.Exists(ctx, CallKey("g1", "quiet")).Val() == 1 })
}
