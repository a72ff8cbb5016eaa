package ngbackend

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
)

// loop-protect (rtpengine's NG control protocol documentation, "loop
// protect"): the relay marks the SDP it writes with a session-level
// a=rtpengine:<instance id>, and an offer or answer that already carries
// its own mark is returned untouched, since the relay would otherwise
// take its own ports for the party's media and relay to itself. As in
// rtpengine (sdp_is_duplicate in its sdp.c) the mark is looked for at
// session level only, and the id is 12 random hex digits drawn at start.
// Marks of other instances are left in place: the SDP is edited, not
// rebuilt, and keeping them lets each relay of a chain see its own.

const markAttr = "a=rtpengine:"

// newInstanceID returns the random id of this relay's marks.
func newInstanceID() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// sessionLines returns the lines of body's session section (before the
// first m= line), with their line ends cut, and where that section ends.
func sessionLines(body []byte) (lines [][]byte, end int) {
	end = eachSessionLine(body, func(_ int, l []byte) { lines = append(lines, l) })
	return lines, end
}

// eachSessionLine calls fn with the offset and the text (line end cut)
// of each line of body's session section, and returns where it ends.
func eachSessionLine(body []byte, fn func(off int, l []byte)) (end int) {
	for off := 0; off < len(body); {
		n := bytes.IndexByte(body[off:], '\n')
		next := len(body)
		if n >= 0 {
			next = off + n + 1
		}
		l := bytes.TrimRight(body[off:next], "\r\n")
		if bytes.HasPrefix(l, []byte("m=")) {
			return off
		}
		fn(off, l)
		off = next
	}
	return len(body)
}

// marked reports whether body carries id's mark at session level.
func marked(body []byte, id string) bool {
	lines, _ := sessionLines(body)
	for _, l := range lines {
		if v, ok := bytes.CutPrefix(l, []byte(markAttr)); ok && string(bytes.TrimSpace(v)) == id {
			return true
		}
	}
	return false
}

// mark adds id's session-level attribute to body, as the last line of the
// session section (a= lines close it, RFC 8866 section 5), with the line
// end the body uses. A body already marked is returned as is.
func mark(body []byte, id string) []byte {
	if marked(body, id) {
		return body
	}
	_, end := sessionLines(body)
	eol := "\r\n"
	if i := bytes.IndexByte(body, '\n'); i >= 0 && (i == 0 || body[i-1] != '\r') {
		eol = "\n"
	}
	out := make([]byte, 0, len(body)+len(markAttr)+len(id)+4)
	out = append(out, body[:end]...)
	if end > 0 && body[end-1] != '\n' {
		out = append(out, eol...) // a body without a final line end
	}
	out = append(out, markAttr+id+eol...)
	return append(out, body[end:]...)
}
