package ng

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// fakeBackend records the requests it gets.
type fakeBackend struct {
	mu    sync.Mutex
	reqs  []*Request
	err   error
	stats CallStats
	calls []string
	block chan struct{} // when set, Offer waits on it
}

func (f *fakeBackend) record(r *Request) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
	return f.err
}

func (f *fakeBackend) Offer(r *Request) ([]byte, error) {
	if f.block != nil {
		<-f.block
	}
	if err := f.record(r); err != nil {
		return nil, err
	}
	return []byte("v=0 offer " + r.CallID), nil
}

func (f *fakeBackend) Answer(r *Request) ([]byte, error) {
	if err := f.record(r); err != nil {
		return nil, err
	}
	return []byte("v=0 answer " + r.CallID), nil
}

func (f *fakeBackend) Delete(r *Request) (CallStats, error) {
	return f.stats, f.record(r)
}

func (f *fakeBackend) Query(r *Request) (CallStats, error) {
	return f.stats, f.record(r)
}

func (f *fakeBackend) List(limit int) []string {
	_ = f.record(&Request{Command: "list", Limit: limit})
	return f.calls
}

func (f *fakeBackend) requests() []*Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Request(nil), f.reqs...)
}

var testSrc = netip.MustParseAddrPort("192.0.2.10:5060")

// msg builds "<cookie> <bencode(d)>".
func msg(t testing.TB, cookie string, d map[string]any) []byte {
	t.Helper()
	b, err := Encode(d)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(cookie+" "), b...)
}

// parseReply splits a reply and decodes its dictionary.
func parseReply(t testing.TB, cookie string, reply []byte) map[string]any {
	t.Helper()
	c, body, ok := strings.Cut(string(reply), " ")
	if !ok || c != cookie {
		t.Fatalf("reply %q: want cookie %q", reply, cookie)
	}
	v, err := Decode([]byte(body))
	if err != nil {
		t.Fatalf("reply %q: %v", reply, err)
	}
	d, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("reply %q is not a dictionary", reply)
	}
	return d
}

func TestHandleCommands(t *testing.T) {
	const sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
	for _, tc := range []struct {
		name  string
		in    map[string]any
		err   error // the backend's
		want  map[string]any
		check func(t *testing.T, r *Request) // the request the backend got
	}{
		{
			name: "ping",
			in:   map[string]any{"command": "ping"},
			want: map[string]any{"result": "pong"},
		},
		{
			name: "ping upper case",
			in:   map[string]any{"command": "PING"},
			want: map[string]any{"result": "pong"},
		},
		{
			name: "offer",
			in: map[string]any{"command": "offer", "call-id": "c1", "from-tag": "ft", "sdp": sdp,
				"via-branch": "z9hG4bK1", "ICE": "remove", "transport-protocol": "RTP/AVP",
				"replace": []any{"origin", "session-connection"}, "direction": []any{"external", "internal"},
				"received-from": []any{"IP4", "192.0.2.1"}, "rtcp-mux": []any{"demux"},
				"SIP-message-type": "sip-request"},
			want: map[string]any{"result": "ok", "sdp": "v=0 offer c1"},
			check: func(t *testing.T, r *Request) {
				want := &Request{Command: "offer", CallID: "c1", FromTag: "ft", SDP: []byte(sdp),
					ViaBranch: "z9hG4bK1", ICE: "remove", TransportProtocol: "RTP/AVP",
					Replace: []string{"origin", "session-connection"}, Direction: []string{"external", "internal"},
					ReceivedFrom: []string{"IP4", "192.0.2.1"}, RTCPMux: []string{"demux"},
					SIPMessageType: "sip-request", Flags: map[string]string{}, Source: testSrc}
				if !reflect.DeepEqual(r, want) {
					t.Errorf("request\n%#v\nwant\n%#v", r, want)
				}
			},
		},
		{
			name: "offer with spaced and underscored keys",
			in: map[string]any{"command": "offer", "call id": "c2", "From_Tag": "ft", "SDP": sdp,
				"via branch": "vb", "transport protocol": "RTP/SAVP", "received_from": []any{"IP6", "2001:db8::1"},
				"sip message type": "sip-reply"},
			want: map[string]any{"result": "ok", "sdp": "v=0 offer c2"},
			check: func(t *testing.T, r *Request) {
				if r.CallID != "c2" || r.FromTag != "ft" || string(r.SDP) != sdp || r.ViaBranch != "vb" ||
					r.TransportProtocol != "RTP/SAVP" || r.SIPMessageType != "sip-reply" ||
					!reflect.DeepEqual(r.ReceivedFrom, []string{"IP6", "2001:db8::1"}) {
					t.Errorf("request %#v", r)
				}
			},
		},
		{
			name: "flags",
			in: map[string]any{"command": "offer", "call-id": "c3", "from-tag": "ft", "sdp": sdp,
				"flags": []any{"trust-address", "Trust Address", "SIP_source_address", "no-such-flag",
					"ICE=force", "replace-origin", "rtcp-mux-offer", "RTP/AVPF", "label=caller", "media-address=192.0.2.9"},
				"address family": "IP6", "record call": "yes", "delete-delay": int64(5), "SDES": []any{"off", "no-AES_CM_128_HMAC_SHA1_32"},
				"codec": map[string]any{"strip": []any{"all"}}},
			want: map[string]any{"result": "ok", "sdp": "v=0 offer c3"},
			check: func(t *testing.T, r *Request) {
				wantFlags := map[string]string{
					"trust-address": "", "sip-source-address": "", "no-such-flag": "",
					"ice": "force", "replace-origin": "", "rtcp-mux-offer": "", "rtp/avpf": "",
					"label": "caller", "media-address": "192.0.2.9",
					"address-family": "IP6", "record-call": "yes", "delete-delay": "5",
					"sdes-off": "", "sdes-no-aes-cm-128-hmac-sha1-32": "",
					"codec-strip-all": "1", // the codec dictionary, as codecFlags folds it
				}
				if !reflect.DeepEqual(r.Flags, wantFlags) {
					t.Errorf("flags\n%v\nwant\n%v", r.Flags, wantFlags)
				}
				if r.ICE != "force" || r.TransportProtocol != "RTP/AVPF" ||
					!reflect.DeepEqual(r.Replace, []string{"origin"}) || !reflect.DeepEqual(r.RTCPMux, []string{"offer"}) {
					t.Errorf("fields from flags: %#v", r)
				}
			},
		},
		{
			name: "explicit fields win over flags",
			in: map[string]any{"command": "offer", "call-id": "c", "from-tag": "ft", "sdp": sdp,
				"ICE": "remove", "flags": []any{"ICE=force"}},
			want:  map[string]any{"result": "ok", "sdp": "v=0 offer c"},
			check: func(t *testing.T, r *Request) { checkEq(t, r.ICE, "remove") },
		},
		{
			name: "answer",
			in:   map[string]any{"command": "answer", "call-id": "c4", "from-tag": "ft", "to-tag": "tt", "sdp": sdp},
			want: map[string]any{"result": "ok", "sdp": "v=0 answer c4"},
			check: func(t *testing.T, r *Request) {
				checkEq(t, r.ToTag, "tt")
			},
		},
		{
			name: "delete without stats",
			in:   map[string]any{"command": "delete", "call-id": "c5", "from-tag": "ft"},
			want: map[string]any{"result": "ok"},
		},
		{
			name: "list",
			in:   map[string]any{"command": "list", "limit": int64(1)},
			want: map[string]any{"result": "ok", "calls": []any{"a"}},
			check: func(t *testing.T, r *Request) {
				checkEq(t, r.Limit, 1)
			},
		},
		{
			name: "list all",
			in:   map[string]any{"command": "list"},
			want: map[string]any{"result": "ok", "calls": []any{"a", "b"}},
		},
		{
			name: "backend error",
			in:   map[string]any{"command": "answer", "call-id": "c4", "from-tag": "ft", "to-tag": "tt", "sdp": sdp},
			err:  errors.New("unknown call-id"),
			want: map[string]any{"result": "error", "error-reason": "unknown call-id"},
		},
		{name: "unknown command", in: map[string]any{"command": "frobnicate"},
			want: map[string]any{"result": "error", "error-reason": "Unrecognized command"}},
		{name: "missing command", in: map[string]any{"call-id": "x"},
			want: map[string]any{"result": "error", "error-reason": "missing command"}},
		{name: "offer without call-id", in: map[string]any{"command": "offer", "from-tag": "ft", "sdp": sdp},
			want: map[string]any{"result": "error", "error-reason": "missing call-id"}},
		{name: "offer without from-tag", in: map[string]any{"command": "offer", "call-id": "c", "sdp": sdp},
			want: map[string]any{"result": "error", "error-reason": "missing from-tag"}},
		{name: "offer without sdp", in: map[string]any{"command": "offer", "call-id": "c", "from-tag": "ft"},
			want: map[string]any{"result": "error", "error-reason": "missing sdp"}},
		{name: "answer without to-tag", in: map[string]any{"command": "answer", "call-id": "c", "from-tag": "ft", "sdp": sdp},
			want: map[string]any{"result": "error", "error-reason": "missing to-tag"}},
		{name: "delete without call-id", in: map[string]any{"command": "delete"},
			want: map[string]any{"result": "error", "error-reason": "missing call-id"}},
		{name: "query without call-id", in: map[string]any{"command": "query"},
			want: map[string]any{"result": "error", "error-reason": "missing call-id"}},
		{name: "call-id not a string", in: map[string]any{"command": "query", "call-id": int64(3)},
			want: map[string]any{"result": "error", "error-reason": "call-id: want a string, have an integer"}},
		{name: "limit not a number", in: map[string]any{"command": "list", "limit": "many"},
			want: map[string]any{"result": "error", "error-reason": `limit: "many" is not a number`}},
		{name: "same key twice", in: map[string]any{"command": "query", "call-id": "a", "call id": "b"},
			want: map[string]any{"result": "error", "error-reason": `keys "call id" and "call-id" are the same key`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fb := &fakeBackend{err: tc.err, calls: []string{"a", "b"}}
			s := NewServer(fb, Options{})
			got := parseReply(t, "ck", s.Handle(msg(t, "ck", tc.in), testSrc))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("reply %#v, want %#v", got, tc.want)
			}
			reqs := fb.requests()
			if tc.check != nil {
				if len(reqs) != 1 {
					t.Fatalf("backend called %d times", len(reqs))
				}
				tc.check(t, reqs[0])
			}
			if tc.want["result"] == "error" && tc.err == nil && len(reqs) != 0 {
				t.Errorf("backend called for a bad command")
			}
		})
	}
}

func checkEq[T comparable](t *testing.T, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestHandleQuery(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	fb := &fakeBackend{stats: CallStats{
		Created: t0, LastSignal: t0.Add(5 * time.Second),
		Tags: []TagStats{{
			Tag: "ft", InDialogueWith: "tt", Created: t0,
			Medias: []MediaStats{{Index: 1, Type: "audio", Protocol: "RTP/AVP", Streams: []StreamStats{
				{LocalPort: 30000, Endpoint: netip.MustParseAddrPort("[::ffff:192.0.2.1]:4000"),
					Advertised: netip.MustParseAddrPort("10.0.0.1:4000"), LastPacket: t0.Add(9 * time.Second),
					Packets: 100, Bytes: 17200, Errors: 1, Kernel: true},
				{LocalPort: 30001, RTCP: true, Packets: 3, Bytes: 300},
			}}},
		}, {
			Tag: "tt", Label: "callee", InDialogueWith: "ft",
			Medias: []MediaStats{{Index: 1, Type: "audio", Protocol: "RTP/AVP", Streams: []StreamStats{
				{LocalPort: 30002, Endpoint: netip.MustParseAddrPort("[2001:db8::2]:5000"), Packets: 50, Bytes: 8600},
			}}},
		}},
	}}
	s := NewServer(fb, Options{})
	got := parseReply(t, "q", s.Handle(msg(t, "q", map[string]any{"command": "query", "call-id": "c"}), testSrc))
	want := map[string]any{
		"result": "ok", "created": int64(1700000000), "last signal": int64(1700000005),
		"tags": map[string]any{
			"ft": map[string]any{"tag": "ft", "created": int64(1700000000), "in dialogue with": "tt",
				"medias": []any{map[string]any{"index": int64(1), "type": "audio", "protocol": "RTP/AVP", "streams": []any{
					map[string]any{"local port": int64(30000), "last packet": int64(1700000009),
						"endpoint":            map[string]any{"family": "IPv4", "address": "192.0.2.1", "port": int64(4000)},
						"advertised endpoint": map[string]any{"family": "IPv4", "address": "10.0.0.1", "port": int64(4000)},
						"flags":               []any{"RTP", "kernelized"},
						"stats":               map[string]any{"packets": int64(100), "bytes": int64(17200), "errors": int64(1)}},
					map[string]any{"local port": int64(30001), "last packet": int64(0), "flags": []any{"RTCP"},
						"stats": map[string]any{"packets": int64(3), "bytes": int64(300), "errors": int64(0)}},
				}}}},
			"tt": map[string]any{"tag": "tt", "created": int64(0), "in dialogue with": "ft", "label": "callee",
				"medias": []any{map[string]any{"index": int64(1), "type": "audio", "protocol": "RTP/AVP", "streams": []any{
					map[string]any{"local port": int64(30002), "last packet": int64(0),
						"endpoint": map[string]any{"family": "IPv6", "address": "2001:db8::2", "port": int64(5000)},
						"flags":    []any{"RTP"},
						"stats":    map[string]any{"packets": int64(50), "bytes": int64(8600), "errors": int64(0)}},
				}}}},
		},
		"totals": map[string]any{
			"RTP":  map[string]any{"packets": int64(150), "bytes": int64(25800), "errors": int64(1)},
			"RTCP": map[string]any{"packets": int64(3), "bytes": int64(300), "errors": int64(0)},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("query reply\n%#v\nwant\n%#v", got, want)
	}
	// delete reports the same figures.
	del := parseReply(t, "d", s.Handle(msg(t, "d", map[string]any{"command": "delete", "call-id": "c"}), testSrc))
	want["result"] = "ok"
	if !reflect.DeepEqual(del, want) {
		t.Errorf("delete reply\n%#v\nwant\n%#v", del, want)
	}
}

func TestHandleMalformed(t *testing.T) {
	s := NewServer(&fakeBackend{}, Options{})
	for _, tc := range []struct {
		in     string
		reason string // "": no reply at all
	}{
		{"", ""},
		{"nocookie", ""},
		{" d7:command4:pinge", ""},
		{strings.Repeat("c", maxCookieLen+1) + " d7:command4:pinge", ""},
		{"c1 ", "malformed message: bencode: unexpected end of input at offset 0"},
		{"c2 d7:command4:ping", "malformed message: bencode: unexpected end of input at offset 16"},
		{"c3 d7:command4:pingexx", "malformed message: bencode: trailing data after value at offset 17"},
		{"c4 l7:command4:pinge", "malformed message: not a dictionary"},
		{"c5 i03e", "malformed message: bencode: integer with leading zero at offset 0"},
		{"c6 d7:command4:pinge", ""}, // fine: pong
	} {
		reply := s.Handle([]byte(tc.in), testSrc)
		if tc.in == "c6 d7:command4:pinge" {
			checkEq(t, string(reply), "c6 d6:result4:ponge")
			continue
		}
		if tc.reason == "" {
			if reply != nil {
				t.Errorf("Handle(%.30q) = %q, want no reply", tc.in, reply)
			}
			continue
		}
		cookie, _, _ := strings.Cut(tc.in, " ")
		got := parseReply(t, cookie, reply)
		want := map[string]any{"result": "error", "error-reason": tc.reason}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Handle(%q) = %#v, want %#v", tc.in, got, want)
		}
	}
	if big := make([]byte, MaxMessageSize+1); s.Handle(append([]byte("c "), big...), testSrc) != nil {
		t.Error("reply to an over-long message")
	}
	st := s.Stats()
	checkEq(t, st["dropped"], 5)
	checkEq(t, st["malformed"], 5)
	checkEq(t, st["errors"], 5)
	checkEq(t, st["commands.ping"], 1)
}

func TestHandleRetransmit(t *testing.T) {
	fb := &fakeBackend{}
	s := NewServer(fb, Options{})
	m := msg(t, "r1", map[string]any{"command": "offer", "call-id": "c", "from-tag": "f", "sdp": "v=0"})
	first := s.Handle(m, testSrc)
	second := s.Handle(m, testSrc)
	if string(first) != string(second) {
		t.Errorf("retransmission answered %q, first %q", second, first)
	}
	checkEq(t, len(fb.requests()), 1)
	// Another source with the same cookie is another command.
	s.Handle(m, netip.MustParseAddrPort("192.0.2.11:5060"))
	checkEq(t, len(fb.requests()), 2)
	st := s.Stats()
	checkEq(t, st["cache_hits"], 1)
	checkEq(t, st["commands.offer"], 2)
	checkEq(t, st["cache_entries"], 2)
}

func TestHandleRetransmitWhileRunning(t *testing.T) {
	fb := &fakeBackend{block: make(chan struct{})}
	s := NewServer(fb, Options{})
	m := msg(t, "r2", map[string]any{"command": "offer", "call-id": "c", "from-tag": "f", "sdp": "v=0"})
	replies := make(chan string, 2)
	for range 2 {
		go func() { replies <- string(s.Handle(m, testSrc)) }()
	}
	time.Sleep(20 * time.Millisecond)
	close(fb.block)
	a, b := <-replies, <-replies
	if a != b || a == "" {
		t.Errorf("replies %q and %q", a, b)
	}
	checkEq(t, len(fb.requests()), 1)
}

func TestReplyCacheBounds(t *testing.T) {
	c := newReplyCache(time.Second, 3)
	t0 := time.Unix(1000, 0)
	for i, k := range []string{"a", "b", "c", "d"} {
		e, hit := c.start(k, t0.Add(time.Duration(i)*time.Millisecond))
		if hit {
			t.Fatalf("%s: hit", k)
		}
		e.reply = []byte(k)
		close(e.done)
	}
	checkEq(t, c.len(), 3)
	if _, hit := c.start("a", t0); hit {
		t.Error("oldest entry not evicted when full")
	}
	if e, hit := c.start("d", t0.Add(500*time.Millisecond)); !hit || string(e.reply) != "d" {
		t.Error("live entry missed")
	}
	if _, hit := c.start("d", t0.Add(2*time.Second)); hit {
		t.Error("expired entry hit")
	}
	checkEq(t, c.len(), 1)
}

func TestHandleBackendPanic(t *testing.T) {
	s := NewServer(&panicBackend{}, Options{})
	got := parseReply(t, "p", s.Handle(msg(t, "p", map[string]any{"command": "query", "call-id": "c"}), testSrc))
	checkEq(t, got["error-reason"], any("internal error"))
}

type panicBackend struct{ fakeBackend }

func (*panicBackend) Query(*Request) (CallStats, error) { panic("boom") }

func TestServeUDP(t *testing.T) {
	defer goleak.VerifyNone(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	fb := &fakeBackend{}
	s := NewServer(fb, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeUDP(ctx, pc) }()

	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip := func(m []byte) []byte {
		t.Helper()
		if _, err := c.Write(m); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, MaxMessageSize)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return buf[:n]
	}
	checkEq(t, string(roundTrip([]byte("u1 d7:command4:pinge"))), "u1 d6:result4:ponge")
	offer := msg(t, "u2", map[string]any{"command": "offer", "call-id": "c", "from-tag": "f", "sdp": "v=0"})
	r1 := roundTrip(offer)
	r2 := roundTrip(offer)
	checkEq(t, string(r1), string(r2))
	got := parseReply(t, "u2", r1)
	checkEq(t, got["sdp"], any("v=0 offer c"))
	checkEq(t, len(fb.requests()), 1)
	if reqs := fb.requests(); reqs[0].Source != c.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Errorf("source %v, want %v", reqs[0].Source, c.LocalAddr())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeUDP: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeUDP did not return after cancel")
	}
}

func TestServeUDPClosed(t *testing.T) {
	defer goleak.VerifyNone(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- NewServer(&fakeBackend{}, Options{}).ServeUDP(context.Background(), pc) }()
	time.Sleep(10 * time.Millisecond)
	pc.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeUDP: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeUDP did not return after close")
	}
}

func TestServeTCP(t *testing.T) {
	defer goleak.VerifyNone(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeBackend{}
	s := NewServer(fb, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeTCP(ctx, ln) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	// readReply reads one reply frame.
	readReply := func() string {
		t.Helper()
		var b []byte
		for {
			x, err := r.ReadByte()
			if err != nil {
				t.Fatalf("reading reply (have %q): %v", b, err)
			}
			b = append(b, x)
			if n, err := frameLen(b); err == nil && n == len(b) {
				return string(b)
			}
		}
	}
	// Two messages in one write, then one split across writes.
	offer := msg(t, "t2", map[string]any{"command": "offer", "call-id": "c", "from-tag": "f", "sdp": "v=0"})
	if _, err := c.Write(append([]byte("t1 d7:command4:pinge\r\n"), offer...)); err != nil {
		t.Fatal(err)
	}
	checkEq(t, readReply(), "t1 d6:result4:ponge")
	got := parseReply(t, "t2", []byte(readReply()))
	checkEq(t, got["sdp"], any("v=0 offer c"))
	list := []byte("t3 d7:command4:liste")
	for _, part := range [][]byte{list[:2], list[2:9], list[9:]} {
		if _, err := c.Write(part); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	got = parseReply(t, "t3", []byte(readReply()))
	checkEq(t, got["result"], any("ok"))

	// A second connection, left open: cancel must close it.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Write([]byte("x1 d7:command4:pinge")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c2.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	checkEq(t, string(buf[:n]), "x1 d6:result4:ponge")

	// Garbage: an error reply, then the connection is closed.
	if _, err := c.Write([]byte("t4 x")); err != nil {
		t.Fatal(err)
	}
	got = parseReply(t, "t4", []byte(readReply()))
	checkEq(t, got["result"], any("error"))
	if _, err := r.ReadByte(); err == nil {
		t.Error("connection still open after garbage")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeTCP: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeTCP did not return after cancel")
	}
	if _, err := c2.Read(buf); err == nil {
		t.Error("open connection not closed on cancel")
	}
}

func FuzzHandle(f *testing.F) {
	for _, s := range []string{
		"c d7:command4:pinge",
		"c d7:command5:offer7:call-id1:a8:from-tag1:b3:sdp3:v=0e",
		"c d7:command6:answer7:call-id1:a8:from-tag1:b6:to-tag1:c3:sdp3:v=0e",
		"c d7:command5:query7:call-id1:ae",
		"c d7:command4:list5:limiti3ee",
		"c d7:command5:offer7:call id1:a5:flagsl13:trust-address5:x=y=zee",
		"c d7:command6:delete7:call-id1:a4:SDESl3:offe5:codecd5:stripl3:alleee",
		"c li1ee", "c ", "nocookie", "",
		`c {"command":"statistics"}`,
		`c {"command":"offer","call-id":"a","from-tag":"b","sdp":"v=0","rtpp-flags":"replace-origin codec=[strip=[EVS]]"}`,
		"c d7:command5:offer7:call-id1:a8:from-tag1:b3:sdp3:v=010:rtpp-flags13:RTP AVPF DTLSe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := NewServer(&fakeBackend{calls: []string{"a"}}, Options{})
		reply := s.Handle(b, testSrc)
		if reply == nil {
			return
		}
		cookie, body, _ := splitCookie(b)
		rc, rbody, ok := splitCookie(reply)
		if !ok || rc != cookie {
			t.Fatalf("reply %q: want cookie %q", reply, cookie)
		}
		// The reply comes in the request's form, bencode or JSON.
		if isJSON(rbody) != isJSON(body) {
			t.Fatalf("reply %q to %q is not in the request's form", reply, b)
		}
		if _, err := decodeBody(rbody); err != nil {
			t.Fatalf("reply %q: %v", reply, err)
		}
		if again := s.Handle(b, testSrc); string(again) != string(reply) {
			t.Fatalf("retransmission answered %q, first %q", again, reply)
		}
	})
}

// TestCommandsByOutcome: each executed command is counted once under its
// name and outcome, and told to Observe; replies from the cache are not.
func TestCommandsByOutcome(t *testing.T) {
	type seen struct {
		command string
		failed  bool
	}
	var observed []seen
	fb := &fakeBackend{}
	s := NewServer(fb, Options{Observe: func(c string, failed bool, d time.Duration) {
		if d < 0 {
			t.Errorf("%s observed %v", c, d)
		}
		observed = append(observed, seen{c, failed})
	}})
	offer := msg(t, "o1", map[string]any{"command": "offer", "call-id": "c", "from-tag": "f", "sdp": "v=0"})
	for _, m := range [][]byte{
		msg(t, "p1", map[string]any{"command": "ping"}),
		offer,
		offer, // a retransmission: the cache answers
		msg(t, "o2", map[string]any{"command": "offer", "call-id": "c"}), // no from-tag: refused
		msg(t, "x1", map[string]any{"command": "frobnicate"}),
		[]byte("m1 l4:pinge"), // malformed: counted as unknown
	} {
		s.Handle(m, testSrc)
	}
	fb.err = errors.New("no such call")
	s.Handle(msg(t, "d1", map[string]any{"command": "delete", "call-id": "c", "from-tag": "f"}), testSrc)

	want := map[string][2]uint64{"ping": {1, 0}, "offer": {1, 1}, "delete": {0, 1}, "unknown": {0, 2}}
	for _, c := range s.Commands() {
		if got := [2]uint64{c.OK, c.Failed}; got != want[c.Command] {
			t.Errorf("%s: ok, failed = %v, want %v", c.Command, got, want[c.Command])
		}
		if got := s.Stats()["commands."+c.Command]; got != c.OK+c.Failed {
			t.Errorf("Stats commands.%s = %d, Commands says %d", c.Command, got, c.OK+c.Failed)
		}
	}
	wantSeen := []seen{{"ping", false}, {"offer", false}, {"offer", true}, {"unknown", true}, {"unknown", true}, {"delete", true}}
	if !reflect.DeepEqual(observed, wantSeen) {
		t.Errorf("observed %v, want %v", observed, wantSeen)
	}
}
