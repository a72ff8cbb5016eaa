package sipserver

import (
	"bytes"
	"errors"
	"net"
	"sync"
)

// maxUpgrade caps the HTTP upgrade request of a WebSocket connection.
const maxUpgrade = 8 << 10

// upgradeAhead reads each WebSocket connection's HTTP upgrade request
// before sipgo sees the connection. sipgo's WS transport upgrades in its
// accept loop, one connection at a time, so one client that sends its
// request slowly would hold every other one back; here each request is
// read in its own goroutine, under the guard's message timeout (and, for
// wss, its handshake timeout), and sipgo gets connections whose request
// is already buffered and upgrades them at once.
type upgradeAhead struct {
	net.Listener
	ready chan net.Conn
	done  chan struct{}
	once  sync.Once
	err   error // the inner Accept's, once done is closed

	mu      sync.Mutex
	pending map[net.Conn]struct{} // being read ahead; closed with the listener
}

func newUpgradeAhead(l net.Listener) *upgradeAhead {
	u := &upgradeAhead{Listener: l, ready: make(chan net.Conn), done: make(chan struct{}), pending: map[net.Conn]struct{}{}}
	go u.acceptLoop()
	return u
}

func (u *upgradeAhead) acceptLoop() {
	for {
		c, err := u.Listener.Accept()
		if err != nil {
			u.once.Do(func() { u.err = err; close(u.done) })
			return
		}
		u.mu.Lock()
		if u.pending == nil {
			u.mu.Unlock()
			c.Close()
			continue
		}
		u.pending[c] = struct{}{}
		u.mu.Unlock()
		go u.preread(c)
	}
}

func (u *upgradeAhead) preread(c net.Conn) {
	defer func() {
		u.mu.Lock()
		delete(u.pending, c)
		u.mu.Unlock()
	}()
	buf := make([]byte, 0, 1024)
	for !bytes.Contains(buf, []byte("\r\n\r\n")) {
		if len(buf) >= maxUpgrade {
			c.Close()
			return
		}
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil && n == 0 {
			c.Close()
			return
		}
	}
	select {
	case u.ready <- &replayConn{Conn: c, buf: buf}:
	case <-u.done:
		c.Close()
	}
}

// Accept returns the next connection whose upgrade request has arrived.
func (u *upgradeAhead) Accept() (net.Conn, error) {
	select {
	case c := <-u.ready:
		return c, nil
	case <-u.done:
		return nil, u.err
	}
}

func (u *upgradeAhead) Close() error {
	err := u.Listener.Close()
	u.once.Do(func() { u.err = net.ErrClosed; close(u.done) })
	u.mu.Lock()
	for c := range u.pending {
		c.Close()
	}
	u.pending = nil
	u.mu.Unlock()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// replayConn reads buf before the connection.
type replayConn struct {
	net.Conn
	buf []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
