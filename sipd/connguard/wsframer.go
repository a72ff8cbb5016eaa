package connguard

// WSFramer frames SIP over WebSocket (RFC 7118) as a server reads it:
// first the HTTP upgrade request, up to its empty line, which counts as
// one message, so a slow upgrade is cut off by the message timeout like a
// slow SIP message; then WebSocket frames (RFC 6455 §5.2). A data message
// ends with the frame that has FIN set; it is under way from its first
// header byte until then, across its fragments. Control frames (ping,
// pong, close) are framed but are not messages: like CRLF keep-alives on
// TCP they keep no connection open. Its state is a few words; it never
// looks at a payload byte.
type WSFramer struct {
	upgraded bool
	crlf     uint8 // HTTP: how much of CRLFCRLF was just read
	httpIn   bool  // HTTP: the request has begun

	hdr     [14]byte // the frame header read so far
	hlen    uint8    // its bytes read
	left    uint64   // payload bytes still to come
	inFrame bool     // in a frame's header or payload
	control bool     // the current frame is a control frame
	fin     bool     // the current frame ends its message
	inMsg   bool     // a data message has begun and not ended
}

// NewWSFramer returns a framer for SIP over WS or WSS.
func NewWSFramer() Framer { return &WSFramer{} }

// Feed implements Framer.
func (f *WSFramer) Feed(p []byte) (done int, partial bool) {
	for len(p) > 0 {
		if !f.upgraded {
			p = f.feedHTTP(p, &done)
			continue
		}
		if !f.inFrame || f.hlen < f.headerLen() {
			f.inFrame = true
			f.hdr[f.hlen] = p[0]
			f.hlen++
			p = p[1:]
			if f.hlen == 2 || f.hlen == f.headerLen() {
				f.headerRead()
			}
			if f.hlen == f.headerLen() && f.left == 0 {
				f.endFrame(&done)
			}
			continue
		}
		n := uint64(len(p))
		if n > f.left {
			n = f.left
		}
		f.left -= n
		p = p[n:]
		if f.left == 0 {
			f.endFrame(&done)
		}
	}
	return done, f.partial()
}

func (f *WSFramer) partial() bool {
	if !f.upgraded {
		return f.httpIn
	}
	return f.inMsg || (f.inFrame && !f.control)
}

func (f *WSFramer) feedHTTP(p []byte, done *int) []byte {
	for i, b := range p {
		switch {
		case b == '\r' && f.crlf%2 == 0:
			f.crlf++
		case b == '\n' && f.crlf%2 == 1:
			f.crlf++
		default:
			f.crlf = 0
		}
		if !f.httpIn && b != '\r' && b != '\n' {
			f.httpIn = true
		}
		if f.crlf == 4 && f.httpIn {
			f.upgraded = true
			*done++
			return p[i+1:]
		}
	}
	return nil
}

// headerLen is the frame header's length as far as it is known: 2 until
// the second byte says how long the length and mask are.
func (f *WSFramer) headerLen() uint8 {
	if f.hlen < 2 {
		return 2
	}
	n := uint8(2)
	switch f.hdr[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if f.hdr[1]&0x80 != 0 {
		n += 4
	}
	return n
}

// headerRead takes the payload length once the header has it.
func (f *WSFramer) headerRead() {
	if f.hlen == 2 {
		f.fin = f.hdr[0]&0x80 != 0
		f.control = f.hdr[0]&0x08 != 0
		if !f.control {
			f.inMsg = true
		}
	}
	switch l := f.hdr[1] & 0x7f; {
	case l < 126:
		f.left = uint64(l)
	case l == 126 && f.hlen >= 4:
		f.left = uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
	case l == 127 && f.hlen >= 10:
		f.left = 0
		for _, b := range f.hdr[2:10] {
			f.left = f.left<<8 | uint64(b)
		}
	}
}

func (f *WSFramer) endFrame(done *int) {
	if !f.control && f.fin {
		f.inMsg = false
		*done++
	}
	f.inFrame, f.hlen, f.left, f.control, f.fin = false, 0, 0, false, false
}
