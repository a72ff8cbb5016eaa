package srtpleg

import (
	"net"
	"sync"
	"time"

	"github.com/pion/transport/v5/deadline"
)

// PacketConn is the DTLS association's view of the relay port: the relay Delivers the datagrams from one
// remote address that ice.Demux classed as DTLS, and what DTLS writes goes out through send (the relay's own
// socket, shared with STUN and RTP). It is a net.PacketConn because that is what pion/dtls runs over.
type PacketConn struct {
	in     chan []byte
	send   func([]byte) error
	local  net.Addr
	remote net.Addr

	readDeadline *deadline.Deadline
	closed       chan struct{}
	closeOnce    sync.Once
}

// inQueue is how many DTLS datagrams may wait for the handshake goroutine; a flight is a handful, and more
// than this means a peer flooding the port, whose excess is dropped.
const inQueue = 32

// NewPacketConn makes the adapter for one remote address; send writes one datagram to it.
func NewPacketConn(local, remote net.Addr, send func([]byte) error) *PacketConn {
	return &PacketConn{
		in: make(chan []byte, inQueue), send: send, local: local, remote: remote,
		readDeadline: deadline.New(), closed: make(chan struct{}),
	}
}

// Deliver hands one DTLS datagram to the association. It copies b (the relay reuses its buffers) and never
// blocks: it reports false when the queue is full or the conn is closed, and the datagram is dropped (DTLS
// retransmits).
func (c *PacketConn) Deliver(b []byte) bool {
	select {
	case <-c.closed:
		return false
	default:
	}
	select {
	case c.in <- append([]byte(nil), b...):
		return true
	default:
		return false
	}
}

// ReadFrom implements net.PacketConn.
func (c *PacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case b := <-c.in:
		return copy(p, b), c.remote, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	case <-c.readDeadline.Done():
		return 0, nil, timeoutError{}
	}
}

// WriteTo implements net.PacketConn; the association has one peer, so addr is not consulted.
func (c *PacketConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	if err := c.send(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close implements net.PacketConn; later Delivers are refused.
func (c *PacketConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.readDeadline.Set(time.Time{}) // stops a pending timer
	})
	return nil
}

// Done is closed when the conn is: by Close, by a failed handshake, or by pion when the peer ends the
// association (close_notify or a fatal alert), which is how the relay learns that a browser leg is gone.
func (c *PacketConn) Done() <-chan struct{} { return c.closed }

// LocalAddr implements net.PacketConn.
func (c *PacketConn) LocalAddr() net.Addr { return c.local }

// SetDeadline implements net.PacketConn.
func (c *PacketConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	c.readDeadline.Set(t)
	return nil
}

// SetWriteDeadline implements net.PacketConn; writes go to the relay's socket and do not block.
func (c *PacketConn) SetWriteDeadline(time.Time) error { return nil }

type timeoutError struct{}

func (timeoutError) Error() string   { return "srtpleg: read deadline exceeded" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
