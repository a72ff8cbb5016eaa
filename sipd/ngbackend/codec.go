package ngbackend

import (
	"slices"
	"strconv"
	"strings"

	"sipxdp/ng"
	"sipxdp/sipd/sdprewrite"
)

// codecOps are the codec manipulations of one offer or answer, as
// rtpengine's NG control protocol documentation describes them under
// "Optionally included codec manipulations", done the way rtpengine's
// codec_store_strip, codec_store_offer and codec_store_check_empty (its
// codec.c, https://github.com/sipwise/rtpengine) do them. The relay does
// not transcode, so these are the manipulations that are pure SDP edits:
// strip, mask, except and offer.
type codecOps struct {
	// strip holds strip's names and, on an offer, mask's: without
	// transcoding, a masked codec the offerer keeps "accepting" could
	// only reach the answerer through a transcoder, so mask is strip.
	// rtpengine reads mask only in offers.
	strip []string
	// except holds the folded names that "all" and "full" leave in.
	except map[string]bool
	// offer holds the names to restore after a strip, in request order.
	// Without transcoding, offer cannot add a codec the sender did not
	// list: rtpengine's offer only re-adds codecs of the original list
	// ("identical to except"); adding one is transcode's job.
	offer []string
	// allowEmpty is "allow no codec media": an m-line left without codecs
	// is rejected (port 0) instead of getting its codecs back.
	allowEmpty bool
}

// codecOpsOf reads the manipulations from the flags: "codec-<op>-<name>"
// (the flags list's form, and the codec dictionary's as ng folds it, with
// the name's position as value) and "codec-<op>=<name>" (rtpp-flags).
func codecOpsOf(r *ng.Request, offer bool) codecOps {
	type entry struct {
		name string
		pos  int
	}
	lists := map[string][]entry{}
	for k, v := range r.Flags {
		for _, op := range []string{"strip", "mask", "except", "offer"} {
			p := "codec-" + op
			switch {
			case strings.HasPrefix(k, p+"-"):
				pos, _ := strconv.Atoi(v)
				lists[op] = append(lists[op], entry{k[len(p)+1:], pos})
			case k == p && v != "":
				lists[op] = append(lists[op], entry{v, 0})
			}
		}
	}
	names := func(op string) []string {
		l := lists[op]
		// The dictionary's order, then (for the flags list, whose order
		// the map has lost) by name, so the result is the same each time.
		slices.SortFunc(l, func(a, b entry) int {
			if (a.pos == 0) != (b.pos == 0) {
				return b.pos - a.pos // positioned first
			}
			if a.pos != b.pos {
				return a.pos - b.pos
			}
			return strings.Compare(a.name, b.name)
		})
		out := make([]string, len(l))
		for i, e := range l {
			out[i] = foldCodec(e.name)
		}
		return out
	}
	o := codecOps{strip: names("strip"), offer: names("offer")}
	if offer {
		o.strip = append(o.strip, names("mask")...)
	}
	if ex := names("except"); len(ex) > 0 {
		o.except = map[string]bool{}
		for _, n := range ex {
			o.except[n] = true
		}
	}
	_, o.allowEmpty = r.Flags["allow-no-codec-media"]
	return o
}

// foldCodec makes a codec name comparable: rtpengine looks codecs up
// case-insensitively (its codec_names table hashes with str_case_hash),
// and ng folds flag names so ('_' and ' ' become '-').
func foldCodec(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == ' ' {
			return '-'
		}
		return r
	}, strings.ToLower(strings.TrimSpace(s)))
}

// codecFlag says whether codec.go acts on a flag.
func codecFlag(k string) bool {
	for _, op := range []string{"strip", "mask", "except", "offer"} {
		if k == "codec-"+op || strings.HasPrefix(k, "codec-"+op+"-") {
			return true
		}
	}
	return k == "allow-no-codec-media"
}

func (o codecOps) none() bool { return len(o.strip) == 0 && len(o.offer) == 0 }

// matches says whether the codec goes by one of the names.
func matches(c sdprewrite.Codec, names map[string]bool) bool {
	for _, n := range c.Names() {
		if names[foldCodec(n)] {
			return true
		}
	}
	return false
}

// supplemental are the codecs rtpengine keeps at the end of the list
// (its codec_defs marked supplemental): a restored codec goes before them.
func supplemental(c sdprewrite.Codec) bool {
	e := strings.ToLower(c.Encoding)
	return e == "telephone-event" || e == "cn"
}

// apply returns what is left of one m-line's codecs.
func (o codecOps) apply(orig []sdprewrite.Codec) []sdprewrite.Codec {
	cur := slices.Clone(orig)
	for _, n := range o.strip {
		if n == "all" || n == "full" {
			cur = slices.DeleteFunc(cur, func(c sdprewrite.Codec) bool { return !matches(c, o.except) })
			continue
		}
		cur = slices.DeleteFunc(cur, func(c sdprewrite.Codec) bool { return matches(c, map[string]bool{n: true}) })
	}
	for _, n := range o.offer {
		name := map[string]bool{n: true}
		if slices.ContainsFunc(cur, func(c sdprewrite.Codec) bool { return matches(c, name) }) {
			continue // present: offer does not move it
		}
		for _, c := range orig {
			if !matches(c, name) || slices.ContainsFunc(cur, func(k sdprewrite.Codec) bool { return k.PT == c.PT }) {
				continue
			}
			at := slices.IndexFunc(cur, supplemental)
			if at < 0 {
				at = len(cur)
			}
			cur = slices.Insert(cur, at, c)
		}
	}
	return cur
}

// codecs returns the request's SDP with its codec manipulations done,
// before the controller points it at the relay. The relay forwards
// whatever payload type arrives, so a stripped codec is only gone from the
// SDP, as in rtpengine without transcoding. A body that does not parse is
// returned as it is, for the controller to refuse.
func (b *Backend) codecs(r *ng.Request, offer bool) []byte {
	o := codecOpsOf(r, offer)
	if o.none() {
		return r.SDP
	}
	all, err := sdprewrite.Codecs(r.SDP)
	if err != nil {
		return r.SDP
	}
	ms, err := sdprewrite.Parse(r.SDP)
	if err != nil {
		return r.SDP
	}
	edits := map[int]sdprewrite.FormatEdit{}
	for i, orig := range all {
		if len(orig) == 0 || ms[i].Port == 0 {
			continue // not RTP, no format, or already rejected: nothing to choose
		}
		cur := o.apply(orig)
		pts := make([]string, len(cur))
		for j, c := range cur {
			pts[j] = c.PT
		}
		switch {
		case len(cur) == 0 && o.allowEmpty:
			// A rejected m-line still needs a format (RFC 4566 section
			// 5.14); the first original one is the dummy.
			edits[i] = sdprewrite.FormatEdit{Formats: []string{orig[0].PT}, Reject: true}
		case len(cur) == 0:
			b.log.Warn("ng: codec manipulations leave an m-line without codecs; original codecs kept, as rtpengine does",
				"command", r.Command, "call_id", r.CallID, "m_line", i)
		case !slices.EqualFunc(cur, orig, func(a, b sdprewrite.Codec) bool { return a.PT == b.PT }):
			edits[i] = sdprewrite.FormatEdit{Formats: pts}
		}
	}
	if len(edits) == 0 {
		return r.SDP
	}
	out, err := sdprewrite.SetFormats(r.SDP, edits)
	if err != nil { // the edits only name formats the m-lines have
		b.log.Warn("ng: codec manipulations not applied", "call_id", r.CallID, "err", err)
		return r.SDP
	}
	return out
}
