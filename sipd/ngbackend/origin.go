package ngbackend

import (
	"bytes"
	"strconv"
	"strings"
	"sync"

	"sipxdp/ng"
)

// The replace flags that need memory (rtpengine's NG control protocol
// documentation, "Optionally included replace-flags"; sdp_out_add_origin
// and sdp_version_check in its sdp.c, __call_monologue_init_from_flags in
// its call.c): rtpengine keeps the o= line it last wrote toward each
// party, and the s= it first read from each, and writes from them:
//
//   - username: the o= username stays the one first written;
//   - origin-full: the whole o= line stays the first one written (its
//     address is the relay's, as with origin);
//   - session-name: the s= stays the first the sender gave;
//   - SDP-version (and origin-full): the o= version stays the one last
//     written while the SDP written is the same, and goes up by one when
//     it changes;
//   - force-increment-sdp-ver: the version goes up by one each time.
//
// rtpengine keys this by the receiving party; the relay keys it by the
// sending side (call-id and the tag of the side whose SDP it is), which is
// the same party pair: a side's SDP always goes to its peer, and one offer
// forked to several branches is one SDP.

// replaces returns the request's replace values, folded as ng folds keys
// ("SDP version" and "SDP-version" are the same).
func replaces(r *ng.Request) map[string]bool {
	m := make(map[string]bool, len(r.Replace))
	for _, v := range r.Replace {
		v = strings.NewReplacer(" ", "-", "_", "-").Replace(strings.ToLower(strings.TrimSpace(v)))
		m[v] = true
	}
	return m
}

// origins holds what the replace flags remember, per call and side.
type origins struct {
	mu     sync.Mutex
	m      map[originKey]*written
	stores int
}

type originKey struct{ call, tag string }

// written is what the relay last wrote for a side.
type written struct {
	o       []string // the o= fields: username, sess-id, version, nettype, addrtype, address
	ver     uint64
	name    string // the s= value kept for session-name
	hasName bool
	last    []byte // the whole body, for SDP-version's comparison
}

// drop forgets a call (its delete).
func (s *origins) drop(call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.m {
		if k.call == call {
			delete(s.m, k)
		}
	}
}

// pruneEvery is how many stores pass between sweeps for calls that
// ended without a delete (timeouts, BYE handled elsewhere).
const pruneEvery = 256

// sessionFields finds the session-level o= and s= lines: their offsets
// and lengths without line end (-1 when missing).
func sessionFields(body []byte) (oAt, oLen, sAt, sLen int) {
	oAt, sAt = -1, -1
	eachSessionLine(body, func(off int, l []byte) {
		switch {
		case bytes.HasPrefix(l, []byte("o=")) && oAt < 0:
			oAt, oLen = off, len(l)
		case bytes.HasPrefix(l, []byte("s=")) && sAt < 0:
			sAt, sLen = off, len(l)
		}
	})
	return
}

// splice returns body with the line at at (n bytes, line end excluded)
// replaced by line.
func splice(body []byte, at, n int, line string) []byte {
	out := make([]byte, 0, len(body)+len(line))
	out = append(out, body[:at]...)
	out = append(out, line...)
	return append(out, body[at+n:]...)
}

// apply makes body's o= and s= follow what the side's earlier SDP was
// written with, as the flags in rep ask, and remembers this one.
// alive says whether a call still exists (for the sweep).
func (s *origins) apply(call, tag string, rep map[string]bool, body []byte, alive func(string) bool) []byte {
	user, full, name := rep["username"], rep["origin-full"], rep["session-name"]
	version, force := rep["sdp-version"] || full, rep["force-increment-sdp-ver"]
	if !user && !full && !name && !version && !force {
		return body
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := originKey{call, tag}
	prev := s.m[k]

	// s= first: the version compares the whole body. A body without
	// o= is not an SDP the relay wrote; it is left alone.
	oAt, oLen, sAt, sLen := sessionFields(body)
	if oAt < 0 {
		return body
	}
	cur := &written{}
	if sAt >= 0 {
		cur.name, cur.hasName = string(body[sAt+2:sAt+sLen]), true
		if name && prev != nil && prev.hasName && prev.name != cur.name {
			body = splice(body, sAt, sLen, "s="+prev.name)
			cur.name = prev.name
			oAt, oLen, _, _ = sessionFields(body)
		}
	}
	f := strings.Fields(string(body[oAt+2 : oAt+oLen]))
	if len(f) != 6 {
		return body // not an o= line the relay can edit; written as is
	}
	v, err := strconv.ParseUint(f[2], 10, 64)
	if err != nil {
		return body
	}
	if prev != nil {
		if user || full {
			f[0] = prev.o[0]
		}
		if full {
			f[1], f[3], f[4], f[5] = prev.o[1], prev.o[3], prev.o[4], prev.o[5]
		}
		switch {
		case force:
			v = prev.ver + 1
		case version:
			v = prev.ver
		}
	}
	write := func() {
		f[2] = strconv.FormatUint(v, 10)
		body = splice(body, oAt, oLen, "o="+strings.Join(f, " "))
		oLen = len("o=" + strings.Join(f, " "))
	}
	write()
	if version && !force && prev != nil && !bytes.Equal(body, prev.last) {
		v++
		write()
	}
	cur.o, cur.ver, cur.last = f, v, body
	if s.m == nil {
		s.m = map[originKey]*written{}
	}
	s.m[k] = cur
	if s.stores++; s.stores%pruneEvery == 0 && alive != nil {
		for k := range s.m {
			if !alive(k.call) {
				delete(s.m, k)
			}
		}
	}
	return body
}
