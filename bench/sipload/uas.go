package sipload

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// UASConfig: callee instances uas0..uas{Count-1}, all in this process.
type UASConfig struct {
	Proxy     netip.AddrPort // sipd's UDP listener
	Domain    string         // users' domain; empty: Proxy's address
	Password  string
	Count     int        // registers uas0..uasN-1 (digest auth), each with its own SIP socket
	SIPAddr   netip.Addr // local address for SIP sockets; zero: 127.0.0.1
	MediaAddr netip.Addr // local address for RTP/RTCP sockets and the SDP c= line; zero: SIPAddr
	// First RTP port (even); pairs at RTPPort+2i (RTP) and +1 (RTCP).
	// 0: pick free even/odd pairs.
	RTPPort    int
	RTPSockets int // RTP/RTCP socket pairs shared by all this side's calls; 0: 32
}

// UASResult is what the callees did.
type UASResult struct {
	Registered, Answered, Byes   int
	RTPRX, RTPTX, RTCPRX, RTCPTX uint64
}

// leg is a callee's record of one call: its answer, resent if the INVITE
// is.
type leg struct {
	last *sip.Response
}

type uas struct {
	cfg       UASConfig
	mediaAddr netip.Addr
	uas       []*ua
	media     *uasMedia
	ports     []uint16

	mu                         sync.Mutex
	legs                       map[string]*leg
	nextPair                   int
	registered, answered, byes int
}

// RunUAS registers every callee, calls ready() once all are registered, then answers
// INVITEs (180, 200 with SDP) in echo mode until ctx is done, then returns its totals.
func RunUAS(ctx context.Context, cfg UASConfig, ready func()) (UASResult, error) {
	if cfg.Count < 1 {
		return UASResult{}, errors.New("sipload: uas count must be positive")
	}
	if cfg.RTPSockets <= 0 {
		cfg.RTPSockets = 32
	}
	domain := cfg.Domain
	if domain == "" {
		domain = cfg.Proxy.Addr().String()
	}
	sipAddr := defaultAddr(cfg.SIPAddr, loopback)
	s := &uas{cfg: cfg, mediaAddr: defaultAddr(cfg.MediaAddr, sipAddr), legs: map[string]*leg{}}
	defer func() {
		for _, u := range s.uas {
			u.conn.Close()
		}
	}()
	pairs, err := bindPairs(s.mediaAddr, cfg.RTPPort, cfg.RTPSockets)
	if err != nil {
		return UASResult{}, err
	}
	defer closePairs(pairs)
	for _, p := range pairs {
		s.ports = append(s.ports, p.port)
	}
	s.media = newUASMedia(pairs)
	for i := range cfg.Count {
		u, err := newUA(UASUser(i), sipAddr)
		if err != nil {
			return s.result(), err
		}
		s.uas = append(s.uas, u)
		if err := register(u, cfg.Proxy, domain, cfg.Password); err != nil {
			return s.result(), fmt.Errorf("register %s: %w", u.user, err)
		}
		s.registered++
	}
	var wg sync.WaitGroup
	s.media.run(ctx, &wg)
	for _, u := range s.uas {
		wg.Go(func() { readLoop(&s.mu, u, s.onMessage) })
	}
	if ready != nil {
		ready()
	}
	<-ctx.Done()
	for _, u := range s.uas {
		u.conn.Close()
	}
	closePairs(pairs)
	wg.Wait()
	return s.result(), nil
}

func (s *uas) result() UASResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := UASResult{Registered: s.registered, Answered: s.answered, Byes: s.byes}
	if s.media != nil {
		r.RTPRX, r.RTPTX = s.media.rtpRX.Load(), s.media.rtpTX.Load()
		r.RTCPRX, r.RTCPTX = s.media.rtcpRX.Load(), s.media.rtcpTX.Load()
	}
	return r
}

// onMessage handles what a callee receives: it answers INVITE at once
// with 180 and 200 (SDP on the next pair round-robin), ACK needs nothing,
// and BYE forgets the call.
func (s *uas) onMessage(u *ua, m sip.Message, from netip.AddrPort) {
	req, ok := m.(*sip.Request)
	if !ok {
		return
	}
	id := req.CallID().Value()
	reply := func(r *sip.Response) { u.send(from, r.String()) }
	switch req.Method {
	case sip.INVITE:
		if g := s.legs[id]; g != nil {
			reply(g.last)
			return
		}
		port := s.ports[s.nextPair%len(s.ports)]
		s.nextPair++
		tag := randHex(4)
		mk := func(code int, reason, body string) *sip.Response {
			r := sip.NewResponseFromRequest(req, code, reason, nil)
			if !r.To().Params.Has("tag") {
				r.To().Params.Add("tag", tag)
			}
			r.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: u.user,
				Host: u.addr.Addr().String(), Port: int(u.addr.Port())}})
			if body != "" {
				r.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
				r.SetBody([]byte(body))
			}
			return r
		}
		reply(mk(180, "Ringing", ""))
		g := &leg{last: mk(200, "OK", sdp(u.user, s.mediaAddr, port))}
		s.legs[id] = g
		s.answered++
		reply(g.last)
	case sip.ACK:
	case sip.BYE:
		if s.legs[id] != nil {
			delete(s.legs, id)
			s.byes++
		}
		reply(sip.NewResponseFromRequest(req, 200, "OK", nil))
	default:
		reply(sip.NewResponseFromRequest(req, 200, "OK", nil))
	}
}
