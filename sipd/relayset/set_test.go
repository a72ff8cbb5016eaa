package relayset

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"sipxdp/ng"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want []Endpoint
		err  string
	}{
		{in: "udp:10.0.0.2:2223=2 udp:10.0.0.3:2223=1", want: []Endpoint{
			{URL: "udp:10.0.0.2:2223", Addr: "10.0.0.2:2223", Weight: 2},
			{URL: "udp:10.0.0.3:2223", Addr: "10.0.0.3:2223", Weight: 1},
		}},
		{in: "  UDP:relay1\tudp6:[::1]:2223=3\n", want: []Endpoint{
			{URL: "UDP:relay1", Addr: "relay1:22222", Weight: 1},
			{URL: "udp6:[::1]:2223", Addr: "[::1]:2223", Weight: 3},
		}},
		{in: "udp6:[2001:db8::1]", want: []Endpoint{{URL: "udp6:[2001:db8::1]", Addr: "[2001:db8::1]:22222", Weight: 1}}},
		{in: "udp:10.0.0.2:2223=0 udp:10.0.0.3:2223", want: []Endpoint{
			{URL: "udp:10.0.0.2:2223", Addr: "10.0.0.2:2223", Weight: 0},
			{URL: "udp:10.0.0.3:2223", Addr: "10.0.0.3:2223", Weight: 1},
		}},
		{in: "", err: "no relays"},
		{in: "udp:10.0.0.2:2223=0", err: "weight 0"},
		{in: "10.0.0.2:2223", err: "want udp:"},
		{in: "ws://relay:8080/ng", err: "want udp:"},
		{in: "1 == udp:10.0.0.2:2223", err: "want udp:"},
		{in: "udp:10.0.0.2:2223=x", err: "weight"},
		{in: "udp:10.0.0.2:2223=-1", err: "weight"},
		{in: "udp:10.0.0.2:99999", err: "bad port"},
		{in: "udp:10.0.0.2:", err: "bad port"},
		{in: "udp::2223", err: "bad host"},
		{in: "udp6:::1:2223", err: "brackets"},
		{in: "udp6:[::1", err: "unterminated"},
		{in: "udp6:[::1]x", err: "unexpected"},
		{in: "udp:a:1 udp:a:1=3", err: "twice"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Parse(%q) = %v, %v; want error with %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("Parse(%q)[%d] = %+v, want %+v", tt.in, i, got[i], tt.want[i])
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("udp:10.0.0.2:2223=2 udp:10.0.0.3:2223=1")
	f.Add("udp6:[::1]:2223=3 udp:relay")
	f.Fuzz(func(t *testing.T, s string) {
		eps, err := Parse(s)
		if err != nil {
			return
		}
		total := 0
		for _, ep := range eps {
			if _, _, err := net.SplitHostPort(ep.Addr); err != nil || ep.Weight < 0 {
				t.Fatalf("Parse(%q) accepted %+v", s, ep)
			}
			total += ep.Weight
		}
		if total == 0 {
			t.Fatalf("Parse(%q) accepted a set with no weight", s)
		}
	})
}

// Fake relay modes.
const (
	modeOK         = iota
	modeSilent     // drops every datagram: a dead relay
	modeOutOfPorts // error reason "Ran out of ports" on offer
	modeSessions   // error reason "Parallel session limit reached" on offer
	modeLoadLimit  // result "load limit" on offer
	modeBadSDP     // an error no other relay would fix
)

// fakeRelay is an NG server in-process whose offers fail by mode.
type fakeRelay struct {
	name string
	mode atomic.Int32
	pc   net.PacketConn
	srv  *ng.Server

	mu   sync.Mutex
	cmds map[string][]string // call-id -> commands executed
}

func (f *fakeRelay) record(r *ng.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds[r.CallID] = append(f.cmds[r.CallID], r.Command)
}

func (f *fakeRelay) Offer(r *ng.Request) ([]byte, error) {
	switch f.mode.Load() {
	case modeOutOfPorts:
		return nil, errors.New(ng.ReasonOutOfPorts)
	case modeSessions:
		return nil, errors.New(ng.ReasonSessionLimit)
	case modeBadSDP:
		return nil, errors.New("bad SDP")
	}
	f.record(r)
	return []byte("sdp from " + f.name), nil
}

func (f *fakeRelay) Answer(r *ng.Request) ([]byte, error) {
	f.record(r)
	return []byte("sdp from " + f.name), nil
}

func (f *fakeRelay) Delete(r *ng.Request) (ng.CallStats, error) {
	f.record(r)
	return ng.CallStats{Created: time.Unix(1700000000, 0)}, nil
}

func (f *fakeRelay) Query(r *ng.Request) (ng.CallStats, error) {
	f.record(r)
	return ng.CallStats{}, nil
}

func (f *fakeRelay) List(int) []string { return nil }

func (f *fakeRelay) calls() map[string][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]string{}
	for k, v := range f.cmds {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// ReadFrom serves modeSilent (drop) and modeLoadLimit (the NG server
// has no such reply of its own, so the fake answers offers itself).
func (f *fakeRelay) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := f.pc.ReadFrom(b)
		if err != nil {
			return n, a, err
		}
		switch f.mode.Load() {
		case modeSilent:
			continue
		case modeLoadLimit:
			if strings.Contains(string(b[:n]), "5:offer") {
				cookie, _, _ := strings.Cut(string(b[:n]), " ")
				body, _ := ng.Encode(map[string]any{"result": ng.ResultLoadLimit, "message": "draining"})
				_, _ = f.pc.WriteTo(append([]byte(cookie+" "), body...), a)
				continue
			}
		}
		return n, a, err
	}
}

func (f *fakeRelay) WriteTo(b []byte, a net.Addr) (int, error) { return f.pc.WriteTo(b, a) }
func (f *fakeRelay) Close() error                              { return f.pc.Close() }
func (f *fakeRelay) LocalAddr() net.Addr                       { return f.pc.LocalAddr() }
func (f *fakeRelay) SetDeadline(t time.Time) error             { return f.pc.SetDeadline(t) }
func (f *fakeRelay) SetReadDeadline(t time.Time) error         { return f.pc.SetReadDeadline(t) }
func (f *fakeRelay) SetWriteDeadline(t time.Time) error        { return f.pc.SetWriteDeadline(t) }

func startRelay(t *testing.T, name string) *fakeRelay {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRelay{name: name, pc: pc, cmds: map[string][]string{}}
	f.srv = ng.NewServer(f, ng.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.srv.ServeUDP(ctx, f); close(done) }()
	t.Cleanup(func() { cancel(); <-done; pc.Close() })
	return f
}

// newSet starts len(weights) fake relays and a set over them.
func newSet(t *testing.T, weights ...int) (*Set, []*fakeRelay) {
	t.Helper()
	var eps []Endpoint
	var relays []*fakeRelay
	for i, w := range weights {
		f := startRelay(t, string(rune('A'+i)))
		relays = append(relays, f)
		addr := f.LocalAddr().String()
		eps = append(eps, Endpoint{URL: "udp:" + addr, Addr: addr, Weight: w})
	}
	s, err := New(eps, Options{
		Interval: 50 * time.Millisecond,
		Client:   ng.ClientOptions{Retries: 2, RetryInterval: 30 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, relays
}

func offer(s *Set, id string) (string, error) {
	sdp, _, err := s.Offer(context.Background(), &ng.Command{CallID: id, FromTag: "f-" + id, SDP: []byte("v=0")})
	return string(sdp), err
}

func callID(i int) string { return "call-" + string(rune('a'+i/26)) + string(rune('a'+i%26)) }

// TestSpreadAndStick: 30 calls over weights 2:1 land 20 and 10, and each
// call's answer, query and delete go to the relay that took its offer.
func TestSpreadAndStick(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s, relays := newSet(t, 2, 1)
	ctx := context.Background()
	for i := range 30 {
		id := callID(i)
		sdp, err := offer(s, id)
		if err != nil {
			t.Fatalf("offer %s: %v", id, err)
		}
		cmd := &ng.Command{CallID: id, FromTag: "f-" + id, ToTag: "t-" + id, SDP: []byte("v=0")}
		if a, err := s.Answer(ctx, cmd); err != nil || string(a) != sdp {
			t.Fatalf("answer %s: %q, %v (offer went to %q)", id, a, err, sdp)
		}
		if _, err := s.Query(ctx, cmd); err != nil {
			t.Fatalf("query %s: %v", id, err)
		}
	}
	st := s.Status()
	if st[0].Calls != 20 || st[1].Calls != 10 {
		t.Errorf("calls per relay %d:%d, want 20:10", st[0].Calls, st[1].Calls)
	}
	for i := range 30 {
		id := callID(i)
		ci, err := s.Delete(ctx, &ng.Command{CallID: id})
		if err != nil || ci.Created.IsZero() {
			t.Fatalf("delete %s: %+v, %v", id, ci, err)
		}
		if s.RelayOf(id) != "" {
			t.Errorf("%s still sticks to %s after delete", id, s.RelayOf(id))
		}
	}
	want := []string{"offer", "answer", "query", "delete"}
	n := 0
	for _, f := range relays {
		for id, cmds := range f.calls() {
			n++
			if strings.Join(cmds, ",") != strings.Join(want, ",") {
				t.Errorf("relay %s, %s: commands %v, want %v", f.name, id, cmds, want)
			}
		}
	}
	if n != 30 {
		t.Errorf("relays saw %d calls, want 30 (each on one relay)", n)
	}
	if _, err := s.Answer(ctx, &ng.Command{CallID: "nope"}); !errors.Is(err, ErrUnknownCall) {
		t.Errorf("answer of an unknown call: %v", err)
	}
}

// TestReofferSticks: a re-INVITE's offer goes to the call's relay, not to
// the next one round robin would choose.
func TestReofferSticks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s, _ := newSet(t, 1, 1)
	first, err := offer(s, "c")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if again, err := offer(s, "c"); err != nil || again != first {
			t.Fatalf("re-offer: %q, %v; want %q", again, err, first)
		}
	}
	if st := s.Status(); st[0].Calls+st[1].Calls != 1 {
		t.Errorf("status %+v: want one call", st)
	}
}

// TestFailover: when the relay chosen for a call refuses for load or does
// not answer, the offer goes to the other without failing, the refusing
// relay gets no new calls, and its state says why.
func TestFailover(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	tests := []struct {
		name  string
		mode  int32
		state string
	}{
		{"load limit", modeLoadLimit, StateOverloaded},
		{"out of ports", modeOutOfPorts, StateOverloaded},
		{"session limit", modeSessions, StateOverloaded},
		{"no answer", modeSilent, StateDown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, relays := newSet(t, 2, 1)
			relays[0].mode.Store(tt.mode) // the one round robin picks first
			for i := range 10 {
				sdp, err := offer(s, callID(i))
				if err != nil || sdp != "sdp from B" {
					t.Fatalf("offer %d: %q, %v; want B's", i, sdp, err)
				}
			}
			st := s.Status()
			if st[0].State != tt.state || st[0].Failovers != 1 || st[0].Calls != 0 || st[0].LastError == "" {
				t.Errorf("A's status %+v: want %s after one failover", st[0], tt.state)
			}
			if st[1].Calls != 10 {
				t.Errorf("B has %d calls, want 10", st[1].Calls)
			}
		})
	}
}

// TestNoFailoverOnOtherErrors: an error that is not about load fails the
// offer; another relay is not tried.
func TestNoFailoverOnOtherErrors(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s, relays := newSet(t, 1, 1)
	relays[0].mode.Store(modeBadSDP)
	relays[1].mode.Store(modeBadSDP)
	_, err := offer(s, "c")
	var re *ng.ReplyError
	if !errors.As(err, &re) || re.Reason != "bad SDP" {
		t.Fatalf("offer: %v, want the relay's error", err)
	}
	if st := s.Status(); st[0].Failovers+st[1].Failovers != 0 || st[0].State != StateUnknown {
		t.Errorf("status %+v: want no failover", st)
	}
}

func TestAllRelaysRefuse(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s, relays := newSet(t, 1, 1)
	relays[0].mode.Store(modeOutOfPorts)
	relays[1].mode.Store(modeSilent)
	_, err := offer(s, "c")
	if !errors.Is(err, ErrNoRelay) || !ng.IsOverloaded(err) || !errors.Is(err, ng.ErrTimeout) {
		t.Errorf("offer: %v, want ErrNoRelay wrapping both relays' errors", err)
	}
	if _, err := offer(s, "d"); !errors.Is(err, ErrNoRelay) {
		t.Errorf("offer with both relays skipped: %v, want ErrNoRelay", err)
	}
}

// TestHealthCheck: a relay that stops answering pings is down and gets no
// new calls; once it answers again it is up and takes its share.
func TestHealthCheck(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s, relays := newSet(t, 1, 1)
	ctx := context.Background()
	s.Check(ctx)
	if st := s.Status(); st[0].State != StateUp || st[1].State != StateUp || st[0].RTT == "" {
		t.Fatalf("after a check: %+v, want both up", st)
	}
	relays[0].mode.Store(modeSilent)
	s.Check(ctx)
	if st := s.Status(); st[0].State != StateDown || st[1].State != StateUp {
		t.Fatalf("after A stopped answering: %+v", st)
	}
	for i := range 4 {
		if sdp, err := offer(s, callID(i)); err != nil || sdp != "sdp from B" {
			t.Fatalf("offer %d with A down: %q, %v", i, sdp, err)
		}
	}
	if st := s.Status(); st[0].Failovers != 0 {
		t.Errorf("A was tried while down: %+v", st[0])
	}
	relays[0].mode.Store(modeOK)
	s.Check(ctx)
	got := map[string]int{}
	for i := range 4 {
		sdp, err := offer(s, callID(10+i))
		if err != nil {
			t.Fatal(err)
		}
		got[sdp]++
	}
	if got["sdp from A"] != 2 || got["sdp from B"] != 2 {
		t.Errorf("after A came back: %v, want 2 each", got)
	}
}

// TestRunDetectsDeath: Run's pings mark a relay that stopped answering
// down within a few intervals, with no call needed.
func TestRunDetectsDeath(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s, relays := newSet(t, 1, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	relays[1].mode.Store(modeSilent)
	deadline := time.Now().Add(2 * time.Second)
	for s.Status()[1].State != StateDown {
		if time.Now().After(deadline) {
			t.Fatalf("B not down after 2s of 50ms pings: %+v", s.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.Status()[0]; st.State != StateUp {
		t.Errorf("A: %+v, want up", st)
	}
}

// TestOverloadRecheck: an overloaded relay answering pings stays out of
// new calls until Recheck has passed.
func TestOverloadRecheck(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s, relays := newSet(t, 1, 1)
	var now atomic.Int64
	now.Store(time.Unix(1700000000, 0).UnixNano())
	s.now = func() time.Time { return time.Unix(0, now.Load()) }
	relays[0].mode.Store(modeOutOfPorts)
	if sdp, err := offer(s, "a"); err != nil || sdp != "sdp from B" {
		t.Fatalf("offer: %q, %v", sdp, err)
	}
	relays[0].mode.Store(modeOK)
	s.Check(context.Background())
	if st := s.Status()[0]; st.State != StateOverloaded {
		t.Fatalf("A after a pong within Recheck: %+v, want overloaded", st)
	}
	if sdp, _ := offer(s, "b"); sdp != "sdp from B" {
		t.Errorf("offer within Recheck went to %q", sdp)
	}
	now.Add(int64(DefaultRecheck + time.Second))
	s.Check(context.Background())
	if st := s.Status()[0]; st.State != StateUp {
		t.Fatalf("A after Recheck: %+v, want up", st)
	}
	got := map[string]int{}
	for i := range 4 {
		sdp, _ := offer(s, callID(i))
		got[sdp]++
	}
	if got["sdp from A"] != 2 {
		t.Errorf("4 offers after Recheck: %v, want 2 on A", got)
	}
}

func TestStickyIdle(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s, _ := newSet(t, 1)
	var now atomic.Int64
	now.Store(time.Unix(1700000000, 0).UnixNano())
	s.now = func() time.Time { return time.Unix(0, now.Load()) }
	if _, err := offer(s, "a"); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(DefaultStickyIdle + time.Second))
	s.Check(context.Background())
	if s.RelayOf("a") != "" || s.Status()[0].Calls != 0 {
		t.Errorf("idle call still kept: %q, %+v", s.RelayOf("a"), s.Status())
	}
}

// TestOfferCutShortByHealthCheck: an offer in flight to a relay that has
// just died moves on to the next relay as soon as the health check marks
// it down, not after the client's last retry (five seconds with
// Kamailio's defaults), so a call placed at the moment of a relay's death
// is not held up for its retries.
func TestOfferCutShortByHealthCheck(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	var eps []Endpoint
	var relays []*fakeRelay
	for i := range 2 {
		f := startRelay(t, string(rune('A'+i)))
		relays = append(relays, f)
		addr := f.LocalAddr().String()
		eps = append(eps, Endpoint{URL: "udp:" + addr, Addr: addr, Weight: 2 - i})
	}
	// Retries far longer than the health check: 5 tries a second apart.
	s, err := New(eps, Options{Interval: 50 * time.Millisecond,
		Client: ng.ClientOptions{Retries: 5, RetryInterval: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for s.Status()[0].State != StateUp || s.Status()[1].State != StateUp {
		time.Sleep(10 * time.Millisecond)
	}
	relays[0].mode.Store(modeSilent) // dies; round robin picks it first
	start := time.Now()
	sdp, err := offer(s, "at-death")
	took := time.Since(start)
	if err != nil || sdp != "sdp from B" {
		t.Fatalf("offer: %q, %v; want B's", sdp, err)
	}
	if took > time.Second {
		t.Errorf("the offer took %v: it waited for the dead relay's retries, not its health check (50 ms)", took)
	}
	t.Logf("offer moved to the next relay after %v", took)
}

// TestBranchDeleteSticks: a delete naming one fork's branch (via-branch,
// or a to-tag with the to-tag flag) leaves the call on its relay, whose
// other branches go on; one naming the call forgets it.
func TestBranchDeleteSticks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s, _ := newSet(t, 1)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cmd  ng.Command
		kept bool
	}{
		{"via-branch", ng.Command{FromTag: "f", ViaBranch: "z9hG4bK-2"}, true},
		{"to-tag with the to-tag flag", ng.Command{FromTag: "f", ToTag: "t2", Flags: []string{"to-tag"}}, true},
		{"to-tag without the flag (ignored by the relay)", ng.Command{FromTag: "f", ToTag: "t2"}, false},
		{"the call", ng.Command{}, false},
	} {
		id := "call-" + strings.ReplaceAll(tc.name, " ", "-")
		if _, err := offer(s, id); err != nil {
			t.Fatal(err)
		}
		cmd := tc.cmd
		cmd.CallID = id
		if _, err := s.Delete(ctx, &cmd); err != nil {
			t.Fatalf("%s: delete: %v", tc.name, err)
		}
		if kept := s.RelayOf(id) != ""; kept != tc.kept {
			t.Errorf("%s: call kept on its relay %v, want %v", tc.name, kept, tc.kept)
		}
	}
}
