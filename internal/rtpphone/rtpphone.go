// Package rtpphone is the media half of a plain-RTP phone for the WebRTC
// tests: on a UDP socket the test opened (in the callee's namespace) it
// sends a PCMU tone to the relay every 20 ms and records what arrives, so
// the test can tell the browser's audio (RTP version 2, PCMU, samples
// well above silence) from SRTP passed through or from silence. The SIP
// half is internal/sipua.
package rtpphone

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/zaf/g711"
)

// PCMU is the static payload type of G.711 mu-law (RFC 3551).
const PCMU = 0

// Loud is the peak (of 32767) above which a PCMU packet counts as sound:
// about -26 dBFS, far above the few steps that silence or comfort noise
// decode to.
const Loud = 1600

// Smooth is the roughness below which a loud packet is audio rather than
// noise. Roughness is the mean step between neighbouring samples over the
// mean level: about 0.3 for a 400 Hz tone, 0.2 for the 400 Hz square
// wave of Chromium's fake-device beep, 0.8 at 1 kHz, 1.1 at 1.5 kHz, and about 1.6 for the
// random bytes an SRTP payload decodes to.
const Smooth = 1.2

const (
	sampleRate = 8000
	frame      = 160 // samples per 20 ms packet
)

// Packet is what Inspect reads from one datagram.
type Packet struct {
	RTCP        bool // an RTCP packet multiplexed on the RTP port (RFC 5761)
	PayloadType uint8
	SSRC        uint32
	// Peak is the largest absolute sample of a PCMU payload, decoded, and
	// Rough its roughness (see Smooth); both 0 for other payload types.
	Peak  int
	Rough float64
}

// ErrNotRTP is what Inspect returns for a datagram that is not RTP
// version 2 (SRTP keeps the RTP header, so it passes; its payload then
// decodes as noise, which is why the test also wants tone-like levels).
var ErrNotRTP = errors.New("not an RTP version 2 packet")

// Inspect reads one datagram received on the RTP port.
func Inspect(b []byte) (Packet, error) {
	if len(b) < 2 || b[0]>>6 != 2 {
		return Packet{}, ErrNotRTP
	}
	// RFC 5761 §4: RTCP packet types 192-223 occupy the second byte.
	if b[1] >= 192 && b[1] <= 223 {
		return Packet{RTCP: true}, nil
	}
	var h rtp.Header
	n, err := h.Unmarshal(b)
	if err != nil {
		return Packet{}, fmt.Errorf("%w: %v", ErrNotRTP, err)
	}
	p := Packet{PayloadType: h.PayloadType, SSRC: h.SSRC}
	payload := b[n:]
	if h.Padding && len(payload) > 0 {
		pad := int(payload[len(payload)-1])
		if pad > len(payload) {
			return Packet{}, fmt.Errorf("%w: padding %d beyond the payload", ErrNotRTP, pad)
		}
		payload = payload[:len(payload)-pad]
	}
	if h.PayloadType == PCMU && len(payload) > 0 {
		var level, step float64
		prev := float64(g711.DecodeUlawFrame(payload[0]))
		for _, s := range payload {
			v := float64(g711.DecodeUlawFrame(s))
			p.Peak = max(p.Peak, int(math.Abs(v)))
			level += math.Abs(v)
			step += math.Abs(v - prev)
			prev = v
		}
		if level > 0 {
			p.Rough = step / level
		}
	}
	return p, nil
}

// Recording is what the phone received and sent so far.
type Recording struct {
	Packets int                    // RTP packets received
	RTCP    int                    // RTCP packets received on the RTP port
	NotRTP  int                    // datagrams that are neither
	Sources map[netip.AddrPort]int // where the RTP came from
	Types   map[uint8]int          // RTP packets by payload type
	Loud    int                    // PCMU packets with a peak above Loud, smooth: sound
	Noisy   int                    // PCMU packets with a peak above Loud, rough: noise
	Peak    int                    // the largest PCMU peak seen
	Sent    int                    // tone packets sent
}

func (r Recording) String() string {
	return fmt.Sprintf("received %d RTP (types %v, from %v), %d RTCP, %d not RTP; PCMU: %d loud, %d noisy, peak %d; sent %d",
		r.Packets, r.Types, r.Sources, r.RTCP, r.NotRTP, r.Loud, r.Noisy, r.Peak, r.Sent)
}

// Add records one datagram received from src.
func (r *Recording) Add(b []byte, src netip.AddrPort) {
	p, err := Inspect(b)
	switch {
	case err != nil:
		r.NotRTP++
		return
	case p.RTCP:
		r.RTCP++
		return
	}
	r.Packets++
	r.Sources[src]++
	r.Types[p.PayloadType]++
	if p.PayloadType == PCMU {
		r.Peak = max(r.Peak, p.Peak)
		switch {
		case p.Peak <= Loud:
		case p.Rough < Smooth:
			r.Loud++
		default:
			r.Noisy++
		}
	}
}

func (r Recording) clone() Recording {
	c := r
	c.Sources = make(map[netip.AddrPort]int, len(r.Sources))
	for k, v := range r.Sources {
		c.Sources[k] = v
	}
	c.Types = make(map[uint8]int, len(r.Types))
	for k, v := range r.Types {
		c.Types[k] = v
	}
	return c
}

// Phone sends a tone and records on one socket.
type Phone struct {
	conn *net.UDPConn
	dst  netip.AddrPort
	hz   float64

	mu  sync.Mutex
	rec Recording
	err error // the first send error

	stop chan struct{}
	wg   sync.WaitGroup
}

// Start begins sending a PCMU sine of hz (at about -12 dBFS) to dst every
// 20 ms from conn, and recording what conn receives from anywhere. conn
// stays the caller's; Stop ends both before returning.
func Start(conn *net.UDPConn, dst netip.AddrPort, hz float64) *Phone {
	p := &Phone{conn: conn, dst: dst, hz: hz, stop: make(chan struct{}),
		rec: Recording{Sources: map[netip.AddrPort]int{}, Types: map[uint8]int{}}}
	p.wg.Add(2)
	go p.send()
	go p.receive()
	return p
}

// Tone is packet n (from 0) of a PCMU sine of hz at amplitude 8000.
func Tone(hz float64, n int) []byte {
	out := make([]byte, frame)
	for i := range out {
		s := 8000 * math.Sin(2*math.Pi*hz*float64(n*frame+i)/sampleRate)
		out[i] = g711.EncodeUlawFrame(int16(s))
	}
	return out
}

func (p *Phone) send() {
	defer p.wg.Done()
	ssrc, seq0 := rand.Uint32(), uint16(rand.Uint32())
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: PCMU, SequenceNumber: seq0 + uint16(n),
			Timestamp: uint32(n * frame), SSRC: ssrc, Marker: n == 0}, Payload: Tone(p.hz, n)}
		b, err := pkt.Marshal()
		if err == nil {
			_, err = p.conn.WriteToUDPAddrPort(b, p.dst)
		}
		p.mu.Lock()
		if err != nil && p.err == nil {
			p.err = fmt.Errorf("send RTP to %s: %w", p.dst, err)
		}
		if err == nil {
			p.rec.Sent++
		}
		p.mu.Unlock()
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
	}
}

func (p *Phone) receive() {
	defer p.wg.Done()
	buf := make([]byte, 2048)
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		p.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, src, err := p.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// A timeout, or an ICMP port unreachable for a packet sent
			// before the relay had its port open: keep going.
			continue
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		p.mu.Lock()
		p.rec.Add(buf[:n], src)
		p.mu.Unlock()
	}
}

// Recording is a copy of what has been recorded so far.
func (p *Phone) Recording() Recording {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rec.clone()
}

// Stop ends sending and recording and returns the recording, and the
// first error sending met.
func (p *Phone) Stop() (Recording, error) {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rec.clone(), p.err
}
