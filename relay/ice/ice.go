// Package ice is the relay's ICE-lite side (RFC 8445 section 2.5) of a WebRTC leg: it tells STUN from DTLS and
// RTP on a relay port (RFC 7983), answers the browser's STUN Binding requests that carry the leg's short-term
// credentials, and makes those credentials. It lives beside the relay engine rather than in usrelay because sipd
// (which must not import usrelay) generates the credentials it announces in the SDP, and the userspace relay calls
// Responder.Handle for each datagram that Demux calls STUN.
//
// STUN encoding and the MESSAGE-INTEGRITY and FINGERPRINT checks are github.com/pion/stun/v4's; this package only
// decides which request deserves an answer.
package ice

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/pion/stun/v4"
)

// Kind is what a datagram on a relay port carries, by its first byte (RFC 7983 section 7).
type Kind uint8

const (
	KindOther Kind = iota // none of the below: drop
	KindSTUN              // 0-3
	KindDTLS              // 20-63
	KindRTP               // 128-191: RTP or RTCP (SRTP or SRTCP on a WebRTC leg)
)

func (k Kind) String() string {
	switch k {
	case KindSTUN:
		return "stun"
	case KindDTLS:
		return "dtls"
	case KindRTP:
		return "rtp"
	}
	return "other"
}

// Demux classifies a datagram by its first byte as RFC 7983 section 7 says. ZRTP (16-19) and TURN channels
// (64-79) are KindOther: the relay speaks neither.
func Demux(b []byte) Kind {
	if len(b) == 0 {
		return KindOther
	}
	switch c := b[0]; {
	case c <= 3:
		return KindSTUN
	case c >= 20 && c <= 63:
		return KindDTLS
	case c >= 128 && c <= 191:
		return KindRTP
	}
	return KindOther
}

// Reason says why Handle answered or not; the relay counts them per reason rather than logging per packet.
type Reason uint8

const (
	Answered       Reason = iota // a Binding success response was built
	NotSTUN                      // not a STUN message (magic cookie, length, or attribute layout)
	NotRequest                   // a response or indication: a lite agent sends no checks, so expects none
	NotBinding                   // a request of another method
	NoUsername                   // no USERNAME
	WrongUsername                // USERNAME is not "<local ufrag>:<remote ufrag>"
	NoIntegrity                  // no MESSAGE-INTEGRITY
	BadIntegrity                 // MESSAGE-INTEGRITY does not verify with the local pwd
	NoFingerprint                // no FINGERPRINT (RFC 8445 section 7.1 requires it)
	BadFingerprint               // FINGERPRINT does not match
	NoAddress                    // the source address is not a valid IP address and port
	numReasons
)

// NumReasons is the number of Reason values, for sizing counter arrays indexed by Reason.
const NumReasons = int(numReasons)

var reasonNames = [...]string{
	Answered: "answered", NotSTUN: "not_stun", NotRequest: "not_request", NotBinding: "not_binding",
	NoUsername: "no_username", WrongUsername: "wrong_username", NoIntegrity: "no_integrity",
	BadIntegrity: "bad_integrity", NoFingerprint: "no_fingerprint", BadFingerprint: "bad_fingerprint",
	NoAddress: "no_address",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", r)
}

// Creds are one leg's ICE credentials: the relay's own (announced in the SDP toward the browser) and the
// browser's ufrag (from its SDP). The remote pwd is not needed: a lite agent never sends a check.
type Creds struct {
	LocalUfrag, LocalPwd string
	RemoteUfrag          string
}

// ICE's length rules (RFC 8445 section 5.3): ufrag at least 4 characters, pwd at least 22, from ice-char
// (ALPHA / DIGIT / "+" / "/"). 24 random bytes make 32 characters of pwd, 192 bits of secret.
const (
	ufragLen = 8
	pwdLen   = 32
)

const iceChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// NewCreds makes fresh local credentials for a leg with crypto/rand; the caller fills in RemoteUfrag once the
// browser's SDP is known.
func NewCreds() (Creds, error) {
	u, err := randomICEChars(ufragLen)
	if err != nil {
		return Creds{}, err
	}
	p, err := randomICEChars(pwdLen)
	if err != nil {
		return Creds{}, err
	}
	return Creds{LocalUfrag: u, LocalPwd: p}, nil
}

// randomICEChars maps random bytes onto the 64 ice-chars; 64 divides 256, so there is no modulo bias.
func randomICEChars(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("ice credentials: %w", err)
	}
	for i := range b {
		b[i] = iceChars[b[i]&63]
	}
	return string(b), nil
}

// ValidUfrag and ValidPwd check ICE's syntax and length rules, for credentials read from an SDP.
func ValidUfrag(s string) bool { return validICE(s, 4, 256) }

// ValidPwd: see ValidUfrag.
func ValidPwd(s string) bool { return validICE(s, 22, 256) }

func validICE(s string, lo, hi int) bool {
	if len(s) < lo || len(s) > hi {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

// ErrCreds reports credentials that break ICE's rules.
var ErrCreds = errors.New("ice credentials")

// Responder answers one leg's Binding requests. It keeps its message buffers between calls so that the per
// datagram path does not allocate; it is therefore not safe for concurrent use (one per worker, or per leg).
type Responder struct {
	creds    Creds
	username string
	integ    stun.MessageIntegrity
	req, res stun.Message
}

// NewResponder checks the credentials and returns a Responder for them.
func NewResponder(c Creds) (*Responder, error) {
	if !ValidUfrag(c.LocalUfrag) || !ValidPwd(c.LocalPwd) || !ValidUfrag(c.RemoteUfrag) {
		return nil, fmt.Errorf("%w: ufrag must be 4+ and pwd 22+ ice-chars", ErrCreds)
	}
	return &Responder{
		creds:    c,
		username: c.LocalUfrag + ":" + c.RemoteUfrag,
		integ:    stun.NewShortTermIntegrity(c.LocalPwd),
	}, nil
}

// Result is what Handle decided about one datagram.
type Result struct {
	Reason Reason
	// Response is the Binding success response to send back to the source, set only when Reason is Answered.
	// It points into the Responder's buffer and is valid until the next call to Handle.
	Response []byte
	// UseCandidate says the browser (controlling) nominated this pair (RFC 8445 section 7.3.1.5): the relay can
	// take the source as the leg's peer.
	UseCandidate bool
}

// Handle checks a datagram received from src and, if it is a Binding request with the leg's credentials, a valid
// MESSAGE-INTEGRITY and FINGERPRINT, builds the success response with src as XOR-MAPPED-ADDRESS. Anything else
// gets no answer: a wrong password must not learn anything, and a lite agent has nothing to say to other methods.
func (r *Responder) Handle(pkt []byte, src netip.AddrPort) Result {
	// pion's IsMessage and Decode accept bytes after the message; a STUN datagram is exactly one message
	// (RFC 8489 section 6.3), and its first two bits are zero.
	if !stun.IsMessage(pkt) || pkt[0]&0xc0 != 0 || int(binary.BigEndian.Uint16(pkt[2:4]))+20 != len(pkt) {
		return Result{Reason: NotSTUN}
	}
	// Decode works in place and the integrity check rewrites the length field while it runs, so copy the
	// datagram into our own buffer rather than touch the caller's.
	r.req.Raw = append(r.req.Raw[:0], pkt...)
	if err := r.req.Decode(); err != nil {
		return Result{Reason: NotSTUN}
	}
	if r.req.Type.Class != stun.ClassRequest {
		return Result{Reason: NotRequest}
	}
	if r.req.Type.Method != stun.MethodBinding {
		return Result{Reason: NotBinding}
	}
	// FINGERPRINT first: it is the cheap check and it tells STUN from a look-alike (RFC 8489 section 7.3).
	if !r.req.Contains(stun.AttrFingerprint) {
		return Result{Reason: NoFingerprint}
	}
	if err := stun.Fingerprint.Check(&r.req); err != nil {
		return Result{Reason: BadFingerprint}
	}
	user, err := r.req.Get(stun.AttrUsername)
	if err != nil {
		return Result{Reason: NoUsername}
	}
	if string(user) != r.username {
		return Result{Reason: WrongUsername}
	}
	if !r.req.Contains(stun.AttrMessageIntegrity) {
		return Result{Reason: NoIntegrity}
	}
	if err := r.integ.Check(&r.req); err != nil {
		return Result{Reason: BadIntegrity}
	}
	if !src.IsValid() || src.Port() == 0 {
		return Result{Reason: NoAddress}
	}
	use := r.req.Contains(stun.AttrUseCandidate)
	a := src.Addr().Unmap()
	xor := stun.XORMappedAddress{IP: a.AsSlice(), Port: int(src.Port())}
	r.res.Reset()
	err = r.res.Build(
		stun.NewTransactionIDSetter(r.req.TransactionID),
		stun.BindingSuccess,
		&xor,
		r.integ,
		stun.Fingerprint,
	)
	if err != nil {
		// Only a malformed address can fail here, and src was checked above.
		return Result{Reason: NoAddress}
	}
	return Result{Reason: Answered, Response: r.res.Raw, UseCandidate: use}
}
