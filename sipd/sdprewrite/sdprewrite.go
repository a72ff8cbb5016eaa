// Package sdprewrite reads the media description of an SDP body (RFC 4566) and rewrites it so that RTP and RTCP
// flow through the relay: c= lines, m= ports and a=rtcp (RFC 3605) are pointed at the relay's advertised address,
// the o= session version is bumped, and ICE can be removed (as rtpengine's ICE=remove does).
//
// Design: the body is handled as a list of lines, and only the lines that must change are edited, so everything
// else (codecs, fmtp, crypto, directions, bandwidth, unknown attributes and unknown line types) passes through
// byte for byte in its original order. github.com/pion/sdp/v3 supplies the attribute and direction types and is
// used to check the parts it understands; it is not the parser of record because its Unmarshal rejects SDP that
// SIP devices really send (T.38 "m=image 5000 udptl t38", line types it does not know such as y=), and a proxy
// that fails such a call is worse than one that relays it; and its Marshal writes the lines of a media section
// back in RFC order, moving lines nobody meant to change. See TestPionRejectsSIPSDP and TestPionMarshalReorders.
package sdprewrite

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// Media is one m-line as the relay needs it.
type Media struct {
	Index     int            // position of the m-line, from 0
	Type      string         // "audio", "video", ...
	Proto     string         // "RTP/AVP", "RTP/SAVP", ...
	Port      uint16         // 0: rejected stream
	Addr      netip.Addr     // media-level c= or else session-level c=; may be unspecified (0.0.0.0 = old-style hold)
	RTCP      netip.AddrPort // from a=rtcp (RFC 3605) or else Addr:Port+1
	RTCPMux   bool           // a=rtcp-mux (RFC 5761)
	Direction string         // sendrecv, sendonly, recvonly, inactive (media-level, else session-level, else sendrecv)
}

// Target is where one m-line's media must be sent instead: the relay's advertised address and ports.
type Target struct {
	Addr      netip.Addr
	RTP, RTCP uint16
}

// Options change what Rewrite does beyond pointing media at the relay.
type Options struct {
	RemoveICE bool // drop a=candidate, a=ice-ufrag, a=ice-pwd, a=ice-options, a=end-of-candidates, a=remote-candidates, ice-lite (rtpengine ICE=remove)
	// ReplaceZero writes the target's address over an old-style hold's 0.0.0.0 (or ::) too, instead of keeping
	// it unspecified (rtpengine's replace=zero-address).
	ReplaceZero bool
}

// ErrSDP is wrapped by every error that reports a malformed body, so that callers can answer 488 rather than 500.
var ErrSDP = errors.New("sdp")

func errorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrSDP}, args...)...)
}

// line is one SDP line without its line ending. typ is the letter before '='.
type line struct {
	typ byte
	val string
}

func (l line) String() string { return string(l.typ) + "=" + l.val }

// section is the session part (m == nil) or one media part: the lines from an m= line up to the next.
type section struct {
	lines []line
}

// conn is a parsed c= line.
type conn struct {
	addr netip.Addr
}

// parsed is the scanned body: the sections in order, plus what Parse reports.
type parsed struct {
	session section
	media   []section
	out     []Media
	// sessionConn is the session-level c= address, invalid if there is none; media that rely on it need to be
	// pinned to it when Rewrite changes the session-level c=.
	sessionConn netip.Addr
	// mediaConn[i] says whether m-line i has its own c= line.
	mediaConn []bool
	// rtcpLine[i] says whether m-line i has an a=rtcp line.
	rtcpLine []bool
	// ice[i] says whether m-line i carries ICE (a=candidate or a=ice-ufrag at media or session level).
	ice []bool
}

// splitLines cuts body into SDP lines. Both CRLF and bare LF are accepted on input (RFC 4566 section 5 asks
// parsers to be lenient here); empty lines are skipped because some UAs end the body with an extra blank line.
func splitLines(body []byte) ([]line, error) {
	var out []line
	for n, raw := range strings.Split(string(body), "\n") {
		raw = strings.TrimSuffix(raw, "\r")
		if raw == "" {
			continue
		}
		if len(raw) < 2 || raw[1] != '=' || raw[0] < 'a' || raw[0] > 'z' {
			return nil, errorf("line %d %q is not <letter>=<value>", n+1, truncate(raw))
		}
		out = append(out, line{typ: raw[0], val: raw[2:]})
	}
	return out, nil
}

// truncate keeps error messages readable when the input is a large piece of garbage.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// attr splits an a= value into pion's Attribute: "rtpmap:0 PCMU/8000" -> {rtpmap, "0 PCMU/8000"}.
func attr(val string) sdp.Attribute {
	if k, v, ok := strings.Cut(val, ":"); ok {
		return sdp.NewAttribute(k, v)
	}
	return sdp.NewPropertyAttribute(val)
}

// parseConn reads "IN IP4 192.0.2.1" (or IP6). A multicast TTL or count suffix ("/127/3") is dropped: the relay
// only needs the address. Hostnames are refused because the relay must install flows on IP addresses.
func parseConn(val string) (conn, error) {
	f := strings.Fields(val)
	if len(f) != 3 {
		return conn{}, errorf("c=%s: want \"IN IP4|IP6 <address>\"", truncate(val))
	}
	if f[0] != "IN" {
		return conn{}, errorf("c=%s: network type %q is not IN", truncate(val), f[0])
	}
	host, _, _ := strings.Cut(f[2], "/")
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return conn{}, errorf("c=%s: address %q is not an IP address", truncate(val), host)
	}
	switch f[1] {
	case "IP4":
		if !a.Is4() {
			return conn{}, errorf("c=%s: address %q is not IPv4", truncate(val), host)
		}
	case "IP6":
		if !a.Is6() {
			return conn{}, errorf("c=%s: address %q is not IPv6", truncate(val), host)
		}
	default:
		return conn{}, errorf("c=%s: address type %q is not IP4 or IP6", truncate(val), f[1])
	}
	return conn{addr: a.Unmap()}, nil
}

// parsePort reads a decimal port with no sign or spaces; strconv.ParseUint alone would accept "+5" nowhere, but
// it would accept leading zeros, which are harmless.
func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, err
	}
	return uint16(p), nil
}

// parseOrigin checks o=<user> <sess-id> <sess-version> IN <addrtype> <addr>; the version must be a decimal
// number because Rewrite increments it.
func parseOrigin(val string) error {
	f := strings.Fields(val)
	if len(f) != 6 {
		return errorf("o=%s: want 6 fields, got %d", truncate(val), len(f))
	}
	if !isDigits(f[2]) {
		return errorf("o=%s: session version %q is not a number", truncate(val), f[2])
	}
	return nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// increment adds one to a decimal string. Done on the digits rather than in uint64 because RFC 4566 only says
// the version is numeric and some UAs use NTP timestamps; it must never wrap to a smaller number.
func increment(s string) string {
	b := []byte(s)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < '9' {
			b[i]++
			return string(b)
		}
		b[i] = '0'
	}
	return "1" + string(b)
}

// scan parses the body into sections and the Media list.
func scan(body []byte) (*parsed, error) {
	lines, err := splitLines(body)
	if err != nil {
		return nil, err
	}
	if len(lines) == 0 {
		return nil, errorf("empty body")
	}
	if lines[0].typ != 'v' || strings.TrimSpace(lines[0].val) != "0" {
		return nil, errorf("first line is %q, want v=0", truncate(lines[0].String()))
	}
	p := &parsed{}
	cur := &p.session
	for _, l := range lines {
		if l.typ == 'm' {
			p.media = append(p.media, section{})
			cur = &p.media[len(p.media)-1]
		}
		cur.lines = append(cur.lines, l)
	}

	// Session level: o= (needed for the version bump), c=, and the default direction.
	var origin, sessICE bool
	sessDir := "sendrecv"
	for _, l := range p.session.lines {
		switch l.typ {
		case 'o':
			if origin {
				return nil, errorf("more than one o= line")
			}
			if err := parseOrigin(l.val); err != nil {
				return nil, err
			}
			origin = true
		case 'c':
			if p.sessionConn.IsValid() {
				return nil, errorf("more than one session-level c= line")
			}
			c, err := parseConn(l.val)
			if err != nil {
				return nil, fmt.Errorf("session level: %w", err)
			}
			p.sessionConn = c.addr
		case 'a':
			if d, err := sdp.NewDirection(l.val); err == nil {
				sessDir = d.String()
			}
			if k := attr(l.val).Key; k == "ice-ufrag" || k == "candidate" {
				sessICE = true
			}
		}
	}
	if !origin {
		return nil, errorf("no o= line")
	}

	p.out = make([]Media, 0, len(p.media))
	p.mediaConn = make([]bool, len(p.media))
	p.rtcpLine = make([]bool, len(p.media))
	p.ice = make([]bool, len(p.media))
	for i, s := range p.media {
		p.ice[i] = sessICE
		m, err := p.scanMedia(i, s, sessDir)
		if err != nil {
			return nil, fmt.Errorf("m-line %d: %w", i, err)
		}
		p.out = append(p.out, m)
	}
	return p, nil
}

func (p *parsed) scanMedia(i int, s section, sessDir string) (Media, error) {
	m := Media{Index: i, Direction: sessDir}
	f := strings.Fields(s.lines[0].val)
	if len(f) < 3 {
		return m, errorf("m=%s: want \"<media> <port> <proto> <fmt>...\"", truncate(s.lines[0].val))
	}
	m.Type, m.Proto = f[0], f[2]
	portStr, count, hasCount := strings.Cut(f[1], "/")
	port, err := parsePort(portStr)
	if err != nil {
		return m, errorf("m=%s: bad port %q", truncate(s.lines[0].val), f[1])
	}
	if hasCount {
		if _, err := strconv.ParseUint(count, 10, 16); err != nil {
			return m, errorf("m=%s: bad port count %q", truncate(s.lines[0].val), count)
		}
	}
	m.Port = port

	var rtcpPort uint16
	var rtcpAddr netip.Addr
	var haveRTCP bool
	for _, l := range s.lines[1:] {
		switch l.typ {
		case 'c':
			c, err := parseConn(l.val)
			if err != nil {
				return m, err
			}
			// Several c= lines in one media section are only meaningful for layered multicast; the first one
			// is where unicast RTP goes.
			if !p.mediaConn[i] {
				m.Addr = c.addr
				p.mediaConn[i] = true
			}
		case 'a':
			a := attr(l.val)
			switch a.Key {
			case "rtcp":
				rf := strings.Fields(a.Value)
				if len(rf) != 1 && len(rf) != 4 {
					return m, errorf("a=%s: want \"rtcp:<port> [IN IP4|IP6 <address>]\"", truncate(l.val))
				}
				rp, err := parsePort(rf[0])
				if err != nil {
					return m, errorf("a=%s: bad port %q", truncate(l.val), rf[0])
				}
				if len(rf) == 4 {
					c, err := parseConn(strings.Join(rf[1:], " "))
					if err != nil {
						return m, fmt.Errorf("a=rtcp: %w", err)
					}
					rtcpAddr = c.addr
				}
				rtcpPort, haveRTCP = rp, true
				p.rtcpLine[i] = true
			case "rtcp-mux":
				m.RTCPMux = true
			case "candidate", "ice-ufrag":
				p.ice[i] = true
			default:
				if d, err := sdp.NewDirection(l.val); err == nil {
					m.Direction = d.String()
				}
			}
		}
	}
	if !p.mediaConn[i] {
		m.Addr = p.sessionConn
	}
	// A rejected stream needs no address (RFC 3264 section 6 lets the answer keep any c=), but an accepted one
	// must have somewhere to send RTP to.
	if !m.Addr.IsValid() && m.Port != 0 {
		return m, errorf("no c= line at media or session level")
	}
	switch {
	case m.Port == 0:
		// Rejected: no RTCP either.
	case haveRTCP:
		if !rtcpAddr.IsValid() {
			rtcpAddr = m.Addr
		}
		m.RTCP = netip.AddrPortFrom(rtcpAddr, rtcpPort)
	case m.Port < 65535:
		m.RTCP = netip.AddrPortFrom(m.Addr, m.Port+1)
	}
	return m, nil
}

// Parse reads an SDP body. Errors name what is wrong (no m-line is fine: return zero Media).
func Parse(body []byte) ([]Media, error) {
	p, err := scan(body)
	if err != nil {
		return nil, err
	}
	return p.out, nil
}

// iceAttrs are the attributes that describe ICE (RFC 8839); with the relay as the media path they would invite
// the peer to check paths that bypass it.
// ice-pacing (RFC 8839) and ice-mismatch (RFC 5245) are ICE too and would be meaningless without the rest.
var iceAttrs = map[string]bool{
	"ice-pacing":        true,
	"ice-mismatch":      true,
	"candidate":         true,
	"ice-ufrag":         true,
	"ice-pwd":           true,
	"ice-options":       true,
	"end-of-candidates": true,
	"remote-candidates": true,
	"ice-lite":          true,
}

func connLine(a netip.Addr) line {
	if a.Is4() {
		return line{typ: 'c', val: "IN IP4 " + a.String()}
	}
	return line{typ: 'c', val: "IN IP6 " + a.String()}
}

// Rewrite returns body with every m-line that has a target pointed at it: media-level c= set to the target (adding one if the
// m-line relied on session-level c=), session-level c= set to the first target's address, m= port set to Target.RTP, a=rtcp
// rewritten to Target.RTCP with the target's address (or removed if there is no RTCP port), a=rtcp-mux kept; m-lines without
// a target and rejected m-lines (port 0) are left as they are (port 0 stays 0); the o= session version is incremented;
// IPv4 and IPv6 handled (c=IN IP6 ... when the target is IPv6, "IN IP4" otherwise). Everything else (codecs, fmtp, crypto,
// directions, bandwidth) is preserved in order.
//
// One exception to "set to the target": an m-line on old-style hold (its c= is 0.0.0.0 or ::, and it has no ICE)
// gets the target's port but keeps an unspecified address (0.0.0.0, or :: for an IPv6 target), so the hold
// reaches the peer; Parse of the result reports the relay's ports with an unspecified Addr. Options.ReplaceZero
// turns the exception off.
//
// Errors: a malformed body (wrapping ErrSDP), or a target for an m-line that does not exist, with no address, or
// with RTP port 0. Lines are written with CRLF whatever the input used.
func Rewrite(body []byte, targets map[int]Target, opts Options) ([]byte, error) {
	p, err := scan(body)
	if err != nil {
		return nil, err
	}
	// Check and normalise the targets; tg holds only those that apply.
	tg := make(map[int]Target, len(targets))
	for i, t := range targets {
		if i < 0 || i >= len(p.media) {
			return nil, fmt.Errorf("sdprewrite: target for m-line %d, body has %d m-lines", i, len(p.media))
		}
		if !t.Addr.IsValid() || t.Addr.Zone() != "" {
			return nil, fmt.Errorf("sdprewrite: target for m-line %d has no usable address", i)
		}
		if t.RTP == 0 {
			return nil, fmt.Errorf("sdprewrite: target for m-line %d has RTP port 0", i)
		}
		if p.out[i].Port == 0 {
			continue // rejected stays rejected: RFC 3264 section 6, a port 0 is never revived by the answerer's proxy
		}
		t.Addr = t.Addr.Unmap()
		// Old-style hold (RFC 2543, c=0.0.0.0) is kept visible to the peer: the relay's port is still offered,
		// but the address stays unspecified, in the target's family, so the peer does not start sending. With
		// ICE the zero address is only the placeholder of trickle ICE (RFC 8840), not hold, and the relay's
		// address goes in. rtpengine draws the same line (sipwise/rtpengine#1185).
		if p.out[i].Addr.IsUnspecified() && !p.ice[i] && !opts.ReplaceZero {
			if t.Addr.Is4() {
				t.Addr = netip.IPv4Unspecified()
			} else {
				t.Addr = netip.IPv6Unspecified()
			}
		}
		tg[i] = t
	}
	// The session-level c= names the first target; a held one only if every target is held, so that a held
	// audio line does not make the session look held when video is live.
	var sessAddr netip.Addr
	for i := range p.media {
		if t, ok := tg[i]; ok && (!sessAddr.IsValid() || sessAddr.IsUnspecified() && !t.Addr.IsUnspecified()) {
			sessAddr = t.Addr
		}
	}

	var b strings.Builder
	b.Grow(len(body) + 64*(len(tg)+1))
	emit := func(l line) {
		b.WriteString(l.String())
		b.WriteString("\r\n")
	}

	for _, l := range p.session.lines {
		switch l.typ {
		case 'o':
			f := strings.Fields(l.val)
			f[2] = increment(f[2])
			emit(line{typ: 'o', val: strings.Join(f, " ")})
			continue
		case 'c':
			if sessAddr.IsValid() {
				emit(connLine(sessAddr))
				continue
			}
		case 'a':
			if opts.RemoveICE && iceAttrs[attr(l.val).Key] {
				continue
			}
		}
		emit(l)
	}

	for i, s := range p.media {
		t, ok := tg[i]
		// An m-line we do not relay that took its address from the session-level c= must keep that address
		// now that the session-level c= names the relay.
		pin := !ok && sessAddr.IsValid() && !p.mediaConn[i] && p.out[i].Port != 0
		addC := (ok && !p.mediaConn[i]) || pin
		cDone := false
		for j, l := range s.lines {
			switch {
			case j == 0 && ok:
				f := strings.Fields(l.val)
				_, count, hasCount := strings.Cut(f[1], "/")
				f[1] = strconv.Itoa(int(t.RTP))
				if hasCount {
					f[1] += "/" + count
				}
				emit(line{typ: 'm', val: strings.Join(f, " ")})
			case l.typ == 'c' && ok:
				// The first c= becomes the relay, further (layered multicast) ones are dropped: the relay
				// gives one address.
				if !cDone {
					emit(connLine(t.Addr))
					cDone = true
				}
			case l.typ == 'a' && opts.RemoveICE && iceAttrs[attr(l.val).Key]:
			case l.typ == 'a' && ok && attr(l.val).Key == "rtcp":
				if t.RTCP != 0 {
					c := connLine(t.Addr)
					emit(line{typ: 'a', val: "rtcp:" + strconv.Itoa(int(t.RTCP)) + " " + c.val})
				}
			default:
				emit(l)
			}
			// RFC 4566 orders m=, i=, c=: the added c= goes after the m= line and any i= that follows it.
			if addC && !cDone && (j+1 == len(s.lines) || s.lines[j+1].typ != 'i') {
				if ok {
					emit(connLine(t.Addr))
				} else {
					emit(connLine(p.sessionConn))
				}
				cDone = true
			}
		}
		// Without a=rtcp the peer sends RTCP to RTP+1 (RFC 3605 section 2.1); if the relay's RTCP port is
		// elsewhere it must be said.
		if ok && !p.rtcpLine[i] && t.RTCP != 0 && uint32(t.RTCP) != uint32(t.RTP)+1 {
			emit(line{typ: 'a', val: "rtcp:" + strconv.Itoa(int(t.RTCP)) + " " + connLine(t.Addr).val})
		}
	}
	return []byte(b.String()), nil
}
