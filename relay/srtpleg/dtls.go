package srtpleg

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/srtp/v3"
)

// Certificate is the relay's DTLS identity for a leg: a self-signed ECDSA P-256 certificate, whose fingerprint
// the SDP announces (a=fingerprint, RFC 8122).
type Certificate struct {
	tls tls.Certificate
}

// NewCertificate makes a fresh self-signed ECDSA P-256 certificate (pion's selfsign).
func NewCertificate() (*Certificate, error) {
	c, err := selfsign.GenerateSelfSigned()
	if err != nil {
		return nil, fmt.Errorf("dtls certificate: %w", err)
	}
	return &Certificate{tls: c}, nil
}

// DER is the certificate as DER, for sipd/webrtcsdp.FingerprintOf.
func (c *Certificate) DER() []byte { return c.tls.Certificate[0] }

// Fingerprint is the remote SDP's a=fingerprint (RFC 8122): hash function name and colon-separated hex.
type Fingerprint struct {
	Hash, Value string
}

// fingerprintHashes are the a=fingerprint hash functions (RFC 8122 section 5, IANA's Hash Function Textual
// Names) a peer may use; browsers send sha-256.
var fingerprintHashes = map[string]crypto.Hash{
	"sha-1": crypto.SHA1, "sha-224": crypto.SHA224, "sha-256": crypto.SHA256,
	"sha-384": crypto.SHA384, "sha-512": crypto.SHA512,
}

// ErrFingerprint is the handshake's error when the peer's certificate does not match the remote SDP's
// a=fingerprint: the leg fails, it never falls back to plain RTP.
var ErrFingerprint = errors.New("dtls: peer certificate does not match a=fingerprint")

// matches reports whether der hashes to f; the hex is compared without regard to case, as RFC 8122 allows.
func (f Fingerprint) matches(der []byte) (bool, error) {
	h, ok := fingerprintHashes[strings.ToLower(f.Hash)]
	if !ok || !h.Available() {
		return false, fmt.Errorf("dtls: a=fingerprint hash %q is not supported", f.Hash)
	}
	hh := h.New()
	hh.Write(der)
	want, err := hex.DecodeString(strings.ReplaceAll(f.Value, ":", ""))
	if err != nil {
		return false, fmt.Errorf("dtls: a=fingerprint value is not hex: %w", err)
	}
	return string(hh.Sum(nil)) == string(want), nil
}

// Role is the DTLS role, from the SDP's a=setup (RFC 5763 section 5): active is the client, passive the server.
type Role uint8

// The roles.
const (
	Server Role = iota // a=setup:passive
	Client             // a=setup:active
)

// DefaultTimeout is how long a handshake may take when Config.Timeout is zero. Browsers complete in well under
// a second; ten seconds covers retransmissions on a lossy path.
const DefaultTimeout = 10 * time.Second

// Config is one DTLS-SRTP leg.
type Config struct {
	Role        Role
	Certificate *Certificate
	// Remote is the remote SDP's a=fingerprint; the peer's certificate must match it.
	Remote  Fingerprint
	Timeout time.Duration
}

// srtpProfiles are the DTLS-SRTP protection profiles offered (RFC 5764 section 4.1.2, RFC 7714), preferred
// first, with the srtp profile each maps to.
var srtpProfiles = []struct {
	dtls dtls.SRTPProtectionProfile
	srtp srtp.ProtectionProfile
}{
	{dtls.SRTP_AEAD_AES_128_GCM, srtp.ProtectionProfileAeadAes128Gcm},
	{dtls.SRTP_AES128_CM_HMAC_SHA1_80, srtp.ProtectionProfileAes128CmHmacSha1_80},
}

// Handshake runs the DTLS handshake over conn toward remote, checks the peer's fingerprint, and derives the
// SRTP keys of both directions (RFC 5764 section 4.2). It fails after cfg.Timeout (or when ctx ends) with no
// goroutine left behind, and closes conn when it fails. On success the Session owns the association: its
// Close sends close_notify and closes conn.
func Handshake(ctx context.Context, conn net.PacketConn, remote net.Addr, cfg Config) (*Session, error) {
	if cfg.Certificate == nil {
		return nil, errors.New("dtls: no certificate")
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	profiles := make([]dtls.SRTPProtectionProfile, len(srtpProfiles))
	for i, p := range srtpProfiles {
		profiles[i] = p.dtls
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return ErrFingerprint
		}
		ok, err := cfg.Remote.matches(raw[0])
		if err != nil {
			return err
		}
		if !ok {
			return ErrFingerprint
		}
		return nil
	}
	shared := []dtls.Option{
		dtls.WithCertificates(cfg.Certificate.tls),
		dtls.WithSRTPProtectionProfiles(profiles...),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		// Self-signed certificates: trust comes from the fingerprint in the signalled SDP, not from a CA.
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(verify),
	}
	var (
		c   *dtls.Conn
		err error
	)
	if cfg.Role == Client {
		opts := make([]dtls.ClientOption, 0, len(shared))
		for _, o := range shared {
			opts = append(opts, o)
		}
		c, err = dtls.ClientWithOptions(conn, remote, opts...)
	} else {
		opts := make([]dtls.ServerOption, 0, len(shared)+1)
		for _, o := range shared {
			opts = append(opts, o)
		}
		// RFC 5763 section 5: the client must present its certificate, or there is nothing to check.
		opts = append(opts, dtls.WithClientAuth(dtls.RequireAnyClientCert))
		c, err = dtls.ServerWithOptions(conn, remote, opts...)
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("dtls: %w", err)
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.HandshakeContext(hctx); err != nil {
		_ = c.Close()
		if errors.Is(hctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("dtls handshake: no completion within %s: %w", timeout, err)
		}
		return nil, fmt.Errorf("dtls handshake: %w", err)
	}
	s, err := sessionFromDTLS(c, cfg.Role == Client)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	s.close = c.Close
	return s, nil
}

// sessionFromDTLS exports the keying material of a finished handshake into SRTP contexts.
func sessionFromDTLS(c *dtls.Conn, isClient bool) (*Session, error) {
	chosen, ok := c.SelectedSRTPProtectionProfile()
	if !ok {
		return nil, errors.New("dtls: peer negotiated no SRTP protection profile (use_srtp)")
	}
	var profile srtp.ProtectionProfile
	for _, p := range srtpProfiles {
		if p.dtls == chosen {
			profile = p.srtp
		}
	}
	if profile == 0 {
		return nil, fmt.Errorf("dtls: peer chose SRTP profile %#04x, which was not offered", uint16(chosen))
	}
	state, ok := c.ConnectionState()
	if !ok {
		return nil, errors.New("dtls: no connection state after handshake")
	}
	keys := srtp.Config{Profile: profile}
	if err := keys.ExtractSessionKeysFromDTLS(&state, isClient); err != nil {
		return nil, fmt.Errorf("dtls-srtp key export: %w", err)
	}
	k := keys.Keys
	return newSession(profile, profile, k.LocalMasterKey, k.LocalMasterSalt, k.RemoteMasterKey, k.RemoteMasterSalt)
}

func (r Role) String() string {
	if r == Client {
		return "client"
	}
	return "server"
}
