package ng

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// chunkConn is a net.Conn whose reads return in from chunks of the given
// size and whose writes collect in out: serveConn's whole stream reader
// runs on it without sockets or timers.
type chunkConn struct {
	in    []byte
	chunk int
	out   bytes.Buffer
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.in[:min(len(c.in), c.chunk)])
	c.in = c.in[n:]
	return n, nil
}

func (c *chunkConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *chunkConn) Close() error                     { return nil }
func (c *chunkConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2223} }
func (c *chunkConn) RemoteAddr() net.Addr             { return net.TCPAddrFromAddrPort(testSrc) }
func (c *chunkConn) SetDeadline(time.Time) error      { return nil }
func (c *chunkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *chunkConn) SetWriteDeadline(time.Time) error { return nil }

// replies runs serveConn on stream delivered chunk bytes at a time and
// returns what it wrote.
func replies(stream []byte, chunk int) []byte {
	c := &chunkConn{in: stream, chunk: chunk}
	NewServer(&fakeBackend{calls: []string{"a"}}, Options{}).serveConn(c)
	return c.out.Bytes()
}

// FuzzTCPFraming: NG over TCP is framed as rtpengine frames it, a cookie,
// a space and one bencoded value, back to back. Whatever the stream, the
// reader does not panic, everything it writes is a sequence of whole
// replies, and how the stream is cut into reads changes nothing: the
// same replies in the same order whether it comes all at once, byte by
// byte, or in chunks of any size.
func FuzzTCPFraming(f *testing.F) {
	for _, s := range []string{
		"t1 d7:command4:pinge",
		"t1 d7:command4:pinge\r\nt2 d7:command4:liste  t3 d7:command5:query7:call-id1:ae",
		"t1 d7:command5:offer7:call-id1:a8:from-tag1:b3:sdp3:v=0e\n",
		"t4 x", "t5 d7:command4:ping", "nocookie", " \r\n\t",
		"c li1ee c i5e c 3:abc",
		"t6 d7:command4:pinge t6 d7:command4:pinge", // a retransmission
		string(bytes.Repeat([]byte("x"), 300)) + " d7:command4:pinge",
		"t7 d9999999:", "t8 d7:commandi-0ee", "t9 d1:ad1:ad1:ad1:aeeeee",
		`j1 {"command":"ping"} j2 {"command": "list"}d3 d7:command4:pinge`,
		`j3 {"command":"ping"`, `j4 {"command":"ping"}}`, `j5 {"a":[[[1]]], "command":"query"}`,
	} {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		if len(stream) > 16<<10 {
			return
		}
		whole := replies(stream, len(stream)+1)
		for b := whole; len(b) > 0; {
			n, err := frameLen(b)
			if err != nil {
				t.Fatalf("reader wrote something that is not a whole reply (%v): %q", err, b)
			}
			if _, body, _ := bytes.Cut(b[:n], []byte(" ")); len(body) > 0 {
				if _, err := decodeBody(body); err != nil {
					t.Fatalf("reply %q does not decode: %v", b[:n], err)
				}
			}
			b = b[n:]
		}
		for _, k := range []int{1, int(chunk%64) + 1} {
			if got := replies(stream, k); !bytes.Equal(got, whole) {
				t.Fatalf("read %d bytes at a time: %q\nall at once: %q", k, got, whole)
			}
		}
	})
}

// TestTCPMessageTooLong: a message that grows past MaxMessageSize
// without ending is dropped, counted, and ends the connection, without
// the reader buffering more than about that much.
func TestTCPMessageTooLong(t *testing.T) {
	// A declared string length over the limit is refused at once (an
	// error reply); a list of small strings that never ends is not.
	stream := append([]byte("big d5:hellol"), bytes.Repeat([]byte("1:a"), 40000)...)
	stream = append(stream, "ee"...)
	c := &chunkConn{in: stream, chunk: 1000}
	s := NewServer(&fakeBackend{}, Options{})
	s.serveConn(c)
	if c.out.Len() != 0 {
		t.Errorf("answered %q", c.out.Bytes())
	}
	if left := len(c.in); left < len(stream)-MaxMessageSize-8192 {
		t.Errorf("read %d bytes of an oversized message before giving up", len(stream)-left)
	}
	if n := s.Stats()["dropped"]; n != 1 {
		t.Errorf("dropped %d, want 1", n)
	}
}
