package ngmedia

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/goleak"

	"sipxdp/internal/sipua"
	"sipxdp/ng"
	"sipxdp/sipd/media"
	"sipxdp/sipd/relayset"
	"sipxdp/sipd/sipserver"
)

var _ sipserver.MediaController = (*Controller)(nil)

// relay is an in-process NG relay that records what it is asked and
// answers with an SDP naming itself, the command and the tags.
type relay struct {
	name     string
	err      error        // offers fail with it
	queryErr atomic.Value // of error: queries fail with it when set

	mu   sync.Mutex
	reqs []*ng.Request
}

func (r *relay) rec(q *ng.Request) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, q)
	return fmt.Appendf(nil, "v=0 %s %s %s>%s", r.name, q.Command, q.FromTag, q.ToTag)
}

func (r *relay) Offer(q *ng.Request) ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	return r.rec(q), nil
}
func (r *relay) Answer(q *ng.Request) ([]byte, error)       { return r.rec(q), nil }
func (r *relay) Delete(q *ng.Request) (ng.CallStats, error) { r.rec(q); return ng.CallStats{}, nil }
func (r *relay) Query(q *ng.Request) (ng.CallStats, error) {
	if err, _ := r.queryErr.Load().(error); err != nil {
		return ng.CallStats{}, err
	}
	return ng.CallStats{}, nil
}
func (r *relay) List(int) []string { return nil }

func (r *relay) log() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.reqs {
		out = append(out, fmt.Sprintf("%s %s>%s", q.Command, q.FromTag, q.ToTag))
	}
	return out
}

func (r *relay) last() *ng.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reqs[len(r.reqs)-1]
}

// newCtl starts relays and a controller over them (weights 1 each).
func newCtl(t *testing.T, relays ...*relay) *Controller {
	t.Helper()
	return ctlOn(t, startRelays(t, relays...))
}

// startRelays serves relays over NG on loopback.
func startRelays(t *testing.T, relays ...*relay) []relayset.Endpoint {
	t.Helper()
	var eps []relayset.Endpoint
	for _, r := range relays {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = ng.NewServer(r, ng.Options{}).ServeUDP(ctx, pc); close(done) }()
		t.Cleanup(func() { cancel(); <-done; pc.Close() })
		eps = append(eps, relayset.Endpoint{URL: "udp:" + pc.LocalAddr().String(), Addr: pc.LocalAddr().String(), Weight: 1})
	}
	return eps
}

// ctlOn is a controller over a new set of the relays at eps.
func ctlOn(t *testing.T, eps []relayset.Endpoint) *Controller {
	t.Helper()
	set, err := relayset.New(eps, relayset.Options{Client: ng.ClientOptions{Retries: 2, RetryInterval: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)
	return New(media.ModeAll, set, nil)
}

const (
	callerTag = "ctag"
	calleeTag = "etag"
	cid       = "call-1@test"
	offerSDP  = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 10000 RTP/AVP 0\r\n"
)

func build(t *testing.T, first, fromTag, toTag, cseq, body string) sip.Message {
	t.Helper()
	return sipua.Message(t, first, fromTag, toTag, cid, cseq, body)
}

func invite(t *testing.T, body string) *sip.Request {
	r := build(t, "INVITE sip:bob@example.com SIP/2.0", callerTag, "", "1 INVITE", body).(*sip.Request)
	r.SetSource("192.0.2.10:5060")
	return r
}

func inDialog(t *testing.T, method string, fromCaller bool, seq int, body string) *sip.Request {
	from, to := callerTag, calleeTag
	if !fromCaller {
		from, to = calleeTag, callerTag
	}
	return build(t, method+" sip:x@192.0.2.20 SIP/2.0", from, to, fmt.Sprintf("%d %s", seq, method), body).(*sip.Request)
}

func response(t *testing.T, code int, toCaller bool, method, body string) *sip.Response {
	from, to := callerTag, calleeTag
	if !toCaller {
		from, to = calleeTag, callerTag
	}
	return build(t, fmt.Sprintf("SIP/2.0 %d X", code), from, to, "1 "+method, body).(*sip.Response)
}

// TestExchanges: the NG commands each call flow sends, and the SDP the
// relay returned in place of each side's.
func TestExchanges(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	type step struct {
		msg  func(t *testing.T) sip.Message
		want string // the body after the controller; "": untouched
	}
	tests := []struct {
		name  string
		steps []step
		log   []string
	}{
		{"early offer, 183 and 200 answer", []step{
			{func(t *testing.T) sip.Message { return invite(t, offerSDP) }, "v=0 A offer ctag>"},
			{func(t *testing.T) sip.Message { return response(t, 183, true, "INVITE", offerSDP) }, "v=0 A answer ctag>etag"},
			{func(t *testing.T) sip.Message { return response(t, 200, true, "INVITE", offerSDP) }, "v=0 A answer ctag>etag"},
			{func(t *testing.T) sip.Message { return inDialog(t, "ACK", true, 1, "") }, ""},
			{func(t *testing.T) sip.Message { return inDialog(t, "BYE", true, 2, "") }, ""},
		}, []string{"offer ctag>", "answer ctag>etag", "answer ctag>etag", "delete >"}},
		{"late offer in 200, answer in ACK", []step{
			{func(t *testing.T) sip.Message { return invite(t, "") }, ""},
			{func(t *testing.T) sip.Message { return response(t, 200, true, "INVITE", offerSDP) }, "v=0 A offer etag>ctag"},
			{func(t *testing.T) sip.Message { return inDialog(t, "ACK", true, 1, offerSDP) }, "v=0 A answer etag>ctag"},
			{func(t *testing.T) sip.Message { return inDialog(t, "BYE", false, 1, "") }, ""},
		}, []string{"offer etag>ctag", "answer etag>ctag", "delete >"}},
		{"re-INVITE from the callee", []step{
			{func(t *testing.T) sip.Message { return invite(t, offerSDP) }, "v=0 A offer ctag>"},
			{func(t *testing.T) sip.Message { return response(t, 200, true, "INVITE", offerSDP) }, "v=0 A answer ctag>etag"},
			{func(t *testing.T) sip.Message { return inDialog(t, "INVITE", false, 5, offerSDP) }, "v=0 A offer etag>ctag"},
			{func(t *testing.T) sip.Message { return response(t, 200, false, "INVITE", offerSDP) }, "v=0 A answer etag>ctag"},
		}, []string{"offer ctag>", "answer ctag>etag", "offer etag>ctag", "answer etag>ctag"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &relay{name: "A"}
			c := newCtl(t, r)
			for i, s := range tt.steps {
				m := s.msg(t)
				var err error
				switch m := m.(type) {
				case *sip.Request:
					if m.Method == sip.INVITE && m.To().Params.GetOr("tag", "") == "" {
						err = c.Invite(m, netip.Addr{}, "")
					} else {
						err = c.Request(m)
					}
				case *sip.Response:
					c.Response(m)
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				got := string(m.Body())
				if s.want == "" && got != offerSDP && got != "" || s.want != "" && got != s.want {
					t.Errorf("step %d: body %q, want %q", i, got, s.want)
				}
			}
			if got := r.log(); strings.Join(got, ",") != strings.Join(tt.log, ",") {
				t.Errorf("relay saw %q, want %q", got, tt.log)
			}
		})
	}
}

func TestOfferFlags(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	r := &relay{name: "A"}
	c := newCtl(t, r)
	if err := c.Invite(invite(t, offerSDP), netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	q := r.last()
	if q.ICE != "remove" || strings.Join(q.Replace, ",") != "origin,session-connection" ||
		strings.Join(q.ReceivedFrom, " ") != "IP4 192.0.2.10" || string(q.SDP) != offerSDP {
		t.Errorf("offer as the relay saw it: ICE %q replace %q received-from %q sdp %q", q.ICE, q.Replace, q.ReceivedFrom, q.SDP)
	}
	if c.Active() != 1 {
		t.Errorf("%d active calls, want 1", c.Active())
	}
	c.End(cid, "test")
	if c.Active() != 0 || r.last().Command != "delete" {
		t.Errorf("after End: %d active, last command %q", c.Active(), r.last().Command)
	}
}

// TestInviteFailover: a full relay passes the call to the next; with no
// relay able to take it, Invite's error makes the proxy answer 503; an
// error no other relay would fix is not ErrUnavailable (488).
func TestInviteFailover(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	full := &relay{name: "A", err: errors.New(ng.ReasonOutOfPorts)}
	ok := &relay{name: "B"}
	c := newCtl(t, full, ok)
	for i := range 3 {
		inv := invite(t, offerSDP)
		hdr := sip.CallIDHeader(fmt.Sprintf("c%d", i))
		inv.ReplaceHeader(&hdr)
		if err := c.Invite(inv, netip.Addr{}, ""); err != nil {
			t.Fatalf("invite %d: %v", i, err)
		}
		if !strings.HasPrefix(string(inv.Body()), "v=0 B offer") {
			t.Errorf("invite %d went to %q, want B", i, inv.Body())
		}
	}

	c2 := newCtl(t, &relay{name: "A", err: errors.New(ng.ReasonSessionLimit)})
	if err := c2.Invite(invite(t, offerSDP), netip.Addr{}, ""); !errors.Is(err, media.ErrUnavailable) {
		t.Errorf("invite with the only relay full: %v, want ErrUnavailable", err)
	}
	if c2.Active() != 0 {
		t.Errorf("refused call kept: %d active", c2.Active())
	}
	c3 := newCtl(t, &relay{name: "A", err: errors.New("bad SDP")})
	if err := c3.Invite(invite(t, offerSDP), netip.Addr{}, ""); err == nil || errors.Is(err, media.ErrUnavailable) {
		t.Errorf("invite with SDP the relay refuses: %v, want an error other than ErrUnavailable", err)
	}
}

// TestWatchReportsEndedCalls: an answered call its relay no longer knows
// is reported with its tags and dialog, so the proxy can send BYEs; a
// call in setup is not asked about.
func TestWatchReportsEndedCalls(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	r := &relay{name: "A"}
	c := newCtl(t, r)
	ended := make(chan media.Ended, 1)
	c.OnTimeout(func(e media.Ended) { ended <- e })
	if err := c.Invite(invite(t, offerSDP), netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Watch(ctx, 20*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()

	r.queryErr.Store(errors.New("unknown call"))
	select {
	case e := <-ended:
		t.Fatalf("call in setup reported ended: %+v", e)
	case <-time.After(100 * time.Millisecond):
	}
	ok := response(t, 200, true, "INVITE", offerSDP)
	ok.AppendHeader(sip.NewHeader("Contact", "<sip:bob@192.0.2.20>"))
	c.Response(ok)
	select {
	case e := <-ended:
		if e.CallID != cid || e.CallerTag != callerTag || e.CalleeTag != calleeTag ||
			e.Dialog.Invite == nil || e.Dialog.OK == nil || e.Reason != "media timeout" {
			t.Errorf("ended %+v", e)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("answered call the relay lost was not reported")
	}
	if c.Active() != 0 {
		t.Errorf("%d calls still kept", c.Active())
	}
}

// TestStateRestore: the state a controller keeps with the dialog lets
// another controller (another node, or this one after a restart), whose
// round robin points elsewhere, send the call's re-offer, answer and
// delete to the relay it is on.
func TestStateRestore(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ra, rb := &relay{name: "A"}, &relay{name: "B"}
	eps := startRelays(t, ra, rb)
	first := ctlOn(t, eps)
	inv := invite(t, offerSDP)
	if err := first.Invite(inv, netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	on := ra
	if strings.Contains(string(inv.Body()), " B ") {
		on = rb
	}
	ok := response(t, 200, true, "INVITE", offerSDP)
	first.Response(ok)
	st, saved := first.State(cid)
	if !saved {
		t.Fatal("no state for an answered call")
	}

	second := ctlOn(t, eps)
	if err := offerNew(t, second); err != nil {
		t.Fatal(err)
	}
	if err := second.Restore(cid, st, time.Now()); err != nil {
		t.Fatal(err)
	}
	re := inDialog(t, "INVITE", false, 5, offerSDP)
	if err := second.Request(re); err != nil {
		t.Fatal(err)
	}
	if want := "v=0 " + on.name + " offer etag>ctag"; string(re.Body()) != want {
		t.Fatalf("re-INVITE after restore: %q, want %q", re.Body(), want)
	}
	if err := second.Request(inDialog(t, "BYE", true, 6, "")); err != nil {
		t.Fatal(err)
	}
	if q := on.last(); q.Command != "delete" || q.CallID != cid {
		t.Fatalf("the call's relay last saw %s %s", q.Command, q.CallID)
	}
	for _, bad := range []struct{ name, state string }{
		{"not JSON", "{"},
		{"no relay", `{"caller_tag":"x"}`},
		{"a relay outside the set", `{"relay":"udp:192.0.2.99:2223","caller_tag":"x"}`},
		{"a broken dialog", `{"relay":"` + eps[0].URL + `","dialog":{"invite":{"text":"garbage"}}}`},
	} {
		if err := second.Restore("other", []byte(bad.state), time.Now()); !errors.Is(err, media.ErrRestore) {
			t.Errorf("%s: Restore = %v, want ErrRestore", bad.name, err)
		}
	}
}

// offerNew sets up an unrelated call on c, so c's round robin moves on.
func offerNew(t *testing.T, c *Controller) error {
	r := sipua.Message(t, "INVITE sip:x@example.com SIP/2.0", "u", "", "unrelated@test", "1 INVITE", offerSDP).(*sip.Request)
	return c.Invite(r, netip.Addr{}, "")
}

func FuzzRestore(f *testing.F) {
	f.Add([]byte(`{"relay":"udp:127.0.0.1:1","caller_tag":"c","callee_tag":"e","dialog":{"invite":{"text":"INVITE sip:a@b SIP/2.0\r\n\r\n"}}}`))
	f.Add([]byte(`{"relay":""}`))
	eps := []relayset.Endpoint{{URL: "udp:127.0.0.1:1", Addr: "127.0.0.1:1", Weight: 1}}
	set, err := relayset.New(eps, relayset.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer set.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		c := New(media.ModeAll, set, nil)
		if err := c.Restore("fuzz", b, time.Now()); err != nil {
			if !errors.Is(err, media.ErrRestore) {
				t.Fatalf("error not ErrRestore: %v", err)
			}
			return
		}
		if !c.known("fuzz") || set.RelayOf("fuzz") != eps[0].URL {
			t.Fatal("restored call not known, or not on its relay")
		}
		set.Forget("fuzz")
	})
}
