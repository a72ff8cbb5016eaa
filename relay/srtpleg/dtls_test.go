package srtpleg

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/srtp/v3"
	"go.uber.org/goleak"

	"sipxdp/relay/ice"
)

// fingerprintOf is a=fingerprint's sha-256 form (what sipd/webrtcsdp.FingerprintOf writes).
func fingerprintOf(der []byte) Fingerprint {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return Fingerprint{Hash: "sha-256", Value: b.String()}
}

// relaySide is our leg as the relay would run it: one UDP socket, a read loop that hands what ice.Demux
// classes as DTLS to the leg's PacketConn, and writes straight to the socket.
type relaySide struct {
	sock *net.UDPConn
	pc   *PacketConn
	wg   sync.WaitGroup
}

func newRelaySide(t *testing.T, remote *net.UDPAddr) *relaySide {
	t.Helper()
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &relaySide{sock: sock}
	r.pc = NewPacketConn(sock.LocalAddr(), remote, func(b []byte) error {
		_, err := sock.WriteToUDP(b, remote)
		return err
	})
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 1500)
		for {
			n, _, err := sock.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if ice.Demux(buf[:n]) == ice.KindDTLS {
				r.pc.Deliver(buf[:n])
			}
		}
	}()
	return r
}

func (r *relaySide) close() {
	_ = r.sock.Close()
	r.wg.Wait()
}

// pionPeer is the browser's side: pion/dtls on its own loopback socket.
type pionPeer struct {
	sock *net.UDPConn
	cert tls.Certificate
	done chan struct{}
	conn *dtls.Conn
	err  error
}

func newPionPeer(t *testing.T) *pionPeer {
	t.Helper()
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return &pionPeer{sock: sock, cert: c.tls, done: make(chan struct{})}
}

// start runs the peer's handshake toward addr in the role opposite ours, offering profiles.
func (p *pionPeer) start(addr net.Addr, ours Role, profiles []dtls.SRTPProtectionProfile, timeout time.Duration) {
	go func() {
		defer close(p.done)
		var c *dtls.Conn
		var err error
		if ours == Server {
			c, err = dtls.ClientWithOptions(p.sock, addr,
				dtls.WithCertificates(p.cert), dtls.WithSRTPProtectionProfiles(profiles...), dtls.WithInsecureSkipVerify(true))
		} else {
			c, err = dtls.ServerWithOptions(p.sock, addr,
				dtls.WithCertificates(p.cert), dtls.WithSRTPProtectionProfiles(profiles...), dtls.WithInsecureSkipVerify(true),
				dtls.WithClientAuth(dtls.RequireAnyClientCert))
		}
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err = c.HandshakeContext(ctx)
			cancel()
			if err != nil {
				_ = c.Close()
			}
		}
		p.conn, p.err = c, err
	}()
}

// reference is the peer's pion srtp.Contexts from its own key export.
func (p *pionPeer) reference(t *testing.T, ours Role) peer {
	t.Helper()
	<-p.done
	if p.err != nil {
		t.Fatalf("peer handshake: %v", p.err)
	}
	chosen, ok := p.conn.SelectedSRTPProtectionProfile()
	if !ok {
		t.Fatal("peer: no SRTP profile")
	}
	var prof srtp.ProtectionProfile
	for _, sp := range srtpProfiles {
		if sp.dtls == chosen {
			prof = sp.srtp
		}
	}
	state, ok := p.conn.ConnectionState()
	if !ok {
		t.Fatal("peer: no state")
	}
	cfg := srtp.Config{Profile: prof}
	if err := cfg.ExtractSessionKeysFromDTLS(&state, ours == Server); err != nil {
		t.Fatal(err)
	}
	enc, err := srtp.CreateContext(cfg.Keys.LocalMasterKey, cfg.Keys.LocalMasterSalt, prof)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := srtp.CreateContext(cfg.Keys.RemoteMasterKey, cfg.Keys.RemoteMasterSalt, prof)
	if err != nil {
		t.Fatal(err)
	}
	return peer{enc: enc, dec: dec}
}

func (p *pionPeer) close() {
	<-p.done
	if p.conn != nil {
		_ = p.conn.Close()
	}
	_ = p.sock.Close()
}

func TestDTLSHandshake(t *testing.T) {
	for _, tc := range []struct {
		name     string
		role     Role
		profiles []dtls.SRTPProtectionProfile
		want     srtp.ProtectionProfile
	}{
		{"server gcm", Server, []dtls.SRTPProtectionProfile{dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80}, srtp.ProtectionProfileAeadAes128Gcm},
		{"client gcm", Client, []dtls.SRTPProtectionProfile{dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80}, srtp.ProtectionProfileAeadAes128Gcm},
		{"server sha1_80", Server, []dtls.SRTPProtectionProfile{dtls.SRTP_AES128_CM_HMAC_SHA1_80}, srtp.ProtectionProfileAes128CmHmacSha1_80},
		{"client sha1_80", Client, []dtls.SRTPProtectionProfile{dtls.SRTP_AES128_CM_HMAC_SHA1_80}, srtp.ProtectionProfileAes128CmHmacSha1_80},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPionPeer(t)
			r := newRelaySide(t, p.sock.LocalAddr().(*net.UDPAddr))
			defer r.close()
			defer p.close()
			cert, err := NewCertificate()
			if err != nil {
				t.Fatal(err)
			}
			p.start(r.sock.LocalAddr(), tc.role, tc.profiles, 5*time.Second)
			s, err := Handshake(context.Background(), r.pc, p.sock.LocalAddr(), Config{
				Role: tc.role, Certificate: cert, Remote: fingerprintOf(p.cert.Certificate[0]), Timeout: 5 * time.Second,
			})
			if err != nil {
				t.Fatalf("Handshake: %v", err)
			}
			defer func() { _ = s.Close() }()
			if s.Profile() != tc.want {
				t.Fatalf("profile %s, want %s", s.Profile(), tc.want)
			}
			roundTrip(t, s, p.reference(t, tc.role))
			// The peer hangs up with close_notify: the leg's conn reports it.
			if err := p.conn.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-r.pc.Done():
			case <-time.After(3 * time.Second):
				t.Fatal("peer's close_notify did not end the leg")
			}
		})
	}
}

func TestDTLSWrongFingerprint(t *testing.T) {
	other, err := NewCertificate()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		role   Role
		remote Fingerprint
	}{
		{"server, another certificate", Server, fingerprintOf(other.DER())},
		{"client, another certificate", Client, fingerprintOf(other.DER())},
		{"server, unsupported hash", Server, Fingerprint{Hash: "md5", Value: "00:11"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPionPeer(t)
			r := newRelaySide(t, p.sock.LocalAddr().(*net.UDPAddr))
			cert, err := NewCertificate()
			if err != nil {
				t.Fatal(err)
			}
			p.start(r.sock.LocalAddr(), tc.role, []dtls.SRTPProtectionProfile{dtls.SRTP_AES128_CM_HMAC_SHA1_80}, 2*time.Second)
			s, err := Handshake(context.Background(), r.pc, p.sock.LocalAddr(), Config{
				Role: tc.role, Certificate: cert, Remote: tc.remote, Timeout: 2 * time.Second,
			})
			if err == nil {
				_ = s.Close()
				t.Fatal("Handshake succeeded with a fingerprint the peer's certificate does not have")
			}
			if tc.remote.Hash == "sha-256" && !errors.Is(err, ErrFingerprint) {
				t.Fatalf("err = %v, want ErrFingerprint", err)
			}
			t.Logf("error: %v", err)
			p.close()
			r.close()
			goleak.VerifyNone(t, goleak.IgnoreCurrent())
		})
	}
}

// A peer that never answers (or answers nothing DTLS) fails the handshake at the deadline, and the leg's
// goroutines are gone when Handshake returns.
func TestDTLSHandshakeTimeout(t *testing.T) {
	for _, role := range []Role{Server, Client} {
		t.Run(role.String(), func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = silent.Close() }()
			r := newRelaySide(t, silent.LocalAddr().(*net.UDPAddr))
			cert, err := NewCertificate()
			if err != nil {
				t.Fatal(err)
			}
			const timeout = 300 * time.Millisecond
			start := time.Now()
			s, err := Handshake(context.Background(), r.pc, silent.LocalAddr(), Config{
				Role: role, Certificate: cert, Remote: fingerprintOf(cert.DER()), Timeout: timeout,
			})
			if err == nil {
				_ = s.Close()
				t.Fatal("handshake with a silent peer succeeded")
			}
			if el := time.Since(start); el < timeout || el > timeout+2*time.Second {
				t.Fatalf("failed after %s, want about %s", el, timeout)
			}
			if !strings.Contains(err.Error(), "no completion within") {
				t.Fatalf("err = %v, want the deadline's", err)
			}
			if r.pc.Deliver([]byte{22}) {
				t.Fatal("the failed leg's PacketConn still takes datagrams")
			}
			r.close()
			goleak.VerifyNone(t, before)
		})
	}
}

// A peer whose use_srtp offers nothing we speak fails the handshake: there are no keys, so no leg, never a
// plain-RTP one.
func TestDTLSNoCommonProfile(t *testing.T) {
	for _, tc := range []struct {
		role     Role
		profiles []dtls.SRTPProtectionProfile
	}{
		{Server, []dtls.SRTPProtectionProfile{dtls.SRTP_AES128_CM_HMAC_SHA1_32}},
		{Client, []dtls.SRTPProtectionProfile{dtls.SRTP_AES128_CM_HMAC_SHA1_32}},
		{Server, nil}, // no use_srtp at all: pion does not fail it early, the deadline does
		{Client, nil},
	} {
		role := tc.role
		t.Run(fmt.Sprintf("%s %v", role, tc.profiles), func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			p := newPionPeer(t)
			r := newRelaySide(t, p.sock.LocalAddr().(*net.UDPAddr))
			cert, err := NewCertificate()
			if err != nil {
				t.Fatal(err)
			}
			p.start(r.sock.LocalAddr(), role, tc.profiles, 700*time.Millisecond)
			s, err := Handshake(context.Background(), r.pc, p.sock.LocalAddr(), Config{
				Role: role, Certificate: cert, Remote: fingerprintOf(p.cert.Certificate[0]), Timeout: 700 * time.Millisecond, // without use_srtp pion waits for the deadline
			})
			if err == nil {
				_ = s.Close()
				t.Fatal("Handshake succeeded with no common SRTP profile")
			}
			t.Logf("error: %v", err)
			p.close()
			r.close()
			goleak.VerifyNone(t, before)
		})
	}
}
