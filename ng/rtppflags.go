package ng

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Kamailio's rtpengine module sends the flags string of rtpengine_*()
// under "rtpp-flags" when it leaves the parsing to the daemon
// (rtpp_function_call in Kamailio's rtpengine.c). rtpengine
// parses that string into the same flags a dictionary would set
// (parse_rtpp_flags, rtpengine's control_ng_flags_parser.c). This file turns
// the string into the dictionary entries Kamailio's module would have
// sent had it parsed the same string itself (its parse_flags), and
// merges them into the request's dictionary, so every reader of the
// Request sees them as if they had come that way.

// maxRTPPDepth bounds the nesting of brackets in an rtpp-flags string;
// rtpengine's documented uses nest two deep ("codec=[strip=[EVS]]").
const maxRTPPDepth = 8

// rtppListKeys are dictionary keys whose value is a list of strings:
// "key=value" and the prefix form "key-value" add value to the list, as
// Kamailio's parse_flags does for replace, rtcp-mux, SDES and T.38, and
// for direction and from-tags.
var rtppListKeys = []prefixTarget{
	{"replace", "replace"},
	{"rtcp-mux", "rtcp-mux"},
	{"sdes", "SDES"},
	{"t38", "T.38"},
	{"t.38", "T.38"},
	{"direction", "direction"},
	{"from-tags", "from-tags"},
}

// rtppCodecKeys map rtpp flags to the operation of the "codec"
// dictionary they add to (Kamailio's parse_codec_flag calls).
var rtppCodecKeys = []prefixTarget{
	{"transcode", "transcode"},
	{"codec-transcode", "transcode"},
	{"codec-strip", "strip"},
	{"codec-offer", "offer"},
	{"codec-mask", "mask"},
	{"codec-set", "set"},
	{"codec-except", "except"},
	{"codec-accept", "accept"},
	{"codec-consume", "consume"},
}

// viaBranchDirectives are Kamailio's values of via-branch= in a flags
// string: they tell the proxy which branch to send, not the branch
// itself, and the dictionary's "via-branch" already has what the proxy
// computed.
var viaBranchDirectives = []string{"1", "2", "auto", "extra", "next", "auto-next", "next-auto", "auto-extra", "extra-auto"}

// Transport bits, as Kamailio's and rtpengine's parsers build them from
// RTP, AVP, SRTP, AVPF and DTLS.
var rtppTransports = map[int]string{
	0x100: "RTP/AVP", 0x101: "RTP/SAVP", 0x102: "RTP/AVPF", 0x103: "RTP/SAVPF",
	0x104: "UDP/TLS/RTP/SAVP", 0x106: "UDP/TLS/RTP/SAVPF",
}

// expandRTPPFlags returns d with its "rtpp-flags" string (any spelling
// normKey folds to it) replaced by the entries it stands for. Lists
// ("flags", "replace", "direction", ...) and the "codec" dictionary's
// lists are appended to; any other key the string sets replaces the
// dictionary's, as rtpengine lets the later key win and Kamailio sends
// rtpp-flags last. d itself is not modified.
func expandRTPPFlags(d map[string]any) (map[string]any, error) {
	var rawKey string
	for k := range d {
		if normKey(k) != "rtpp-flags" {
			continue
		}
		if rawKey != "" {
			return d, fmt.Errorf("keys %q and %q are the same key", min(rawKey, k), max(rawKey, k))
		}
		rawKey = k
	}
	if rawKey == "" {
		return d, nil
	}
	s, ok := d[rawKey].(string)
	if !ok {
		return d, fmt.Errorf("rtpp-flags: want a string, have %s", typeName(d[rawKey]))
	}
	items, err := parseRTPPFlags(s)
	if err != nil {
		return d, fmt.Errorf("rtpp-flags: %w", err)
	}
	out := make(map[string]any, len(d)+len(items))
	byNorm := make(map[string]string, len(d)) // normalised key -> key in out
	for k, v := range d {
		if k == rawKey {
			continue
		}
		out[k] = v
		byNorm[normKey(k)] = k
	}
	// key finds the spelling out already uses for k, so the merged
	// dictionary never holds two keys ParseRequest folds together.
	key := func(k string) string {
		if have, ok := byNorm[normKey(k)]; ok {
			return have
		}
		byNorm[normKey(k)] = k
		return k
	}
	appendList := func(k string, vals ...any) {
		k = key(k)
		out[k] = appended(out[k], vals)
	}
	addCodec := func(op string, vals ...any) {
		k := key("codec")
		c := map[string]any{}
		if old, ok := out[k].(map[string]any); ok {
			for ck, cv := range old {
				c[ck] = cv
			}
		}
		c[op] = appended(c[op], vals)
		out[k] = c
	}
	transport := 0
	for _, it := range items {
		nk := normKey(it.key)
		if it.list != nil || it.dict != nil {
			switch {
			case nk == "codec" && it.dict != nil:
				for op, v := range it.dict {
					switch v := v.(type) {
					case []any:
						addCodec(op, v...)
					default:
						addCodec(op, v)
					}
				}
			case it.list != nil && rtppListKey(nk) != "":
				appendList(rtppListKey(nk), it.list...)
			case it.list != nil && nk == "flags":
				appendList("flags", it.list...)
			case it.list != nil:
				out[key(it.key)] = it.list
			default:
				out[key(it.key)] = it.dict
			}
			continue
		}
		if op, v, ok := rtppPrefixed(it, rtppCodecKeys); ok {
			addCodec(op, v)
			continue
		}
		if lk, v, ok := rtppPrefixed(it, rtppListKeys); ok {
			appendList(lk, v)
			continue
		}
		if !it.hasVal {
			switch it.key {
			case "RTP":
				transport = (transport | 0x100) &^ 0x001
			case "AVP":
				transport = (transport | 0x100) &^ 0x002
			case "SRTP":
				transport |= 0x101
			case "AVPF":
				transport |= 0x102
			case "DTLS":
				transport |= 0x104
			default:
				switch {
				case nk == "internal" || nk == "external":
					appendList("direction", it.key)
				case rtppFullTransport(it.key) != 0:
					transport = rtppFullTransport(it.key)
				default:
					appendList("flags", it.key)
				}
			}
			continue
		}
		switch nk {
		case "received-from":
			a, err := netip.ParseAddr(it.val)
			if err != nil {
				return d, fmt.Errorf("rtpp-flags: received-from: %q is not an address", it.val)
			}
			fam := "IP4"
			if a.Unmap().Is6() {
				fam = "IP6"
			}
			out[key("received-from")] = []any{fam, it.val}
		case "via-branch":
			if !containsFold(viaBranchDirectives, it.val) {
				out[key(it.key)] = it.val
			}
		case "tos", "delete-delay", "repacketize":
			if n, err := strconv.ParseInt(it.val, 10, 64); err == nil {
				out[key(it.key)] = n
			} else {
				out[key(it.key)] = it.val
			}
		default:
			out[key(it.key)] = it.val
		}
	}
	if p, ok := rtppTransports[transport]; ok {
		out[key("transport-protocol")] = p
	}
	return out, nil
}

// appended returns a new list of old (a list, or one string as a list
// of one) followed by vals; old itself, shared with the caller's
// dictionary, is not changed.
func appended(old any, vals []any) []any {
	var l []any
	switch old := old.(type) {
	case []any:
		l = append(l, old...)
	case string:
		l = append(l, old)
	}
	return append(l, vals...)
}

// rtppListKey returns the dictionary key of a list-valued rtpp flag,
// "" when nk is none.
func rtppListKey(nk string) string {
	for _, lk := range rtppListKeys {
		if nk == lk.prefix {
			return lk.target
		}
	}
	return ""
}

// prefixTarget maps a flag name (normalised) to where its values go.
type prefixTarget struct{ prefix, target string }

// rtppPrefixed matches "prefix=value" and the bare "prefix-value", as
// Kamailio's and rtpengine's str_key_val_prefix do, and returns the
// target and the value.
func rtppPrefixed(it rtppItem, table []prefixTarget) (target, val string, ok bool) {
	nk := normKey(it.key)
	for _, p := range table {
		switch {
		case it.hasVal && nk == p.prefix:
			if it.val == "" {
				return "", "", false
			}
			return p.target, it.val, true
		case !it.hasVal && len(nk) > len(p.prefix)+1 && strings.HasPrefix(nk, p.prefix+"-"):
			// The value keeps the case it was written in ("codec-strip-PCMA")
			// when folding kept the byte offsets.
			src := it.key
			if len(src) != len(nk) {
				src = nk
			}
			return p.target, src[len(p.prefix)+1:], true
		}
	}
	return "", "", false
}

func rtppFullTransport(k string) int {
	for bits, name := range rtppTransports {
		if strings.EqualFold(k, name) {
			return bits
		}
	}
	return 0
}

func containsFold(l []string, s string) bool {
	for _, x := range l {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// rtppItem is one top-level entry of an rtpp-flags string: a bare flag,
// key=value, or key=[...] (a list, or a dictionary when its first entry
// is key=value).
type rtppItem struct {
	key    string
	val    string
	hasVal bool
	list   []any
	dict   map[string]any
}

// parseRTPPFlags splits an rtpp-flags string into its entries: space
// separated, "key=value" pairs, and bracketed lists and dictionaries
// ("codec=[strip=[EVS] offer=[PCMA]]") as rtpengine's parser reads them.
func parseRTPPFlags(s string) ([]rtppItem, error) {
	p := rtppParser{s: s}
	var items []rtppItem
	for {
		p.skipSpace()
		if p.eof() {
			return items, nil
		}
		if p.s[p.pos] == ']' {
			return nil, fmt.Errorf("unbalanced ']' at offset %d", p.pos)
		}
		k, hasVal := p.key()
		if k == "" {
			return nil, fmt.Errorf("empty flag name at offset %d", p.pos)
		}
		it := rtppItem{key: k, hasVal: hasVal}
		if hasVal {
			if !p.eof() && p.s[p.pos] == '[' {
				l, d, err := p.bracket(1)
				if err != nil {
					return nil, err
				}
				it.list, it.dict = l, d
			} else {
				it.val = p.word()
			}
		}
		items = append(items, it)
	}
}

type rtppParser struct {
	s   string
	pos int
}

func (p *rtppParser) eof() bool { return p.pos >= len(p.s) }

func (p *rtppParser) skipSpace() {
	for !p.eof() && p.s[p.pos] == ' ' {
		p.pos++
	}
}

// key reads a flag name up to a space, '=' or ']' and says whether '='
// followed (and was consumed).
func (p *rtppParser) key() (string, bool) {
	start := p.pos
	for !p.eof() && p.s[p.pos] != ' ' && p.s[p.pos] != '=' && p.s[p.pos] != ']' && p.s[p.pos] != '[' {
		p.pos++
	}
	k := p.s[start:p.pos]
	if !p.eof() && p.s[p.pos] == '=' {
		p.pos++
		return k, true
	}
	return k, false
}

// word reads a value up to a space or ']'.
func (p *rtppParser) word() string {
	start := p.pos
	for !p.eof() && p.s[p.pos] != ' ' && p.s[p.pos] != ']' {
		p.pos++
	}
	return p.s[start:p.pos]
}

// bracket reads "[...]" at p.pos: a dictionary when its first entry is
// key=value, else a list (of words and nested lists).
func (p *rtppParser) bracket(depth int) ([]any, map[string]any, error) {
	if depth > maxRTPPDepth {
		return nil, nil, fmt.Errorf("brackets nested deeper than %d at offset %d", maxRTPPDepth, p.pos)
	}
	open := p.pos
	p.pos++ // '['
	var (
		list []any
		dict map[string]any
	)
	for first := true; ; first = false {
		p.skipSpace()
		if p.eof() {
			return nil, nil, fmt.Errorf("unclosed '[' at offset %d", open)
		}
		switch p.s[p.pos] {
		case ']':
			p.pos++
			if dict != nil {
				return nil, dict, nil
			}
			if list == nil {
				list = []any{}
			}
			return list, nil, nil
		case '[':
			if dict != nil {
				return nil, nil, fmt.Errorf("list inside a dictionary without a key at offset %d", p.pos)
			}
			l, d, err := p.bracket(depth + 1)
			if err != nil {
				return nil, nil, err
			}
			if d != nil {
				list = append(list, d)
			} else {
				list = append(list, l)
			}
			continue
		}
		at := p.pos
		k, hasVal := p.key()
		if first && hasVal {
			dict = map[string]any{}
		}
		switch {
		case dict == nil && hasVal:
			return nil, nil, fmt.Errorf("key=value inside a list at offset %d", at)
		case dict == nil:
			if k == "" {
				return nil, nil, fmt.Errorf("unexpected %q at offset %d", p.s[p.pos], p.pos)
			}
			list = append(list, k)
		case !hasVal || k == "":
			return nil, nil, fmt.Errorf("dictionary entry without key=value at offset %d", at)
		default:
			if _, dup := dict[k]; dup {
				return nil, nil, fmt.Errorf("duplicate key %q at offset %d", k, at)
			}
			if !p.eof() && p.s[p.pos] == '[' {
				l, d, err := p.bracket(depth + 1)
				if err != nil {
					return nil, nil, err
				}
				if d != nil {
					dict[k] = d
				} else {
					dict[k] = l
				}
			} else {
				dict[k] = p.word()
			}
		}
	}
}
