package ngbackend

import (
	"slices"
	"sort"
	"strconv"
	"strings"

	"sipxdp/ng"
)

// Unsupported is the error an offer or answer gets under ng.strict when
// it asks for media work the relay does not do: transcoding, recording,
// media playback and the like. Its text, the NG reply's error-reason,
// names the flag and why ("transcoding not supported:
// codec-transcode-pcma"), so a proxy's script can send the call to a
// real rtpengine set instead.
type Unsupported struct {
	What string // "transcoding", "recording", ...
	Flag string // the flag as the relay read it (key, or key=value)
}

func (e *Unsupported) Error() string { return e.What + " not supported: " + e.Flag }

// Strict turns ng.strict on or off (it is off in a new Backend) and
// returns b. Set it before the backend serves.
func (b *Backend) Strict(on bool) *Backend {
	b.strict = on
	return b
}

// needsMedia is one flag the relay cannot honour because it would have
// to decode, generate or record media. Each names where rtpengine
// documents it (the offer message unless said otherwise, in
// https://github.com/sipwise/rtpengine/blob/master/docs/ng_control_protocol.md)
// and follows rtpengine's parser, call_flags.c
// (https://github.com/sipwise/rtpengine/blob/master/daemon/call_flags.c), for the
// commands it applies to and the values that turn it on. Keys are as
// ng.ParseRequest normalises them: lower case, '-' for ' ' and '_'.
type needsMedia struct {
	// key matches the flag key; with prefix, also key-ANYTHING (the
	// flags-list form of a list or dictionary: codec-transcode-PCMA).
	key    string
	prefix bool
	// list: key-ANYTHING entries are list members (codec-transcode-pcma),
	// whose value is only their position in the list (ng's folding of
	// a dictionary), not something the refusal should quote.
	list bool
	// offerOnly: rtpengine reads it in an offer only and ignores it in
	// an answer.
	offerOnly bool
	// on reports whether the value (the flag's "=value", "" when bare)
	// asks for the work; nil means any value does.
	on   func(v string) bool
	what string
	doc  string
}

// oneOf is true for the listed values (case ignored).
func oneOf(vals ...string) func(string) bool {
	return func(v string) bool {
		return slices.ContainsFunc(vals, func(s string) bool { return strings.EqualFold(s, v) })
	}
}

// nonZero is true for an integer other than 0: rtpengine's "0 leaves it
// off" for ptime, delay buffer and DTMF delay. A value that is not a
// number is taken as asking (rtpengine would read it as 0, but the
// script plainly wanted something).
func nonZero(v string) bool {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	return err != nil || n != 0
}

const (
	whatTranscoding = "transcoding"
	whatRecording   = "recording"
	whatPlayback    = "media playback"
)

// mediaFlags is what strict mode refuses. Left out on purpose, as they
// do no media work by themselves: codec strip/offer/except/mask (SDP
// edits), T.38 stop and its no-* options (they only tune a gateway that
// decode or force would start), audio-player=transcoding (the player
// runs only when transcoding does), recording-file/-dir/-pattern,
// metadata, exclude-recording, discard-recording (they only tune a
// recording that record-call or start recording would ask for), DTMF
// security modes and triggers (they only tune block DTMF).
var mediaFlags = []needsMedia{
	{key: "codec-transcode", prefix: true, list: true, offerOnly: true, what: whatTranscoding, doc: "offer: codec manipulations, transcode"},
	{key: "transcode", prefix: true, list: true, offerOnly: true, what: whatTranscoding, doc: "offer: codec manipulations, transcode (flags form transcode-, call_flags.c)"},
	{key: "codec-accept", prefix: true, list: true, offerOnly: true, what: whatTranscoding, doc: "offer: codec manipulations, accept"},
	{key: "codec-consume", prefix: true, list: true, offerOnly: true, what: whatTranscoding, doc: "offer: codec manipulations, consume"},
	{key: "codec-set", prefix: true, list: true, offerOnly: true, what: whatTranscoding, doc: "offer: codec manipulations, set"},
	{key: "codec-ignore", prefix: true, list: true, offerOnly: true, what: whatTranscoding, doc: "offer: codec manipulations, ignore (an ignored codec the answerer accepts is transcoded)"},
	{key: "always-transcode", offerOnly: true, what: whatTranscoding, doc: "offer flags: always transcode"},
	{key: "force-transcoding", what: whatTranscoding, doc: "offer flags: force transcoding"},
	{key: "ptime", offerOnly: true, on: nonZero, what: "repacketization (" + whatTranscoding + ")", doc: "offer: ptime"},
	{key: "ptime-reverse", offerOnly: true, on: nonZero, what: "repacketization (" + whatTranscoding + ")", doc: "offer: ptime-reverse"},
	{key: "reverse-ptime", offerOnly: true, on: nonZero, what: "repacketization (" + whatTranscoding + ")", doc: "offer: ptime-reverse"},
	// OpenSIPS's rtpengine module sends its repacketize=NN flag as this
	// key (its rtpengine.c); a relay that cannot repacketize must not
	// pretend to.
	{key: "repacketize", offerOnly: true, on: nonZero, what: "repacketization (" + whatTranscoding + ")", doc: "OpenSIPS rtpengine module: repacketize"},
	{key: "t.38", on: oneOf("decode", "force"), offerOnly: true, what: "T.38 gateway (" + whatTranscoding + ")", doc: "offer: T.38"},
	{key: "t38", on: oneOf("decode", "force"), offerOnly: true, what: "T.38 gateway (" + whatTranscoding + ")", doc: "offer: T.38"},
	{key: "t.38-decode", offerOnly: true, what: "T.38 gateway (" + whatTranscoding + ")", doc: "offer: T.38"},
	{key: "t.38-force", offerOnly: true, what: "T.38 gateway (" + whatTranscoding + ")", doc: "offer: T.38"},
	{key: "t38-decode", offerOnly: true, what: "T.38 gateway (" + whatTranscoding + ")", doc: "offer: T.38"},
	{key: "t38-force", offerOnly: true, what: "T.38 gateway (" + whatTranscoding + ")", doc: "offer: T.38"},
	{key: "detect-dtmf", what: "in-band DTMF detection (" + whatTranscoding + ")", doc: "offer flags: detect DTMF"},
	{key: "block-dtmf", what: "DTMF blocking", doc: "offer flags: block DTMF"},
	{key: "dtmf-delay", on: nonZero, what: "DTMF delay", doc: "offer: DTMF-delay"},
	{key: "delay-buffer", on: nonZero, what: "delay buffer", doc: "offer: delay-buffer"},
	{key: "generate-rtcp", on: oneOf("", "on"), what: "RTCP generation", doc: "offer: generate RTCP"},
	{key: "media-echo", on: oneOf("blackhole", "sinkhole", "forward", "fwd", "fw", "backward", "backwards", "reverse", "back", "bkw", "bk", "both"),
		what: "media echo", doc: "offer: media echo"},
	{key: "inject-dtmf", what: "DTMF injection (" + whatPlayback + ")", doc: "offer flags: inject DTMF; play DTMF message"},
	{key: "audio-player", on: oneOf("force", "forced", "always", "everything"), what: whatPlayback, doc: "offer: audio player"},
	{key: "moh", prefix: true, what: "music on hold (" + whatPlayback + ")", doc: "Music on hold functionality (MoH)"},
	{key: "recording-announcement", what: whatPlayback, doc: "offer flags: recording announcement"},
	{key: "record-call", on: oneOf("", "yes", "on"), what: whatRecording, doc: "offer: record call; offer flags: record call"},
	{key: "recording-vsc", what: whatRecording, doc: "call_flags.c: recording-vsc (recording started by DTMF codes)"},
	{key: "siprec", what: whatRecording, doc: "call_flags.c: SIPREC"},
	// OSRTP offer and accept turn a plain RTP/AVP m-line into
	// opportunistic SRTP, which rtpengine calls RTP/SRTP transcoding; the
	// relay bridges SRTP only by profile (RTP/SAVP, UDP/TLS/RTP/SAVPF) and
	// passes an OSRTP offer's a=crypto through, rtpengine's default.
	{key: "osrtp", on: oneOf("offer", "offer-rfc", "offer-legacy", "accept", "accept-rfc", "accept-legacy"),
		what: "OSRTP (RTP/SRTP " + whatTranscoding + ")", doc: "offer: OSRTP"},
	{key: "osrtp-offer", prefix: true, what: "OSRTP (RTP/SRTP " + whatTranscoding + ")", doc: "offer: OSRTP (flags form OSRTP-, call_flags.c)"},
	{key: "osrtp-accept", prefix: true, what: "OSRTP (RTP/SRTP " + whatTranscoding + ")", doc: "offer: OSRTP (flags form OSRTP-, call_flags.c)"},
	// extmap mask removes the extensions from each RTP packet's header
	// while forwarding, a rewrite of the media (the kernel path moves
	// packets unchanged).
	{key: "extmap-mask", prefix: true, list: true, what: "RTP header extension removal", doc: "offer: extmap, mask"},
}

// unsupported returns the first flag of r (in sorted order, so the reply
// is the same every time) that needs media work the relay does not do,
// or nil.
func unsupported(r *ng.Request) *Unsupported {
	keys := make([]string, 0, len(r.Flags))
	for k := range r.Flags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if f := needing(r.Command, k, r.Flags[k]); f != nil {
			flag := k
			if v := r.Flags[k]; v != "" && !(f.list && k != f.key) {
				flag += "=" + v
			}
			return &Unsupported{What: f.what, Flag: flag}
		}
	}
	return nil
}

// needing returns the rule the flag k=v of command breaks, or nil.
func needing(command, k, v string) *needsMedia {
	for i := range mediaFlags {
		f := &mediaFlags[i]
		if f.offerOnly && command != "offer" {
			continue
		}
		if k != f.key && !(f.prefix && strings.HasPrefix(k, f.key+"-")) {
			continue
		}
		if f.on == nil || f.on(v) {
			return f
		}
	}
	return nil
}

// strictCheck refuses r under ng.strict when it needs media work; with
// strict off such flags are only logged at debug (with the other flags
// the relay ignores).
func (b *Backend) strictCheck(r *ng.Request) error {
	if !b.strict {
		return nil
	}
	if u := unsupported(r); u != nil {
		b.log.Debug("ng: refused under ng.strict", "command", r.Command, "call_id", r.CallID, "reason", u.Error())
		return u
	}
	return nil
}
