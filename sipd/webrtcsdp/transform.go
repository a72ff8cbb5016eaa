package webrtcsdp

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
	"hash/crc32"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// SetProto rewrites the transport protocol of m-line i. Formats stay as they are.
func SetProto(b *Body, i int, proto string) error {
	s, err := b.media(i)
	if err != nil {
		return err
	}
	if !KnownProto(proto) {
		return errorf("transport protocol %q is not one the relay bridges", proto)
	}
	f := s.mline()
	f[2] = proto
	s.setMLine(f)
	return nil
}

// iceKeys are the ICE attributes (RFC 8839); remote-candidates is included because an ICE=remove must not leave
// a half of ICE behind.
var iceKeys = []string{"ice-ufrag", "ice-pwd", sdp.AttrKeyCandidate, "ice-options", sdp.AttrKeyEndOfCandidates, "remote-candidates", "ice-mismatch"}

// RemoveICE drops ICE from m-line i; session-level ICE lines go once no m-line relies on them.
func RemoveICE(b *Body, i int) error {
	s, err := b.media(i)
	if err != nil {
		return err
	}
	b.localize("ice-ufrag", "ice-pwd", "ice-options")
	s.Remove(iceKeys...)
	b.dropSessionICE()
	return nil
}

// dropSessionICE removes a=ice-lite (and any other session-level ICE line) once no m-line has ICE credentials.
func (b *Body) dropSessionICE() {
	for i := range b.Media {
		if _, ok := b.Media[i].Get("ice-ufrag"); ok {
			return
		}
	}
	b.Session.Remove(append([]string{sdp.AttrKeyICELite}, iceKeys...)...)
}

// ICE is what the relay announces as an ICE-lite agent on one m-line.
type ICE struct {
	Ufrag, Pwd string
	// Addrs are the relay's addresses for this leg: one host candidate each.
	Addrs []netip.Addr
	// RTP is the relay port; RTCP is the separate RTCP port, or 0 when RTCP is muxed (then there is one
	// component only).
	RTP, RTCP uint16
}

// SetICE replaces m-line i's ICE attributes with the relay's: a=ice-lite at session level, the relay's
// ufrag/pwd, and one host candidate per address and component, then a=end-of-candidates (a lite agent has
// nothing to trickle).
func SetICE(b *Body, i int, ice ICE) error {
	s, err := b.media(i)
	if err != nil {
		return err
	}
	if len(ice.Ufrag) < 4 || len(ice.Pwd) < 22 {
		return errorf("ice credentials too short (ufrag %d, pwd %d characters)", len(ice.Ufrag), len(ice.Pwd))
	}
	if len(ice.Addrs) == 0 || ice.RTP == 0 {
		return errorf("ice: no relay address or port")
	}
	b.localize("ice-ufrag", "ice-pwd", "ice-options")
	s.Remove(iceKeys...)
	b.Session.Remove(sdp.AttrKeyICELite)
	// ice-lite goes first among the session attributes, where browsers put it.
	b.Session.Lines = insertAttr(b.Session.Lines, Line{Type: 'a', Value: sdp.AttrKeyICELite})
	s.Add("ice-ufrag", ice.Ufrag)
	s.Add("ice-pwd", ice.Pwd)
	for n, a := range ice.Addrs {
		s.Add(sdp.AttrKeyCandidate, Candidate(a, ice.RTP, 1, n))
		if ice.RTCP != 0 {
			s.Add(sdp.AttrKeyCandidate, Candidate(a, ice.RTCP, 2, n))
		}
	}
	s.Add(sdp.AttrKeyEndOfCandidates, "")
	return nil
}

// insertAttr puts an a= line before the first a= line of a section (or at its end).
func insertAttr(ls []Line, l Line) []Line {
	for i, x := range ls {
		if x.Type == 'a' {
			return append(ls[:i], append([]Line{l}, ls[i:]...)...)
		}
	}
	return append(ls, l)
}

// Candidate is the value of a host candidate line (RFC 8839 section 5.1) for the relay's n-th address. The
// foundation is derived from the address, so it is the same for every m-line on that address (RFC 8445 section
// 5.1.1.3); the priority follows RFC 8445 section 5.1.2.1 with type preference 126 (host) and the first address
// preferred.
func Candidate(a netip.Addr, port uint16, component, n int) string {
	a = a.Unmap()
	foundation := crc32.ChecksumIEEE([]byte("host udp " + a.String()))
	local := 65535 - n
	if local < 0 {
		local = 0
	}
	prio := uint32(126)<<24 | uint32(local)<<8 | uint32(256-component)
	return fmt.Sprintf("%d %d udp %d %s %d typ host", foundation, component, prio, a, port)
}

// dtlsKeys are DTLS-SRTP's attributes (RFC 8122, RFC 4145, RFC 8842).
var dtlsKeys = []string{"fingerprint", "setup", "tls-id", "connection"}

// FingerprintOf is the sha-256 fingerprint of a DER certificate, as a=fingerprint announces it (RFC 8122
// section 5: upper-case hex pairs separated by colons).
func FingerprintOf(der []byte) Fingerprint {
	fp, _ := FingerprintWith(der, "sha-256")
	return fp
}

// fingerprintHashes are the hash functions a=fingerprint may name that
// rtpengine's DTLS-fingerprint offers (SHA-1 to SHA-512). The standard
// library's, rather than pion's fingerprint package, because pion's
// takes a parsed certificate and the engine hands out DER.
var fingerprintHashes = map[string]func() hash.Hash{
	"sha-1": sha1.New, "sha-224": sha256.New224, "sha-256": sha256.New,
	"sha-384": sha512.New384, "sha-512": sha512.New,
}

// FingerprintWith is FingerprintOf with another hash function, named as
// a=fingerprint names it (case ignored; "sha1" and "SHA_256" are read as
// "sha-1" and "sha-256", as rtpengine's DTLS-fingerprint values come).
func FingerprintWith(der []byte, name string) (Fingerprint, error) {
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	if !strings.HasPrefix(n, "sha-") && strings.HasPrefix(n, "sha") {
		n = "sha-" + n[3:]
	}
	mk, ok := fingerprintHashes[n]
	if !ok {
		return Fingerprint{}, fmt.Errorf("unknown fingerprint hash %q", name)
	}
	h := mk()
	h.Write(der)
	sum := h.Sum(nil)
	hex := make([]string, len(sum))
	for i, c := range sum {
		hex[i] = fmt.Sprintf("%02X", c)
	}
	return Fingerprint{Hash: n, Value: strings.Join(hex, ":")}, nil
}

// The a=setup roles (RFC 4145 section 4).
const (
	SetupActpass = "actpass"
	SetupActive  = "active"
	SetupPassive = "passive"
)

// AnswerSetup picks the answerer's role from the offer's (RFC 5763 section 5): an actpass offer leaves the
// choice, and the relay takes prefer (active when prefer is empty, as RFC 5763 recommends; rtpengine's
// DTLS=passive asks for passive); an active offer makes the answer passive and the other way round.
func AnswerSetup(offered, prefer string) (string, error) {
	switch offered {
	case "":
		// RFC 4145 section 4: an offer without a=setup is active.
		return SetupPassive, nil
	case SetupActpass:
		switch prefer {
		case "", SetupActive:
			return SetupActive, nil
		case SetupPassive:
			return SetupPassive, nil
		}
		return "", errorf("a=setup: cannot prefer %q", prefer)
	case SetupActive:
		return SetupPassive, nil
	case SetupPassive:
		return SetupActive, nil
	}
	return "", errorf("a=setup:%s: the relay cannot take a DTLS role against it", truncate(offered))
}

// SetDTLS replaces m-line i's DTLS attributes with the relay's certificate fingerprint and setup role.
func SetDTLS(b *Body, i int, fp Fingerprint, setup string) error {
	s, err := b.media(i)
	if err != nil {
		return err
	}
	switch setup {
	case SetupActpass, SetupActive, SetupPassive:
	default:
		return errorf("a=setup:%s is not actpass, active or passive", truncate(setup))
	}
	if fp.Hash == "" || fp.Value == "" {
		return errorf("empty fingerprint")
	}
	b.localize(dtlsKeys...)
	s.Remove(dtlsKeys...)
	s.Add("fingerprint", fp.String())
	s.Add("setup", setup)
	return nil
}

// RemoveDTLS drops m-line i's DTLS attributes.
func RemoveDTLS(b *Body, i int) error {
	s, err := b.media(i)
	if err != nil {
		return err
	}
	b.localize(dtlsKeys...)
	s.Remove(dtlsKeys...)
	return nil
}

// SetCrypto replaces m-line i's a=crypto lines with cs, in order.
func SetCrypto(b *Body, i int, cs ...Crypto) error {
	s, err := b.media(i)
	if err != nil {
		return err
	}
	s.Remove("crypto")
	for _, c := range cs {
		s.Add("crypto", c.String())
	}
	return nil
}

// RemoveCrypto drops m-line i's a=crypto lines.
func RemoveCrypto(b *Body, i int) error { return SetCrypto(b, i) }

// OfferRTCPMux adds a=rtcp-mux to m-line i (RFC 5761 section 5.1.1); a=rtcp stays as the fallback port for an
// answerer that declines.
func OfferRTCPMux(b *Body, i int) error {
	s, err := b.media(i)
	if err != nil {
		return err
	}
	s.Set(sdp.AttrKeyRTCPMux, "")
	return nil
}

// AcceptRTCPMux answers m-line i's offer: rtcp-mux when it was offered, separate RTCP otherwise.
func AcceptRTCPMux(b *Body, i int, offered bool) error {
	s, err := b.media(i)
	if err != nil {
		return err
	}
	if offered {
		s.Set(sdp.AttrKeyRTCPMux, "")
		s.Remove("rtcp", "rtcp-mux-only")
		return nil
	}
	s.Remove(sdp.AttrKeyRTCPMux, "rtcp-mux-only")
	return nil
}

// DemuxRTCP takes rtcp-mux off m-line i and announces RTCP on its own port (a=rtcp, RFC 3605), for an endpoint
// that wants RTP and RTCP apart. addr is written into a=rtcp when valid.
func DemuxRTCP(b *Body, i int, rtcpPort uint16, addr netip.Addr) error {
	s, err := b.media(i)
	if err != nil {
		return err
	}
	if rtcpPort == 0 {
		return errorf("rtcp demux: no RTCP port")
	}
	s.Remove(sdp.AttrKeyRTCPMux, "rtcp-mux-only")
	v := strconv.Itoa(int(rtcpPort))
	if addr.IsValid() {
		typ := "IP4"
		if addr.Unmap().Is6() {
			typ = "IP6"
		}
		v += " IN " + typ + " " + addr.Unmap().String()
	}
	s.Set("rtcp", v)
	return nil
}

// EnsureMid gives every m-line without a=mid one ("0", "1", ... skipping mids in use), as rtpengine's
// generate-mid does, and returns the mids in m-line order.
func EnsureMid(b *Body) []string {
	used := map[string]bool{}
	for i := range b.Media {
		if m, ok := b.Media[i].Get(sdp.AttrKeyMID); ok {
			used[m] = true
		}
	}
	next := 0
	mids := make([]string, len(b.Media))
	for i := range b.Media {
		if m, ok := b.Media[i].Get(sdp.AttrKeyMID); ok {
			mids[i] = m
			continue
		}
		for used[strconv.Itoa(next)] {
			next++
		}
		mids[i] = strconv.Itoa(next)
		used[mids[i]] = true
		b.Media[i].Add(sdp.AttrKeyMID, mids[i])
	}
	return mids
}

// SetBundle replaces the a=group:BUNDLE lines with one group of mids, or none when mids is empty.
func SetBundle(b *Body, mids []string) {
	b.Session.Lines = filter(b.Session.Lines, func(l Line) bool {
		a := attr(l.Value)
		return l.Type != 'a' || a.Key != sdp.AttrKeyGroup || !strings.HasPrefix(a.Value, "BUNDLE")
	})
	if len(mids) > 0 {
		b.Session.Add(sdp.AttrKeyGroup, "BUNDLE "+strings.Join(mids, " "))
	}
}

// Reject refuses m-line i the way RFC 3264 section 6 and RFC 8843 section 7.3.3 say: port 0, formats kept,
// c= kept, every attribute but a=mid, rtpmap and fmtp dropped, and its mid taken out of the BUNDLE groups (a group left
// empty goes).
func Reject(b *Body, i int) error {
	s, err := b.media(i)
	if err != nil {
		return err
	}
	mid, hasMid := s.Get(sdp.AttrKeyMID)
	f := s.mline()
	f[1] = "0"
	s.setMLine(f)
	keep := []string{sdp.AttrKeyMID, "rtpmap", "fmtp"}
	s.Lines = filter(s.Lines, func(l Line) bool {
		switch l.Type {
		case 'm', 'i', 'c':
			return true
		case 'a':
			return contains(keep, attr(l.Value).Key)
		}
		return false
	})
	if !hasMid {
		return nil
	}
	var lines []Line
	for _, l := range b.Session.Lines {
		a := attr(l.Value)
		if l.Type == 'a' && a.Key == sdp.AttrKeyGroup && strings.HasPrefix(a.Value, "BUNDLE") {
			g := strings.Fields(a.Value)
			out := []string{}
			for _, m := range g[1:] {
				if m != mid {
					out = append(out, m)
				}
			}
			if len(out) == 0 {
				continue
			}
			l.Value = sdp.AttrKeyGroup + ":BUNDLE " + strings.Join(out, " ")
		}
		lines = append(lines, l)
	}
	b.Session.Lines = lines
	return nil
}

// AudioOnly shapes an offer into what the relay bridges today: the first audio m-line that is not already
// rejected is kept, every other m-line is rejected (Reject), mids are made sure of (EnsureMid), and the BUNDLE
// group, if the body had one, holds the kept mid alone. It returns the kept m-line's index, or an error when
// there is no audio to keep.
func AudioOnly(b *Body) (int, error) {
	o, err := Describe(b)
	if err != nil {
		return -1, err
	}
	keep := -1
	for _, m := range o.Media {
		if m.Type == "audio" && m.Port != 0 {
			keep = m.Index
			break
		}
	}
	if keep < 0 {
		return -1, errorf("no audio m-line to bridge")
	}
	mids := EnsureMid(b)
	for i := range b.Media {
		if i != keep {
			if err := Reject(b, i); err != nil {
				return -1, err
			}
		}
	}
	if len(o.Bundles) > 0 {
		SetBundle(b, []string{mids[keep]})
	}
	return keep, nil
}
