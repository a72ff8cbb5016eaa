package sipserver

import (
	"bytes"
	"net/netip"
	"strconv"
	"sync"

	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/proxy"
)

// The keep-alive fast path answers NOTIFY and OPTIONS addressed to the
// proxy itself without the general parser: the ITSP model sends one per
// user every 15 s, tens of thousands a second, and a full parse with its
// allocations cost more than everything else for them together. The
// scanner below handles the plain form UAs send; anything unusual (folded
// or combined headers, a To tag, a Route, a body) returns nil and takes the
// normal path, which gives the same answer more slowly.

var crlfBytes = []byte("\r\n")

var headerParsers = sip.HeadersParser(sip.DefaultHeadersParser())

// Header names the scanner tells apart.
const (
	hOther = iota
	hVia
	hFrom
	hTo
	hCallID
	hCSeq
	hContentLength
	hRoute
	hMaxForwards
	hRequire
)

// headerKind classifies a header name without allocating; parsed reports
// whether sipgo's default header parsers handle the name.
func headerKind(b []byte) (kind int, parsed bool) {
	var low [16]byte
	if len(b) > len(low) {
		return hOther, false // longer than every name below
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	switch string(low[:len(b)]) {
	case "via", "v":
		return hVia, true
	case "from", "f":
		return hFrom, true
	case "to", "t":
		return hTo, true
	case "call-id", "i":
		return hCallID, true
	case "cseq":
		return hCSeq, true
	case "content-length", "l":
		return hContentLength, true
	case "route":
		return hRoute, true
	case "max-forwards":
		return hMaxForwards, true
	case "proxy-require", "require":
		// The core answers 420 to either when it is the UAS.
		return hRequire, false
	}
	_, parsed = headerParsers[string(low[:len(b)])]
	return hOther, parsed
}

// selfURIs remembers request URIs already found to be ours, by their
// bytes, so the keep-alive path parses each form once. Only positive
// answers are kept, at most selfURIMax of them.
type selfURIs struct {
	mu sync.RWMutex
	m  map[string]struct{}
}

const selfURIMax = 64

func (c *selfURIs) isSelf(raw []byte, self *proxy.Self) bool {
	if c != nil {
		c.mu.RLock()
		_, ok := c.m[string(raw)]
		c.mu.RUnlock()
		if ok {
			return true
		}
	}
	var ruri sip.Uri
	if err := sip.ParseUri(string(raw), &ruri); err != nil || ruri.User != "" || !self.IsSelf(&ruri) {
		return false
	}
	if c != nil {
		c.mu.Lock()
		if c.m == nil {
			c.m = make(map[string]struct{})
		}
		if len(c.m) < selfURIMax {
			c.m[string(raw)] = struct{}{}
		}
		c.mu.Unlock()
	}
	return true
}

// keepaliveAnswer returns the 200 OK for a keep-alive datagram from src,
// or nil when data is not one this scanner is sure about.
func keepaliveAnswer(data []byte, src netip.AddrPort, self *proxy.Self, toTag string) []byte {
	out, ok := appendKeepaliveAnswer(nil, data, src, self, toTag, nil)
	if !ok {
		return nil
	}
	return out
}

// maxVias bounds the Via headers the fast path copies; more take the
// normal path.
const maxVias = 8

// appendKeepaliveAnswer appends the 200 OK for a keep-alive datagram from
// src to dst; ok is false (and dst unchanged in length) when data is not one
// this scanner is sure about. It does not allocate beyond growing dst and
// the first sight of a request URI (uris may be nil).
func appendKeepaliveAnswer(dst, data []byte, src netip.AddrPort, self *proxy.Self, toTag string, uris *selfURIs) (out []byte, ok bool) {
	var method string
	switch {
	case bytes.HasPrefix(data, []byte("OPTIONS ")):
		method = "OPTIONS"
	case bytes.HasPrefix(data, []byte("NOTIFY ")):
		method = "NOTIFY"
	default:
		return dst, false
	}
	end := bytes.Index(data, crlfBytes)
	if end < 0 {
		return dst, false
	}
	line := data[len(method)+1 : end]
	if bytes.IndexByte(line, '\n') >= 0 {
		return dst, false
	}
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 || string(line[sp+1:]) != "SIP/2.0" {
		return dst, false
	}
	// A URI with headers is refused by the sanity check: leave it to it.
	if bytes.IndexByte(line[:sp], '?') >= 0 || !uris.isSelf(line[:sp], self) {
		return dst, false
	}
	var viaBuf [maxVias][]byte
	vias := viaBuf[:0]
	var from, to, callID, cseq []byte
	var contentLength, maxForwards bool
	rest := data[end+2:]
	for {
		end = bytes.Index(rest, crlfBytes)
		if end < 0 {
			return dst, false
		}
		h := rest[:end]
		rest = rest[end+2:]
		if len(h) == 0 {
			break
		}
		if h[0] == ' ' || h[0] == '\t' || bytes.IndexByte(h, '\r') >= 0 || bytes.IndexByte(h, '\n') >= 0 {
			return dst, false // folded header, or a bare CR or LF
		}
		colon := bytes.IndexByte(h, ':')
		if colon <= 0 {
			return dst, false
		}
		name := bytes.TrimSpace(h[:colon])
		value := bytes.TrimSpace(h[colon+1:])
		kind, parsed := headerKind(name)
		// Headers the general parser validates are validated the same way,
		// so this path never answers what the slow path would reject: a
		// value in the plain form below is one it accepts; anything else
		// goes through the parser itself.
		if parsed && !plainHeader(kind, value) {
			if _, err := headerParsers.ParseHeader(nil, h); err != nil {
				return dst, false
			}
		}
		switch kind {
		case hVia:
			if bytes.IndexByte(value, ',') >= 0 || len(vias) == maxVias {
				return dst, false
			}
			vias = append(vias, value)
		case hFrom:
			// sipgo, and so the core, reads the tag parameter by its exact
			// name, after the URI: take only that form.
			params := value
			if i := bytes.LastIndexByte(value, '>'); i >= 0 {
				params = value[i:]
			}
			if from != nil || !bytes.Contains(params, []byte(";tag=")) {
				return dst, false
			}
			from = value
		case hTo:
			if to != nil || hasFold(value, "tag=") {
				return dst, false
			}
			to = value
		case hCallID:
			if callID != nil || len(value) == 0 {
				return dst, false
			}
			callID = value
		case hCSeq:
			if cseq != nil {
				return dst, false
			}
			cseq = value
		case hContentLength:
			if contentLength || string(value) != "0" {
				return dst, false
			}
			contentLength = true
		case hMaxForwards:
			if n, ok := smallUint(value); maxForwards || !ok || n > 255 {
				return dst, false
			}
			maxForwards = true
		case hRoute, hRequire:
			return dst, false
		default:
			// Other headers the sanity check allows once, and Contact
			// expiries it checks: left to it.
			if singleValued(name) || isContact(name) && hasFold(value, "expires") {
				return dst, false
			}
		}
	}
	if len(rest) != 0 || len(vias) == 0 || from == nil || to == nil || callID == nil || cseq == nil {
		return dst, false
	}
	num, m, ok := bytes.Cut(cseq, []byte(" "))
	if !ok || string(bytes.TrimSpace(m)) != method {
		return dst, false
	}
	if n, ok := smallUint(num); !ok || n > 1<<31-1 {
		return dst, false
	}
	n0 := len(dst)
	out = append(dst, "SIP/2.0 200 OK\r\nVia: "...)
	out, ok = appendMarkedVia(out, vias[0], src)
	if !ok {
		return out[:n0], false
	}
	for _, v := range vias[1:] {
		out = append(out, "\r\nVia: "...)
		out = append(out, v...)
	}
	out = append(out, "\r\nFrom: "...)
	out = append(out, from...)
	out = append(out, "\r\nTo: "...)
	out = append(out, to...)
	out = append(out, ";tag="...)
	out = append(out, toTag...)
	out = append(out, "\r\nCall-ID: "...)
	out = append(out, callID...)
	out = append(out, "\r\nCSeq: "...)
	out = append(out, cseq...)
	out = append(out, "\r\nContent-Length: 0\r\n\r\n"...)
	return out, true
}

// smallUint parses 1 to 10 decimal digits, as strconv.ParseUint(s, 10, 32)
// would for values that fit.
func smallUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, n <= 1<<32-1
}

// hasFold reports whether b contains the lower-case ASCII sub, ignoring
// case.
func hasFold(b []byte, sub string) bool {
	for i := 0; i+len(sub) <= len(b); i++ {
		if bytes.EqualFold(b[i:i+len(sub)], []byte(sub)) {
			return true
		}
	}
	return false
}

// appendMarkedVia appends the raw top Via value v with received and rport
// added (forced, as the core does), dropping any the sender put there.
func appendMarkedVia(out, v []byte, src netip.AddrPort) ([]byte, bool) {
	const proto = "SIP/2.0/UDP "
	if !bytes.HasPrefix(v, []byte(proto)) {
		return out, false
	}
	sentBy, params, more := bytes.Cut(v[len(proto):], []byte(";"))
	sentBy = bytes.TrimSpace(sentBy)
	if len(sentBy) == 0 || bytes.IndexByte(sentBy, ' ') >= 0 || bytes.IndexByte(sentBy, '\t') >= 0 {
		return out, false
	}
	out = append(out, proto...)
	out = append(out, sentBy...)
	branch := false
	for more {
		var p []byte
		p, params, more = bytes.Cut(params, []byte(";"))
		p = bytes.TrimSpace(p)
		k, val, _ := bytes.Cut(p, []byte("="))
		k = bytes.TrimSpace(k)
		switch {
		case bytes.EqualFold(k, []byte("rport")), bytes.EqualFold(k, []byte("received")):
			continue
		case bytes.EqualFold(k, []byte("branch")):
			branch = len(bytes.TrimSpace(val)) > 0
		}
		out = append(out, ';')
		out = append(out, p...)
	}
	if !branch {
		return out, false
	}
	out = append(out, ";received="...)
	out = src.Addr().Unmap().AppendTo(out)
	out = append(out, ";rport="...)
	out = strconv.AppendUint(out, uint64(src.Port()), 10)
	return out, true
}

// plainHeader reports whether value, of a header of the given kind, is in
// a plain form sipgo's parser for it certainly accepts, so the scanner can
// skip running that parser.
func plainHeader(kind int, value []byte) bool {
	switch kind {
	case hCallID:
		return len(value) > 0
	case hCSeq:
		num, m, ok := bytes.Cut(value, []byte(" "))
		n, okn := smallUint(num)
		return ok && okn && n <= 1<<31-1 && len(m) > 0 && allTok(m)
	case hMaxForwards, hContentLength:
		_, ok := smallUint(value)
		return ok
	case hVia:
		const proto = "SIP/2.0/UDP "
		if !bytes.HasPrefix(value, []byte(proto)) {
			return false
		}
		rest, ok := plainHostPort(value[len(proto):])
		return ok && plainParams(rest)
	case hFrom, hTo:
		const open = "<sip:"
		if !bytes.HasPrefix(value, []byte(open)) {
			return false
		}
		rest := value[len(open):]
		if at := bytes.IndexByte(rest, '@'); at >= 0 && at < bytes.IndexByte(rest, '>') {
			if at == 0 || !allTok(rest[:at]) {
				return false
			}
			rest = rest[at+1:]
		}
		rest, ok := plainHostPort(rest)
		if !ok || len(rest) == 0 || rest[0] != '>' {
			return false
		}
		return plainParams(rest[1:])
	}
	return false
}

// plainHostPort accepts a host name or IPv4 address with an optional port
// at the start of b and returns what follows.
func plainHostPort(b []byte) ([]byte, bool) {
	i := 0
	for i < len(b) && (isAlnum(b[i]) || b[i] == '.' || b[i] == '-') {
		i++
	}
	if i == 0 || !isAlnum(b[0]) || !isAlnum(b[i-1]) {
		return nil, false
	}
	if i < len(b) && b[i] == ':' {
		j := i + 1
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
		if n, ok := smallUint(b[i+1 : j]); !ok || n == 0 || n > 65535 || j-i-1 > 5 {
			return nil, false
		}
		i = j
	}
	return b[i:], true
}

// plainParams accepts nothing or ;name or ;name=value parameters of token
// characters.
func plainParams(b []byte) bool {
	for len(b) > 0 {
		if b[0] != ';' {
			return false
		}
		var p []byte
		p, b = b[1:], nil
		if i := bytes.IndexByte(p, ';'); i >= 0 {
			p, b = p[:i], p[i:]
		}
		k, v, hasV := bytes.Cut(p, []byte("="))
		if len(k) == 0 || !allTok(k) || hasV && (len(v) == 0 || !allTok(v)) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// allTok reports whether b is all RFC 3261 token characters.
func allTok(b []byte) bool {
	for _, c := range b {
		if !isAlnum(c) && bytes.IndexByte([]byte("-.!%*_+`'~"), c) < 0 {
			return false
		}
	}
	return true
}

// singleValued reports whether name is Content-Type or Expires, which
// the sanity check refuses to see twice: the fast path leaves requests
// that carry them to the core rather than count them.
func singleValued(name []byte) bool {
	return bytes.EqualFold(name, []byte("content-type")) || bytes.EqualFold(name, []byte("c")) ||
		bytes.EqualFold(name, []byte("expires"))
}

func isContact(name []byte) bool {
	return bytes.EqualFold(name, []byte("contact")) || bytes.EqualFold(name, []byte("m"))
}
