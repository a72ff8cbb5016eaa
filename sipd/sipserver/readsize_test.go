package sipserver

import (
	"net"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// The UDP readers get a buffer larger than max_message_size, read when
// they start as sipgo does; connections started afterwards get the small
// one.
func TestReadSizeUDPLargeStreamSmall(t *testing.T) {
	var conns []net.PacketConn
	for range 2 {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	got := make(chan uint16, len(conns))
	serveUDPThenSetStreamSize(conns, 40000, func(c net.PacketConn, done chan struct{}) {
		defer close(done)
		size := sip.TransportBufferReadSize
		got <- size
		c.ReadFrom(make([]byte, size))
	})
	for range conns {
		if g := <-got; g != 40001 {
			t.Errorf("UDP reader started with %d bytes, want 40001", g)
		}
	}
	readSizeMu.Lock()
	defer readSizeMu.Unlock()
	if sip.TransportBufferReadSize != streamReadSize {
		t.Errorf("stream read size %d, want %d", sip.TransportBufferReadSize, streamReadSize)
	}
	if udpReadSize(16384) != 32768 || udpReadSize(70000) != 65535 {
		t.Errorf("udpReadSize: %d %d", udpReadSize(16384), udpReadSize(70000))
	}
}
