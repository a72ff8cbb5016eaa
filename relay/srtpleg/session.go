// Package srtpleg is the crypto of the relay's WebRTC and SDES legs: a DTLS-SRTP handshake (RFC 5763/5764)
// over the datagrams the relay port demuxes as DTLS, SDES keys from a=crypto lines (RFC 4568), and a Session
// that turns SRTP/SRTCP into RTP/RTCP and back, packet by packet. pion does the cryptography; this package
// chooses the parameters, checks the peer's fingerprint and counts what it drops. relay/cryptoleg runs it
// for a leg of a call (see docs/ARCHITECTURE.md).
package srtpleg

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/transport/v5/replaydetector"
)

// Reason is why Decrypt dropped a packet.
type Reason uint8

// The reasons a packet is dropped.
const (
	BadAuth   Reason = iota // the authentication tag does not verify
	Replayed                // the index was seen before, or is older than the replay window
	TooShort                // shorter than a header plus the auth tag
	Malformed               // not RTP/RTCP, or refused by pion for another reason
	numReasons
)

var reasonNames = [numReasons]string{BadAuth: "bad_auth", Replayed: "replayed", TooShort: "too_short", Malformed: "malformed"}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", r)
}

// The errors Decrypt returns: sentinels, so a dropped packet costs no allocation.
var (
	ErrBadAuth   = errors.New("srtp: authentication tag does not verify")
	ErrReplayed  = errors.New("srtp: replayed packet")
	ErrTooShort  = errors.New("srtp: packet too short")
	ErrMalformed = errors.New("srtp: malformed packet")
)

var reasonErr = [numReasons]error{BadAuth: ErrBadAuth, Replayed: ErrReplayed, TooShort: ErrTooShort, Malformed: ErrMalformed}

// replayWindow is the replay window in packets for SRTP and SRTCP (RFC 3711 section 3.3.2 asks for at least
// 64; pion/webrtc uses 64 too).
const replayWindow = 64

// pion's limits for the replay detectors (its maxROC<<16|maxSequenceNumber and maxSRTCPIndex, unexported).
const (
	maxSRTPIndex  = 1<<48 - 1
	maxSRTCPIndex = 0x7FFFFFFF
)

// Session is one leg's SRTP state: a context that encrypts toward the remote side and one that decrypts what
// it sends. Encrypt and decrypt may run in different goroutines; each direction is serialised, as pion's
// Context is not safe for concurrent use.
type Session struct {
	decMu    sync.Mutex
	dec      *srtp.Context
	rtpHdr   rtp.Header // reused under decMu/encMu so pion does not allocate one per packet
	rtcpHdr  rtcp.Header
	replayed bool // set by the replay detectors (under decMu) so Decrypt can tell a replay from other errors
	minRTP   int  // shortest SRTP packet the decrypt profile can carry: header plus tag
	minRTCP  int

	encMu      sync.Mutex
	enc        *srtp.Context
	encRTPHdr  rtp.Header
	encRTCPHdr rtcp.Header

	drops   [numReasons]atomic.Uint64
	profile srtp.ProtectionProfile
	close   func() error
}

// newSession builds a session from the master keys and salts of both directions: local protects what this leg
// sends, remote is what the peer protects with.
func newSession(local, remote srtp.ProtectionProfile, localKey, localSalt, remoteKey, remoteSalt []byte) (*Session, error) {
	s := &Session{profile: local}
	enc, err := srtp.CreateContext(localKey, localSalt, local)
	if err != nil {
		return nil, fmt.Errorf("srtp encrypt context (%s): %w", local, err)
	}
	// pion's own replay detectors, wrapped so a rejection is known without matching error strings.
	watch := func(max uint64) func() replaydetector.ReplayDetector {
		return func() replaydetector.ReplayDetector {
			return &watchedDetector{ReplayDetector: replaydetector.New(replayWindow, max), hit: &s.replayed}
		}
	}
	dec, err := srtp.CreateContext(remoteKey, remoteSalt, remote,
		srtp.SRTPReplayDetectorFactory(watch(maxSRTPIndex)), srtp.SRTCPReplayDetectorFactory(watch(maxSRTCPIndex)))
	if err != nil {
		return nil, fmt.Errorf("srtp decrypt context (%s): %w", remote, err)
	}
	s.enc, s.dec = enc, dec
	s.minRTP, s.minRTCP, err = minLens(remote)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// minLens is the shortest SRTP and SRTCP packet of a profile: 12 bytes of RTP header or 8 of RTCP header and
// SRTCP index, plus the tags.
func minLens(p srtp.ProtectionProfile) (int, int, error) {
	tag, err := p.AuthTagRTPLen()
	if err != nil {
		return 0, 0, err
	}
	rtcpTag, err := p.AuthTagRTCPLen()
	if err != nil {
		return 0, 0, err
	}
	aead, err := p.AEADAuthTagLen()
	if err != nil {
		return 0, 0, err
	}
	return 12 + tag + aead, 8 + 4 + rtcpTag + aead, nil
}

type watchedDetector struct {
	replaydetector.ReplayDetector
	hit *bool
}

func (w *watchedDetector) Check(seq uint64) (func() bool, bool) {
	accept, ok := w.ReplayDetector.Check(seq)
	if !ok {
		*w.hit = true
	}
	return accept, ok
}

// Profile is the SRTP protection profile this leg sends with.
func (s *Session) Profile() srtp.ProtectionProfile { return s.profile }

// DecryptRTP turns one SRTP packet from the remote side into RTP, appended into dst[:0] (pion grows dst only
// when it is too small). A dropped packet is counted and its Reason's sentinel error returned.
func (s *Session) DecryptRTP(dst, pkt []byte) ([]byte, error) {
	s.decMu.Lock()
	out, err := s.dec.DecryptRTP(dst, pkt, &s.rtpHdr)
	return s.decrypted(out, err, len(pkt) < s.minRTP)
}

// DecryptRTCP is DecryptRTP for SRTCP.
func (s *Session) DecryptRTCP(dst, pkt []byte) ([]byte, error) {
	s.decMu.Lock()
	out, err := s.dec.DecryptRTCP(dst, pkt, &s.rtcpHdr)
	return s.decrypted(out, err, len(pkt) < s.minRTCP)
}

// decrypted counts a failed decrypt under its reason (short: the packet cannot hold a header and the tag),
// clears the replay detectors' mark for the next packet and releases decMu, which the caller took (so the two
// Decrypts do not repeat the block; pion returns errors, it does not panic on packets, as FuzzDecrypt checks).
func (s *Session) decrypted(out []byte, err error, short bool) ([]byte, error) {
	replayed := s.replayed
	s.replayed = false
	s.decMu.Unlock()
	switch {
	case err == nil:
		return out, nil
	case short:
		return nil, s.drop(TooShort)
	default:
		return nil, s.drop(classify(err, replayed))
	}
}

func classify(err error, replayed bool) Reason {
	switch {
	case replayed:
		return Replayed
	case errors.Is(err, srtp.ErrFailedToVerifyAuthTag):
		return BadAuth
	default:
		return Malformed
	}
}

func (s *Session) drop(r Reason) error {
	s.drops[r].Add(1)
	return reasonErr[r]
}

// EncryptRTP protects one RTP packet for the remote side, into dst (which needs room for the packet plus the
// auth tag, or pion allocates). Errors are the plain leg's malformed packets and are not counted as drops of
// this leg's input.
func (s *Session) EncryptRTP(dst, pkt []byte) ([]byte, error) {
	s.encMu.Lock()
	defer s.encMu.Unlock()
	return encrypted(s.enc.EncryptRTP(dst, pkt, &s.encRTPHdr))
}

// EncryptRTCP is EncryptRTP for RTCP.
func (s *Session) EncryptRTCP(dst, pkt []byte) ([]byte, error) {
	s.encMu.Lock()
	defer s.encMu.Unlock()
	return encrypted(s.enc.EncryptRTCP(dst, pkt, &s.encRTCPHdr))
}

func encrypted(out []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, fmt.Errorf("srtp encrypt: %w", err)
	}
	return out, nil
}

// Drops is how many packets Decrypt has dropped, by reason.
func (s *Session) Drops() [numReasons]uint64 {
	var d [numReasons]uint64
	for i := range d {
		d[i] = s.drops[i].Load()
	}
	return d
}

// Dropped is the number of packets dropped for one reason.
func (s *Session) Dropped(r Reason) uint64 {
	if r >= numReasons {
		return 0
	}
	return s.drops[r].Load()
}

// Close ends the leg: for DTLS-SRTP it closes the DTLS association (sending close_notify), for SDES it does
// nothing.
func (s *Session) Close() error {
	if s.close == nil {
		return nil
	}
	return s.close()
}
