package itsp

import (
	"bytes"
	"strconv"
)

// msg is what the generator reads of a datagram. The slices point into
// the receive buffer: copy what must outlive the next read.
type msg struct {
	req     bool
	method  []byte // requests
	ruri    []byte
	status  int // responses
	callID  []byte
	cseqM   []byte
	cseq    []byte
	from    []byte
	to      []byte
	toTag   []byte
	contact []byte
	auth    []byte   // the MD5 WWW- or Proxy-Authenticate challenge
	vias    [][]byte // whole Via header lines, in order
	rr      [][]byte // Record-Route values, in order
	txID    uint64   // from our branch in the top Via
	ourTx   bool
}

const branchPrefix = "z9hG4bKitsp"

func (m *msg) reset() {
	vias, rr := m.vias[:0], m.rr[:0]
	*m = msg{vias: vias, rr: rr}
}

func canonical(name []byte) string {
	name = bytes.TrimSpace(name)
	var low [24]byte
	if len(name) > len(low) {
		return ""
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	switch string(low[:len(name)]) {
	case "via", "v":
		return "via"
	case "call-id", "i":
		return "call-id"
	case "cseq":
		return "cseq"
	case "from", "f":
		return "from"
	case "to", "t":
		return "to"
	case "contact", "m":
		return "contact"
	case "record-route":
		return "record-route"
	case "www-authenticate", "proxy-authenticate":
		return "auth"
	}
	return ""
}

// parse reads the start line and the headers the generator needs.
func (m *msg) parse(b []byte) bool {
	m.reset()
	end := bytes.Index(b, []byte("\r\n"))
	if end < 0 {
		return false
	}
	line := b[:end]
	if bytes.HasPrefix(line, []byte("SIP/2.0 ")) {
		if len(line) < 11 {
			return false
		}
		code, err := strconv.Atoi(string(line[8:11]))
		if err != nil {
			return false
		}
		m.status = code
	} else {
		sp := bytes.IndexByte(line, ' ')
		if sp < 0 {
			return false
		}
		m.req = true
		m.method = line[:sp]
		rest := line[sp+1:]
		if sp2 := bytes.IndexByte(rest, ' '); sp2 > 0 {
			m.ruri = rest[:sp2]
		}
	}
	b = b[end+2:]
	for len(b) > 0 {
		end = bytes.Index(b, []byte("\r\n"))
		if end <= 0 {
			break
		}
		h := b[:end]
		b = b[end+2:]
		colon := bytes.IndexByte(h, ':')
		if colon <= 0 {
			continue
		}
		v := bytes.TrimSpace(h[colon+1:])
		switch canonical(h[:colon]) {
		case "via":
			if len(m.vias) == 0 {
				if i := bytes.Index(v, []byte("branch="+branchPrefix)); i >= 0 {
					id := v[i+len("branch="+branchPrefix):]
					if len(id) >= 16 {
						if n, err := strconv.ParseUint(string(id[:16]), 16, 64); err == nil {
							m.txID, m.ourTx = n, true
						}
					}
				}
			}
			m.vias = append(m.vias, h)
		case "call-id":
			m.callID = v
		case "cseq":
			m.cseq = v
			if sp := bytes.LastIndexByte(v, ' '); sp > 0 {
				m.cseqM = v[sp+1:]
			}
		case "from":
			m.from = v
		case "to":
			m.to = v
			if i := bytes.Index(v, []byte(";tag=")); i >= 0 {
				t := v[i+5:]
				if j := bytes.IndexByte(t, ';'); j >= 0 {
					t = t[:j]
				}
				m.toTag = t
			}
		case "contact":
			m.contact = v
		case "record-route":
			m.rr = append(m.rr, v)
		case "auth":
			if m.auth == nil && bytes.Contains(bytes.ToUpper(v), []byte("ALGORITHM=MD5")) {
				m.auth = v
			}
		}
	}
	return true
}

// uriOf strips the angle brackets and parameters outside them from a
// name-addr (Contact): <sip:a@b:1;x>;expires=3 -> sip:a@b:1;x.
func uriOf(v []byte) []byte {
	if i := bytes.IndexByte(v, '<'); i >= 0 {
		if j := bytes.IndexByte(v[i:], '>'); j > 0 {
			return v[i+1 : i+j]
		}
	}
	if i := bytes.IndexByte(v, ';'); i >= 0 {
		return v[:i]
	}
	return v
}

// routeSet turns the Record-Route values of a 2xx into the caller's
// Route header value: every URI, in reverse order.
func routeSet(rr [][]byte) string {
	var uris []string
	for _, v := range rr {
		depth := 0
		start := 0
		for i, c := range v {
			switch c {
			case '<':
				depth++
			case '>':
				depth--
			case ',':
				if depth == 0 {
					uris = append(uris, string(bytes.TrimSpace(v[start:i])))
					start = i + 1
				}
			}
		}
		uris = append(uris, string(bytes.TrimSpace(v[start:])))
	}
	var b bytes.Buffer
	for i := len(uris) - 1; i >= 0; i-- {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(uris[i])
	}
	return b.String()
}
