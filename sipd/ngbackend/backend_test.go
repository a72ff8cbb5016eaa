package ngbackend

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/media"
	"sipxdp/sipd/sdprewrite"
)

// fake is a relay engine good for one call with one stream: legs on
// 203.0.113.1, ports 40000 (A) and 40002 (B); a fork's branch n (streams
// from n<<16, media's fork.go) has 40000+100n and 40002+100n.
type fake struct {
	sessions map[string]*relay.SessionInfo
	deleted  []string
	removed  []int // stream indexes RemoveStream removed
	// createErr, when set, refuses new sessions (a draining engine);
	// addErr refuses new streams (an exhausted port pool).
	createErr, addErr error
	// sideOpts and tos are the last SetSideOptions and SetTOS per call.
	sideOpts map[string][2]relay.SideOptions
	tos      map[string]relay.TOS
	drop     map[string]bool // the last SetDrop per call
}

func (f *fake) SetSideOptions(id string, side relay.Side, o relay.SideOptions) error {
	if _, ok := f.sessions[id]; !ok {
		return relay.ErrSessionNotFound
	}
	if f.sideOpts == nil {
		f.sideOpts = map[string][2]relay.SideOptions{}
	}
	so := f.sideOpts[id]
	so[side] = o
	f.sideOpts[id] = so
	return nil
}

func (f *fake) SetDrop(id string, drop bool) error {
	if _, ok := f.sessions[id]; !ok {
		return relay.ErrSessionNotFound
	}
	if f.drop == nil {
		f.drop = map[string]bool{}
	}
	f.drop[id] = drop
	return nil
}

func (f *fake) SetTOS(id string, tos relay.TOS) error {
	if _, ok := f.sessions[id]; !ok {
		return relay.ErrSessionNotFound
	}
	if f.tos == nil {
		f.tos = map[string]relay.TOS{}
	}
	f.tos[id] = tos
	return nil
}

var relayIP = netip.MustParseAddr("203.0.113.1")

func (f *fake) SetSecurity(string, int, relay.Side, relay.LegSecurity) error { return nil }
func (f *fake) CertificateDER() []byte                                       { return []byte("relay certificate") }

func (f *fake) CreateSession(id string) error {
	if _, ok := f.sessions[id]; ok {
		return relay.ErrSessionExists
	}
	if f.createErr != nil {
		return fmt.Errorf("create session %q: %w", id, f.createErr)
	}
	f.sessions[id] = &relay.SessionInfo{CallID: id, Created: time.Now()}
	return nil
}

func (f *fake) AddStream(id string, index int, a, b relay.LegSpec) (relay.StreamPorts, error) {
	s := f.sessions[id]
	for _, st := range s.Streams {
		if st.Index == index {
			return relay.StreamPorts{A: st.A.LegPorts, B: st.B.LegPorts}, nil
		}
	}
	if f.addErr != nil {
		return relay.StreamPorts{}, f.addErr
	}
	leg := func(p uint16) relay.LegPorts {
		return relay.LegPorts{Local: relayIP, RTP: p, RTCP: p + 1}
	}
	p := uint16(40000 + 100*(index>>16))
	st := relay.StreamInfo{Index: index, A: relay.LegInfo{LegPorts: leg(p)}, B: relay.LegInfo{LegPorts: leg(p + 2)}}
	s.Streams = append(s.Streams, st)
	return relay.StreamPorts{A: st.A.LegPorts, B: st.B.LegPorts}, nil
}

func (f *fake) SetPeer(id string, index int, side relay.Side, rtp, rtcp netip.AddrPort, mux bool) error {
	s := f.sessions[id]
	for i := range s.Streams {
		if s.Streams[i].Index == index {
			l := &s.Streams[i].A
			if side == relay.SideB {
				l = &s.Streams[i].B
			}
			l.PeerRTP, l.PeerRTCP, l.RTCPMux = rtp, rtcp, mux
			return nil
		}
	}
	return relay.ErrStreamNotFound
}

func (f *fake) RestoreStream(string, int, [2]relay.RestoreLeg, time.Time) error {
	return errors.New("the NG backend restores nothing")
}

func (f *fake) SetSignal(id string, side relay.Side, addr netip.Addr) error {
	s, ok := f.sessions[id]
	if !ok {
		return relay.ErrSessionNotFound
	}
	for i := range s.Streams {
		l := &s.Streams[i].A
		if side == relay.SideB {
			l = &s.Streams[i].B
		}
		if addr.IsValid() {
			l.Signal = addr
		}
	}
	return nil
}

func (f *fake) RemoveStream(id string, index int) error {
	s, ok := f.sessions[id]
	if !ok {
		return relay.ErrSessionNotFound
	}
	for i, st := range s.Streams {
		if st.Index == index {
			s.Streams = append(s.Streams[:i], s.Streams[i+1:]...)
			f.removed = append(f.removed, index)
			return nil
		}
	}
	return relay.ErrStreamNotFound
}

func (f *fake) DeleteSession(id string) (relay.SessionInfo, error) {
	s, ok := f.sessions[id]
	if !ok {
		return relay.SessionInfo{}, relay.ErrSessionNotFound
	}
	delete(f.sessions, id)
	f.deleted = append(f.deleted, id)
	return *s, nil
}

func (f *fake) Session(id string) (relay.SessionInfo, error) {
	s, ok := f.sessions[id]
	if !ok {
		return relay.SessionInfo{}, relay.ErrSessionNotFound
	}
	return *s, nil
}

func (f *fake) CallFlows(id string) ([]relay.FlowInfo, error) {
	var out []relay.FlowInfo
	if s, ok := f.sessions[id]; ok {
		for _, st := range s.Streams {
			out = append(out,
				relay.FlowInfo{CallID: id, Stream: st.Index, Side: relay.SideA, Component: "rtp", Path: relay.PathKernel, Packets: 10, Bytes: 1600},
				relay.FlowInfo{CallID: id, Stream: st.Index, Side: relay.SideA, Component: "rtcp", Path: relay.PathUserspace, Packets: 1, Bytes: 80},
				relay.FlowInfo{CallID: id, Stream: st.Index, Side: relay.SideB, Component: "rtp", Path: relay.PathKernel, Packets: 7, Bytes: 1120})
		}
	}
	return out, nil
}

func sdp(ip string, port int) []byte {
	return fmt.Appendf(nil, "v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"+
		"a=ice-ufrag:abcd\r\na=candidate:1 1 UDP 1 %s %d typ host\r\n", ip, ip, port, ip, port)
}

func newBackend() (*Backend, *fake) {
	f := &fake{sessions: map[string]*relay.SessionInfo{}}
	return New(media.New(media.Config{Mode: media.ModeAll, Engine: f}), f, nil), f
}

func TestOfferAnswerQueryDelete(t *testing.T) {
	b, f := newBackend()
	off := &ng.Request{Command: "offer", CallID: "c1", FromTag: "a", SDP: sdp("192.0.2.10", 10000),
		Replace: []string{"origin", "session-connection"}, ICE: "remove", ReceivedFrom: []string{"IP4", "192.0.2.10"}}
	out, err := b.Offer(off)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := sdprewrite.Parse(out)
	if err != nil || len(ms) != 1 || ms[0].Addr != relayIP || ms[0].Port != 40002 {
		t.Fatalf("offer rewritten to %+v, %v, want %v:40002\n%s", ms, err, relayIP, out)
	}
	if !strings.Contains(string(out), "o=- 1 2 IN IP4 203.0.113.1\r\n") || strings.Contains(string(out), "candidate") || strings.Contains(string(out), "192.0.2.10") {
		t.Errorf("offer: want o= on the relay, no ICE, no caller address:\n%s", out)
	}
	ans, err := b.Answer(&ng.Request{Command: "answer", CallID: "c1", FromTag: "a", ToTag: "b", SDP: sdp("192.0.2.20", 20000)})
	if err != nil {
		t.Fatal(err)
	}
	if ms, _ := sdprewrite.Parse(ans); len(ms) != 1 || ms[0].Port != 40000 {
		t.Errorf("answer rewritten to %+v\n%s", ms, ans)
	}
	if strings.Contains(string(ans), "o=- 1 2 IN IP4 203.0.113.1") {
		t.Errorf("answer without replace=origin has the relay in o=:\n%s", ans)
	}
	if ids := b.List(0); len(ids) != 1 || ids[0] != "c1" {
		t.Errorf("list %v", ids)
	}
	cs, err := b.Query(&ng.Request{Command: "query", CallID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Tags) != 2 || cs.Tags[0].Tag != "a" || cs.Tags[0].InDialogueWith != "b" || cs.Tags[1].Tag != "b" {
		t.Fatalf("query tags %+v", cs.Tags)
	}
	a := cs.Tags[0].Medias
	if len(a) != 1 || a[0].Index != 1 || a[0].Type != "audio" || a[0].Protocol != "RTP/AVP" || len(a[0].Streams) != 2 {
		t.Fatalf("side a medias %+v", a)
	}
	rtp, rtcp := a[0].Streams[0], a[0].Streams[1]
	if rtp.LocalPort != 40000 || rtp.Endpoint != netip.MustParseAddrPort("192.0.2.10:10000") || rtp.Packets != 10 || !rtp.Kernel || rtp.RTCP {
		t.Errorf("side a rtp %+v", rtp)
	}
	if rtcp.LocalPort != 40001 || !rtcp.RTCP || rtcp.Packets != 1 || rtcp.Kernel {
		t.Errorf("side a rtcp %+v", rtcp)
	}
	if s := cs.Tags[1].Medias[0].Streams[0]; s.LocalPort != 40002 || s.Packets != 7 {
		t.Errorf("side b rtp %+v", s)
	}
	// A failed fork's delete (to-tag honoured with the to-tag flag, as
	// rtpengine does) leaves the call.
	if _, err := b.Delete(&ng.Request{Command: "delete", CallID: "c1", FromTag: "a", ToTag: "other", Flags: map[string]string{"to-tag": ""}}); err != nil || len(f.deleted) != 0 {
		t.Errorf("branch delete: %v, deleted %v", err, f.deleted)
	}
	if _, err := b.Delete(&ng.Request{Command: "delete", CallID: "c1", FromTag: "a"}); err != nil || len(f.deleted) != 1 {
		t.Errorf("delete: %v, deleted %v", err, f.deleted)
	}
	if _, err := b.Query(&ng.Request{Command: "query", CallID: "c1"}); !errors.Is(err, media.ErrUnknownCall) {
		t.Errorf("query after delete: %v", err)
	}
	if cs, err := b.Delete(&ng.Request{Command: "delete", CallID: "c1"}); err != nil || cs.Warning != WarnNotFound {
		t.Errorf("second delete: %v, warning %q", err, cs.Warning)
	}
	if _, err := b.Offer(&ng.Request{Command: "offer", FromTag: "a", SDP: sdp("192.0.2.10", 10000)}); !errors.Is(err, ErrNoCallID) {
		t.Errorf("offer without call-id: %v", err)
	}
}

func TestReplaceOrigin(t *testing.T) {
	in := []byte("v=0\r\no=alice 5 7 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
	want := "v=0\r\no=alice 5 7 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
	if got := string(replaceOrigin(in)); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	held := []byte("v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
	if got := replaceOrigin(held); string(got) != string(held) {
		t.Errorf("held sdp changed: %q", got)
	}
}

// TestOptions: the WebRTC flags, as a flags list and as the top-level keys
// Kamailio's rtpengine module turns them into ("ICE": "force", "rtcp-mux":
// ["demux"], "SDES": ["off"], ...), give the same options.
func TestOptions(t *testing.T) {
	cases := []struct {
		name string
		dict map[string]any
		want media.Options
	}{
		{"none", map[string]any{}, media.Options{}},
		{"to the browser, flags list", map[string]any{"flags": []any{"ICE=force", "DTLS=passive", "RTP/SAVPF",
			"rtcp-mux-offer", "generate-mid", "SDES-off"}},
			media.Options{Proto: "RTP/SAVPF", ICE: "force", DTLS: "passive", SDESOff: true, RTCPMux: []string{"offer"}, GenerateMid: true}},
		{"to the browser, Kamailio's keys", map[string]any{"ICE": "force", "DTLS": "passive", "transport-protocol": "UDP/TLS/RTP/SAVPF",
			"rtcp-mux": []any{"offer"}, "SDES": []any{"off"}, "flags": []any{"generate-mid"}},
			media.Options{Proto: "UDP/TLS/RTP/SAVPF", ICE: "force", DTLS: "passive", SDESOff: true, RTCPMux: []string{"offer"}, GenerateMid: true}},
		{"to the phone", map[string]any{"ICE": "remove", "flags": []any{"RTP/AVP"}, "rtcp-mux": []any{"demux"}},
			media.Options{Proto: "RTP/AVP", ICE: "remove", RTCPMux: []string{"demux"}}},
		{"DTLS=off", map[string]any{"DTLS": "off", "transport-protocol": "RTP/SAVP"}, media.Options{Proto: "RTP/SAVP", DTLS: "off"}},
		{"DTLS=no", map[string]any{"DTLS": "no"}, media.Options{DTLS: "off"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := map[string]any{"command": "offer", "call-id": "x", "from-tag": "a", "sdp": "v=0"}
			for k, v := range c.dict {
				d[k] = v
			}
			r, _, err := ng.ParseRequest(d)
			if err != nil {
				t.Fatal(err)
			}
			got := Options(r)
			if !reflect.DeepEqual(*got, c.want) {
				t.Errorf("options %+v, want %+v", *got, c.want)
			}
		})
	}
}
