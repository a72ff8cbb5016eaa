package sipua

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// DialWS connects to a SIP WebSocket server at addr (ip:port) as a
// browser does (RFC 7118): subprotocol sip, each SIP message in one text
// frame, a Via and Contact host ending in .invalid. tlsConf nil is ws,
// else wss.
func DialWS(t testing.TB, addr string, tlsConf *tls.Config) *UA {
	t.Helper()
	scheme, transport := "ws", "WS"
	d := ws.Dialer{Protocols: []string{"sip"}, Timeout: 3 * time.Second}
	if tlsConf != nil {
		scheme, transport = "wss", "WSS"
		d.TLSConfig = tlsConf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, scheme+"://"+addr+"/")
	if err != nil {
		t.Fatalf("dial %s://%s: %v", scheme, addr, err)
	}
	wc := &wsConn{Conn: conn}
	if br != nil {
		// Frames the server sent right behind its handshake answer.
		wc.r = io.MultiReader(br, conn)
	} else {
		wc.r = conn
	}
	u := NewStream(t, wc, transport)
	u.wsHost = fmt.Sprintf("%x.invalid", u.seq.Add(1)<<20|uint64(time.Now().UnixNano()&0xfffff))
	return u
}

// wsConn turns a client WebSocket connection into the byte stream
// NewStream reads: each Write is one masked text frame, Read returns
// payloads of data frames in order and answers pings.
type wsConn struct {
	net.Conn
	r    io.Reader
	rest []byte
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := wsutil.WriteClientMessage(c.Conn, ws.OpText, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Read(p []byte) (int, error) {
	for len(c.rest) == 0 {
		rw := struct {
			io.Reader
			io.Writer
		}{c.r, c.Conn}
		msgs, err := wsutil.ReadServerMessage(rw, nil)
		if err != nil {
			return 0, err
		}
		for _, m := range msgs {
			switch m.OpCode {
			case ws.OpText, ws.OpBinary:
				c.rest = append(c.rest, m.Payload...)
			case ws.OpClose:
				return 0, io.EOF
			case ws.OpPing:
				wsutil.WriteClientMessage(c.Conn, ws.OpPong, m.Payload)
			}
		}
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}
