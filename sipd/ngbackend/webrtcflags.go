package ngbackend

import (
	"slices"
	"strings"

	"sipxdp/ng"
	"sipxdp/sipd/media"
)

// The ICE, DTLS, SDES and RTCP-attribute flags of rtpengine's NG control
// protocol documentation (offer: "ICE", "ICE-lite", "DTLS",
// "DTLS-fingerprint", "SDES", "rtcp-mux"; offer flags: "reject ICE",
// "trickle ICE", "recrypt", "pad crypto", "no-tls-id", "strip extmap",
// "full rtcp attribute", "no rtcp attribute", "WebRTC"), read as
// rtpengine's call_flags.c parses them. Those that choose what the relay
// terminates go into media.Options; those that only shape the lines of
// the SDP the relay writes are edits of that SDP (sdpFlagEdits).

// webrtcOptions reads the flags that choose what the relay terminates.
func webrtcOptions(r *ng.Request, o *media.Options) {
	// DTLS-reverse is the same list as DTLS (call_flags.c).
	for _, k := range []string{"dtls", "dtls-reverse"} {
		if v, ok := r.Flags[k]; ok {
			o.DTLS = strings.ToLower(v)
		}
		for _, v := range []string{"passive", "active", "off", "no", "disable", "disabled"} {
			if _, ok := r.Flags[k+"-"+v]; ok {
				o.DTLS = v
			}
		}
	}
	if o.DTLS == "no" || o.DTLS == "disable" || o.DTLS == "disabled" {
		o.DTLS = "off"
	}
	if v, ok := r.Flags["sdes"]; ok && slices.Contains([]string{"off", "no", "disable"}, strings.ToLower(v)) {
		o.SDESOff = true
	}
	for _, k := range []string{"sdes-off", "sdes-no", "sdes-disable"} {
		if _, ok := r.Flags[k]; ok {
			o.SDESOff = true
		}
	}
	o.FingerprintHash = r.Flags["dtls-fingerprint"]
	if r.Command == "offer" {
		_, o.RejectICE = r.Flags["reject-ice"]
		_, o.Recrypt = r.Flags["recrypt"]
	}
	_, o.SDESLifetime = r.Flags["sdes-lifetime"]
	if ok := sdesSuites(r); ok != nil {
		o.SDESSuite = ok
	}
}

// sdesSuites is what SDES-only-SUITE and SDES-no-SUITE allow, nil when
// neither is given. only wins over no (rtpengine's docs: "This takes
// precedence over the SDES-no- flag(s)").
func sdesSuites(r *ng.Request) func(string) bool {
	var only, no []string
	for k := range r.Flags {
		switch {
		case strings.HasPrefix(k, "sdes-only-"):
			only = append(only, k[len("sdes-only-"):])
		case strings.HasPrefix(k, "sdes-no-"):
			no = append(no, k[len("sdes-no-"):])
		}
	}
	switch {
	case len(only) > 0:
		return func(s string) bool { return slices.Contains(only, suiteKey(s)) }
	case len(no) > 0:
		return func(s string) bool { return !slices.Contains(no, suiteKey(s)) }
	}
	return nil
}

// suiteKey is a crypto suite's name as ng normalises flag keys.
func suiteKey(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "-")) }

// webrtcFlag reports whether the backend reads k (see honoured).
func webrtcFlag(k string) bool {
	switch k {
	case "dtls-passive", "dtls-active", "dtls-off", "dtls-no", "dtls-disable", "dtls-disabled",
		"dtls-reverse", "dtls-reverse-passive", "dtls-reverse-active", "dtls-reverse-off", "dtls-reverse-no",
		"dtls-reverse-disable", "dtls-reverse-disabled", "dtls-fingerprint",
		"sdes-off", "sdes-no", "sdes-disable", "sdes-lifetime",
		"ice-lite", "trickle-ice", "reject-ice", "recrypt", "no-tls-id", "webrtc",
		"strip-extmap", "full-rtcp-attribute", "no-rtcp-attribute":
		return true
	}
	return strings.HasPrefix(k, "sdes-only-") || strings.HasPrefix(k, "sdes-no-") || strings.HasPrefix(k, "extmap-strip-")
}

// sdpFlagEdits applies the flags that shape lines of the SDP the relay
// writes, m-section by m-section:
//
//   - strip extmap and extmap's strip list: a=extmap lines go ("all", or
//     those of the named extensions);
//   - no rtcp attribute: a=rtcp goes; full rtcp attribute: a=rtcp gets
//     the address (sdp.c's insert_rtcp_attr: "IN IP4 addr" of the
//     m-section's c=, else the session's);
//   - rtcp-mux reject, in an offer without rtcp-mux offer or require:
//     a=rtcp-mux goes, so the answerer does not take it and the answer
//     to the offerer does not carry it (call.c's __rtcp_mux_logic);
//   - trickle ICE, in an offer: each m-section with ICE credentials gets
//     a=ice-options:trickle (the relay, ICE-lite, gathers nothing later,
//     so it sends no trickled candidates, which RFC 8838 allows);
//   - SDES-no-SUITE and SDES-only-SUITE, in an offer: a=crypto lines of
//     other suites go (what passes end to end, as what the relay makes);
//   - no-tls-id: a=tls-id goes.
func sdpFlagEdits(r *ng.Request, body []byte) []byte {
	offer := r.Command == "offer"
	_, stripAll := r.Flags["strip-extmap"]
	if _, ok := r.Flags["extmap-strip-all"]; ok {
		stripAll = true
	}
	_, noRTCP := r.Flags["no-rtcp-attribute"]
	_, fullRTCP := r.Flags["full-rtcp-attribute"]
	_, noTLSID := r.Flags["no-tls-id"]
	_, trickle := r.Flags["trickle-ice"]
	trickle = trickle && offer
	rejectMux := offer && slices.Contains(r.RTCPMux, "reject") &&
		!slices.Contains(r.RTCPMux, "offer") && !slices.Contains(r.RTCPMux, "require")
	var suiteOK func(string) bool
	if offer {
		suiteOK = sdesSuites(r)
	}
	hasStrip := false
	for k := range r.Flags {
		if strings.HasPrefix(k, "extmap-strip-") {
			hasStrip = true
		}
	}
	if !stripAll && !hasStrip && !noRTCP && !fullRTCP && !noTLSID && !trickle && !rejectMux && suiteOK == nil {
		return body
	}
	// Each line keeps its own line end (SDP from the wild mixes them).
	type line struct{ text, end string }
	var out []line
	sessionConn, mediaConn := "", ""
	inMedia := false
	// Per m-section: where its ICE credentials are, and whether it has
	// a=ice-options, for trickle.
	ufragAt, hasOptions := -1, false
	flushTrickle := func() {
		if trickle && ufragAt >= 0 && !hasOptions {
			end := out[ufragAt].end
			if end == "" {
				end = "\r\n"
				out[ufragAt].end = end
			}
			out = slices.Insert(out, ufragAt+1, line{"a=ice-options:trickle", end})
		}
		ufragAt, hasOptions = -1, false
	}
	for _, raw := range strings.SplitAfter(string(body), "\n") {
		if raw == "" {
			continue
		}
		s := strings.TrimRight(raw, "\r\n")
		l := line{s, raw[len(s):]}
		switch {
		case strings.HasPrefix(s, "m="):
			flushTrickle()
			inMedia, mediaConn = true, ""
		case strings.HasPrefix(s, "c="):
			if inMedia {
				mediaConn = strings.TrimPrefix(s, "c=")
			} else {
				sessionConn = strings.TrimPrefix(s, "c=")
			}
		case strings.HasPrefix(s, "a=extmap:"):
			if stripAll || extmapStripped(r, s) {
				continue
			}
		case strings.HasPrefix(s, "a=rtcp:"):
			if noRTCP {
				continue
			}
			if f := strings.Fields(strings.TrimPrefix(s, "a=rtcp:")); fullRTCP && len(f) == 1 {
				conn := mediaConn
				if conn == "" {
					conn = sessionConn
				}
				if conn != "" {
					l.text = "a=rtcp:" + f[0] + " " + conn
				}
			}
		case s == "a=rtcp-mux":
			if rejectMux {
				continue
			}
		case strings.HasPrefix(s, "a=tls-id:"):
			if noTLSID {
				continue
			}
		case strings.HasPrefix(s, "a=crypto:"):
			if f := strings.Fields(s); suiteOK != nil && len(f) > 1 && !suiteOK(f[1]) {
				continue
			}
		case strings.HasPrefix(s, "a=ice-ufrag:"):
			if inMedia {
				ufragAt = len(out)
			}
		case strings.HasPrefix(s, "a=ice-options:"):
			if inMedia && trickle && !slices.Contains(strings.Fields(strings.TrimPrefix(s, "a=ice-options:")), "trickle") {
				l.text = s + " trickle"
			}
			hasOptions = hasOptions || inMedia
		}
		out = append(out, l)
	}
	flushTrickle()
	var b strings.Builder
	for _, l := range out {
		b.WriteString(l.text)
		b.WriteString(l.end)
	}
	return []byte(b.String())
}

// extmapStripped reports whether extmap's strip list names the
// extension of an a=extmap line ("a=extmap:1 URI" or "a=extmap:1/sendonly URI").
func extmapStripped(r *ng.Request, line string) bool {
	f := strings.Fields(line)
	if len(f) < 2 {
		return false
	}
	_, ok := r.Flags["extmap-strip-"+strings.ToLower(strings.NewReplacer(" ", "-", "_", "-").Replace(f[1]))]
	return ok
}
