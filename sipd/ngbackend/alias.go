package ngbackend

import (
	"net/netip"
	"strings"
	"sync"

	"sipxdp/ng"
	"sipxdp/sipd/media"
	"sipxdp/sipd/sdprewrite"
)

// alias key (rtpengine's NG control protocol documentation, "alias key";
// call_get_monologue_alias in its call.c): with `SDP`, or `address` /
// `endpoint`, an offer remembers its whole SDP, or the address and port
// of its first m-line, for its from-tag; a later offer of the call from a
// from-tag the call does not know, with the same key and the same SDP or
// address, is taken as from that tag, and its tag is that tag's alias
// from then on (in answers, deletes and queries too). `off`, the default,
// makes no aliases.

type aliases struct {
	mu     sync.Mutex
	keys   map[originKey]string // (call, key) → tag
	tags   map[originKey]string // (call, alias) → tag
	stores int
}

// aliasKey is what an offer is matched on, "" for none.
func aliasKey(r *ng.Request) string {
	switch strings.ToLower(strings.TrimSpace(r.Flags["alias-key"])) {
	case "sdp":
		if len(r.SDP) > 0 {
			return "sdp\x00" + string(r.SDP)
		}
	case "address", "endpoint":
		if ms, err := sdprewrite.Parse(r.SDP); err == nil && len(ms) > 0 && ms[0].Port != 0 {
			return "address\x00" + netip.AddrPortFrom(ms[0].Addr, uint16(ms[0].Port)).String()
		}
	}
	return ""
}

// resolve replaces r's tags that are aliases with the tags they stand for.
func (a *aliases) resolve(r *ng.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.tags[originKey{r.CallID, r.FromTag}]; ok {
		r.FromTag = t
	}
	if t, ok := a.tags[originKey{r.CallID, r.ToTag}]; ok && r.ToTag != "" {
		r.ToTag = t
	}
}

// knows reports whether tag is one of the call's.
func knows(ci media.CallInfo, tag string) bool {
	if ci.Tags[0] == tag || ci.Tags[1] == tag {
		return true
	}
	for _, b := range ci.Branches {
		if b.Tag == tag {
			return true
		}
	}
	return false
}

// offer resolves an offer's from-tag: an alias, or, with alias key, a
// tag of the call whose offer had the same key. It returns the key to
// remember once the offer went through ("" for none).
func (a *aliases) offer(r *ng.Request, ci media.CallInfo, known bool) string {
	a.resolve(r)
	key := aliasKey(r)
	if key == "" {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.keys[originKey{r.CallID, key}]; ok && known && !knows(ci, r.FromTag) && t != r.FromTag {
		if a.tags == nil {
			a.tags = map[originKey]string{}
		}
		a.tags[originKey{r.CallID, r.FromTag}] = t
		r.FromTag = t
	}
	return key
}

// learn remembers key for the offer's (resolved) from-tag.
func (a *aliases) learn(call, tag, key string, alive func(string) bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.keys == nil {
		a.keys = map[originKey]string{}
	}
	a.keys[originKey{call, key}] = tag
	if a.stores++; a.stores%pruneEvery == 0 && alive != nil {
		for _, m := range []map[originKey]string{a.keys, a.tags} {
			for k := range m {
				if !alive(k.call) {
					delete(m, k)
				}
			}
		}
	}
}

// drop forgets a call (its delete).
func (a *aliases) drop(call string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range []map[originKey]string{a.keys, a.tags} {
		for k := range m {
			if k.call == call {
				delete(m, k)
			}
		}
	}
}
