package webrtcpeer

import (
	"bytes"
	"net/netip"
	"os"
	"testing"

	"github.com/pion/stun/v4"

	"sipxdp/relay/ice"
	"sipxdp/relay/srtpleg"
	"sipxdp/sipd/webrtcsdp"
)

func sdpSeeds(f *testing.F) {
	f.Helper()
	for _, name := range []string{"chrome_audio_video.sdp", "firefox_audio_video.sdp", "phone_avp.sdp"} {
		b, err := os.ReadFile("../../sipd/webrtcsdp/testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	p, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p.Offer())
	_ = p.Close()
	f.Add([]byte("v=0\r\nm=audio 1 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1/1\r\na=ice-ufrag:a\r\na=ice-pwd:b\r\na=fingerprint:x y\r\na=candidate:1 1 udp 1 1.2.3.4 0 typ host\r\n"))
}

// FuzzParseRemote: any remote SDP is either refused or gives everything Connect needs, of our family.
func FuzzParseRemote(f *testing.F) {
	sdpSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v4 := range []bool{true, false} {
			rd, err := parseRemote(body, v4)
			if err != nil {
				continue
			}
			if !rd.addr.IsValid() || rd.addr.Port() == 0 || rd.addr.Addr().Is4() != v4 || rd.addr.Addr().IsUnspecified() {
				t.Fatalf("v4 %v: unusable address %s", v4, rd.addr)
			}
			if rd.ufrag == "" || rd.pwd == "" || rd.fingerprint.Hash == "" {
				t.Fatalf("accepted without credentials or fingerprint: %+v", rd)
			}
		}
	})
}

// FuzzAnswer: any offer is refused or answered with an SDP that sipd/webrtcsdp reads as one WebRTC audio line
// per offered m-line position.
func FuzzAnswer(f *testing.F) {
	sdpSeeds(f)
	p, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	defer p.Close()
	f.Fuzz(func(t *testing.T, offer []byte) {
		ans, err := p.Answer(offer)
		if err != nil {
			return
		}
		b, err := webrtcsdp.Parse(ans)
		if err != nil {
			t.Fatalf("answer does not parse: %v\n%s", err, ans)
		}
		o, err := webrtcsdp.Describe(b)
		if err != nil {
			t.Fatalf("answer does not describe: %v\n%s", err, ans)
		}
		at := audioLine(o)
		if at < 0 || !o.Media[at].WebRTC() || o.Media[at].Setup == webrtcsdp.SetupActpass {
			t.Fatalf("answer has no accepted WebRTC audio line with a role:\n%s", ans)
		}
		offered := describe(t, offer)
		if len(o.Media) != len(offered.Media) {
			t.Fatalf("answer has %d m-lines, offer %d", len(o.Media), len(offered.Media))
		}
	})
}

// FuzzHandle feeds the read goroutine's demux any datagram, from the remote or a stranger: nothing panics,
// and nothing from a stranger reaches ReadRTP or ReadRTCP.
func FuzzHandle(f *testing.F) {
	p, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	defer p.Close()
	key := srtpleg.Key{Suite: "AES_CM_128_HMAC_SHA1_80", Key: bytes.Repeat([]byte{7}, 30)}
	// The same key both ways, so the session decrypts what it encrypts: the seeds are valid SRTP.
	sess, err := srtpleg.NewSDES(key, key)
	if err != nil {
		f.Fatal(err)
	}
	remoteUfrag := "rmtU"
	resp, err := ice.NewResponder(ice.Creds{LocalUfrag: p.ufrag, LocalPwd: p.pwd, RemoteUfrag: remoteUfrag})
	if err != nil {
		f.Fatal(err)
	}
	// Port 9 (discard) on loopback: the answers handle sends go nowhere.
	r := &remoteState{addr: netip.MustParseAddrPort("127.0.0.1:9"), responder: resp,
		integ: stun.NewShortTermIntegrity("remote-password-of-22-chars"), txid: stun.NewTransactionID(), iceDone: make(chan struct{})}
	// Nobody reads this conn: once its queue is full, DTLS datagrams are dropped and counted, as they would be.
	r.pc = srtpleg.NewPacketConn(p.sock.LocalAddr(), nil, func([]byte) error { return nil })
	defer r.pc.Close()
	p.remote.Store(r)
	p.sess.Store(sess)

	rtpPkt, _ := sess.EncryptRTP(nil, []byte{0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4, 0xff, 0xfe})
	rtcpPkt, _ := sess.EncryptRTCP(nil, []byte{0x80, 201, 0, 1, 1, 2, 3, 4})
	req, _ := stun.Build(stun.BindingRequest, stun.NewUsername(p.ufrag+":"+remoteUfrag),
		stun.NewShortTermIntegrity(p.pwd), stun.Fingerprint)
	res, _ := stun.Build(stun.NewTransactionIDSetter(r.txid), stun.BindingSuccess, r.integ, stun.Fingerprint)
	for _, seed := range [][]byte{rtpPkt, rtcpPkt, req.Raw, res.Raw, {22, 0xfe, 0xfd, 0, 0}, {}, {0x80}, {0x80, 200}} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	stranger := netip.MustParseAddrPort("127.0.0.1:7")
	f.Fuzz(func(t *testing.T, b []byte, fromRemote bool) {
		src := r.addr
		if !fromRemote {
			src = stranger
		}
		before := len(p.rtpIn) + len(p.rtcpIn)
		p.handle(b, src)
		if after := len(p.rtpIn) + len(p.rtcpIn); !fromRemote && after != before {
			t.Fatalf("a stranger's datagram %x reached the read queues", b)
		}
		for len(p.rtpIn) > 0 {
			<-p.rtpIn
		}
		for len(p.rtcpIn) > 0 {
			<-p.rtcpIn
		}
	})
}
