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
}

func (p *Problem) Error() string { return fmt.Sprintf("%d %s", p.Code, p.Reason) }

// ErrNoVia marks a request that cannot be answered at all (no Via): drop it.
var ErrNoVia = errors.New("request has no Via")

var knownSchemes = map[string]bool{"sip": true, "sips": true, "tel": true}

// Check validates what the core relies on: the mandatory headers of RFC
// 3261 §8.1.1, a CSeq that matches the method, a sane Max-Forwards, a
// usable Request-URI and a body as long as Content-Length says.
func Check(req *sip.Request) error {
	if req.Via() == nil {
		return ErrNoVia
	}
	if req.SipVersion != "SIP/2.0" {
		return &Problem{505, "Version Not Supported"}
	}
	if !knownSchemes[strings.ToLower(req.Recipient.Scheme)] {
		return &Problem{416, "Unsupported URI Scheme"}
	}
	if req.Recipient.Scheme != "tel" && req.Recipient.Host == "" {
		return &Problem{400, "Bad Request-URI"}
	}
	if req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil {
		return &Problem{400, "Missing Mandatory Header"}
	}
	if req.CallID().Value() == "" {
		return &Problem{400, "Bad Call-ID"}
	}
	if _, ok := req.From().Params.Get("tag"); !ok && req.Method != sip.ACK {
		// RFC 3261 §8.1.1.3: the From tag is mandatory; RFC 2543 peers are
		// long gone.
		return &Problem{400, "Missing From Tag"}
	}
	cs := req.CSeq()
	if cs.MethodName != req.Method {
		return &Problem{400, "CSeq Method Mismatch"}
	}
	if cs.SeqNo > 1<<31-1 {
		return &Problem{400, "Bad CSeq"}
	}
	if mf := req.GetHeader("Max-Forwards"); mf != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(mf.Value())); err != nil || n < 0 || n > 255 {
			return &Problem{400, "Bad Max-Forwards"}
		}
	}
	if cl := req.ContentLength(); cl != nil && int(*cl) != len(req.Body()) {
		return &Problem{400, "Bad Content-Length"}
	}
	for _, h := range req.GetHeaders("Proxy-Require") {
		return &Problem{420, "Bad Extension: " + strings.TrimSpace(h.Value())}
	}
	return nil
}
