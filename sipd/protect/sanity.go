package protect

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Problem is a request that fails the sanity check; Code and Reason are the
// response to send.
type Problem struct {
	Code   int
	Reason string
	// Unsupported lists the option tags a 420 names in its Unsupported
	// header (RFC 3261 §8.2.2.3, §16.3).
	Unsupported []string
}

// Headers are the header fields the response to p carries.
func (p *Problem) Headers() []sip.Header {
	if len(p.Unsupported) == 0 {
		return nil
	}
	return []sip.Header{sip.NewHeader("Unsupported", strings.Join(p.Unsupported, ", "))}
}

func (p *Problem) Error() string { return fmt.Sprintf("%d %s", p.Code, p.Reason) }

// ErrNoVia marks a request that cannot be answered at all (no Via): drop it.
var ErrNoVia = errors.New("request has no Via")

var knownSchemes = map[string]bool{"sip": true, "sips": true, "tel": true}

// singleValued are the header fields a request may carry once (RFC 3261
// §7.3.1, §20): two Call-IDs or two CSeqs make a request whose meaning
// depends on which one each element reads. sipgo keeps every copy (and
// files compact forms under the full name), and its accessors return the
// first.
var singleValued = [...]string{"Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type", "Expires"}

const expiresIndex = 7 // of singleValued

// Check validates what the core relies on: the mandatory headers of RFC
// 3261 §8.1.1, a CSeq that matches the method, a sane Max-Forwards, a
// usable Request-URI and a body as long as Content-Length says.
func Check(req *sip.Request) error {
	if req.Via() == nil {
		return ErrNoVia
	}
	if req.SipVersion != "SIP/2.0" {
		return &Problem{Code: 505, Reason: "Version Not Supported"}
	}
	if !knownSchemes[strings.ToLower(req.Recipient.Scheme)] {
		return &Problem{Code: 416, Reason: "Unsupported URI Scheme"}
	}
	if req.Recipient.Scheme != "tel" && req.Recipient.Host == "" {
		return &Problem{Code: 400, Reason: "Bad Request-URI"}
	}
	if req.Recipient.Headers != nil && req.Recipient.Headers.Length() > 0 {
		// Headers belong in the request, not its URI (RFC 3261 §19.1.1);
		// a proxy that passed them on would let the sender smuggle in a
		// Route or anything else a later hop might apply.
		return &Problem{Code: 400, Reason: "Bad Request-URI: Headers Not Allowed"}
	}
	if req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil {
		return &Problem{Code: 400, Reason: "Missing Mandatory Header"}
	}
	if p := checkHeaders(req); p != nil {
		return p
	}
	if req.CallID().Value() == "" {
		return &Problem{Code: 400, Reason: "Bad Call-ID"}
	}
	if _, ok := req.From().Params.Get("tag"); !ok && req.Method != sip.ACK {
		// RFC 3261 §8.1.1.3: the From tag is mandatory; RFC 2543 peers are
		// long gone.
		return &Problem{Code: 400, Reason: "Missing From Tag"}
	}
	cs := req.CSeq()
	// Methods are case-sensitive, but sipgo upper-cases the request line's
	// method and leaves CSeq's as sent, so only a case-blind comparison
	// keeps extension methods in lower case usable.
	if !strings.EqualFold(string(cs.MethodName), string(req.Method)) {
		return &Problem{Code: 400, Reason: "CSeq Method Mismatch"}
	}
	if cs.SeqNo > 1<<31-1 {
		return &Problem{Code: 400, Reason: "Bad CSeq"}
	}
	if mf := req.GetHeader("Max-Forwards"); mf != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(mf.Value())); err != nil || n < 0 || n > 255 {
			return &Problem{Code: 400, Reason: "Bad Max-Forwards"}
		}
	}
	if p := checkHeaders(req); p != nil {
		return p
	}
	if cl := req.ContentLength(); cl != nil && int(*cl) != len(req.Body()) {
		return &Problem{Code: 400, Reason: "Bad Content-Length"}
	}
	if tags := optionTags(req, "Proxy-Require"); len(tags) > 0 {
		return &Problem{Code: 420, Reason: "Bad Extension", Unsupported: tags}
	}
	return nil
}

// UnsupportedRequire returns the option tags of the request's Require
// header fields, every one of which sipd lacks: what a 420 lists when
// sipd itself answers the request (a REGISTER, a keep-alive). Require is
// end to end, so requests sipd forwards keep it unexamined.
func UnsupportedRequire(req *sip.Request) []string { return optionTags(req, "Require") }

// optionTags lists the comma-separated tags of every header field name.
func optionTags(req *sip.Request, name string) []string {
	var tags []string
	for _, h := range req.GetHeaders(name) {
		for _, t := range strings.Split(h.Value(), ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
	}
	return tags
}

// checkHeaders goes over the header fields once (this runs for every
// request): a single-valued one seen twice, an Expires or a contact
// expires that is not delta-seconds.
func checkHeaders(req *sip.Request) *Problem {
	var seen [len(singleValued)]bool
	for _, h := range req.Headers() {
		name := h.Name()
		for i, sv := range singleValued {
			if len(name) == len(sv) && strings.EqualFold(name, sv) {
				if seen[i] {
					return &Problem{Code: 400, Reason: "Duplicate " + sv}
				}
				seen[i] = true
				if i == expiresIndex && !deltaSeconds(strings.TrimSpace(h.Value())) {
					return &Problem{Code: 400, Reason: "Bad Expires"}
				}
				break
			}
		}
		if c, ok := h.(*sip.ContactHeader); ok {
			if v, ok := c.Params.Get("expires"); ok && !deltaSeconds(v) {
				return &Problem{Code: 400, Reason: "Bad Contact Expires"}
			}
		}
	}
	return nil
}

// deltaSeconds reports whether v is a delta-seconds value: decimal digits
// worth at most 2^32-1 (RFC 3261 §20.19, §25.1). Larger values are the
// scalar overflows RFC 4475 wants refused rather than wrapped or capped.
func deltaSeconds(v string) bool {
	if v == "" {
		return false
	}
	n, err := strconv.ParseUint(v, 10, 32)
	return err == nil && n <= 1<<32-1
}
