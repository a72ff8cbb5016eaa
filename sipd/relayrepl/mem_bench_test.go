package relayrepl

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sipxdp/internal/redistest"
	"sipxdp/internal/sipua"
	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/media"
	"sipxdp/sipd/ngbackend"
)

// memCallsFlag is how many calls BenchmarkRedisMemoryPerCall replicates:
// a key dictionary of this size has paid for its growth, so the figure
// per call holds for a larger Redis.
var memCallsFlag = flag.Int("redis-mem-calls", 10000, "calls written by BenchmarkRedisMemoryPerCall")

// BenchmarkRedisMemoryPerCall measures what an active relay-only node's
// calls cost Redis: memCalls calls set up over NG (offer and answer, RTP
// and RTCP on each leg, the caller behind NAT) and their four latches
// locked, written by the Replicator itself. Reported: Redis memory per
// call key (B/call) and the record's size (B/record); then the changes
// stream apart, as the writer trims it (stream-entries, MB-stream): it
// does not grow with the calls.
// Each run starts from an empty Redis; run it with -benchtime 1x.
func BenchmarkRedisMemoryPerCall(b *testing.B) {
	memCalls := *memCallsFlag
	const portMin = 10000
	if memCalls < 1 || portMin+4*memCalls+99 > 65535 {
		b.Fatalf("-redis-mem-calls %d: want 1 to %d, four relay ports each", memCalls, (65535-99-portMin)/4)
	}
	rs := redistest.Start(b)
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	log := slog.New(slog.DiscardHandler)
	eng, err := relay.NewEngine(relay.Config{
		// Four ports a call: RTP and RTCP on each leg.
		Addresses:    []relay.AddressConfig{{Name: "ext", Local: relayAddr, PortMin: portMin, PortMax: uint16(portMin + 4*memCalls + 99)}},
		MediaTimeout: time.Hour, Logger: log, ProcDir: b.TempDir(),
	}, nil, &memPath{flows: map[relay.FlowKey]relay.Flow{}}, "test")
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	ctrl := media.New(media.Config{Mode: media.ModeAll, Engine: eng, Log: log})
	r, err := New(Options{URL: rs.URL, Group: "relay-a", Node: "relay1", Addresses: []netip.Addr{relayAddr},
		Ctrl: ctrl, Engine: eng, Log: log, Poll: 50 * time.Millisecond, Local: func(netip.Addr) bool { return true }})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	be := r.Backend(ngbackend.New(ctrl, eng, log))
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = eng.Run(rctx) }()
	go func() { defer wg.Done(); ctrl.Run(rctx, eng.Events()) }()
	go func() { defer wg.Done(); r.Run(rctx) }()
	defer wg.Wait()
	defer cancel()
	deadline := time.Now().Add(10 * time.Second)
	for r.Role() != RoleActive {
		if time.Now().After(deadline) {
			b.Fatal("replicator not active in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := usedMemory(b, rs)

	b.ResetTimer()
	for i := range memCalls {
		relayedCall(b, be, eng, i)
		r.Changed(callID(i)) // as the engine's lock callback does
	}
	// Done when every call's record holds its four locked latches.
	deadline = time.Now().Add(30 * time.Second)
	var recBytes int64
	for i := 0; i < memCalls; {
		rec, err := rc.Get(ctx, CallKey("relay-a", callID(i))).Bytes()
		if got, derr := decodeRecord(rec); err == nil && derr == nil && len(got.Latches) == 4 {
			recBytes += int64(len(rec))
			i++
			continue
		}
		if time.Now().After(deadline) {
			b.Fatalf("call %d after 30 s: record %s, %v; want 4 locked latches", i, rec, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.StopTimer()
	if n := rc.DBSize(ctx).Val(); n != int64(memCalls)+1 {
		b.Fatalf("%d keys in Redis, want %d calls and the stream", n, memCalls)
	}
	after := usedMemory(b, rs)
	stream, err := rc.MemoryUsage(ctx, ChangesKey("relay-a"), 0).Result()
	if err != nil {
		b.Fatal(err)
	}
	n := float64(memCalls)
	b.ReportMetric(float64(after-before-stream)/n, "B/call")
	b.ReportMetric(float64(recBytes)/n, "B/record")

	// The stream apart: the writer trims it to about streamLen entries
	// whatever the calls, so it is measured there, every call rewritten
	// (as a latch lock or re-offer does) until it is trimmed.
	writes := r.Status().Writes
	for rc.XLen(ctx, ChangesKey("relay-a")).Val() < streamLen || writes < 2*streamLen {
		for i := range memCalls {
			r.Changed(callID(i))
		}
		writes += uint64(memCalls)
		deadline = time.Now().Add(30 * time.Second)
		for r.Status().Writes < writes {
			if time.Now().After(deadline) {
				b.Fatalf("%d writes after 30 s, want %d", r.Status().Writes, writes)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	entries := rc.XLen(ctx, ChangesKey("relay-a")).Val()
	if entries > streamLen+streamLen/10 {
		b.Fatalf("%d stream entries after %d writes: not trimmed to about %d", entries, writes, streamLen)
	}
	if stream, err = rc.MemoryUsage(ctx, ChangesKey("relay-a"), 0).Result(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(entries), "stream-entries")
	b.ReportMetric(float64(stream)/1e6, "MB-stream")
}

// callID is a call's Call-ID, of the length a SIP phone picks.
func callID(i int) string { return fmt.Sprintf("%08x-4e1f-9c2a-%012d@192.168.1.23", i, i) }

// relayedCall sets up call i as Kamailio would over NG and locks its
// latches as the slow path would once media flows: the caller behind
// NAT (private addresses announced, its router's public address
// latched), the callee on a public address. The SDP's codecs do not
// matter: the record keeps ports and addresses, not the SDP.
func relayedCall(b *testing.B, be ng.Backend, eng *relay.Engine, i int) {
	b.Helper()
	id := callID(i)
	fromTag, toTag := fmt.Sprintf("as%08x", i), fmt.Sprintf("%08x-1c2d", i)
	caller, callee := "192.168.1.23", "198.51.100."+strconv.Itoa(1+i%250)
	if _, err := be.Offer(&ng.Request{Command: "offer", CallID: id, FromTag: fromTag, ViaBranch: "z9hG4bK" + id[:8],
		ReceivedFrom: []string{"IP4", "203.0.113.7"}, SDP: []byte(sipua.SDP(netip.AddrPortFrom(netip.MustParseAddr(caller), uint16(4000+2*(i%1000)))))}); err != nil {
		b.Fatal(err)
	}
	if _, err := be.Answer(&ng.Request{Command: "answer", CallID: id, FromTag: fromTag, ToTag: toTag,
		ReceivedFrom: []string{"IP4", callee}, SDP: []byte(sipua.SDP(netip.AddrPortFrom(netip.MustParseAddr(callee), uint16(30000+2*(i%1000)))))}); err != nil {
		b.Fatal(err)
	}
	si, err := eng.Session(id)
	if err != nil {
		b.Fatal(err)
	}
	natPort := uint16(40000 + 2*(i%10000))
	for s, leg := range [2]relay.LegInfo{si.Streams[0].A, si.Streams[0].B} {
		for c, src := range [2]netip.AddrPort{leg.PeerRTP, leg.PeerRTCP} {
			l := relay.Latch{Source: src, Rank: relay.RankExact, Locked: true}
			if s == 0 {
				l = relay.Latch{Source: netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), natPort+uint16(c)), Rank: relay.RankOther, Locked: true}
			}
			if err := eng.SetLatch(id, si.Streams[0].Index, relay.Side(s), c == 1, l); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// usedMemory is the server's used_memory.
func usedMemory(b *testing.B, s *redistest.Server) int64 {
	b.Helper()
	n, err := s.UsedMemory()
	if err != nil {
		b.Fatal(err)
	}
	return n
}
