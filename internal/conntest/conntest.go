// Package conntest watches connections from the client's side in tests.
package conntest

import (
	"errors"
	"net"
	"time"
)

// ClosedAt waits until the server closes c (a read ends in EOF or a
// reset) and returns when; ok is false if c is still open at until. What
// the server sends meanwhile (keep-alive answers) is read and dropped.
func ClosedAt(c net.Conn, until time.Time) (at time.Time, ok bool) {
	c.SetReadDeadline(until)
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return time.Time{}, false
			}
			return time.Now(), true
		}
	}
}

// ClosedWithin reports whether the server closes c within d.
func ClosedWithin(c net.Conn, d time.Duration) bool {
	_, ok := ClosedAt(c, time.Now().Add(d))
	return ok
}
