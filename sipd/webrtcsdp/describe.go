package webrtcsdp

import (
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// The transport protocols the relay bridges between (RFC 3551, RFC 3711, RFC 5124, RFC 5764).
const (
	ProtoAVP   = "RTP/AVP"
	ProtoAVPF  = "RTP/AVPF"
	ProtoSAVP  = "RTP/SAVP"
	ProtoSAVPF = "RTP/SAVPF"
	ProtoDTLS  = "UDP/TLS/RTP/SAVPF" // what browsers offer (RFC 8827)
)

// KnownProto says whether p is one of the protocols above.
func KnownProto(p string) bool {
	switch p {
	case ProtoAVP, ProtoAVPF, ProtoSAVP, ProtoSAVPF, ProtoDTLS:
		return true
	}
	return false
}

// Fingerprint is an a=fingerprint value (RFC 8122): a hash function name and the colon-separated hex digest.
type Fingerprint struct {
	Hash, Value string
}

func (f Fingerprint) String() string { return f.Hash + " " + f.Value }

// MediaInfo is what one m-line of an offer (or answer) asks for. Session-level ICE and DTLS attributes are
// folded in where the media section has none of its own.
type MediaInfo struct {
	Index   int
	Type    string   // audio, video, ...
	Port    uint16   // 0: rejected
	Proto   string   // as written
	Formats []string // payload types, in order
	Mid     string

	Ufrag, Pwd string // ICE credentials (RFC 8839)
	Candidates int    // number of a=candidate lines
	ICELite    bool   // session-level a=ice-lite

	Fingerprints []Fingerprint // RFC 8122 allows several
	Setup        string        // actpass, active, passive, holdconn (RFC 4145)

	Crypto []Crypto // SDES (RFC 4568), in preference order

	RTCPMux bool // a=rtcp-mux (RFC 5761)
}

// WebRTC says whether the m-line is a browser's: DTLS-SRTP with ICE (issue 13's definition of a WebRTC leg).
func (m MediaInfo) WebRTC() bool { return m.Proto == ProtoDTLS }

// Offer is what a whole body asks for.
type Offer struct {
	Media   []MediaInfo
	Bundles [][]string // a=group:BUNDLE mid lists (RFC 8843), in order
	ICELite bool
}

// Describe reads what body asks for. Malformed a=crypto lines are an error (the call cannot be keyed from
// them); unknown attributes are ignored.
func Describe(b *Body) (Offer, error) {
	var o Offer
	_, o.ICELite = b.Session.Get(sdp.AttrKeyICELite)
	for _, g := range b.Session.All(sdp.AttrKeyGroup) {
		f := strings.Fields(g)
		if len(f) > 0 && f[0] == "BUNDLE" {
			o.Bundles = append(o.Bundles, f[1:])
		}
	}
	for i := range b.Media {
		s := &b.Media[i]
		f := s.mline()
		port, _, _ := strings.Cut(f[1], "/")
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return o, errorf("m-line %d: bad port %q", i, f[1])
		}
		m := MediaInfo{Index: i, Type: f[0], Port: uint16(p), Proto: f[2], Formats: f[3:], ICELite: o.ICELite}
		m.Mid, _ = s.Get(sdp.AttrKeyMID)
		m.Ufrag = either(s, &b.Session, "ice-ufrag")
		m.Pwd = either(s, &b.Session, "ice-pwd")
		m.Candidates = len(s.All(sdp.AttrKeyCandidate))
		m.Setup = either(s, &b.Session, "setup")
		fps := s.All("fingerprint")
		if len(fps) == 0 {
			fps = b.Session.All("fingerprint")
		}
		for _, v := range fps {
			h, d, ok := strings.Cut(strings.TrimSpace(v), " ")
			if !ok {
				return o, errorf("m-line %d: a=fingerprint:%s: want \"<hash> <hex>\"", i, truncate(v))
			}
			m.Fingerprints = append(m.Fingerprints, Fingerprint{Hash: strings.ToLower(h), Value: strings.TrimSpace(d)})
		}
		for _, v := range s.All("crypto") {
			c, err := ParseCrypto(v)
			if err != nil {
				return o, errorf("m-line %d: %v", i, err)
			}
			m.Crypto = append(m.Crypto, c)
		}
		_, m.RTCPMux = s.Get(sdp.AttrKeyRTCPMux)
		o.Media = append(o.Media, m)
	}
	return o, nil
}

func either(media, session *Section, key string) string {
	if v, ok := media.Get(key); ok {
		return v
	}
	v, _ := session.Get(key)
	return v
}

// truncate keeps error messages readable when the input is a large piece of garbage.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
