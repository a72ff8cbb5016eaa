package protect

import (
	"bytes"
)

// maxCreds is how many Authorization and Proxy-Authorization values Scan
// keeps; a request carries one per realm it answers, rarely more than two.
const maxCreds = 4

// Cred is what the filter reads of one digest credentials value.
type Cred struct {
	Nonce, Opaque []byte
}

// Scan is what the flood filter reads of a datagram from a banned source,
// straight from its bytes and without the general parser: enough to tell
// a message that proves something (credentials for a nonce issued to that
// address, a live dialog, an answer to our own request) from the flood.
// The slices point into the datagram.
type Scan struct {
	Response bool
	Method   []byte // requests only
	CallID   []byte
	FromTag  []byte
	ToTag    []byte
	Branch   []byte // of the topmost Via
	Creds    [maxCreds]Cred
	NCreds   int
}

// ScanMessage reads data's start line and header fields. ok is false when
// it cannot read them with confidence: no start line, a header section
// that does not end with an empty line, or folded header lines (obsolete;
// a folded value could hide a parameter from this reader). The caller
// takes such a message as proving nothing.
func ScanMessage(data []byte) (s Scan, ok bool) {
	line, rest, ok := cutLine(data)
	if !ok || len(line) == 0 {
		return s, false
	}
	if bytes.HasPrefix(line, []byte("SIP/2.0 ")) {
		s.Response = true
	} else {
		sp := bytes.IndexByte(line, ' ')
		if sp <= 0 {
			return s, false
		}
		s.Method = line[:sp]
	}
	seenVia := false
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return s, false
		}
		if len(line) == 0 {
			return s, true
		}
		if line[0] == ' ' || line[0] == '\t' {
			return s, false
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return s, false
		}
		name := trimSpace(line[:colon])
		value := trimSpace(line[colon+1:])
		switch {
		case is(name, "call-id", "i"):
			if s.CallID == nil {
				s.CallID = value
			}
		case is(name, "from", "f"):
			if s.FromTag == nil {
				s.FromTag = tagParam(value)
			}
		case is(name, "to", "t"):
			if s.ToTag == nil {
				s.ToTag = tagParam(value)
			}
		case is(name, "via", "v"):
			if !seenVia {
				seenVia = true
				s.Branch = viaBranch(value)
			}
		case is(name, "authorization", "proxy-authorization"):
			if s.NCreds < maxCreds {
				if c, ok := digestCred(value); ok {
					s.Creds[s.NCreds] = c
					s.NCreds++
				}
			}
		}
	}
}

// cutLine splits off the first line, ended by CRLF or a bare LF.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, nil, false
	}
	line = b[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, b[i+1:], true
}

func is(name []byte, long, short string) bool {
	return bytes.EqualFold(name, []byte(long)) || bytes.EqualFold(name, []byte(short))
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// skipQuoted returns the index just past the quoted string that starts at
// b[0] (a '"'), or -1 when it does not end.
func skipQuoted(b []byte) int {
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// tagParam reads the tag parameter of a From or To value. Parameters
// inside <...> belong to the URI, not to the header; a display name in
// quotes may hold any character.
func tagParam(v []byte) []byte {
	if len(v) > 0 && v[0] == '"' {
		n := skipQuoted(v)
		if n < 0 {
			return nil
		}
		v = v[n:]
	}
	if lt := bytes.IndexByte(v, '<'); lt >= 0 {
		gt := bytes.IndexByte(v[lt:], '>')
		if gt < 0 {
			return nil
		}
		v = v[lt+gt+1:]
	}
	return param(v, "tag", ';')
}

// param finds name=value among the sep-separated parameters in v
// (whatever precedes the first sep is skipped; a comma ends the list) and
// returns its value.
func param(v []byte, name string, sep byte) []byte {
	for {
		i := bytes.IndexByte(v, sep)
		if i < 0 {
			return nil
		}
		v = v[i+1:]
		end := len(v)
		for j := 0; j < len(v); j++ {
			if v[j] == sep || v[j] == ',' {
				end = j
				break
			}
		}
		p := v[:end]
		k, val, _ := bytes.Cut(p, []byte("="))
		if bytes.EqualFold(trimSpace(k), []byte(name)) {
			return trimSpace(val)
		}
		if end < len(v) && v[end] == ',' {
			return nil
		}
		v = v[end:]
	}
}

// viaBranch reads the branch of the first Via in a Via value (which may
// list several, separated by commas).
func viaBranch(v []byte) []byte {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return param(v, "branch", ';')
}

// digestCred reads nonce and opaque from a Digest credentials value.
func digestCred(v []byte) (Cred, bool) {
	var c Cred
	sp := bytes.IndexAny(v, " \t")
	if sp < 0 || !bytes.EqualFold(v[:sp], []byte("Digest")) {
		return c, false
	}
	v = v[sp:]
	for {
		for len(v) > 0 && (isSpace(v[0]) || v[0] == ',') {
			v = v[1:]
		}
		if len(v) == 0 {
			return c, c.Nonce != nil
		}
		eq := bytes.IndexByte(v, '=')
		if eq <= 0 {
			return c, false
		}
		name := trimSpace(v[:eq])
		v = trimSpace(v[eq+1:])
		var val []byte
		if len(v) > 0 && v[0] == '"' {
			n := skipQuoted(v)
			if n < 0 {
				return c, false
			}
			val, v = v[1:n-1], v[n:]
		} else {
			end := bytes.IndexByte(v, ',')
			if end < 0 {
				end = len(v)
			}
			val, v = trimSpace(v[:end]), v[end:]
		}
		switch {
		case bytes.EqualFold(name, []byte("nonce")):
			c.Nonce = val
		case bytes.EqualFold(name, []byte("opaque")):
			c.Opaque = val
		}
	}
}
