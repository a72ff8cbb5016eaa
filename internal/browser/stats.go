package browser

import (
	"fmt"
	"time"
)

// Stats is what the test page reduces RTCPeerConnection.getStats() to.
type Stats struct {
	ConnectionState    string    `json:"connectionState"`
	ICEConnectionState string    `json:"iceConnectionState"`
	Inbound            *Inbound  `json:"inbound"`
	Outbound           *Outbound `json:"outbound"`
	DTLSState          string    `json:"dtlsState"`
	DTLSRole           string    `json:"dtlsRole"`
	SRTPCipher         string    `json:"srtpCipher"`
	ICEState           string    `json:"iceState"`
	Pair               *Pair     `json:"pair"`
}

// Inbound is the inbound-rtp audio stream.
type Inbound struct {
	PacketsReceived      uint64  `json:"packetsReceived"`
	BytesReceived        uint64  `json:"bytesReceived"`
	PacketsLost          int64   `json:"packetsLost"`
	TotalAudioEnergy     float64 `json:"totalAudioEnergy"`
	AudioLevel           float64 `json:"audioLevel"`
	TotalSamplesReceived uint64  `json:"totalSamplesReceived"`
	Codec                string  `json:"codec"`
}

// Outbound is the outbound-rtp audio stream.
type Outbound struct {
	PacketsSent uint64 `json:"packetsSent"`
	BytesSent   uint64 `json:"bytesSent"`
	Codec       string `json:"codec"`
}

// Pair is the selected ICE candidate pair.
type Pair struct {
	State         string    `json:"state"`
	Nominated     bool      `json:"nominated"`
	Local         Candidate `json:"local"`
	Remote        Candidate `json:"remote"`
	BytesSent     uint64    `json:"bytesSent"`
	BytesReceived uint64    `json:"bytesReceived"`
}

// Candidate is one end of the pair.
type Candidate struct {
	Address       string `json:"address"`
	Port          int    `json:"port"`
	Protocol      string `json:"protocol"`
	CandidateType string `json:"candidateType"`
}

func (s Stats) String() string {
	in, out, pair := "none", "none", "none"
	if s.Inbound != nil {
		in = fmt.Sprintf("%d packets, %d bytes, %s, energy %g, lost %d", s.Inbound.PacketsReceived, s.Inbound.BytesReceived,
			s.Inbound.Codec, s.Inbound.TotalAudioEnergy, s.Inbound.PacketsLost)
	}
	if s.Outbound != nil {
		out = fmt.Sprintf("%d packets, %s", s.Outbound.PacketsSent, s.Outbound.Codec)
	}
	if s.Pair != nil {
		pair = fmt.Sprintf("%s %s:%d -> %s:%d (%s)", s.Pair.State, s.Pair.Local.Address, s.Pair.Local.Port,
			s.Pair.Remote.Address, s.Pair.Remote.Port, s.Pair.Remote.CandidateType)
	}
	return fmt.Sprintf("connection %s, ice %s, dtls %s (%s, %s); in: %s; out: %s; pair: %s",
		s.ConnectionState, s.ICEConnectionState, s.DTLSState, s.DTLSRole, s.SRTPCipher, in, out, pair)
}

// Stats is the latest stats the page reported after event seq after
// (0: any); ok is false when there are none.
func (p *Page) Stats(after int) (Stats, int, bool) {
	es := p.Events()
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		if e.Seq <= after {
			break
		}
		if e.Type != "stats" {
			continue
		}
		var s Stats
		if err := e.Decode(&s); err != nil {
			p.t.Fatal(err)
		}
		return s, e.Seq, true
	}
	return Stats{}, 0, false
}

// AwaitStats polls the page's stats until cond holds for the latest
// report, and returns it; the test fails after timeout with the last one.
func (p *Page) AwaitStats(timeout time.Duration, what string, cond func(Stats) bool) Stats {
	p.t.Helper()
	end := time.Now().Add(timeout)
	var last Stats
	seen := false
	for {
		if s, _, ok := p.Stats(0); ok {
			last, seen = s, true
			if cond(s) {
				return s
			}
		}
		if time.Now().After(end) {
			if !seen {
				p.t.Fatalf("no stats from the page within %v, waiting for %s", timeout, what)
			}
			p.t.Fatalf("timed out after %v waiting for %s; last stats: %v", timeout, what, last)
		}
		if p.Exited() {
			p.t.Fatalf("chromium exited while waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
