package callstats_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/callstats"
	"sipxdp/sipd/media"
	"sipxdp/sipd/ngbackend"
)

// statPath is a userspace datapath that relays nothing: it keeps the
// flows installed and reports the packets a test says arrived on them,
// so that a call's streams end with the counters the test chose.
type statPath struct {
	mu    sync.Mutex
	flows map[relay.FlowKey]bool
	stats map[relay.FlowKey]relay.FlowStats
}

func (p *statPath) Name() string { return "userspace" }
func (p *statPath) Upsert(f relay.Flow) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flows[f.Key] = true
	return nil
}
func (p *statPath) Delete(k relay.FlowKey) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.flows, k)
	delete(p.stats, k) // the port's next call starts at 0
	return nil
}
func (p *statPath) Stats(k relay.FlowKey) (relay.FlowStats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.flows[k] {
		return relay.FlowStats{}, relay.ErrFlowNotFound
	}
	return p.stats[k], nil
}
func (p *statPath) Close() error                { return nil }
func (p *statPath) Counters() map[string]uint64 { return nil }
func (p *statPath) Sockets() int                { return 0 }

// arrive makes n packets arrive on a leg's RTP port, just now.
func (p *statPath) arrive(l relay.LegPorts, n uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats[relay.FlowKey{Local: netip.AddrPortFrom(l.Local, l.RTP)}] = relay.FlowStats{Packets: n, Bytes: 172 * n, LastSeen: time.Now()}
}

const (
	relayAddr = "192.0.2.1"
	timeout   = time.Second // the engine's media timeout
)

type rig struct {
	t    *testing.T
	srv  *ng.Server
	eng  *relay.Engine
	path *statPath
	n    int
}

func newRig(t *testing.T) *rig {
	t.Helper()
	path := &statPath{flows: map[relay.FlowKey]bool{}, stats: map[relay.FlowKey]relay.FlowStats{}}
	// Eight ports: four RTP/RTCP pairs, two calls of two legs at once.
	addrs := []relay.AddressConfig{{Name: "default", Local: netip.MustParseAddr(relayAddr), PortMin: 30000, PortMax: 30007}}
	eng, err := relay.NewEngine(relay.Config{Addresses: addrs, Logger: slog.New(slog.DiscardHandler),
		ProcDir: t.TempDir(), MediaTimeout: timeout}, nil, path, "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait(); eng.Close() })
	ended := new(callstats.Counter)
	ctrl := media.New(media.Config{Mode: media.ModeAll, Engine: eng, Interfaces: addrs, Ended: ended})
	wg.Add(2)
	go func() { defer wg.Done(); _ = eng.Run(ctx) }()
	go func() { defer wg.Done(); ctrl.Run(ctx, eng.Events()) }()
	srv := ng.NewServer(ngbackend.New(ctrl, eng, nil), ng.Options{
		Statistics: ngbackend.Statistics(eng, ngbackend.StatsOptions{Ended: ended.Ended})})
	return &rig{t: t, srv: srv, eng: eng, path: path}
}

var proxy = netip.MustParseAddrPort("198.51.100.7:5060")

func (r *rig) do(d map[string]any) map[string]any {
	r.t.Helper()
	r.n++
	cookie := fmt.Sprintf("c%d", r.n)
	b, err := ng.Encode(d)
	if err != nil {
		r.t.Fatal(err)
	}
	out := r.srv.Handle(append([]byte(cookie+" "), b...), proxy)
	_, body, _ := strings.Cut(string(out), " ")
	v, err := ng.Decode([]byte(body))
	if err != nil {
		r.t.Fatalf("reply %q: %v", out, err)
	}
	return v.(map[string]any)
}

func sdp(host string, port int) string {
	return fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\n", host, host, port)
}

func (r *rig) offer(id string) map[string]any {
	return r.do(map[string]any{"command": "offer", "call-id": id, "from-tag": "a", "sdp": sdp("10.0.0.1", 4000)})
}

func (r *rig) call(id string) relay.StreamInfo {
	r.t.Helper()
	if rep := r.offer(id); rep["result"] != "ok" {
		r.t.Fatalf("offer %s: %v", id, rep)
	}
	if rep := r.do(map[string]any{"command": "answer", "call-id": id, "from-tag": "a", "to-tag": "b", "sdp": sdp("10.0.0.2", 5000)}); rep["result"] != "ok" {
		r.t.Fatalf("answer %s: %v", id, rep)
	}
	si, err := r.eng.Session(id)
	if err != nil || len(si.Streams) != 1 {
		r.t.Fatalf("session %s: %v, %d streams", id, err, len(si.Streams))
	}
	return si.Streams[0]
}

func (r *rig) delete(id string) {
	r.t.Helper()
	if rep := r.do(map[string]any{"command": "delete", "call-id": id, "from-tag": "a"}); rep["result"] != "ok" {
		r.t.Fatalf("delete %s: %v", id, rep)
	}
}

const doc = "rtpengine ng_control_protocol.md: statistics Message, totalstatistics; rtpengine statistics.c"

// TestStatisticsAfterCalls drives calls through a real relay.Engine and
// media.Controller behind ng.Server, then checks the statistics reply
// field by field: rtpengine's counts of ended sessions by reason,
// zero- and one-way streams, rejected offers and the mean duration.
func TestStatisticsAfterCalls(t *testing.T) {
	r := newRig(t)
	start := time.Now()

	both := r.call("both")
	oneway := r.call("oneway")
	// The ports are taken: a third call is refused (rejectedsessions).
	if rep := r.offer("refused"); rep["result"] != "error" || rep["error-reason"] != ng.ReasonOutOfPorts {
		t.Fatalf("offer with no free port: %v, want error %q", rep, ng.ReasonOutOfPorts)
	}
	r.path.arrive(both.A.LegPorts, 10)
	r.path.arrive(both.B.LegPorts, 12)
	r.path.arrive(oneway.A.LegPorts, 7) // the caller sends, the callee never does
	r.delete("both")
	r.delete("oneway")

	r.call("silent") // answered, no packet: zero-way
	r.delete("silent")

	r.call("timeout") // answered, no packet, left to the media timeout
	if rep := r.offer("unanswered"); rep["result"] != "ok" {
		t.Fatalf("offer unanswered: %v", rep)
	}
	for deadline := time.Now().Add(5 * timeout); r.eng.Stats().Sessions > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions left after %v; want both timed out", r.eng.Stats().Sessions, 5*timeout)
		}
	}
	elapsed := time.Since(start)

	rep := r.do(map[string]any{"command": "statistics"})
	st, _ := rep["statistics"].(map[string]any)
	tot, _ := st["totalstatistics"].(map[string]any)
	cur, _ := st["currentstatistics"].(map[string]any)
	if tot == nil || cur == nil {
		t.Fatalf("reply %v", rep)
	}
	for _, tc := range []struct {
		field string
		want  any
		why   string
	}{
		{"managedsessions", int64(5), "every own call that ended; not the refused offer"},
		{"rejectedsessions", int64(1), "the offer refused for lack of ports"},
		{"regularterminatedsessions", int64(3), "deleted by NG delete"},
		{"timeoutsessions", int64(1), "answered, then no media for the timeout (rtpengine's TIMEOUT)"},
		{"offertimeoutsessions", int64(1), "offered, never answered, timed out (OFFER_TIMEOUT)"},
		{"silenttimeoutsessions", int64(0), "no silent-timeout in the relay"},
		{"finaltimeoutsessions", int64(0), "no final-timeout in the relay"},
		{"forcedterminatedsessions", int64(0), "nothing ended by the relay for another reason"},
		{"onewaystreams", int64(1), "the call only its caller sent on"},
		{"zerowaystreams", int64(3), "the silent call and both timed-out ones"},
	} {
		if got := tot[tc.field]; got != tc.want {
			t.Errorf("%s (%s; %s) = %#v, want %#v", tc.field, doc, tc.why, got, tc.want)
		}
	}
	if got := cur["sessionstotal"]; got != int64(0) {
		t.Errorf("sessionstotal = %#v, want 0 (every call ended)", got)
	}
	avg, err := strconv.ParseFloat(fmt.Sprint(tot["avgcallduration"]), 64)
	if err != nil || avg <= 0 || avg > elapsed.Seconds() {
		t.Errorf("avgcallduration = %v, want above 0 and at most the test's %v", tot["avgcallduration"], elapsed)
	}
}

// TestCallEnded maps single ended calls to rtpengine's counters.
func TestCallEnded(t *testing.T) {
	t0 := time.Unix(1000, 0)
	streams := func(a, b uint64) []relay.StreamInfo {
		var s relay.StreamInfo
		s.A.Received.Packets, s.B.Received.Packets = a, b
		return []relay.StreamInfo{s}
	}
	for _, tc := range []struct {
		name string
		in   media.CallEnd
		want ng.EndedStats
	}{
		{"bye, both ways", media.CallEnd{Reason: "bye", Answered: true, Created: t0, Ended: t0.Add(3 * time.Second), Streams: streams(5, 5)},
			ng.EndedStats{Managed: 1, Regular: 1, Duration: 3 * time.Second, DurationSquaredSeconds: 9}},
		{"delete-delay", media.CallEnd{Reason: "ng delete (delete-delay)", Answered: true, Streams: streams(0, 5)},
			ng.EndedStats{Managed: 1, Regular: 1, OneWay: 1}},
		{"srtp leg failed: forced", media.CallEnd{Reason: relay.ReasonLegFailed, Answered: true, Streams: streams(1, 1)},
			ng.EndedStats{Managed: 1, Forced: 1}},
		{"timeout, answered", media.CallEnd{Reason: relay.ReasonMediaTimeout, Answered: true, Streams: streams(0, 0)},
			ng.EndedStats{Managed: 1, Timeout: 1, ZeroWay: 1}},
		{"timeout, never answered", media.CallEnd{Reason: relay.ReasonMediaTimeout},
			ng.EndedStats{Managed: 1, OfferTimeout: 1}},
		{"followed for the active node: foreign", media.CallEnd{Reason: "deleted by the active relay"}, ng.EndedStats{}},
		{"replica updated: foreign", media.CallEnd{Reason: "replica updated"}, ng.EndedStats{}},
		{"setup failed: never ran", media.CallEnd{Reason: "setup failed"}, ng.EndedStats{}},
	} {
		var c callstats.Counter
		c.CallEnded(tc.in)
		if got := c.Ended(); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
