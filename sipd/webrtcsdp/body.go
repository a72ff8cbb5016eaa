// Package webrtcsdp turns an SDP body between what a browser speaks (UDP/TLS/RTP/SAVPF with ICE, DTLS-SRTP,
// rtcp-mux and BUNDLE) and what a SIP phone speaks (RTP/AVP, or RTP/SAVP with SDES a=crypto), one media section
// at a time: Describe reads what an offer asks for, and the Set/Remove functions (or Apply, for a whole target
// Profile) rewrite one m-line. Formats (payload types, rtpmap, fmtp) are never touched.
//
// Like sipd/sdprewrite, the body is kept as a list of lines and only the lines that must change are edited, so
// everything else passes through in order; sdprewrite's package comment says why pion/sdp/v3's Unmarshal and
// Marshal are not the parser of record. pion/sdp/v3 supplies the attribute type and the rtcp-mux and
// BUNDLE names. This package does not point media at the relay: sdprewrite.Rewrite does that, before or after.
package webrtcsdp

import (
	"fmt"
	"strings"

	"github.com/pion/sdp/v3"

	"sipxdp/sipd/sdprewrite"
)

// ErrSDP is sdprewrite's: every error here that reports a malformed body or an impossible request wraps it, so
// that callers answer 488 (SIP) or an NG error rather than 500 with one errors.Is for both packages.
var ErrSDP = sdprewrite.ErrSDP

func errorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrSDP}, args...)...)
}

// Line is one SDP line without its line ending: Type is the letter before '='.
type Line struct {
	Type  byte
	Value string
}

func (l Line) String() string { return string(l.Type) + "=" + l.Value }

// Section is the session part or one media part of a body; a media Section's first line is its m= line.
type Section struct {
	Lines []Line
}

// Body is a parsed SDP body.
type Body struct {
	Session Section
	Media   []Section
}

// Parse cuts body into sections. It accepts CRLF and bare LF, skips empty lines and checks only the shape that
// the transformations rely on (v=0 first, m= lines with a port and a protocol); sdprewrite.Parse does the rest.
func Parse(body []byte) (*Body, error) {
	b := &Body{}
	cur := &b.Session
	first := true
	for n, raw := range strings.Split(string(body), "\n") {
		raw = strings.TrimSuffix(raw, "\r")
		if raw == "" {
			continue
		}
		if len(raw) < 2 || raw[1] != '=' || raw[0] < 'a' || raw[0] > 'z' {
			return nil, errorf("line %d is not <letter>=<value>", n+1)
		}
		l := Line{Type: raw[0], Value: raw[2:]}
		if first {
			if l.Type != 'v' || strings.TrimSpace(l.Value) != "0" {
				return nil, errorf("first line is not v=0")
			}
			first = false
		}
		if l.Type == 'm' {
			if len(strings.Fields(l.Value)) < 3 {
				return nil, errorf("m-line %d: want \"<media> <port> <proto> <fmt>...\"", len(b.Media))
			}
			b.Media = append(b.Media, Section{})
			cur = &b.Media[len(b.Media)-1]
		}
		cur.Lines = append(cur.Lines, l)
	}
	if first {
		return nil, errorf("empty body")
	}
	return b, nil
}

// Bytes writes the body back with CRLF line endings (RFC 4566 section 5).
func (b *Body) Bytes() []byte {
	var sb strings.Builder
	for _, s := range b.sections() {
		for _, l := range s.Lines {
			sb.WriteString(l.String())
			sb.WriteString("\r\n")
		}
	}
	return []byte(sb.String())
}

func (b *Body) sections() []*Section {
	out := []*Section{&b.Session}
	for i := range b.Media {
		out = append(out, &b.Media[i])
	}
	return out
}

func (b *Body) media(i int) (*Section, error) {
	if i < 0 || i >= len(b.Media) {
		return nil, errorf("no m-line %d (body has %d)", i, len(b.Media))
	}
	return &b.Media[i], nil
}

// attr splits an a= value into pion's Attribute: "rtpmap:0 PCMU/8000" -> {rtpmap, "0 PCMU/8000"}.
func attr(val string) sdp.Attribute {
	if k, v, ok := strings.Cut(val, ":"); ok {
		return sdp.NewAttribute(k, v)
	}
	return sdp.NewPropertyAttribute(val)
}

// Get returns the value of the first a=<key> line and whether there is one.
func (s *Section) Get(key string) (string, bool) {
	for _, l := range s.Lines {
		if l.Type == 'a' {
			if a := attr(l.Value); a.Key == key {
				return a.Value, true
			}
		}
	}
	return "", false
}

// All returns the values of every a=<key> line.
func (s *Section) All(key string) []string {
	var out []string
	for _, l := range s.Lines {
		if l.Type == 'a' {
			if a := attr(l.Value); a.Key == key {
				out = append(out, a.Value)
			}
		}
	}
	return out
}

// Remove drops every a= line whose key is one of keys.
func (s *Section) Remove(keys ...string) {
	s.Lines = filter(s.Lines, func(l Line) bool { return l.Type != 'a' || !contains(keys, attr(l.Value).Key) })
}

// Add appends an a= line. New attributes go after the existing ones, which RFC 4566's order allows at both
// levels (a= lines are last in a section).
func (s *Section) Add(key, value string) {
	v := key
	if value != "" {
		v += ":" + value
	}
	s.Lines = append(s.Lines, Line{Type: 'a', Value: v})
}

// Set replaces every a=<key> line by one with value, in the place of the first (or at the end if there is none).
func (s *Section) Set(key, value string) {
	v := key
	if value != "" {
		v += ":" + value
	}
	at := -1
	for i, l := range s.Lines {
		if l.Type == 'a' && attr(l.Value).Key == key {
			at = i
			break
		}
	}
	if at < 0 {
		s.Lines = append(s.Lines, Line{Type: 'a', Value: v})
		return
	}
	s.Lines[at].Value = v
	rest := filter(append([]Line(nil), s.Lines[at+1:]...), func(l Line) bool { return l.Type != 'a' || attr(l.Value).Key != key })
	s.Lines = append(s.Lines[:at+1], rest...)
}

func filter(ls []Line, keep func(Line) bool) []Line {
	out := ls[:0]
	for _, l := range ls {
		if keep(l) {
			out = append(out, l)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// mline returns the fields of a media section's m= line.
func (s *Section) mline() []string { return strings.Fields(s.Lines[0].Value) }

func (s *Section) setMLine(f []string) { s.Lines[0].Value = strings.Join(f, " ") }

// localize copies the session-level a= lines with the given keys into every media section that has none of its
// own, then drops them from the session level. A per-media edit can then change one m-line without changing
// what the others inherit (RFC 8839 and RFC 8122 let ice-ufrag, ice-pwd, fingerprint and setup sit at either
// level).
func (b *Body) localize(keys ...string) {
	for _, k := range keys {
		vals := b.Session.All(k)
		if len(vals) == 0 {
			continue
		}
		for i := range b.Media {
			if len(b.Media[i].All(k)) == 0 {
				for _, v := range vals {
					b.Media[i].Add(k, v)
				}
			}
		}
		b.Session.Remove(k)
	}
}
