package webrtcpeer

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"sipxdp/relay/srtpleg"
	"sipxdp/sipd/webrtcsdp"
)

// codec is one format the peer offers, as a browser announces it.
type codec struct {
	pt           string
	rtpmap, fmtp string
}

// offerCodecs are Chrome's audio formats that a SIP phone can meet: opus, G.711 and DTMF, in Chrome's order.
var offerCodecs = []codec{
	{"111", "opus/48000/2", "minptime=10;useinbandfec=1"},
	{"0", "PCMU/8000", ""},
	{"8", "PCMA/8000", ""},
	{"101", "telephone-event/8000", ""},
}

// media is what one audio m-line says about us.
type media struct {
	mid    string
	bundle bool
	codecs []codec
	setup  string
	// rejected is an m-line of the offer that the answer turns down; kind and proto are its m= fields.
	rejected    bool
	kind, proto string
}

// Offer is an SDP offer for one sendrecv audio m-line, shaped like Chrome's (the Chrome offer in
// sipd/webrtcsdp/testdata): UDP/TLS/RTP/SAVPF, one host candidate, the certificate's
// sha-256 fingerprint, a=setup:actpass, a=mid:0 in a BUNDLE group, and rtcp-mux.
func (p *Peer) Offer() []byte {
	p.mu.Lock()
	if !p.connecting {
		p.setup = webrtcsdp.SetupActpass
	}
	p.mu.Unlock()
	return p.describe([]media{{mid: "0", bundle: true, codecs: offerCodecs, setup: webrtcsdp.SetupActpass}})
}

// Answer answers an offer such as the relay sends toward a browser: its first audio m-line (which must be
// UDP/TLS/RTP/SAVPF) is accepted with PCMU if offered, else the first offered format of ours, plus the offer's
// telephone-event/8000; every other m-line is rejected with port 0. The DTLS role follows RFC 5763 section 5:
// active against actpass or passive, passive against active.
func (p *Peer) Answer(offer []byte) ([]byte, error) {
	b, o, at, err := readAudio(offer)
	if err != nil {
		return nil, fmt.Errorf("webrtcpeer: offer: %w", err)
	}
	m := o.Media[at]
	codecs, err := chooseCodecs(m.Formats, b.Media[at].All("rtpmap"))
	if err != nil {
		return nil, fmt.Errorf("webrtcpeer: offer: %w", err)
	}
	setup, err := webrtcsdp.AnswerSetup(m.Setup, "")
	if err != nil {
		return nil, fmt.Errorf("webrtcpeer: offer: %w", err)
	}
	p.mu.Lock()
	if p.connecting {
		p.mu.Unlock()
		return nil, fmt.Errorf("webrtcpeer: Answer after Connect")
	}
	p.setup = setup
	p.mu.Unlock()
	bundled := false
	for _, g := range o.Bundles {
		bundled = bundled || m.Mid != "" && slices.Contains(g, m.Mid)
	}
	ms := make([]media, len(o.Media))
	for i, x := range o.Media {
		if i != at {
			// RFC 3264 section 6: a rejected stream keeps its place, with port 0 and one of the offered formats.
			f := "0"
			if len(x.Formats) > 0 {
				f = x.Formats[0]
			}
			ms[i] = media{mid: x.Mid, rejected: true, kind: x.Type, proto: x.Proto, codecs: []codec{{pt: f}}}
		}
	}
	ms[at] = media{mid: m.Mid, bundle: bundled, codecs: codecs, setup: setup}
	return p.describe(ms), nil
}

// readAudio parses body and finds its first audio m-line with a port, which must be a WebRTC one.
func readAudio(body []byte) (*webrtcsdp.Body, webrtcsdp.Offer, int, error) {
	b, err := webrtcsdp.Parse(body)
	if err != nil {
		return nil, webrtcsdp.Offer{}, 0, err
	}
	o, err := webrtcsdp.Describe(b)
	if err != nil {
		return nil, o, 0, err
	}
	at := audioLine(o)
	if at < 0 {
		return nil, o, 0, fmt.Errorf("no audio m-line with a port")
	}
	if m := o.Media[at]; !m.WebRTC() {
		return nil, o, 0, fmt.Errorf("audio m-line is %s, not %s", m.Proto, webrtcsdp.ProtoDTLS)
	}
	return b, o, at, nil
}

// audioLine is the index of the first audio m-line that is not rejected, or -1.
func audioLine(o webrtcsdp.Offer) int {
	for i, m := range o.Media {
		if m.Type == "audio" && m.Port != 0 {
			return i
		}
	}
	return -1
}

// chooseCodecs picks the answer's formats from the offer's (keeping the offer's payload types): PCMU when
// offered, as the phone side most likely speaks it, else the first offered format we know by name; plus
// telephone-event/8000 when offered.
func chooseCodecs(formats, rtpmaps []string) ([]codec, error) {
	names := map[string]string{"0": "PCMU/8000", "8": "PCMA/8000"} // static payload types (RFC 3551)
	for _, v := range rtpmaps {
		pt, enc, ok := strings.Cut(v, " ")
		if ok {
			names[pt] = strings.TrimSpace(enc)
		}
	}
	known := func(pt string) (codec, bool) {
		for _, c := range offerCodecs {
			if sameEncoding(names[pt], c.rtpmap) {
				return codec{pt: pt, rtpmap: names[pt], fmtp: c.fmtp}, true
			}
		}
		return codec{}, false
	}
	var out []codec
	if slices.Contains(formats, "0") {
		c, _ := known("0")
		out = append(out, c)
	} else {
		for _, f := range formats {
			if c, ok := known(f); ok && !strings.HasPrefix(strings.ToLower(c.rtpmap), "telephone-event") {
				out = append(out, c)
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no common audio format in %q", formats)
	}
	for _, f := range formats {
		if sameEncoding(names[f], "telephone-event/8000") {
			out = append(out, codec{pt: f, rtpmap: names[f]})
			break
		}
	}
	return out, nil
}

// sameEncoding compares rtpmap encodings without regard to case, with one channel the default (Firefox writes
// "telephone-event/8000/1", Chrome "telephone-event/8000"; RFC 4566 section 6).
func sameEncoding(a, b string) bool {
	norm := func(s string) string { return strings.TrimSuffix(strings.ToLower(s), "/1") }
	return a != "" && norm(a) == norm(b)
}

// describe writes our SDP: the session part, then one section per media.
func (p *Peer) describe(ms []media) []byte {
	ip, wildcard := "IP4", "0.0.0.0"
	if p.local.Addr().Is6() {
		ip, wildcard = "IP6", "::"
	}
	var sb strings.Builder
	w := func(format string, args ...any) {
		fmt.Fprintf(&sb, format, args...)
		sb.WriteString("\r\n")
	}
	w("v=0")
	w("o=- %d 2 IN %s %s", p.sessID, ip, p.local.Addr())
	w("s=-")
	w("t=0 0")
	var bundle []string
	for _, m := range ms {
		if !m.rejected && m.bundle && m.mid != "" {
			bundle = append(bundle, m.mid)
		}
	}
	if len(bundle) > 0 {
		w("a=group:BUNDLE %s", strings.Join(bundle, " "))
	}
	w("a=extmap-allow-mixed")
	w("a=msid-semantic: WMS")
	for _, m := range ms {
		pts := make([]string, len(m.codecs))
		for j, c := range m.codecs {
			pts[j] = c.pt
		}
		if m.rejected {
			w("m=%s 0 %s %s", m.kind, m.proto, strings.Join(pts, " "))
			w("c=IN %s %s", ip, p.local.Addr())
			if m.mid != "" {
				w("a=mid:%s", m.mid)
			}
			continue
		}
		w("m=audio %d %s %s", p.local.Port(), webrtcsdp.ProtoDTLS, strings.Join(pts, " "))
		w("c=IN %s %s", ip, p.local.Addr())
		w("a=rtcp:9 IN %s %s", ip, wildcard)
		w("a=candidate:%s generation 0", webrtcsdp.Candidate(p.local.Addr(), p.local.Port(), 1, 0))
		w("a=ice-ufrag:%s", p.ufrag)
		w("a=ice-pwd:%s", p.pwd)
		w("a=ice-options:trickle")
		w("a=fingerprint:%s", p.fp)
		w("a=setup:%s", m.setup)
		if m.mid != "" {
			w("a=mid:%s", m.mid)
		}
		w("a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level")
		w("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid")
		w("a=sendrecv")
		w("a=rtcp-mux")
		w("a=rtcp-rsize")
		for _, c := range m.codecs {
			if c.rtpmap != "" {
				w("a=rtpmap:%s %s", c.pt, c.rtpmap)
			}
			if c.fmtp != "" {
				w("a=fmtp:%s %s", c.pt, c.fmtp)
			}
		}
	}
	return []byte(sb.String())
}

// remoteDesc is what Connect needs from the remote SDP.
type remoteDesc struct {
	ufrag, pwd  string
	fingerprint webrtcsdp.Fingerprint
	setup       string
	addr        netip.AddrPort
}

// parseRemote reads the remote's ICE credentials, DTLS fingerprint and setup, and the address to check: its
// highest-priority UDP candidate for RTP (component 1) of our address family, or c= and the m= port when it
// announces none. Everything but the candidates comes from webrtcsdp.Describe.
func parseRemote(body []byte, v4 bool) (remoteDesc, error) {
	var d remoteDesc
	b, o, at, err := readAudio(body)
	if err != nil {
		return d, err
	}
	m := o.Media[at]
	if m.Ufrag == "" || m.Pwd == "" {
		return d, fmt.Errorf("no a=ice-ufrag or a=ice-pwd")
	}
	d.ufrag, d.pwd, d.setup = m.Ufrag, m.Pwd, m.Setup
	if len(m.Fingerprints) == 0 {
		return d, fmt.Errorf("no a=fingerprint")
	}
	d.fingerprint = m.Fingerprints[0]
	for _, f := range m.Fingerprints {
		if f.Hash == "sha-256" { // what browsers use, and what srtpleg checks most surely
			d.fingerprint = f
			break
		}
	}
	best := uint32(0)
	for _, v := range b.Media[at].All("candidate") {
		a, prio, ok := parseCandidate(v)
		if ok && a.Addr().Is4() == v4 && (!d.addr.IsValid() || prio > best) {
			d.addr, best = a, prio
		}
	}
	if !d.addr.IsValid() {
		c, ok := connectionAddr(b, at)
		if !ok || c.Is4() != v4 || c.IsUnspecified() {
			return d, fmt.Errorf("no usable UDP candidate or c= address for an IPv%d socket", map[bool]int{true: 4, false: 6}[v4])
		}
		d.addr = netip.AddrPortFrom(c, m.Port)
	}
	return d, nil
}

// parseCandidate reads an a=candidate value (RFC 8839 section 5.1: foundation, component, transport, priority,
// address, port, "typ", type, extensions) and reports a UDP candidate for component 1 with an IP address
// (an mDNS name cannot be checked without a resolver, which a relay never announces). pion/ice has a parser,
// but it would link the whole ICE agent into the load generator for these five fields.
func parseCandidate(v string) (netip.AddrPort, uint32, bool) {
	f := strings.Fields(v)
	if len(f) < 6 || f[1] != "1" || !strings.EqualFold(f[2], "udp") {
		return netip.AddrPort{}, 0, false
	}
	prio, err := strconv.ParseUint(f[3], 10, 32)
	if err != nil {
		return netip.AddrPort{}, 0, false
	}
	a, err := netip.ParseAddr(f[4])
	if err != nil || a.Zone() != "" || a.IsUnspecified() {
		return netip.AddrPort{}, 0, false
	}
	port, err := strconv.ParseUint(f[5], 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, 0, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), uint32(prio), true
}

// connectionAddr is the c= address of media i, or the session's (RFC 4566 section 5.7: "IN IP4 <addr>[/ttl]").
func connectionAddr(b *webrtcsdp.Body, i int) (netip.Addr, bool) {
	for _, s := range []*webrtcsdp.Section{&b.Media[i], &b.Session} {
		for _, l := range s.Lines {
			if l.Type != 'c' {
				continue
			}
			f := strings.Fields(l.Value)
			if len(f) != 3 || f[0] != "IN" {
				return netip.Addr{}, false
			}
			host, _, _ := strings.Cut(f[2], "/")
			a, err := netip.ParseAddr(host)
			if err != nil || (f[1] == "IP4") != a.Is4() {
				return netip.Addr{}, false
			}
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// dtlsRole is our DTLS role from our a=setup and the remote's (RFC 5763 section 5, RFC 4145 section 4): after
// an offer of actpass the answer decides; after our answer, what we answered.
func dtlsRole(ours, theirs string) (srtpleg.Role, error) {
	switch ours {
	case webrtcsdp.SetupActive:
		return srtpleg.Client, nil
	case webrtcsdp.SetupPassive:
		return srtpleg.Server, nil
	case webrtcsdp.SetupActpass:
		switch theirs {
		case webrtcsdp.SetupActive:
			return srtpleg.Server, nil
		case webrtcsdp.SetupPassive:
			return srtpleg.Client, nil
		}
		return 0, fmt.Errorf("answer's a=setup:%s must be active or passive against our actpass", theirs)
	}
	return 0, fmt.Errorf("call Offer or Answer before Connect")
}
