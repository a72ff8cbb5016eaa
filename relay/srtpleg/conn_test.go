package srtpleg

import (
	"errors"
	"net"
	"testing"
	"time"
)

func TestPacketConn(t *testing.T) {
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	remote := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2}
	var sent [][]byte
	c := NewPacketConn(local, remote, func(b []byte) error {
		sent = append(sent, append([]byte(nil), b...))
		return nil
	})

	// Deliver copies: the relay reuses its read buffer.
	buf := []byte{22, 1, 2}
	if !c.Deliver(buf) {
		t.Fatal("Deliver refused the first datagram")
	}
	buf[0] = 0
	got := make([]byte, 10)
	n, from, err := c.ReadFrom(got)
	if err != nil || n != 3 || got[0] != 22 || from != remote {
		t.Fatalf("ReadFrom = %d %v %v, %x", n, from, err, got[:n])
	}

	// A full queue drops instead of blocking the relay.
	for i := 0; i < inQueue; i++ {
		if !c.Deliver([]byte{22}) {
			t.Fatalf("datagram %d refused below the queue size", i)
		}
	}
	if c.Deliver([]byte{22}) {
		t.Fatal("Deliver past the queue size was accepted")
	}
	for i := 0; i < inQueue; i++ {
		if _, _, err := c.ReadFrom(got); err != nil {
			t.Fatal(err)
		}
	}

	// The read deadline ends a blocked read with a timeout.
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.ReadFrom(got)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("ReadFrom past the deadline: %v, want a timeout", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	if _, err := c.WriteTo([]byte{22, 9}, nil); err != nil || len(sent) != 1 || sent[0][1] != 9 {
		t.Fatalf("WriteTo: %v, sent %x", err, sent)
	}

	// Close wakes a blocked reader and refuses what follows.
	done := make(chan error)
	go func() {
		_, _, err := c.ReadFrom(got)
		done <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("blocked ReadFrom after Close: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed")
	}
	if c.Deliver([]byte{22}) {
		t.Fatal("Deliver after Close accepted")
	}
	if _, err := c.WriteTo([]byte{22}, nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close: %v", err)
	}
	if c.LocalAddr() != local {
		t.Fatal("LocalAddr")
	}
}
