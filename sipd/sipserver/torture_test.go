package sipserver

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/sipconf"
)

// The robustness suite follows the categories of RFC 4475 ("SIP Torture
// Test Messages"): valid messages written in unusual but legal ways, which
// must be processed; invalid ones, which must get 400 (or another error
// the case names) or be dropped; transaction-layer oddities; and
// application-layer semantics. Every message here was written for this
// suite. sipd is a proxy and registrar for example.org with users alice,
// bob and carol and no authentication; carol is never registered, so an
// INVITE or MESSAGE that reaches her lookup is answered 404 (the answer
// an unknown user gets too): "404" below means the request went through
// parsing, the sanity check and routing. 0 means no answer: sipgo's
// parser dropped it (counted as malformed) or the message is one nobody
// answers.

// Placeholders in case texts: {ua} the sending socket, {srv} sipd's UDP
// address, {b} a branch and {id} a Call-ID unique to the case, {cl} the
// length of the body (everything after the first empty line).
type tortureCase struct {
	category string // valid, invalid, transaction, application
	name     string
	text     string
	raw      bool   // sent as written: no LF to CRLF conversion
	want     []int  // acceptable outcomes: response codes, 0 for none
	header   string // a header the response must carry, "Name: value"
	note     string // why, where the behaviour is not obvious
}

const (
	valid       = "valid"
	invalid     = "invalid"
	transaction = "transaction"
	application = "application"
)

var (
	routed  = []int{404}    // parsed, checked and routed
	dropped = []int{0}      // nothing comes back
	refused = []int{400, 0} // 400, or dropped by sipgo's parser
)

func (c tortureCase) fill(ua, srv netip.AddrPort, n int) string {
	text := strings.NewReplacer("{ua}", ua.String(), "{srv}", srv.String(),
		"{b}", fmt.Sprintf("z9hG4bK-rfc4475-%d", n), "{id}", fmt.Sprintf("rfc4475-%d@torture.test", n)).Replace(c.text)
	if !c.raw {
		text = crlf(text)
	}
	if strings.Contains(text, "{cl}") {
		_, body, _ := strings.Cut(text, "\r\n\r\n")
		text = strings.Replace(text, "{cl}", fmt.Sprint(len(body)), 1)
	}
	return text
}

// answer reads until a final response arrives (nil after wait).
func answer(u *rawUA, wait time.Duration) *sip.Response {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		m := u.recv(time.Until(deadline))
		if m == nil {
			return nil
		}
		if r, ok := m.(*sip.Response); ok && r.StatusCode >= 200 {
			return r
		}
	}
	return nil
}

// TestRFC4475Robustness sends every message of the table from a socket
// of its own and checks the outcome; then sipd must still serve a normal
// registration and keep-alive, with no handler panic counted.
func TestRFC4475Robustness(t *testing.T) {
	s := testServer(t, func(c *sipconf.Config) { noAuth(c) })
	srv := serverAddr(t, s, "udp")
	// Every case is sent at once, each from a socket of its own, and the
	// answers are awaited together: the cases that expect none then cost
	// one wait, not one each.
	type result struct {
		text string
		r    *sip.Response
	}
	results := make([]result, len(tortureCases))
	var wg sync.WaitGroup
	for i, c := range tortureCases {
		ua := newRawUA(t)
		text := c.fill(ua.addr(), srv, i)
		results[i].text = text
		wg.Go(func() {
			if _, err := ua.conn.WriteToUDPAddrPort([]byte(text), srv); err != nil {
				return
			}
			// A case that may go unanswered is given less time: a late
			// answer then counts as none, only where none is acceptable.
			wait := 5 * time.Second
			if slices.Contains(c.want, 0) {
				wait = time.Second
			}
			results[i].r = answer(ua, wait)
		})
	}
	wg.Wait()
	for i, c := range tortureCases {
		t.Run(c.category+"/"+c.name, func(t *testing.T) {
			r := results[i].r
			got, reason := 0, ""
			if r != nil {
				got, reason = r.StatusCode, r.Reason
			}
			if !slices.Contains(c.want, got) {
				t.Errorf("answered %d %q, want one of %v (%s)\n%s", got, reason, c.want, c.note, results[i].text)
			}
			if c.header != "" && r != nil {
				name, value, _ := strings.Cut(c.header, ": ")
				if h := r.GetHeader(name); h == nil || h.Value() != value {
					t.Errorf("response lacks %q:\n%s", c.header, r)
				}
			}
		})
	}
	ua := newRawUA(t)
	registerRaw(t, ua, srv.String(), "alice", "after-torture-1")
	ua.send(srv, ua.request("OPTIONS", "sip:example.org", "sip:alice@example.org", "sip:example.org", "after-torture-2", 1))
	ua.expect(200)
	st := s.Stats()
	if st.Panics != 0 {
		t.Errorf("%d handler panics", st.Panics)
	}
	if st.Malformed == 0 {
		t.Error("no message counted as malformed: the parser's drops are not seen")
	}
	t.Logf("after the table: %d requests, %d malformed messages dropped", st.Core.Requests, st.Malformed)
}

// baseInvite is the plain request most cases vary.
const baseInvite = "INVITE sip:carol@example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nMax-Forwards: 70\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>\nCall-ID: {id}\nCSeq: 1 INVITE\nContact: <sip:alice@{ua}>\nContent-Length: 0\n\n"

// edit returns baseInvite with old replaced by new, once.
func edit(old, new string) string {
	if !strings.Contains(baseInvite, old) {
		panic("torture case edit does not apply: " + old)
	}
	return strings.Replace(baseInvite, old, new, 1)
}

const baseRegister = "REGISTER sip:example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nMax-Forwards: 70\nFrom: <sip:bob@example.org>;tag=r1\nTo: <sip:bob@example.org>\nCall-ID: {id}\nCSeq: 1 REGISTER\nContact: <sip:bob@{ua}>\nContent-Length: 0\n\n"

func editRegister(old, new string) string {
	if !strings.Contains(baseRegister, old) {
		panic("torture case edit does not apply: " + old)
	}
	return strings.Replace(baseRegister, old, new, 1)
}

var tortureCases = []tortureCase{
	// Valid messages that look odd: each must be processed.
	{valid, "plain", baseInvite, false, routed, "", "the reference every other case varies"},
	{valid, "whitespace, folding and header case",
		"INVITE sip:carol@example.org SIP/2.0\nVia  :  SIP/2.0/UDP\n   {ua};branch={b}\nmAx-fOrWaRdS:\t70\nfrom:\t\"Alice   A.\"\n   <sip:alice@example.org>;tag=a1\nTO : <sip:carol@example.org>\ncall-ID   :   {id}\nCSeq  :  1\n\tINVITE\nSubject:\nX-Folded: first\n second\n\tthird\nContact: <sip:alice@{ua}>\nContent-Length: 0\n\n",
		false, routed, "", "LWS around colons, continuation lines in Via, From, CSeq and an extension header"},
	{valid, "compact forms",
		"INVITE sip:carol@example.org SIP/2.0\nv: SIP/2.0/UDP {ua};branch={b}\nf: <sip:alice@example.org>;tag=a1\nt: sip:carol@example.org\ni: {id}\nCSeq: 1 INVITE\nm: <sip:alice@{ua}>\nk: 100rel\ns: compact\nl: 0\n\n",
		false, routed, "", ""},
	{valid, "escaped characters in the user part", edit("INVITE sip:carol@", "INVITE sip:%63a%72ol@"), false, routed, "",
		"%63a%72ol is carol (RFC 3261 §19.1.4); sipgo keeps the escapes and sipd decodes them for lookups (proxy.UserKey)"},
	{valid, "extension method of unusual characters",
		"~Odd.Method-0_9*+`%!' sip:carol@example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>\nCall-ID: {id}\nCSeq: 8 ~Odd.Method-0_9*+`%!'\nContent-Length: 0\n\n",
		false, routed, "", "sipgo upper-cases the request line's method but not CSeq's; the sanity check compares them without case"},
	{valid, "long values",
		edit("From: <sip:alice@example.org>;tag=a1", "From: \""+strings.Repeat("Alice", 200)+"\" <sip:alice@example.org>;tag="+strings.Repeat("t", 400)+"\nX-Long: "+strings.Repeat("0123456789", 400)+"\nX-Another-Long-Header-Name-"+strings.Repeat("n", 200)+": v"),
		false, routed, "", "a 1 KB display name, a 400-byte tag, a 4 KB header value, a 230-byte header name"},
	{valid, "sixty Via headers", edit("Max-Forwards: 70\n", strings.Repeat("Via: SIP/2.0/UDP hop.example.net:5060;branch=z9hG4bKhop\n", 60)+"Max-Forwards: 70\n"),
		false, routed, "", ""},
	{valid, "Via values in one comma list", edit("branch={b}\n", "branch={b} ,SIP/2.0/UDP hop.example.net;branch=z9hG4bKh1,  SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bKh2\n"),
		false, routed, "", ""},
	{valid, "unknown transport in a lower Via", edit("Max-Forwards: 70\n", "Via: SIP/2.0/NEWTRANSPORT far.example.net:9;branch=z9hG4bKfar;some-param=\"x y\"\nMax-Forwards: 70\n"),
		false, routed, "", ""},
	{valid, "display name with escaped quote and backslash", edit("From: <sip:", "From: \"Al \\\"the\\\" \\\\one\"<sip:"), false, routed, "", ""},
	{valid, "extension header with an empty value", edit("Content-Length", "X-Empty:\nX-Spaces:    \nContent-Length"), false, routed, "", ""},
	{valid, "unknown parameters and tokens", edit("To: <sip:carol@example.org>", "To: <sip:carol@example.org;unknownparam=x;lr>;unknown-to-param=\"q\";flag"),
		false, routed, "", ""},
	{valid, "no Max-Forwards", edit("Max-Forwards: 70\n", ""), false, routed, "", "a proxy adds one (RFC 3261 §16.6)"},
	{valid, "body of an unknown type", edit("Content-Length: 0\n\n", "Content-Type: application/x-nobody-knows\nContent-Length: {cl}\n\nopaque\x01\x02 bytes"),
		false, routed, "", "the body is end to end: a proxy passes it on"},
	{valid, "multipart body", "MESSAGE sip:carol@example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>\nCall-ID: {id}\nCSeq: 1 MESSAGE\nContent-Type: multipart/mixed;boundary=\"-=-\"\nContent-Length: {cl}\n\n---=-\nContent-Type: text/plain\n\nfirst\n---=-\nContent-Type: application/octet-stream\n\nsecond\n---=---\n",
		false, routed, "", ""},
	{valid, "body longer than Content-Length", edit("Content-Length: 0\n\n", "Content-Type: text/plain\nContent-Length: 2\n\nhi and more"),
		false, routed, "", "bytes after the body a datagram's Content-Length gives are discarded (RFC 3261 §18.3)"},
	{valid, "Date in an old format", edit("Content-Length", "Date: Sunday, 06-Nov-94 08:49:37 GMT\nContent-Length"), false, []int{404, 400}, "",
		"an element may ignore or refuse a Date it cannot read; sipd ignores it"},
	{valid, "URI scheme sipd does not know in To", edit("To: <sip:carol@example.org>", "To: <im:carol@example.org>"), false, routed, "",
		"routing follows the Request-URI"},
	{valid, "semicolon in the user part", "INVITE sip:car;ol=x%40y@example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:car;ol=x%40y@example.org>\nCall-ID: {id}\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
		false, []int{404}, "", "a legal user part naming no user"},
	{valid, "escaped NUL in the user part", edit("INVITE sip:carol@", "INVITE sip:car%00ol@"), false, []int{404}, "", "no such user; the NUL stays escaped"},
	{valid, "sips and an IPv6 reference", edit("INVITE sip:carol@example.org", "INVITE sips:carol@[2001:db8::10]:5061;transport=tcp"), false, []int{403}, "",
		"a foreign host: no relaying"},
	{valid, "tel URI", edit("INVITE sip:carol@example.org", "INVITE tel:+1-555-0100;phone-context=example.org"), false, []int{403}, "", "not a local domain"},
	{valid, "Contact list with quoted comma and parameters", editRegister("Contact: <sip:bob@{ua}>", "Contact: \"Bob, at desk\" <sip:bob@{ua};transport=udp>;q=0.5, <sip:bob-2@{ua}>;expires=60;+sip.instance=\"<urn:x:1>\""),
		false, []int{200}, "", ""},
	{valid, "two requests in one datagram", "OPTIONS sip:example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:example.org>\nCall-ID: {id}\nCSeq: 1 OPTIONS\nContent-Length: 0\n\nINVITE sip:carol@example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}-2\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>\nCall-ID: {id}-2\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
		false, []int{200}, "", "the first is answered; the rest of the datagram is not a message"},
	{valid, "OPTIONS to sipd with Max-Forwards 0", "OPTIONS sip:example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nMax-Forwards: 0\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:example.org>\nCall-ID: {id}\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
		false, []int{200}, "", "sipd is the target: it answers rather than forwards"},
	{valid, "spaces around = in a parameter", edit(";tag=a1", " ; tag = a1"), false, []int{400}, "",
		"legal (SWS around EQUAL, RFC 3261 §25.1), but sipgo does not parse the parameter: sipd sees no From tag and says so"},
	{valid, "space in the To URI", edit("To: <sip:carol@example.org>", "To: sip:carol@exa mple.org"), false, []int{404, 400}, "",
		"reasonable to refuse (RFC 4475); sipgo reads up to the space, and routing uses the Request-URI"},
	{valid, "unquoted display name with a comma", edit("From: <sip:", "From: Alice, the 1st@ <sip:"), false, []int{404, 400}, "", "reasonable to refuse; sipgo takes it"},

	// Invalid messages: 400, another named error, or dropped.
	{invalid, "SIP version 7", edit("sip:carol@example.org SIP/2.0", "sip:carol@example.org SIP/7.0"), false, []int{505}, "", ""},
	{invalid, "two Call-IDs", edit("Call-ID: {id}\n", "Call-ID: {id}\ni: other-{id}\n"), false, []int{400}, "", "compact and full form count as one header"},
	{invalid, "two CSeqs", edit("CSeq: 1 INVITE\n", "CSeq: 1 INVITE\nCSeq: 2 INVITE\n"), false, []int{400}, "", ""},
	{invalid, "two Froms", edit("To:", "From: <sip:bob@example.org>;tag=b1\nTo:"), false, []int{400}, "", ""},
	{invalid, "two Tos", edit("To: <sip:carol@example.org>\n", "To: <sip:carol@example.org>\nTo: <sip:bob@example.org>\n"), false, []int{400}, "", ""},
	{invalid, "two Max-Forwards", edit("Max-Forwards: 70\n", "Max-Forwards: 70\nMax-Forwards: 0\n"), false, []int{400}, "", ""},
	{invalid, "two Content-Lengths", edit("Content-Length: 0\n\n", "Content-Type: text/plain\nContent-Length: 5\nl: 2\n\nhello"), false, []int{400}, "", ""},
	{invalid, "two Expires", editRegister("Content-Length", "Expires: 60\nExpires: 3600\nContent-Length"), false, []int{400}, "", ""},
	{invalid, "Content-Length past the datagram", edit("Content-Length: 0\n\n", "Content-Type: text/plain\nContent-Length: 500\n\nshort"), false, refused, "",
		"RFC 3261 §18.3 says 400; sipgo drops it"},
	{invalid, "negative Content-Length", edit("Content-Length: 0", "Content-Length: -5"), false, refused, "", ""},
	{invalid, "Content-Length not a number", edit("Content-Length: 0", "Content-Length: zero"), false, refused, "", ""},
	{invalid, "Content-Length beyond 64 bits", edit("Content-Length: 0", "Content-Length: 99999999999999999999999"), false, refused, "", ""},
	{invalid, "CSeq beyond 32 bits", edit("CSeq: 1 INVITE", "CSeq: 4294967296 INVITE"), false, refused, "", ""},
	{invalid, "CSeq of 2^31", edit("CSeq: 1 INVITE", "CSeq: 2147483648 INVITE"), false, refused, "", "RFC 3261 §8.1.1.5 wants less than 2^31"},
	{invalid, "negative CSeq", edit("CSeq: 1 INVITE", "CSeq: -1 INVITE"), false, refused, "", ""},
	{invalid, "CSeq without a number", edit("CSeq: 1 INVITE", "CSeq: one INVITE"), false, refused, "", ""},
	{invalid, "CSeq without a method", edit("CSeq: 1 INVITE", "CSeq: 1"), false, refused, "", ""},
	{invalid, "CSeq method of another request", edit("CSeq: 1 INVITE", "CSeq: 1 BYE"), false, []int{400}, "", ""},
	{invalid, "Max-Forwards 256", edit("Max-Forwards: 70", "Max-Forwards: 256"), false, []int{400}, "", ""},
	{invalid, "Max-Forwards beyond 64 bits", edit("Max-Forwards: 70", "Max-Forwards: 184467440737095516160"), false, refused, "", ""},
	{invalid, "negative Max-Forwards", edit("Max-Forwards: 70", "Max-Forwards: -1"), false, refused, "", ""},
	{invalid, "Expires beyond 32 bits", editRegister("Content-Length", "Expires: 4294967296\nContent-Length"), false, []int{400}, "",
		"before, the registrar took it and capped it; a value beyond 64 bits it refused"},
	{invalid, "negative Expires", editRegister("Content-Length", "Expires: -3600\nContent-Length"), false, []int{400}, "", ""},
	{invalid, "contact expires beyond 32 bits", editRegister("<sip:bob@{ua}>", "<sip:bob@{ua}>;expires=4294967296"), false, []int{400}, "",
		"before, the registrar took it and capped it at registrar.max_expires"},
	{invalid, "Contact * with a non-zero Expires", editRegister("Contact: <sip:bob@{ua}>\n", "Contact: *\nExpires: 3600\n"), false, []int{400}, "", "RFC 3261 §10.3 step 6"},
	{invalid, "Contact * beside a contact", editRegister("Contact: <sip:bob@{ua}>\n", "Contact: *\nContact: <sip:bob@{ua}>\nExpires: 0\n"), false, []int{400}, "", ""},
	{invalid, "Contact URI with headers, not in <>", editRegister("Contact: <sip:bob@{ua}>", "Contact: sip:bob@{ua}?Subject=x"), false, []int{200, 400}, "",
		"RFC 3261 §20.10 wants <> here; sipgo reads it unambiguously"},
	{invalid, "unterminated quoted display name", edit("From: <sip:", "From: \"Alice <sip:"), false, refused, "", ""},
	{invalid, "Request-URI in <>", edit("INVITE sip:carol@example.org SIP", "INVITE <sip:carol@example.org> SIP"), false, refused, "", ""},
	{invalid, "space inside the Request-URI", edit("INVITE sip:carol@example.org SIP", "INVITE sip:carol@exam ple.org SIP"), false, refused, "", ""},
	{invalid, "two spaces between request-line elements", edit("INVITE sip:carol@example.org SIP/2.0", "INVITE  sip:carol@example.org  SIP/2.0"), false, refused, "", ""},
	{invalid, "space after the SIP version", edit("SIP/2.0\nVia", "SIP/2.0 \nVia"), false, refused, "", ""},
	{invalid, "headers in the Request-URI", edit("INVITE sip:carol@example.org SIP", "INVITE sip:carol@example.org?Route=%3Csip:gw.evil.example%3E SIP"), false, []int{400}, "",
		"RFC 3261 §19.1.1: not allowed in a Request-URI; passed on, they would let a sender smuggle a Route to a later hop"},
	{invalid, "no Call-ID", edit("Call-ID: {id}\n", ""), false, []int{400}, "", ""},
	{invalid, "empty Call-ID", edit("Call-ID: {id}", "Call-ID:"), false, refused, "", ""},
	{invalid, "no From", edit("From: <sip:alice@example.org>;tag=a1\n", ""), false, []int{400}, "", ""},
	{invalid, "no To", edit("To: <sip:carol@example.org>\n", ""), false, []int{400}, "", ""},
	{invalid, "no CSeq", edit("CSeq: 1 INVITE\n", ""), false, []int{400}, "", ""},
	{invalid, "no Via", edit("Via: SIP/2.0/UDP {ua};branch={b}\n", ""), false, refused, "", "sipgo answers 400 to the source address"},
	{invalid, "RFC 2543 request: no From tag, no branch", strings.Replace(edit(";branch={b}", ""), ";tag=a1", "", 1), false, []int{400}, "",
		"sipd requires the From tag of RFC 3261 §8.1.1.3"},
	{invalid, "Via without a host", edit("SIP/2.0/UDP {ua}", "SIP/2.0/UDP "), false, refused, "", ""},
	{invalid, "Via port beyond 65535", edit("SIP/2.0/UDP {ua}", "SIP/2.0/UDP 127.0.0.1:99999"), false, refused, "", ""},
	{invalid, "line without a colon", edit("Call-ID:", "This line is no header\nCall-ID:"), false, refused, "", ""},
	{invalid, "no empty line after the headers", strings.TrimSuffix(baseInvite, "\n"), false, refused, "", ""},
	{invalid, "bare LF line ends", baseInvite, true, refused, "", "RFC 3261 §7 wants CRLF; sipgo drops the message"},
	{invalid, "NUL in a header value", edit("To: <sip:carol@example.org>", "To: <sip:carol@exa\x00mple.org>"), false, []int{404, 400, 0}, "",
		"sipgo keeps the byte; sipd routes on the Request-URI, which has none"},
	{invalid, "CRLF alone", "\r\n", true, dropped, "", "a keep-alive on UDP, or nothing"},
	{invalid, "TLS ClientHello on the UDP port", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", true, dropped, "", ""},

	// Transaction layer.
	{transaction, "branch without the magic cookie", edit("branch={b}", "branch=rfc2543-{id}"), false, routed, "", "RFC 2543 transaction identification"},
	{transaction, "ACK matching nothing", "ACK sip:carol@example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>;tag=x1\nCall-ID: {id}\nCSeq: 1 ACK\nContent-Length: 0\n\n",
		false, dropped, "", "an ACK is never answered"},
	{transaction, "CANCEL matching nothing", "CANCEL sip:carol@example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>\nCall-ID: {id}\nCSeq: 1 CANCEL\nContent-Length: 0\n\n",
		false, []int{481}, "", ""},
	{transaction, "response matching no transaction", "SIP/2.0 200 OK\nVia: SIP/2.0/UDP {srv};branch=z9hG4bK-not-ours\nVia: SIP/2.0/UDP {ua};branch={b}\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>;tag=x\nCall-ID: {id}\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
		false, dropped, "", ""},
	{transaction, "response code 999", "SIP/2.0 999 Beyond\nVia: SIP/2.0/UDP {srv};branch=z9hG4bK-not-ours\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>;tag=x\nCall-ID: {id}\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
		false, dropped, "", ""},
	{transaction, "response code of two digits", "SIP/2.0 20 OK\nVia: SIP/2.0/UDP {srv};branch=z9hG4bK-not-ours\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>;tag=x\nCall-ID: {id}\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
		false, dropped, "", ""},
	{transaction, "response with an empty reason phrase", "SIP/2.0 180 \nVia: SIP/2.0/UDP {srv};branch=z9hG4bK-not-ours\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>;tag=x\nCall-ID: {id}\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
		false, dropped, "", "legal, and matching nothing"},

	// Application layer.
	{application, "Request-URI of an unknown scheme", edit("INVITE sip:carol@example.org", "INVITE mailto:carol@example.org"), false, []int{416}, "", ""},
	{application, "REGISTER for an AoR of an unknown scheme", editRegister("To: <sip:bob@example.org>", "To: <im:bob@example.org>"), false, []int{400}, "", ""},
	{application, "unknown method to a user", "NEWMETHOD sip:carol@example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>\nCall-ID: {id}\nCSeq: 1 NEWMETHOD\nContent-Length: 0\n\n",
		false, routed, "", "a proxy routes methods it does not know"},
	{application, "unknown method to the domain", "NEWMETHOD sip:example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:example.org>\nCall-ID: {id}\nCSeq: 1 NEWMETHOD\nContent-Length: 0\n\n",
		false, []int{404}, "", "nobody to route it to"},
	{application, "unknown method with a CSeq of another", "NEWMETHOD sip:carol@example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:carol@example.org>\nCall-ID: {id}\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
		false, []int{400}, "", ""},
	{application, "REGISTER that requires an extension", editRegister("Content-Length", "Require: nothing-known, path\nContent-Length"), false, []int{420}, "Unsupported: nothing-known, path",
		"sipd is the UAS and supports no extension (RFC 3261 §8.2.2.3); before, it registered the contact"},
	{application, "OPTIONS to sipd that requires an extension", "OPTIONS sip:example.org SIP/2.0\nVia: SIP/2.0/UDP {ua};branch={b}\nFrom: <sip:alice@example.org>;tag=a1\nTo: <sip:example.org>\nCall-ID: {id}\nCSeq: 1 OPTIONS\nRequire: nothing-known\nContent-Length: 0\n\n",
		false, []int{420}, "Unsupported: nothing-known", "not on the keep-alive fast path"},
	{application, "INVITE that requires an extension", edit("Content-Length", "Require: nothing-known\nContent-Length"), false, routed, "",
		"Require is end to end: a proxy passes it on"},
	{application, "Proxy-Require", edit("Content-Length", "Proxy-Require: nothing-known, other\nContent-Length"), false, []int{420}, "Unsupported: nothing-known, other", ""},
	{application, "Max-Forwards 0", edit("Max-Forwards: 70", "Max-Forwards: 0"), false, []int{483}, "", ""},
	{application, "INVITE for a foreign domain", edit("INVITE sip:carol@example.org", "INVITE sip:carol@elsewhere.example"), false, []int{403}, "", "no relaying"},
	{application, "REGISTER removing every contact", editRegister("Contact: <sip:bob@{ua}>\n", "Contact: *\nExpires: 0\n"), false, []int{200}, "", ""},
}

// TestRFC4475Transactions: retransmissions are answered from the
// transaction, not processed again; a final response to INVITE is
// repeated until the ACK and then stops; the same branch with another
// method is another transaction.
func TestRFC4475Transactions(t *testing.T) {
	s := testServer(t, func(c *sipconf.Config) { noAuth(c) })
	srv := serverAddr(t, s, "udp")

	t.Run("REGISTER retransmitted", func(t *testing.T) {
		ua := newRawUA(t)
		before := s.Stats().Core.Registers
		text := tortureCase{text: baseRegister}.fill(ua.addr(), srv, 1001)
		for i := 0; i < 3; i++ {
			ua.send(srv, text)
			if r := answer(ua, 3*time.Second); r == nil || r.StatusCode != 200 {
				t.Fatalf("copy %d: %v", i, r)
			}
		}
		if n := s.Stats().Core.Registers - before; n != 1 {
			t.Errorf("registrar ran %d times for one REGISTER sent three times", n)
		}
	})
	t.Run("RFC 2543 branch retransmitted", func(t *testing.T) {
		ua := newRawUA(t)
		text := tortureCase{text: strings.Replace(baseRegister, "branch={b}", "branch=old-style-1", 1)}.fill(ua.addr(), srv, 1002)
		for i := 0; i < 2; i++ {
			ua.send(srv, text)
			if r := answer(ua, 3*time.Second); r == nil || r.StatusCode != 200 {
				t.Fatalf("copy %d: %v", i, r)
			}
		}
	})
	t.Run("INVITE final response until the ACK", func(t *testing.T) {
		ua := newRawUA(t)
		inv := tortureCase{text: baseInvite}.fill(ua.addr(), srv, 1003)
		ua.send(srv, inv)
		first := answer(ua, 3*time.Second)
		if first == nil || first.StatusCode != 404 {
			t.Fatalf("INVITE: %v", first)
		}
		// Not acknowledged: it comes again (Timer G, 500 ms).
		if again := answer(ua, 2*time.Second); again == nil || again.StatusCode != 404 {
			t.Fatalf("no retransmission of the 404 before the ACK: %v", again)
		}
		toTag := first.To().Params.GetOr("tag", "")
		ack := strings.NewReplacer("INVITE sip:", "ACK sip:", "CSeq: 1 INVITE", "CSeq: 1 ACK",
			"To: <sip:carol@example.org>", "To: <sip:carol@example.org>;tag="+toTag).Replace(inv)
		ua.send(srv, ack)
		// Drain what was in flight, then silence.
		deadline := time.Now().Add(300 * time.Millisecond)
		for ua.recv(time.Until(deadline)) != nil {
		}
		if r := answer(ua, 2500*time.Millisecond); r != nil {
			t.Errorf("404 still retransmitted after the ACK: %d", r.StatusCode)
		}
	})
	t.Run("same branch, another method", func(t *testing.T) {
		ua := newRawUA(t)
		inv := tortureCase{text: baseInvite}.fill(ua.addr(), srv, 1004)
		ua.send(srv, inv)
		if r := answer(ua, 3*time.Second); r == nil || r.StatusCode != 404 {
			t.Fatalf("INVITE: %v", r)
		}
		msg := strings.NewReplacer("INVITE sip:", "MESSAGE sip:", "CSeq: 1 INVITE", "CSeq: 2 MESSAGE").Replace(inv)
		ua.send(srv, msg)
		for {
			r := answer(ua, 3*time.Second)
			if r == nil {
				t.Fatal("MESSAGE with the INVITE's branch not answered")
			}
			if r.CSeq().MethodName == sip.MESSAGE {
				if r.StatusCode != 404 {
					t.Errorf("MESSAGE: %d", r.StatusCode)
				}
				break
			}
		}
	})
}

// TestRFC4475Stream: over TCP, messages are framed by Content-Length:
// two in one write are both answered, one written in pieces is answered
// once, and a body over sip.max_message_size gets 513.
func TestRFC4475Stream(t *testing.T) {
	s := testServer(t, func(c *sipconf.Config) { noAuth(c) })
	tcpAddr := serverAddr(t, s, "tcp")
	options := func(n int) string {
		return fmt.Sprintf("OPTIONS sip:example.org SIP/2.0\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK-stream-%d\nFrom: <sip:alice@example.org>;tag=s%d\nTo: <sip:example.org>\nCall-ID: stream-%d\nCSeq: %d OPTIONS\nContent-Length: 0\n\n", n, n, n, n)
	}
	expect := func(u *tcpUA, code int, what string) {
		t.Helper()
		for {
			m, ok := u.recv(5 * time.Second).(*sip.Response)
			if !ok {
				t.Fatalf("%s: no response", what)
			}
			if m.StatusCode == 100 {
				continue
			}
			if m.StatusCode != code {
				t.Fatalf("%s: %d %s, want %d", what, m.StatusCode, m.Reason, code)
			}
			return
		}
	}
	u := newTCPUA(t, tcpAddr)
	if _, err := u.conn.Write([]byte(crlf(options(1)) + crlf(options(2)))); err != nil {
		t.Fatal(err)
	}
	expect(u, 200, "first of two in one write")
	expect(u, 200, "second of two in one write")

	whole := crlf(options(3))
	for _, part := range []string{whole[:7], whole[7:60], whole[60:]} {
		if _, err := u.conn.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	expect(u, 200, "written in three pieces")

	body := strings.Repeat("x", 20000)
	u.send(fmt.Sprintf("MESSAGE sip:carol@example.org SIP/2.0\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK-stream-big\nFrom: <sip:alice@example.org>;tag=sb\nTo: <sip:carol@example.org>\nCall-ID: stream-big\nCSeq: 1 MESSAGE\nContent-Type: text/plain\nContent-Length: %d\n\n", len(body)) + body)
	expect(u, 513, "body over max_message_size")
	if st := s.Stats(); st.Panics != 0 {
		t.Errorf("%d handler panics", st.Panics)
	}
}
