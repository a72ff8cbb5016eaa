package dialog

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/redistest"
	"sipxdp/internal/sipua"
	"sipxdp/relay"
	"sipxdp/relay/relaytest"
	"sipxdp/sipd/media"
	"sipxdp/sipd/redisconn"
)

// memCallsFlag is how many calls BenchmarkRedisMemoryPerDialog shares: a
// key dictionary of this size has paid for its growth, so the figure per
// call holds for a larger Redis.
var memCallsFlag = flag.Int("redis-mem-calls", 10000, "calls written by BenchmarkRedisMemoryPerDialog")

// BenchmarkRedisMemoryPerDialog measures what confirmed calls cost a
// Redis shared by sipd nodes (sip.dialog.store: redis://): memCalls calls
// relayed by the media controller (RTP and RTCP on each leg, the caller
// behind NAT), answered through the tracker with the controller's state
// attached as the proxy does, each written by the tracker itself.
// Reported: Redis memory per call (B/call) and the record's size
// (B/record). Each run starts from an empty Redis; run it with
// -benchtime 1x.
func BenchmarkRedisMemoryPerDialog(b *testing.B) {
	memCalls := *memCallsFlag
	const portMin = 10000
	if memCalls < 1 || portMin+4*memCalls+99 > 65535 {
		b.Fatalf("-redis-mem-calls %d: want 1 to %d, four relay ports each", memCalls, (65535-99-portMin)/4)
	}
	srv := redistest.Start(b)
	ctx := context.Background()
	relayAddr := netip.MustParseAddr("203.0.113.1")
	eng, err := relay.NewEngine(relay.Config{
		Addresses:    []relay.AddressConfig{{Name: "ext", Local: relayAddr, PortMin: portMin, PortMax: uint16(portMin + 4*memCalls + 99)}},
		MediaTimeout: time.Hour, Logger: slog.New(slog.DiscardHandler), ProcDir: b.TempDir(),
	}, nil, relaytest.NullPath{}, "test")
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	ctrl := media.New(media.Config{Mode: media.ModeAll, Engine: eng})
	c, err := redisconn.Open(srv.URL, "dialog store", redisconn.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	tr := New(nil, 12*time.Hour, time.Now)
	tr.ShareState(c, "sipd1", nil)
	if err := c.C.Ping(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	before := usedMemory(b, srv)

	b.ResetTimer()
	for i := range memCalls {
		answeredCall(b, tr, ctrl, i)
	}
	b.StopTimer()
	if n := c.C.DBSize(ctx).Val(); n != int64(memCalls) {
		b.Fatalf("%d keys in Redis, want %d calls", n, memCalls)
	}
	after := usedMemory(b, srv)

	var recBytes int64
	for i := range memCalls {
		id, fromTag, _ := dialogIDs(i)
		rec, err := c.C.Get(ctx, StateKey(id, fromTag)).Bytes()
		if err != nil {
			b.Fatal(err)
		}
		got, err := DecodeShared(rec)
		// Both sides' media announced, and the INVITE and 200 kept.
		if err != nil || strings.Count(string(got.media), `"set":true`) != 2 ||
			!strings.Contains(string(got.media), `"invite":{`) || !strings.Contains(string(got.media), `"ok":{`) {
			b.Fatalf("call %d: record %s, %v; want a confirmed call with its media", i, rec, err)
		}
		recBytes += int64(len(rec))
	}
	n := float64(memCalls)
	b.ReportMetric(float64(after-before)/n, "B/call")
	b.ReportMetric(float64(recBytes)/n, "B/record")
}

// dialogIDs are call i's Call-ID and tags, of the lengths phones pick.
func dialogIDs(i int) (callID, fromTag, toTag string) {
	return fmt.Sprintf("%08x-4e1f-9c2a-%012d@192.168.1.23", i, i), fmt.Sprintf("as%08x", i), fmt.Sprintf("%08x-1c2d", i)
}

// answeredCall takes call i through the tracker and the media controller
// as the proxy does: a desk phone behind NAT calls a phone on a public
// address; the 200 answers it. The SDP's codecs do not matter: the
// record keeps ports, addresses and the dialog's headers, not the SDP.
func answeredCall(b *testing.B, tr *Tracker, ctrl *media.Controller, i int) {
	b.Helper()
	id, fromTag, toTag := dialogIDs(i)
	callee := "198.51.100." + strconv.Itoa(1+i%250)
	offer := sipua.SDP(netip.AddrPortFrom(netip.MustParseAddr("192.168.1.23"), uint16(4000+2*(i%1000))))
	inv := parseSIP(b, fmt.Sprintf(`INVITE sip:2002@pbx.example.com SIP/2.0
Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK%[1]s;rport=61000;received=203.0.113.7
Max-Forwards: 70
From: "Alice 1001" <sip:1001@pbx.example.com>;tag=%[2]s
To: <sip:2002@pbx.example.com>
Call-ID: %[3]s
CSeq: 102 INVITE
Contact: <sip:1001@192.168.1.23:5060;ob>
Record-Route: <sip:203.0.113.1;lr>
Allow: INVITE, ACK, CANCEL, BYE, REFER, NOTIFY, OPTIONS, INFO, UPDATE
Supported: replaces, timer
User-Agent: Yealink SIP-T46U 108.86.0.45
Content-Type: application/sdp`, id[:8], fromTag, id), offer).(*sip.Request)
	inv.SetSource("203.0.113.7:61000")
	tr.Invite(id, fromTag, inv.From().Address.String(), inv.To().Address.String())
	if err := ctrl.Invite(inv, netip.MustParseAddr(callee), "udp"); err != nil {
		b.Fatal(err)
	}
	answer := sipua.SDP(netip.AddrPortFrom(netip.MustParseAddr(callee), uint16(30000+2*(i%1000))))
	ok := parseSIP(b, fmt.Sprintf(`SIP/2.0 200 OK
Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKsipd%[1]s
Record-Route: <sip:203.0.113.1;lr>
From: "Alice 1001" <sip:1001@pbx.example.com>;tag=%[2]s
To: <sip:2002@pbx.example.com>;tag=%[3]s
Call-ID: %[4]s
CSeq: 102 INVITE
Contact: <sip:2002@%[5]s:5060>
Allow: INVITE, ACK, CANCEL, BYE, REFER, NOTIFY, OPTIONS, INFO, UPDATE
Supported: replaces, timer
Content-Type: application/sdp`, id[:8], fromTag, toTag, id, callee), answer).(*sip.Response)
	ok.SetSource(callee + ":5060")
	ctrl.Response(ok)
	st, relayed := ctrl.State(id)
	if !relayed {
		b.Fatalf("call %d not relayed", i)
	}
	tr.Final(id, fromTag, toTag, 200, st)
}

// parseSIP parses a message of these header lines and body.
func parseSIP(b *testing.B, head, body string) sip.Message {
	b.Helper()
	text := strings.ReplaceAll(head, "\n", "\r\n") + fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(body)) + body
	m, err := sip.ParseMessage([]byte(text))
	if err != nil {
		b.Fatalf("parse: %v\n%s", err, text)
	}
	return m
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
