package cryptoleg

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"sipxdp/relay/srtpleg"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func fingerprint(c *srtpleg.Certificate) srtpleg.Fingerprint {
	sum := sha256.Sum256(c.DER())
	hex := make([]string, len(sum))
	for i, b := range sum {
		hex[i] = fmt.Sprintf("%02X", b)
	}
	return srtpleg.Fingerprint{Hash: "sha-256", Value: strings.Join(hex, ":")}
}

// finalFlight reports whether a DTLS datagram carries a record of the
// handshake's last flight: ChangeCipherSpec (content type 20), or any
// record under the new epoch (RFC 6347 section 4.1: type, version, epoch,
// sequence number, length).
func finalFlight(b []byte) bool {
	for len(b) >= 13 {
		if b[0] == 20 || b[3] != 0 || b[4] != 0 {
			return true
		}
		n := 13 + (int(b[11])<<8 | int(b[12]))
		if n > len(b) {
			break
		}
		b = b[n:]
	}
	return false
}

// pair is the relay's DTLS client leg and a browser's server leg joined
// by the test, which holds back the browser's last flight on demand: the
// browser's side is complete, the relay's is not.
type pair struct {
	relay, browser   *Leg
	browserReady     chan struct{}
	relayReady       chan struct{}
	mu               sync.Mutex
	held             [][]byte
	hold             bool
	relayAt, browsAt netip.AddrPort
}

func newPair(t *testing.T, hold bool) *pair {
	t.Helper()
	p := &pair{browserReady: make(chan struct{}), relayReady: make(chan struct{}), hold: hold,
		relayAt: netip.MustParseAddrPort("192.0.2.1:40000"), browsAt: netip.MustParseAddrPort("198.51.100.7:50000")}
	rc, err := srtpleg.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	bc, err := srtpleg.NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	// Each leg's datagrams go to the other on a goroutine, as a socket
	// would carry them.
	p.browser, err = New(Config{Kind: DTLS,
		DTLS: srtpleg.Config{Role: srtpleg.Server, Certificate: bc, Remote: fingerprint(rc), Timeout: 5 * time.Second},
		Send: func(b []byte, _ netip.AddrPort) error {
			c := append([]byte(nil), b...)
			p.mu.Lock()
			if p.hold && finalFlight(c) {
				p.held = append(p.held, c)
				p.mu.Unlock()
				return nil
			}
			p.mu.Unlock()
			go p.relay.DTLS(c, p.browsAt)
			return nil
		},
		OnReady: func() { close(p.browserReady) }})
	if err != nil {
		t.Fatal(err)
	}
	p.relay, err = New(Config{Kind: DTLS,
		DTLS: srtpleg.Config{Role: srtpleg.Client, Certificate: rc, Remote: fingerprint(bc), Timeout: 5 * time.Second},
		Send: func(b []byte, _ netip.AddrPort) error {
			c := append([]byte(nil), b...)
			go p.browser.DTLS(c, p.relayAt)
			return nil
		},
		OnReady: func() { close(p.relayReady) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.relay.Close()
		_ = p.browser.Close()
	})
	return p
}

// release hands the held last flight to the relay's leg.
func (p *pair) release() {
	p.mu.Lock()
	held := p.held
	p.held, p.hold = nil, false
	p.mu.Unlock()
	for _, b := range held {
		p.relay.DTLS(b, p.browsAt)
	}
}

func wait(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not within 5 s", what)
	}
}

func rtpPacket(seq byte) []byte {
	return append([]byte{0x80, 0, 0, seq, 0, 0, 0, seq, 0xde, 0xad, 0xbe, 0xef}, bytes.Repeat([]byte{seq}, 160)...)
}

// The browser completes DTLS when it sends its last flight and sends
// media at once; the relay's leg is keyed only once that flight is read.
// SRTP in between is kept and relayed in order when the keys are ready,
// up to MaxEarly packets; the rest, and SRTP before any handshake or
// after a failure, are dropped and counted. (Before Early, every packet
// in between was dropped: bench/sipload's SRTP test lost one now and
// then under load.)
func TestEarlySRTP(t *testing.T) {
	for _, tc := range []struct {
		name      string
		send      int // SRTP packets sent before the relay's keys
		wantHeld  int
		wantDrops int
	}{
		{"one packet", 1, 1, 0},
		{"as many as are kept", MaxEarly, MaxEarly, 0},
		{"more than are kept", MaxEarly + 3, MaxEarly, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, true)
			p.relay.Start(p.browsAt)
			wait(t, p.browserReady, "browser's handshake")
			var mu sync.Mutex
			var got [][]byte
			delivered := make(chan struct{}, tc.send)
			for i := 0; i < tc.send; i++ {
				srtp, err := p.browser.Encrypt(make([]byte, 0, 256), rtpPacket(byte(i)), false)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := p.relay.Decrypt(make([]byte, 0, 256), srtp, false); err != ErrNotReady {
					t.Fatalf("Decrypt before the last flight: %v, want ErrNotReady", err)
				}
				kept := p.relay.Early(srtp, false, func(plain []byte) {
					mu.Lock()
					got = append(got, plain)
					mu.Unlock()
					delivered <- struct{}{}
				})
				if want := i < MaxEarly; kept != want {
					t.Fatalf("packet %d: Early = %v, want %v", i, kept, want)
				}
			}
			p.release()
			wait(t, p.relayReady, "relay's handshake")
			for i := 0; i < tc.wantHeld; i++ {
				select {
				case <-delivered:
				case <-time.After(5 * time.Second):
					t.Fatalf("%d of %d kept packets delivered", i, tc.wantHeld)
				}
			}
			mu.Lock()
			for i, b := range got {
				if !bytes.Equal(b, rtpPacket(byte(i))) {
					t.Errorf("delivered packet %d is not the browser's packet %d", i, i)
				}
			}
			mu.Unlock()
			c := p.relay.Info().Counters
			if c["srtp_held"] != uint64(tc.wantHeld) || c["srtp_not_ready"] != uint64(tc.wantDrops) {
				t.Errorf("counters held %d not ready %d, want %d and %d", c["srtp_held"], c["srtp_not_ready"], tc.wantHeld, tc.wantDrops)
			}
			// Keyed now: Early relays at once, on the caller's goroutine.
			srtp, err := p.browser.Encrypt(make([]byte, 0, 256), rtpPacket(99), false)
			if err != nil {
				t.Fatal(err)
			}
			var now []byte
			if !p.relay.Early(srtp, false, func(plain []byte) { now = plain }) || !bytes.Equal(now, rtpPacket(99)) {
				t.Errorf("Early after the keys: did not deliver the packet at once")
			}
		})
	}
}

func TestEarlySRTPRefused(t *testing.T) {
	pkt := rtpPacket(1)
	never := func([]byte) { t.Error("delivered a packet Early refused") }
	t.Run("before the handshake", func(t *testing.T) {
		p := newPair(t, false)
		if p.relay.Early(pkt, false, never) {
			t.Fatal("a leg waiting for its peer kept SRTP")
		}
		if n := p.relay.Info().Counters["srtp_not_ready"]; n != 1 {
			t.Fatalf("srtp_not_ready %d, want 1", n)
		}
	})
	t.Run("after close", func(t *testing.T) {
		p := newPair(t, true)
		p.relay.Start(p.browsAt)
		wait(t, p.browserReady, "browser's handshake")
		srtp, err := p.browser.Encrypt(make([]byte, 0, 256), pkt, false)
		if err != nil {
			t.Fatal(err)
		}
		if !p.relay.Early(srtp, false, never) {
			t.Fatal("a handshaking leg refused SRTP")
		}
		_ = p.relay.Close()
		if p.relay.Early(srtp, false, never) {
			t.Fatal("a closed leg kept SRTP")
		}
		p.release() // the closed leg ignores the flight, and delivers nothing
	})
}
