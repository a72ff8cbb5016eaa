package sipserver

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/protect"
	"sipxdp/sipd/proxy"
)

var kaSelf = proxy.NewSelf([]string{"example.org"}, []proxy.Listener{{Transport: "UDP", Addr: netip.MustParseAddrPort("192.0.2.10:5060")}})
var kaSrc = netip.MustParseAddrPort("203.0.113.5:40000")

const kaBase = "NOTIFY sip:192.0.2.10:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 10.0.0.2:5060;rport;branch=z9hG4bK1\r\n" +
	"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK0\r\n" +
	"From: <sip:alice@example.org>;tag=a1\r\n" +
	"To: <sip:192.0.2.10:5060>\r\n" +
	"Call-ID: ka-1\r\n" +
	"CSeq: 7 NOTIFY\r\n" +
	"Event: keep-alive\r\n" +
	"Max-Forwards: 70\r\n" +
	"Content-Length: 0\r\n\r\n"

func TestKeepaliveAnswer(t *testing.T) {
	res := keepaliveAnswer([]byte(kaBase), kaSrc, kaSelf, "T")
	if res == nil {
		t.Fatal("plain keep-alive not answered")
	}
	m, err := sip.ParseMessage(res)
	if err != nil {
		t.Fatalf("answer does not parse: %v\n%s", err, res)
	}
	r := m.(*sip.Response)
	vias := r.GetHeaders("Via")
	if r.StatusCode != 200 || len(vias) != 2 || r.CallID().Value() != "ka-1" || r.CSeq().Value() != "7 NOTIFY" ||
		r.To().Params.GetOr("tag", "") != "T" || r.From().Params.GetOr("tag", "") != "a1" {
		t.Fatalf("answer\n%s", res)
	}
	if v := vias[0].(*sip.ViaHeader); v.Params.GetOr("received", "") != "203.0.113.5" || v.Params.GetOr("rport", "") != "40000" || v.Params.GetOr("branch", "") != "z9hG4bK1" {
		t.Fatalf("top Via %s", v.Value())
	}
	compact := strings.NewReplacer("Via:", "v:", "From:", "f:", "To:", "t:", "Call-ID:", "i:", "Content-Length:", "l:").Replace(kaBase)
	if keepaliveAnswer([]byte(compact), kaSrc, kaSelf, "T") == nil {
		t.Fatal("compact headers not answered")
	}
	options := strings.Replace(strings.Replace(kaBase, "NOTIFY sip:", "OPTIONS sip:", 1), "7 NOTIFY", "7 OPTIONS", 1)
	if keepaliveAnswer([]byte(options), kaSrc, kaSelf, "T") == nil {
		t.Fatal("OPTIONS not answered")
	}
	// Everything else is left to the core.
	for name, edit := range map[string][2]string{
		"to a user":      {"NOTIFY sip:192.0.2.10:5060", "NOTIFY sip:bob@192.0.2.10:5060"},
		"elsewhere":      {"NOTIFY sip:192.0.2.10:5060", "NOTIFY sip:192.0.2.99:5060"},
		"in dialog":      {"To: <sip:192.0.2.10:5060>", "To: <sip:192.0.2.10:5060>;tag=x"},
		"routed":         {"Event:", "Route: <sip:192.0.2.10;lr>\r\nEvent:"},
		"body":           {"Content-Length: 0", "Content-Length: 2"},
		"folded":         {"Event: keep-alive", "Event: keep-\r\n alive"},
		"combined vias":  {"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK0", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK0, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK9"},
		"cseq mismatch":  {"7 NOTIFY", "7 OPTIONS"},
		"no from tag":    {";tag=a1", ""},
		"no call-id":     {"Call-ID: ka-1\r\n", ""},
		"two call-ids":   {"Call-ID: ka-1\r\n", "Call-ID: ka-1\r\nCall-ID: ka-2\r\n"},
		"tcp via":        {"SIP/2.0/UDP 10.0.0.2", "SIP/2.0/TCP 10.0.0.2"},
		"no branch":      {"rport;branch=z9hG4bK1", "rport"},
		"other method":   {"NOTIFY sip:", "INVITE sip:"},
		"version":        {"5060 SIP/2.0\r\n", "5060 SIP/3.0\r\n"},
		"bad max-fwd":    {"Max-Forwards: 70", "Max-Forwards: x"},
		"proxy-require":  {"Event:", "Proxy-Require: x\r\nEvent:"},
		"require":        {"Event:", "Require: x\r\nEvent:"},
		"contact expiry": {"Event:", "m: <sip:a@10.0.0.2>;Expires=99999999999\r\nEvent:"},
		"two max-fwds":   {"Max-Forwards: 70", "Max-Forwards: 70\r\nMax-Forwards: 70"},
		"two lengths":    {"Content-Length: 0", "l: 0\r\nContent-Length: 0"},
		"two expires":    {"Event:", "Expires: 1\r\nexpires: 2\r\nEvent:"},
		"uri headers":    {"NOTIFY sip:192.0.2.10:5060", "NOTIFY sip:192.0.2.10:5060?Route=%3Csip:x%3E"},
		"truncated":      {"Content-Length: 0\r\n\r\n", "Content-Length: 0\r\n"},
		"trailing junk":  {"Content-Length: 0\r\n\r\n", "Content-Length: 0\r\n\r\nxx"},
	} {
		text := strings.Replace(kaBase, edit[0], edit[1], 1)
		if text == kaBase {
			t.Fatalf("%s: edit did not apply", name)
		}
		if res := keepaliveAnswer([]byte(text), kaSrc, kaSelf, "T"); res != nil {
			t.Errorf("%s: answered on the fast path:\n%s", name, res)
		}
	}
}

// FuzzKeepaliveAnswer: whatever the fast path answers, the full parser
// must see as a keep-alive to us, and the answer must be a valid response
// to it.
func FuzzKeepaliveAnswer(f *testing.F) {
	f.Add([]byte(kaBase))
	f.Add([]byte(strings.Replace(kaBase, "NOTIFY sip:", "OPTIONS sip:", 1)))
	f.Add([]byte("OPTIONS sip:example.org SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKx\r\nf: <sip:a@b>;tag=1\r\nt: <sip:example.org>\r\ni: c\r\nCSeq: 1 OPTIONS\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res := keepaliveAnswer(data, kaSrc, kaSelf, "T")
		if res == nil {
			return
		}
		m, err := sip.ParseMessage(data)
		if err != nil {
			t.Fatalf("fast path answered what the parser rejects (%v):\n%q", err, data)
		}
		req, ok := m.(*sip.Request)
		if !ok || !proxy.IsKeepalive(req, kaSelf) {
			t.Fatalf("fast path answered a non-keep-alive:\n%q", data)
		}
		if err := protect.Check(req); err != nil {
			t.Fatalf("fast path answered what the sanity check refuses (%v):\n%q", err, data)
		}
		if tags := protect.UnsupportedRequire(req); len(tags) > 0 {
			t.Fatalf("fast path answered a request that requires %v:\n%q", tags, data)
		}
		rm, err := sip.ParseMessage(res)
		if err != nil {
			t.Fatalf("answer does not parse (%v):\n%q", err, res)
		}
		r := rm.(*sip.Response)
		if r.CallID() == nil || req.CallID() == nil || r.CallID().Value() != req.CallID().Value() || r.CSeq().SeqNo != req.CSeq().SeqNo {
			t.Fatalf("answer does not match:\n%q\n%q", data, res)
		}
	})
}
