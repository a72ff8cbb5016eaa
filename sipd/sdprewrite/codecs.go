package sdprewrite

import (
	"fmt"
	"slices"
	"strings"
)

// Codec is one format of an RTP m-line.
type Codec struct {
	PT       string // the format as the m= line writes it
	Encoding string // from a=rtpmap, else the static name of RFC 3551 section 6; "" when neither says
	Clock    string // clock rate, "" when unknown
	Params   string // encoding parameters (audio channels), "" when absent
}

// staticPT is RFC 3551 section 6 (tables 4 and 5): what a static payload type means without a=rtpmap.
var staticPT = map[string][3]string{
	"0": {"PCMU", "8000"}, "3": {"GSM", "8000"}, "4": {"G723", "8000"}, "5": {"DVI4", "8000"},
	"6": {"DVI4", "16000"}, "7": {"LPC", "8000"}, "8": {"PCMA", "8000"}, "9": {"G722", "8000"},
	"10": {"L16", "44100", "2"}, "11": {"L16", "44100", "1"}, "12": {"QCELP", "8000"}, "13": {"CN", "8000"},
	"14": {"MPA", "90000"}, "15": {"G728", "8000"}, "16": {"DVI4", "11025"}, "17": {"DVI4", "22050"},
	"18": {"G729", "8000"}, "25": {"CelB", "90000"}, "26": {"JPEG", "90000"}, "28": {"nv", "90000"},
	"31": {"H261", "90000"}, "32": {"MPV", "90000"}, "33": {"MP2T", "90000"}, "34": {"H263", "90000"},
}

// isRTP says whether an m-line's format list holds RTP payload types (RFC 4566 section 5.14); the formats of
// other protocols (udptl t38, UDP/BFCP, DTLS/SCTP) are not codecs.
func isRTP(proto string) bool { return strings.Contains(strings.ToUpper(proto), "RTP/") }

// Codecs returns each m-line's formats in m= line order, named from a=rtpmap or the static table; nil for an
// m-line whose protocol is not RTP.
func Codecs(body []byte) ([][]Codec, error) {
	p, err := scan(body)
	if err != nil {
		return nil, err
	}
	out := make([][]Codec, len(p.media))
	for i, s := range p.media {
		if !isRTP(p.out[i].Proto) {
			continue
		}
		f := strings.Fields(s.lines[0].val)
		maps := map[string]string{}
		for _, l := range s.lines[1:] {
			if a := attr(l.val); l.typ == 'a' && a.Key == "rtpmap" {
				pt, enc, _ := strings.Cut(strings.TrimSpace(a.Value), " ")
				if _, dup := maps[pt]; !dup {
					maps[pt] = strings.TrimSpace(enc)
				}
			}
		}
		cs := make([]Codec, 0, len(f)-3)
		for _, pt := range f[3:] {
			c := Codec{PT: pt}
			if enc, ok := maps[pt]; ok {
				parts := strings.SplitN(enc, "/", 3)
				c.Encoding = parts[0]
				if len(parts) > 1 {
					c.Clock = parts[1]
				}
				if len(parts) > 2 {
					c.Params = parts[2]
				}
			} else if st, ok := staticPT[pt]; ok {
				c.Encoding, c.Clock, c.Params = st[0], st[1], st[2]
			}
			cs = append(cs, c)
		}
		out[i] = cs
	}
	return out, nil
}

// FormatEdit is what one RTP m-line's format list becomes.
type FormatEdit struct {
	Formats []string // in the order to write them; each one the m-line already has
	Reject  bool     // port 0 (RFC 3264 section 6): the stream is refused
}

// ptAttrs are the attributes whose value starts with the payload type they describe.
var ptAttrs = map[string]bool{"rtpmap": true, "fmtp": true, "rtcp-fb": true}

// SetFormats writes the format list of the m-lines in edits and removes the a=rtpmap, a=fmtp and a=rtcp-fb
// lines of the formats left out (a=rtcp-fb:* stays); every other line is kept as it is, and the o= version
// is not changed (Rewrite bumps it afterwards). An edit naming a format the m-line does not have, with no
// format at all, or for an m-line that is not RTP is an error: the caller chooses among what is there.
func SetFormats(body []byte, edits map[int]FormatEdit) ([]byte, error) {
	p, err := scan(body)
	if err != nil {
		return nil, err
	}
	for i, e := range edits {
		if i < 0 || i >= len(p.media) {
			return nil, fmt.Errorf("sdprewrite: format edit for m-line %d, body has %d m-lines", i, len(p.media))
		}
		if !isRTP(p.out[i].Proto) {
			return nil, fmt.Errorf("sdprewrite: format edit for m-line %d, protocol %s is not RTP", i, p.out[i].Proto)
		}
		if len(e.Formats) == 0 {
			return nil, fmt.Errorf("sdprewrite: format edit for m-line %d leaves no format", i)
		}
		have := strings.Fields(p.media[i].lines[0].val)[3:]
		for _, pt := range e.Formats {
			if !slices.Contains(have, pt) {
				return nil, fmt.Errorf("sdprewrite: format edit for m-line %d names %q, the m-line has %v", i, pt, have)
			}
		}
	}
	var b strings.Builder
	b.Grow(len(body))
	emit := func(l line) {
		b.WriteString(l.String())
		b.WriteString("\r\n")
	}
	for _, l := range p.session.lines {
		emit(l)
	}
	for i, s := range p.media {
		e, ok := edits[i]
		for j, l := range s.lines {
			switch {
			case !ok:
				emit(l)
			case j == 0:
				f := strings.Fields(l.val)
				if e.Reject {
					f[1] = "0"
				}
				emit(line{typ: 'm', val: strings.Join(append(f[:3:3], e.Formats...), " ")})
			case l.typ == 'a' && ptAttrs[attr(l.val).Key]:
				pt, _, _ := strings.Cut(strings.TrimSpace(attr(l.val).Value), " ")
				if pt == "*" || slices.Contains(e.Formats, pt) {
					emit(l)
				}
			default:
				emit(l)
			}
		}
	}
	return []byte(b.String()), nil
}

// Names are the names rtpengine knows a codec by (its codec_names table): the encoding, the encoding with
// its rtpmap parameters, and with the channel count spelled out ("PCMU", "PCMU/8000", "PCMU/8000/1";
// "opus", "opus/48000/2"). Without an encoding there is no name.
func (c Codec) Names() []string {
	if c.Encoding == "" {
		return nil
	}
	if c.Clock == "" {
		return []string{c.Encoding}
	}
	withClock := c.Encoding + "/" + c.Clock
	if c.Params != "" {
		return []string{c.Encoding, withClock + "/" + c.Params}
	}
	return []string{c.Encoding, withClock, withClock + "/1"}
}
