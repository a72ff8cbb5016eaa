package connguard

// A Framer follows message boundaries in what one connection reads, so
// the guard knows when a message is under way and when one has ended.
// It sees every byte once, in order, and keeps no copy of the message.
type Framer interface {
	// Feed takes the next bytes read. done is how many messages ended in
	// them; partial reports whether a message is incomplete after them.
	Feed(p []byte) (done int, partial bool)
}

// SIPFramer frames SIP over a stream (RFC 3261 §7.5, §18.3) the way
// sipgo's stream parser reads it: a start line and header lines, each
// ending in CRLF, up to an empty line; then as many body bytes as the
// last Content-Length (or its compact form l) says, none without one.
// Header names are compared after trimming ASCII white space, folded
// lines (RFC 3261 §7.3.1) continue the header before them. CRLF (and NUL)
// between messages starts nothing: keep-alives (RFC 5626 §3.5.1) are not
// messages. A read of only NUL bytes is skipped wherever it falls, as
// sipgo's reader drops it. Input sipgo refuses (a CR without LF, a Content-Length that
// is not a number) may frame differently: sipgo closes such a connection
// itself. Its state is a few dozen bytes.
type SIPFramer struct {
	st        uint8
	cr        bool // the last byte was CR
	lineStart bool // at the first byte of a header line
	headers   bool // a header line has begun in this message
	colon     bool // the current header's colon has been read
	lineCL    bool // the current header is Content-Length
	leading   bool // in the white space before the current header's name
	digits    bool // the Content-Length value has a digit
	nlen      uint8
	name      [nameCap]byte // the header name, leading white space skipped
	val       int64         // the Content-Length value being read
	length    int64         // the message's Content-Length
	left      int64         // body bytes still to come
}

const (
	fIdle   = iota // between messages
	fStart         // in the start line
	fHeader        // in the header lines
	fBody          // in the body
)

// nameCap holds "Content-Length" and some white space after it; a longer
// name is another header. nameLong marks one.
const (
	nameCap  = 16
	nameLong = 255
)

// maxLength caps a Content-Length value: sipgo refuses anything over
// 32 bits, so a larger one never frames a body.
const maxLength = 1 << 32

// NewSIPFramer returns a framer for SIP over TCP or TLS.
func NewSIPFramer() Framer { return &SIPFramer{} }

// Feed implements Framer.
func (f *SIPFramer) Feed(p []byte) (done int, partial bool) {
	if onlyNUL(p) {
		// sipgo's stream reader drops such a read whole, wherever it
		// falls, before its parser sees it.
		return 0, f.st != fIdle
	}
	for i := 0; i < len(p); i++ {
		b := p[i]
		eol := b == '\n' && f.cr
		f.cr = b == '\r'
		switch f.st {
		case fIdle:
			if b == '\r' || b == '\n' || b == 0 {
				continue
			}
			f.st, f.length, f.headers = fStart, 0, false
		case fStart:
			if eol {
				f.st, f.lineStart = fHeader, true
			}
		case fHeader:
			if eol {
				if f.lineStart {
					done += f.endHeaders()
					continue
				}
				if f.lineCL && f.colon && f.digits {
					f.length = min(f.val, maxLength)
				}
				f.lineStart = true
				continue
			}
			if b == '\r' {
				continue // the line's end, if LF follows
			}
			if f.lineStart {
				f.lineStart = false
				if (b == ' ' || b == '\t') && f.headers {
					// A folded line: one space joins it to the header.
					if !f.colon && !f.leading {
						f.nameByte(' ')
					}
					continue
				}
				f.headers, f.colon, f.lineCL, f.leading, f.nlen = true, false, false, true, 0
			}
			switch {
			case f.colon:
				if f.lineCL && b >= '0' && b <= '9' {
					if f.val < maxLength {
						f.val = f.val*10 + int64(b-'0')
					}
					f.digits = true
				}
			case b == ':':
				f.colon = true
				f.lineCL = f.isContentLength()
				f.val, f.digits = 0, false
			case f.leading && isSpace(b):
			default:
				f.leading = false
				f.nameByte(b)
			}
		case fBody:
			n := int64(len(p) - i)
			if n >= f.left {
				i += int(f.left) - 1
				f.left, f.st, f.cr = 0, fIdle, false
				done++
			} else {
				f.left -= n
				i = len(p)
			}
		}
	}
	return done, f.st != fIdle
}

// onlyNUL reports whether p has no byte but NUL; it stops at the first
// other byte, the first one of any read that carries SIP.
func onlyNUL(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

func (f *SIPFramer) nameByte(b byte) {
	switch {
	case f.nlen == nameLong:
	case int(f.nlen) < nameCap:
		f.name[f.nlen] = b
		f.nlen++
	case !isSpace(b):
		f.nlen = nameLong
	}
}

// isContentLength compares the name, white space trimmed, as sipgo does.
func (f *SIPFramer) isContentLength() bool {
	if f.nlen == nameLong {
		return false
	}
	n := f.name[:f.nlen]
	for len(n) > 0 && isSpace(n[len(n)-1]) {
		n = n[:len(n)-1]
	}
	const cl = "content-length"
	if len(n) == 1 {
		return lower(n[0]) == 'l'
	}
	if len(n) != len(cl) {
		return false
	}
	for i := range n {
		if lower(n[i]) != cl[i] {
			return false
		}
	}
	return true
}

// endHeaders is the empty line: the body follows, or the message is done.
func (f *SIPFramer) endHeaders() int {
	if f.length > 0 {
		f.left, f.st = f.length, fBody
		return 0
	}
	f.st = fIdle
	return 1
}

// isSpace is ASCII white space as bytes.TrimSpace sees it.
func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\v' || b == '\f' || b == '\r'
}

func lower(b byte) byte {
	if b >= 'A' && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}
