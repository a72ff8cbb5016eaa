package relayset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"sipxdp/ng"
	"sipxdp/sipd/wire"
)

// Defaults for Options' zero fields.
const (
	DefaultInterval = time.Second
	// DefaultRecheck is how long a relay that refused for load is left
	// out of new calls, as Kamailio's rtpengine_disable_tout (60 s).
	DefaultRecheck = 60 * time.Second
	// DefaultStickyIdle forgets a call's relay when it has seen no
	// command this long (a call whose delete never came).
	DefaultStickyIdle = 12 * time.Hour
)

// ErrNoRelay is wrapped by Offer's error when no relay of the set took
// the call.
var ErrNoRelay = errors.New("relayset: no relay available")

// ErrUnknownCall is returned for an answer, delete or query of a call
// that no relay of the set was given.
var ErrUnknownCall = errors.New("relayset: call not on any relay")

// A relay's health as the set sees it (Status.State).
const (
	StateUnknown    = "unknown"    // not checked yet; takes calls
	StateUp         = "up"         // answered its last ping
	StateDown       = "down"       // did not answer: no new calls
	StateOverloaded = "overloaded" // refused for load: no new calls until Recheck
)

// Options tune a Set; zero fields take the defaults.
type Options struct {
	// Interval is the time between health-check pings.
	Interval time.Duration
	// PingTimeout bounds one health check (default: Interval).
	PingTimeout time.Duration
	// Recheck is how long a relay that answered "load limit" (or ran out
	// of ports or sessions) gets no new calls.
	Recheck time.Duration
	// StickyIdle forgets a call's relay after this long without commands.
	StickyIdle time.Duration
	// Client tunes each relay's NG client (retries, interval, outstanding).
	Client ng.ClientOptions
	Log    *slog.Logger
	// Shared, when set, keeps each call's relay where the other proxies
	// of the set see it (RedisSticky): a call another proxy set up goes
	// to its relay here too. nil: in memory only.
	Shared Sticky
}

// Sticky is a Call-ID to relay URL map other proxies share. Its methods
// handle their own errors (a call goes on without it): Relay says false
// when it cannot tell.
type Sticky interface {
	Stick(callID, url string, ttl time.Duration)
	Relay(callID string) (url string, ok bool)
	Unstick(callID string)
}

// Status is one relay as /health and relayctl show it.
type Status = wire.RelayMember

type relay struct {
	ep Endpoint
	c  *ng.Client

	// guarded by Set.mu
	state     string
	until     time.Time // StateOverloaded: when it may take calls again
	current   int       // smooth weighted round robin
	calls     int
	offers    uint64
	failovers uint64
	lastErr   string
	lastCheck time.Time
	rtt       time.Duration
	// down is closed when the relay is marked down, and made anew when
	// it comes back: offers in flight to it stop waiting for its
	// retries and move on.
	down chan struct{}
}

// markDown sets r down and releases the offers waiting on it. Called
// with Set.mu held.
func (r *relay) markDown() {
	select {
	case <-r.down: // already released
	default:
		close(r.down)
	}
	r.state = StateDown
}

// rearm makes down wait again once r is no longer down. Called with
// Set.mu held.
func (r *relay) rearm() {
	select {
	case <-r.down:
		r.down = make(chan struct{})
	default:
	}
}

// markUp sets r up. Called with Set.mu held.
func (r *relay) markUp() {
	r.rearm()
	r.state = StateUp
}

type sticky struct {
	r    *relay
	used time.Time
}

// Set is a set of relays. Its methods are safe for concurrent use.
type Set struct {
	opt    Options
	log    *slog.Logger
	relays []*relay

	mu    sync.Mutex
	calls map[string]*sticky // by Call-ID
	now   func() time.Time
}

// New dials the relays of eps (UDP sockets only: nothing is sent until a
// command or Run's first health check).
func New(eps []Endpoint, o Options) (*Set, error) {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = o.Interval
	}
	if o.Recheck <= 0 {
		o.Recheck = DefaultRecheck
	}
	if o.StickyIdle <= 0 {
		o.StickyIdle = DefaultStickyIdle
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Set{opt: o, log: o.Log, calls: map[string]*sticky{}, now: time.Now}
	for _, ep := range eps {
		c, err := ng.Dial(ep.Addr, o.Client)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("relay %s: %w", ep.URL, err)
		}
		s.relays = append(s.relays, &relay{ep: ep, c: c, state: StateUnknown, down: make(chan struct{})})
	}
	return s, nil
}

// Close closes the relays' clients.
func (s *Set) Close() {
	for _, r := range s.relays {
		_ = r.c.Close()
	}
}

// Run health-checks the relays every Interval until ctx is done.
func (s *Set) Run(ctx context.Context) {
	t := time.NewTicker(s.opt.Interval)
	defer t.Stop()
	for {
		s.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check pings every relay once, in parallel, and forgets calls idle for
// longer than StickyIdle.
func (s *Set) Check(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range s.relays {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, s.opt.PingTimeout)
			defer cancel()
			start := time.Now()
			err := r.c.Ping(pctx)
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			r.lastCheck = s.now()
			if err != nil {
				if r.state != StateDown {
					s.log.Warn("relay down", "relay", r.ep.URL, "err", err)
				}
				r.markDown()
				r.lastErr = err.Error()
				return
			}
			r.rtt = time.Since(start)
			if r.state == StateOverloaded && r.lastCheck.Before(r.until) {
				return // answering pings, still refusing calls
			}
			if r.state != StateUp {
				s.log.Info("relay up", "relay", r.ep.URL)
			}
			r.markUp()
		})
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := s.now().Add(-s.opt.StickyIdle)
	for id, st := range s.calls {
		if st.used.Before(cut) {
			st.r.calls--
			delete(s.calls, id)
		}
	}
}

// pick chooses the relay for a new call among those not in tried and
// taking calls, by smooth weighted round robin (nginx's): over any run of
// calls each relay gets its weight's share, evenly interleaved. Kamailio
// hashes the Call-ID instead; round robin spreads a small number of calls
// closer to the weights.
func (s *Set) pick(tried map[*relay]bool) *relay {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var best *relay
	total := 0
	for _, r := range s.relays {
		if tried[r] || r.ep.Weight == 0 {
			continue
		}
		if r.state == StateOverloaded && !now.Before(r.until) {
			r.state = StateUnknown
		}
		if r.state == StateDown || r.state == StateOverloaded {
			continue
		}
		r.current += r.ep.Weight
		total += r.ep.Weight
		if best == nil || r.current > best.current {
			best = r
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}

// Offer sends an offer. A call the set already has goes to its relay (a
// re-INVITE). A new call goes to the relay pick chooses; when that relay
// does not answer or refuses for load, it is skipped for new calls and
// the offer goes to the next, until one takes it or none is left. url
// is the URL of the relay that answered.
func (s *Set) Offer(ctx context.Context, cmd *ng.Command) (sdp []byte, url string, err error) {
	if r := s.lookup(cmd.CallID); r != nil {
		sdp, err = r.c.Offer(ctx, cmd)
		return sdp, r.ep.URL, err
	}
	tried := map[*relay]bool{}
	var errs []error
	for {
		r := s.pick(tried)
		if r == nil {
			if len(errs) == 0 {
				return nil, "", ErrNoRelay
			}
			return nil, "", fmt.Errorf("%w: %w", ErrNoRelay, errors.Join(errs...))
		}
		tried[r] = true
		sdp, err = s.offerUntilDown(ctx, r, cmd)
		if err == nil {
			s.stick(cmd.CallID, r)
			return sdp, r.ep.URL, nil
		}
		if ctx.Err() != nil || !s.failover(r, err) {
			return nil, r.ep.URL, err
		}
		errs = append(errs, fmt.Errorf("%s: %w", r.ep.URL, err))
	}
}

// offerUntilDown sends a new call's offer to r, giving up as soon as the
// health check (or another offer's timeout) marks r down: the client's
// own retries would hold the call up for seconds on a relay already
// known dead. The error then wraps ng.ErrTimeout, so the offer moves on.
func (s *Set) offerUntilDown(ctx context.Context, r *relay, cmd *ng.Command) ([]byte, error) {
	s.mu.Lock()
	down := r.down
	s.mu.Unlock()
	octx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-down:
			cancel()
		case <-octx.Done():
		}
	}()
	return r.c.Offer(octx, cmd)
}

// failover records a failed offer and says whether to try the next relay.
func (s *Set) failover(r *relay, err error) bool {
	overloaded := ng.IsOverloaded(err)
	if !overloaded && !errors.Is(err, ng.ErrTimeout) {
		return false // the relay refused the offer itself: another would too
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r.failovers++
	r.lastErr = err.Error()
	if overloaded {
		r.rearm() // refusing calls, not dead
		r.state, r.until = StateOverloaded, s.now().Add(s.opt.Recheck)
	} else {
		r.markDown()
	}
	s.log.Warn("relay skipped, offer moves to the next", "relay", r.ep.URL, "err", err)
	return true
}

func (s *Set) stick(callID string, r *relay) {
	s.mu.Lock()
	if _, ok := s.calls[callID]; !ok {
		r.calls++
	}
	r.offers++
	s.calls[callID] = &sticky{r: r, used: s.now()}
	s.mu.Unlock()
	if s.opt.Shared != nil {
		s.opt.Shared.Stick(callID, r.ep.URL, s.opt.StickyIdle)
	}
}

// lookup returns the call's relay: the one this set gave it, or, with a
// shared map, the one another proxy did.
func (s *Set) lookup(callID string) *relay {
	s.mu.Lock()
	st := s.calls[callID]
	if st != nil {
		st.used = s.now()
		s.mu.Unlock()
		return st.r
	}
	s.mu.Unlock()
	if s.opt.Shared == nil {
		return nil
	}
	url, ok := s.opt.Shared.Relay(callID)
	if !ok {
		return nil
	}
	r, _ := s.keep(callID, url)
	return r
}

// keep makes the call stick to the relay of the set with this URL
// (nil, false: no such relay in this set).
func (s *Set) keep(callID, url string) (*relay, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.calls[callID]; st != nil {
		return st.r, st.r.ep.URL == url
	}
	for _, r := range s.relays {
		if r.ep.URL == url {
			r.calls++
			s.calls[callID] = &sticky{r: r, used: s.now()}
			return r, true
		}
	}
	return nil, false
}

// Adopt makes a call set up elsewhere (by this sipd before a restart, or
// by another proxy) stick to the relay it is on. It reports false when
// the set has no relay with that URL.
func (s *Set) Adopt(callID, url string) bool {
	_, ok := s.keep(callID, url)
	return ok
}

// Answer sends an answer to the call's relay.
func (s *Set) Answer(ctx context.Context, cmd *ng.Command) ([]byte, error) {
	r := s.lookup(cmd.CallID)
	if r == nil {
		return nil, ErrUnknownCall
	}
	return r.c.Answer(ctx, cmd)
}

// Query asks the call's relay about it.
func (s *Set) Query(ctx context.Context, cmd *ng.Command) (ng.CallInfo, error) {
	r := s.lookup(cmd.CallID)
	if r == nil {
		return ng.CallInfo{}, ErrUnknownCall
	}
	return r.c.Query(ctx, cmd)
}

// Delete deletes the call on its relay. Unless the command names one
// fork's branch (a via-branch, or a to-tag with the to-tag flag: the
// relay may keep the call's other branches, rtpengine's
// call_delete_branch), the call is forgotten, whether the relay
// answered or not: a relay that lost the call has nothing to keep.
func (s *Set) Delete(ctx context.Context, cmd *ng.Command) (ng.CallInfo, error) {
	r := s.lookup(cmd.CallID)
	if r == nil {
		return ng.CallInfo{}, ErrUnknownCall
	}
	ci, err := r.c.Delete(ctx, cmd)
	if !namesBranch(cmd) {
		s.Forget(cmd.CallID)
	}
	return ci, err
}

// namesBranch reports whether a delete may end one branch of a forked
// call rather than the call.
func namesBranch(cmd *ng.Command) bool {
	return cmd.ViaBranch != "" || cmd.ToTag != "" && slices.ContainsFunc(cmd.Flags, func(f string) bool { return strings.EqualFold(f, "to-tag") })
}

// Forget drops the call's relay without telling the relay (and from the
// shared map: the call is over).
func (s *Set) Forget(callID string) {
	s.mu.Lock()
	if st, ok := s.calls[callID]; ok {
		st.r.calls--
		delete(s.calls, callID)
	}
	s.mu.Unlock()
	if s.opt.Shared != nil {
		s.opt.Shared.Unstick(callID)
	}
}

// RelayOf returns the URL of the call's relay, "" when none.
func (s *Set) RelayOf(callID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.calls[callID]; st != nil {
		return st.r.ep.URL
	}
	return ""
}

// Status returns every relay's state, in the order configured.
func (s *Set) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.relays))
	for _, r := range s.relays {
		st := Status{
			URL: r.ep.URL, Weight: r.ep.Weight, State: r.state, Calls: r.calls,
			Offers: r.offers, Failovers: r.failovers, LastError: r.lastErr, LastCheck: r.lastCheck,
		}
		if r.rtt > 0 {
			// In ms, not Duration.String's µs, which tables pad by bytes.
			st.RTT = strconv.FormatFloat(float64(r.rtt)/float64(time.Millisecond), 'f', 3, 64) + "ms"
		}
		out = append(out, st)
	}
	return out
}
