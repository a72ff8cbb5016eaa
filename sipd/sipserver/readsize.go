package sipserver

import (
	"net"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// sipgo gives every TCP and TLS connection a read buffer of
// sip.TransportBufferReadSize (32 KiB by default) for its whole life, and
// the same global sizes each UDP listener's buffer. A stream parser copes
// with any read size, so connections get a small one; a UDP listener must
// see a whole datagram larger than max_message_size to refuse it, so it
// keeps a large one. sipgo reads the global when a reader starts: Serve
// sets it large, starts the UDP readers, waits until each has made its
// buffer (its first ReadFrom), then sets it small for the connections
// accepted and dialled from then on. bench conns: 15,000 idle TCP
// connections took 38.5 kB of Go heap each with 32 KiB.
const streamReadSize = 4096

// readSizeMu keeps two servers in one process (tests) from interleaving
// the large and small settings.
var readSizeMu sync.Mutex

func udpReadSize(maxSize int) uint16 {
	return uint16(min(65535, max(32768, maxSize+1)))
}

// firstRead reports when sipgo's UDP reader first reads, by which time
// its buffer exists.
type firstRead struct {
	net.PacketConn
	once    sync.Once
	started chan struct{}
}

func newFirstRead(c net.PacketConn) *firstRead {
	return &firstRead{PacketConn: c, started: make(chan struct{})}
}

func (f *firstRead) ReadFrom(p []byte) (int, net.Addr, error) {
	f.once.Do(func() { close(f.started) })
	return f.PacketConn.ReadFrom(p)
}

// serveUDPThenSetStreamSize starts serve for each UDP socket with the
// large buffer, then sets the small one; done closes if a reader ends
// before its first read.
func serveUDPThenSetStreamSize(conns []net.PacketConn, maxSize int, serve func(net.PacketConn, chan struct{})) {
	readSizeMu.Lock()
	defer readSizeMu.Unlock()
	sip.TransportBufferReadSize = udpReadSize(maxSize)
	for _, c := range conns {
		fr := newFirstRead(c)
		done := make(chan struct{})
		go serve(fr, done)
		select {
		case <-fr.started:
		case <-done:
		}
	}
	sip.TransportBufferReadSize = streamReadSize
}
