package ng

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxMessageSize is the largest NG message (cookie, space and bencoded
// dictionary) the server takes: a UDP datagram's worth.
const MaxMessageSize = 64 << 10

// maxCookieLen bounds the cookie so the reply cache stays small. Clients
// use short random tokens.
const maxCookieLen = 256

// splitCookie splits "<cookie> <body>". ok is false when there is no
// usable cookie, in which case nothing can be replied.
func splitCookie(msg []byte) (cookie string, body []byte, ok bool) {
	i := bytes.IndexByte(msg, ' ')
	if i <= 0 || i > maxCookieLen {
		return "", nil, false
	}
	return string(msg[:i]), msg[i+1:], true
}

// normKey folds a dictionary key or flag name the way rtpengine compares
// them: case-insensitive, with ' ', '_' and '-' alike (all become '-').
func normKey(k string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '_':
			return '-'
		}
		return r
	}, strings.ToLower(k))
}

// ParseRequest turns a decoded NG dictionary into a Request. Keys are
// normalised (see Request). Besides the Request's own fields:
//
//   - each "flags" entry goes into Flags: "key=value" as Flags[key] =
//     value, a bare flag as Flags[flag] = "", keys normalised;
//   - any other top-level key with a string or integer value is taken as a
//     flag with that value (Kamailio sends options such as
//     "address family": "IP6" or "record call": "yes" that way), and one
//     with a list of strings as one flag "key-entry" per entry
//     ("SDES": ["off"] is the flag "sdes-off"), as rtpengine reads them;
//   - the "codec" dictionary becomes flags "codec-<key>-<name>" (see
//     codecFlags), the form of the flags list;
//   - flags that name a field fill it when the dictionary did not:
//     "replace-origin" adds to Replace, "rtcp-mux-demux" to RTCPMux,
//     "ICE=remove" sets ICE, "RTP/AVP" and "transport-protocol=..." set
//     TransportProtocol;
//   - an "rtpp-flags" string (Kamailio sends one when rtpengine_*() gets
//     a second argument) first becomes the dictionary entries its flags
//     stand for, merged into d (see expandRTPPFlags), so its flags land
//     where the same flags sent as dictionary keys and list entries do.
//
// ignored lists the top-level keys (normalised) whose value could not be
// used (a dictionary, say, or a list holding one), for a debug log. err
// says what is wrong with the command: unknown command, missing or
// mistyped fields. r is never nil: on error it carries what was parsed,
// Command included.
func ParseRequest(d map[string]any) (r *Request, ignored []string, err error) {
	r = &Request{Flags: map[string]string{}}
	d, rtppErr := expandRTPPFlags(d)
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	seen := make(map[string]string, len(d))
	firstErr := rtppErr
	fail := func(e error) {
		if firstErr == nil {
			firstErr = e
		}
	}
	for _, k := range keys {
		v := d[k]
		nk := normKey(k)
		if prev, dup := seen[nk]; dup {
			fail(fmt.Errorf("keys %q and %q are the same key", prev, k))
			continue
		}
		seen[nk] = k
		var e error
		switch nk {
		case "command":
			var s string
			s, e = asString(nk, v)
			r.Command = strings.ToLower(s)
		case "call-id":
			r.CallID, e = asString(nk, v)
		case "from-tag":
			r.FromTag, e = asString(nk, v)
		case "to-tag":
			r.ToTag, e = asString(nk, v)
		case "via-branch":
			r.ViaBranch, e = asString(nk, v)
		case "sdp":
			var s string
			s, e = asString(nk, v)
			r.SDP = []byte(s)
		case "ice":
			var l []string
			l, e = asStrings(nk, v)
			for _, s := range l {
				iceEntry(r, s)
			}
		case "transport-protocol":
			r.TransportProtocol, e = asString(nk, v)
		case "sip-message-type":
			r.SIPMessageType, e = asString(nk, v)
		case "replace":
			r.Replace, e = asStrings(nk, v)
		case "direction":
			r.Direction, e = asStrings(nk, v)
		case "received-from":
			r.ReceivedFrom, e = asStrings(nk, v)
		case "rtcp-mux":
			r.RTCPMux, e = asStrings(nk, v)
		case "limit":
			r.Limit, e = asLimit(v)
		case "codec":
			if !codecFlags(r.Flags, v) {
				ignored = append(ignored, nk)
			}
		case "flags":
			var fl []string
			fl, e = asStrings(nk, v)
			for i, f := range fl {
				addFlag(r.Flags, f, i+1)
			}
		default:
			switch v := v.(type) {
			case string:
				r.Flags[nk] = v
			case int64:
				r.Flags[nk] = strconv.FormatInt(v, 10)
			case []any:
				l, err := asStrings(nk, v)
				if err != nil {
					ignored = append(ignored, nk)
					break
				}
				for _, s := range l {
					if s = normKey(s); s != "" {
						r.Flags[nk+"-"+s] = ""
					}
				}
			case map[string]any:
				if !addDictFlags(r.Flags, nk, v) {
					ignored = append(ignored, nk)
				}
			default:
				ignored = append(ignored, nk)
			}
		}
		if e != nil {
			fail(e)
		}
	}
	flagAliases(r)
	if !slices.Contains(commandNames, r.Command) || firstErr == nil {
		return r, ignored, checkCommand(r)
	}
	return r, ignored, firstErr
}

// addFlag adds one "flags" entry, pos its 1-based place in the list.
// Flags is a map, so a bare codec list member ("codec-offer-PCMA") keeps
// its place as its value, as codecFlags does for the codec dictionary:
// codec-offer's order is the order the codecs are put back in.
func addFlag(flags map[string]string, f string, pos int) {
	key, val, hasVal := strings.Cut(f, "=")
	if key = normKey(strings.TrimSpace(key)); key != "" {
		if !hasVal && codecListFlag(key) {
			val = strconv.Itoa(pos)
		}
		flags[key] = val
	}
}

// codecListFlag says whether key is a member of a codec list in the flags
// list's form, "codec-<op>-<name>" (rtpengine's NG control protocol
// documentation, "Optionally included codec manipulations").
func codecListFlag(key string) bool {
	op, ok := strings.CutPrefix(key, "codec-")
	if !ok {
		return false
	}
	_, name, ok := strings.Cut(op, "-")
	return ok && name != ""
}

var transportProtocols = []string{
	"RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF",
	"UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF",
}

// iceValues are the ICE modes; the other entries of an ICE list are
// flags (rtpengine's call_ng_flags_ice in call_flags.c: lite-*, trickle,
// ice2).
var iceValues = []string{"remove", "force", "default", "optional", "force-relay"}

// iceEntry reads one entry of the ICE key, a string or a list of them.
func iceEntry(r *Request, s string) {
	n := normKey(s)
	switch {
	case slices.Contains(iceValues, n):
		if r.ICE == "" {
			r.ICE = s
		}
	case n == "trickle":
		r.Flags["trickle-ice"] = ""
	case n == "lite":
		r.Flags["ice-lite"] = "forward"
	case n == "no-lite":
		r.Flags["ice-lite"] = "off"
	case strings.HasPrefix(n, "lite-"):
		r.Flags["ice-lite"] = strings.TrimPrefix(n, "lite-")
	case n != "":
		r.Flags["ice-"+n] = ""
	}
}

// webRTC expands rtpengine's WebRTC flag into the flags it stands for
// (ng_flags_webrtc in rtpengine's call_flags.h), leaving what the
// request set itself: transport-protocol UDP/TLS/RTP/SAVPF, ICE=force,
// trickle ICE, rtcp-mux offer and require, no rtcp attribute, SDES off,
// generate mid, bundle offer and require.
func webRTC(r *Request) {
	if _, ok := r.Flags["webrtc"]; !ok {
		return
	}
	if r.TransportProtocol == "" {
		r.TransportProtocol = "UDP/TLS/RTP/SAVPF"
	}
	if r.ICE == "" {
		r.ICE = "force"
	}
	for _, m := range []string{"offer", "require"} {
		if !slices.Contains(r.RTCPMux, m) {
			r.RTCPMux = append(r.RTCPMux, m)
		}
	}
	for _, f := range []string{"trickle-ice", "no-rtcp-attribute", "sdes-off", "generate-mid", "bundle-offer", "bundle-require"} {
		if _, ok := r.Flags[f]; !ok {
			r.Flags[f] = ""
		}
	}
}

// flagAliases fills fields from flags that mean the same thing.
func flagAliases(r *Request) {
	defer webRTC(r)
	keys := make([]string, 0, len(r.Flags))
	for k := range r.Flags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := r.Flags[k]
		switch {
		case k == "ice":
			iceEntry(r, v)
		case k == "transport-protocol" && r.TransportProtocol == "":
			r.TransportProtocol = v
		case strings.HasPrefix(k, "replace-") && v == "":
			if s := k[len("replace-"):]; !slices.Contains(r.Replace, s) {
				r.Replace = append(r.Replace, s)
			}
		case strings.HasPrefix(k, "rtcp-mux-") && v == "":
			if s := k[len("rtcp-mux-"):]; !slices.Contains(r.RTCPMux, s) {
				r.RTCPMux = append(r.RTCPMux, s)
			}
		default:
			for _, p := range transportProtocols {
				if k == strings.ToLower(p) && r.TransportProtocol == "" {
					r.TransportProtocol = p
				}
			}
		}
	}
}

// checkCommand checks the command and the fields it needs.
func checkCommand(r *Request) error {
	var need []string
	switch r.Command {
	case "":
		return fmt.Errorf("missing command")
	case "ping", "list", "statistics":
	case "delete", "query":
		need = []string{"call-id"}
	case "offer":
		need = []string{"call-id", "from-tag", "sdp"}
	case "answer":
		need = []string{"call-id", "from-tag", "to-tag", "sdp"}
	default:
		return unknownCommand(r.Command)
	}
	for _, n := range need {
		var empty bool
		switch n {
		case "call-id":
			empty = r.CallID == ""
		case "from-tag":
			empty = r.FromTag == ""
		case "to-tag":
			empty = r.ToTag == ""
		case "sdp":
			empty = len(r.SDP) == 0
		}
		if empty {
			return fmt.Errorf("missing %s", n)
		}
	}
	return nil
}

func asString(key string, v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	return "", fmt.Errorf("%s: want a string, have %s", key, typeName(v))
}

// asStrings takes a list of strings, or one string as a list of one.
func asStrings(key string, v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("%s: want a list of strings, have a %s in it", key, typeName(x))
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: want a list of strings, have %s", key, typeName(v))
}

func asLimit(v any) (int, error) {
	var n int64
	switch v := v.(type) {
	case int64:
		n = v
	case string:
		var err error
		if n, err = strconv.ParseInt(v, 10, 64); err != nil {
			return 0, fmt.Errorf("limit: %q is not a number", v)
		}
	default:
		return 0, fmt.Errorf("limit: want an integer, have %s", typeName(v))
	}
	if n < 0 || n > 1<<31-1 {
		return 0, fmt.Errorf("limit: %d out of range", n)
	}
	return int(n), nil
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case []any:
		return "a list"
	case map[string]any:
		return "a dictionary"
	}
	return fmt.Sprintf("%T", v)
}

// Replies.

func errorReply(reason string) map[string]any {
	return map[string]any{"result": "error", "error-reason": reason}
}

func okReply() map[string]any { return map[string]any{"result": "ok"} }

func unixSec(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// endpoint shapes an address as rtpengine does; ok is false for an unset
// one.
func endpoint(ap netip.AddrPort) (map[string]any, bool) {
	if !ap.IsValid() {
		return nil, false
	}
	a := ap.Addr().Unmap()
	family := "IPv4"
	if a.Is6() {
		family = "IPv6"
	}
	return map[string]any{"family": family, "address": a.String(), "port": int64(ap.Port())}, true
}

// addStats adds rtpengine's query shape ("created", "last signal",
// "tags", "totals") for cs to reply.
func addStats(reply map[string]any, cs CallStats) {
	type total struct{ packets, bytes, errors uint64 }
	var rtp, rtcp total
	tags := map[string]any{}
	for _, t := range cs.Tags {
		medias := []any{}
		for _, m := range t.Medias {
			streams := []any{}
			for _, s := range m.Streams {
				kind, tot := "RTP", &rtp
				if s.RTCP {
					kind, tot = "RTCP", &rtcp
				}
				tot.packets += s.Packets
				tot.bytes += s.Bytes
				tot.errors += s.Errors
				flags := []any{kind}
				if s.Kernel {
					flags = append(flags, "kernelized")
				}
				st := map[string]any{
					"local port":  int64(s.LocalPort),
					"last packet": unixSec(s.LastPacket),
					"flags":       flags,
					"stats": map[string]any{
						"packets": s.Packets, "bytes": s.Bytes, "errors": s.Errors,
					},
				}
				if ep, ok := endpoint(s.Endpoint); ok {
					st["endpoint"] = ep
				}
				if ep, ok := endpoint(s.Advertised); ok {
					st["advertised endpoint"] = ep
				}
				streams = append(streams, st)
			}
			medias = append(medias, map[string]any{
				"index":    int64(m.Index),
				"type":     m.Type,
				"protocol": m.Protocol,
				"streams":  streams,
			})
		}
		tag := map[string]any{
			"tag":     t.Tag,
			"created": unixSec(t.Created),
			"medias":  medias,
		}
		if t.InDialogueWith != "" {
			tag["in dialogue with"] = t.InDialogueWith
		}
		if t.Label != "" {
			tag["label"] = t.Label // as rtpengine's ng_stats_monologue
		}
		tags[t.Tag] = tag
	}
	reply["created"] = unixSec(cs.Created)
	reply["last signal"] = unixSec(cs.LastSignal)
	reply["tags"] = tags
	reply["totals"] = map[string]any{
		"RTP":  map[string]any{"packets": rtp.packets, "bytes": rtp.bytes, "errors": rtp.errors},
		"RTCP": map[string]any{"packets": rtcp.packets, "bytes": rtcp.bytes, "errors": rtcp.errors},
	}
}
