// Package dialog tracks calls through the proxy, from INVITE to BYE, and
// writes a record of each finished call as a JSON line (a CDR).
//
// The tracker is also where the proxy asks whether an in-dialog request
// belongs to a call (Match): a request that names a tracked call's
// Call-ID but none of its dialogs must change nothing. All of its state
// changes go through Invite, Seen, Final and End (plus Sweep and
// Shutdown), so they can be journaled.
//
// A CDR is durable before the call's end is acknowledged: End returns
// once its CDR is on disk (the proxy relays the BYE's 200 after it), so a
// crash right after the 200 keeps it. A CDR that cannot be written then
// is counted (CDRs); its line stays queued in the journal and is written
// when the disk recovers, unless the journal's backlog is full.
//
// When sipd stops cleanly, Shutdown ends the calls still up with a CDR
// whose end_reason is "shutdown" and whose duration runs to the stop:
// media may go on without sipd, but sipd no longer knows the call, so
// the CDR says when it stopped knowing rather than leaving no record.
package dialog

import (
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"sipxdp/sipd/journal"
)

// Sink takes CDR lines. *journal.Journal is one: Append queues the line
// and the Commit tells when it is durable.
type Sink interface {
	Append(rec []byte) *journal.Commit
}

// Call is one INVITE dialog as the proxy saw it.
type Call struct {
	CallID    string    `json:"call_id"`
	FromTag   string    `json:"from_tag"`
	ToTag     string    `json:"to_tag,omitempty"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	Invited   time.Time `json:"invited"`
	Answered  time.Time `json:"answered,omitzero"`
	Ended     time.Time `json:"ended,omitzero"`
	SetupMs   int64     `json:"setup_ms,omitempty"`
	Duration  float64   `json:"duration_s"`
	Status    int       `json:"status"`
	EndReason string    `json:"end_reason,omitempty"`

	// Tags the callee side used in responses other than the answer the
	// call follows: early dialogs (provisional responses) and the 2xx of
	// other forks. Requests in those dialogs are the call's too.
	peers  []string
	active bool
	// media is what the proxy attached to the confirmed call (see
	// state.go), kept with it on disk, and when it was set.
	media   []byte
	mediaAt time.Time
}

// MaxPeerTags bounds the callee tags kept per call: a callee (or a
// forking proxy beyond us) could otherwise grow a call's state without
// end. Dialogs beyond it are not recognised (their requests get 481).
const MaxPeerTags = 16

// Match is how an in-dialog request's Call-ID and tags relate to the
// calls the tracker holds.
type Match int

const (
	// Unknown: no call with this Call-ID. Not ours to judge: another sipd
	// sharing the route secret set it up, or it predates a restart.
	Unknown Match = iota
	// Mismatch: a call with this Call-ID, but none of its dialogs has
	// these tags (RFC 3261 §12.2.2: 481).
	Mismatch
	// Early: the caller's tag and a tag from a provisional response of a
	// call not answered yet.
	Early
	// Confirmed: the answered dialog, the one the call (and its media)
	// follows.
	Confirmed
	// Fork: a dialog formed by another fork's 2xx, which the caller will
	// ACK and BYE; a real dialog, but not the call's.
	Fork
)

func (m Match) String() string {
	return [...]string{"unknown", "mismatch", "early", "confirmed", "fork"}[m]
}

// Tracker holds calls being set up and in progress, by Call-ID: a few
// calls may share one (a caller reusing it with a new From tag).
type Tracker struct {
	now    func() time.Time
	maxAge time.Duration

	mu     sync.Mutex
	calls  map[string][]*Call // by Call-ID, until a final failure or the end
	setup  int
	active int
	out    Sink
	done   uint64
	failed uint64

	cdrs, cdrErrors atomic.Uint64

	// onSetup is told each call's setup time (ObserveSetup); nil: nobody.
	onSetup func(status int, d time.Duration)

	state *state // nil: calls are not kept on disk (see OpenState)
	// shared: calls are kept in Redis instead (see ShareState); onAdopt
	// is told each call taken over from there.
	shared  *sharedState
	onAdopt func(Restored)
	adopted atomic.Uint64
}

// New returns a tracker writing CDRs to out (nil: none). Calls with no BYE
// after maxAge are closed by Sweep.
func New(out Sink, maxAge time.Duration, now func() time.Time) *Tracker {
	if now == nil {
		now = time.Now
	}
	if maxAge <= 0 {
		maxAge = 12 * time.Hour
	}
	return &Tracker{now: now, maxAge: maxAge, out: out, calls: map[string][]*Call{}}
}

// ObserveSetup has f told, for every call, the final status of its
// initial INVITE and the time from the INVITE forwarded to that response
// relayed: the call setup time. f runs on the proxy's goroutine and must
// be quick. Call it before the tracker is used.
func (t *Tracker) ObserveSetup(f func(status int, d time.Duration)) { t.onSetup = f }

// find returns the call of callID whose caller tag is callerTag.
func (t *Tracker) find(callID, callerTag string) (*Call, int) {
	for i, c := range t.calls[callID] {
		if c.FromTag == callerTag {
			return c, i
		}
	}
	return nil, -1
}

func (t *Tracker) remove(callID string, i int) {
	cs := t.calls[callID]
	if len(cs) == 1 {
		delete(t.calls, callID)
		return
	}
	t.calls[callID] = slices.Delete(slices.Clone(cs), i, i+1)
}

// Invite notes an initial INVITE forwarded.
func (t *Tracker) Invite(callID, fromTag, from, to string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, _ := t.find(callID, fromTag); c != nil {
		return // a retransmission, a retry with credentials, or a spiral
	}
	t.calls[callID] = append(t.calls[callID], &Call{CallID: callID, FromTag: fromTag, From: from, To: to, Invited: t.now()})
	t.setup++
}

// Seen notes a response to the initial INVITE, relayed upstream, from
// the callee side with To tag calleeTag: a provisional response (an
// early dialog) or the 2xx of a fork other than the one that answered
// (a dialog of its own).
func (t *Tracker) Seen(callID, callerTag, calleeTag string) {
	if calleeTag == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c, _ := t.find(callID, callerTag)
	if c == nil || calleeTag == c.ToTag || slices.Contains(c.peers, calleeTag) || len(c.peers) >= MaxPeerTags {
		return
	}
	c.peers = append(c.peers, calleeTag)
}

// Final notes the final response relayed for the initial INVITE. A 2xx
// confirms the call with the answering side's tag, and attaches media
// (what the proxy needs to resume the call after a restart; nil: none);
// with state kept on disk it returns once the call is. Anything else ends
// the call.
func (t *Tracker) Final(callID, fromTag, toTag string, status int, media []byte) {
	t.mu.Lock()
	c, i := t.find(callID, fromTag)
	if c == nil || c.active {
		t.mu.Unlock()
		return
	}
	now := t.now()
	setup := now.Sub(c.Invited)
	c.Status = status
	t.setup--
	if status >= 200 && status < 300 {
		c.ToTag = toTag
		c.Answered = now
		c.SetupMs = setup.Milliseconds()
		c.active = true
		c.media, c.mediaAt = media, now
		t.active++
		cm := t.persist(upRecord(c))
		t.mu.Unlock()
		t.observeSetup(status, setup)
		t.settle(cm)
		return
	}
	t.remove(callID, i)
	t.failed++
	t.mu.Unlock()
	t.observeSetup(status, setup)
	c.Ended = now
	c.EndReason = "failed"
	t.wait(t.write(c))
}

func (t *Tracker) observeSetup(status int, d time.Duration) {
	if t.onSetup != nil {
		t.onSetup(status, d)
	}
}

// Match tells whether a request with this Call-ID and these tags (in
// either order: either party may send it) belongs to a dialog of a
// tracked call.
// It looks at the calls this tracker holds only; see Find.
func (t *Tracker) Match(callID, fromTag, toTag string) Match {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs, ok := t.calls[callID]
	if !ok {
		return Unknown
	}
	for _, c := range cs {
		var other string
		switch c.FromTag {
		case fromTag:
			other = toTag
		case toTag:
			other = fromTag
		default:
			continue
		}
		switch {
		case c.active && other == c.ToTag:
			return Confirmed
		case slices.Contains(c.peers, other) && c.active:
			return Fork
		case slices.Contains(c.peers, other):
			return Early
		}
	}
	return Mismatch
}

// Find is Match, and with the calls shared (ShareState), a Call-ID this
// tracker does not hold is looked up in Redis, and a call found there is
// adopted: another node set it up. The proxy calls it for requests whose
// route token verified only, so strangers cannot make it ask Redis.
func (t *Tracker) Find(callID, fromTag, toTag string) Match {
	m := t.Match(callID, fromTag, toTag)
	if m == Unknown && t.shared != nil && toTag != "" && t.adopt(callID, fromTag, toTag) {
		m = t.Match(callID, fromTag, toTag)
	}
	return m
}

// End ends a confirmed call by its dialog: tagA and tagB are the caller's
// and the answering callee's, in either order. It reports whether a call
// ended; a BYE in another fork's dialog ends nothing.
func (t *Tracker) End(callID, tagA, tagB, reason string) bool {
	t.mu.Lock()
	var c *Call
	for i, x := range t.calls[callID] {
		if x.active && (x.FromTag == tagA && x.ToTag == tagB || x.FromTag == tagB && x.ToTag == tagA) {
			c = x
			t.remove(callID, i)
			break
		}
	}
	if c == nil {
		t.mu.Unlock()
		return false
	}
	t.active--
	t.done++
	cm := t.persist(record{Op: opEnd, ID: callID, Tag: c.FromTag})
	t.mu.Unlock()
	c.Ended = t.now()
	c.Duration = c.Ended.Sub(c.Answered).Seconds()
	c.EndReason = reason
	cdr := t.write(c)
	t.settle(cm)
	t.wait(cdr)
	return true
}

// Live tells whether a request with this Call-ID and these tags (From and
// To, in either order; toTag empty for a CANCEL) belongs to a call being
// set up or in progress. Nobody who has not seen the call's signaling can
// name one: the flood filter lets such requests from a banned source
// through.
func (t *Tracker) Live(callID, fromTag, toTag string) bool {
	if toTag == "" {
		t.mu.Lock()
		defer t.mu.Unlock()
		c, _ := t.find(callID, fromTag)
		return c != nil && !c.active
	}
	switch t.Match(callID, fromTag, toTag) {
	case Confirmed, Early, Fork:
		return true
	}
	return false
}

// Sweep ends calls older than maxAge (a BYE lost for good), and forgets
// setups that never got an answer.
func (t *Tracker) Sweep() {
	now := t.now()
	var ended []*Call
	var ends []pending
	t.mu.Lock()
	for id, cs := range t.calls {
		for i := len(cs) - 1; i >= 0; i-- {
			c := cs[i]
			switch {
			case c.active && now.Sub(c.Answered) > t.maxAge:
				ended = append(ended, c)
				t.active--
				ends = append(ends, t.persist(record{Op: opEnd, ID: id, Tag: c.FromTag}))
			case !c.active && now.Sub(c.Invited) > time.Hour:
				t.setup--
			default:
				continue
			}
			t.remove(id, i)
			cs = t.calls[id]
		}
	}
	t.mu.Unlock()
	for _, cm := range ends {
		t.settle(cm)
	}
	t.end(ended, now, "timeout")
}

// Shutdown ends every call still up with end_reason "shutdown" (see the
// package doc) and forgets calls in setup; it returns once their CDRs are
// written, or could not be. With calls kept on disk (OpenState) it ends
// nothing: the calls resume when sipd starts again, and end then; nor
// with calls shared (ShareState): the other nodes take them over.
func (t *Tracker) Shutdown() {
	if t.state != nil || t.shared != nil {
		return
	}
	t.mu.Lock()
	var ended []*Call
	for _, cs := range t.calls {
		for _, c := range cs {
			if c.active {
				ended = append(ended, c)
			}
		}
	}
	clear(t.calls)
	t.setup, t.active = 0, 0
	t.mu.Unlock()
	t.end(ended, t.now(), "shutdown")
}

// end writes the CDRs of calls ended together, all queued before any is
// waited for, so they share a commit.
func (t *Tracker) end(calls []*Call, now time.Time, reason string) {
	commits := make([]*journal.Commit, 0, len(calls))
	for _, c := range calls {
		c.Ended = now
		c.Duration = now.Sub(c.Answered).Seconds()
		c.EndReason = reason
		commits = append(commits, t.write(c))
	}
	for _, c := range commits {
		t.wait(c)
	}
}

// write queues c's CDR; nil when there is no CDR file.
func (t *Tracker) write(c *Call) *journal.Commit {
	if t.out == nil {
		return nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil // strings, numbers and times only: cannot happen
	}
	return t.out.Append(b)
}

// wait blocks until a CDR is durable and counts the outcome.
func (t *Tracker) wait(c *journal.Commit) {
	if c == nil {
		return
	}
	if c.Wait() != nil {
		t.cdrErrors.Add(1)
		return
	}
	t.cdrs.Add(1)
}

// CDRs returns the number of CDRs written and of those that could not be
// written when their call ended.
func (t *Tracker) CDRs() (written, errors uint64) { return t.cdrs.Load(), t.cdrErrors.Load() }

// Stats returns calls in setup, active calls, completed and failed.
func (t *Tracker) Stats() (setup, active int, completed, failed uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.setup, t.active, t.done, t.failed
}

// Active lists the calls in progress.
func (t *Tracker) Active() []Call {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Call, 0, t.active)
	for _, cs := range t.calls {
		for _, c := range cs {
			if c.active {
				out = append(out, c.public())
			}
		}
	}
	return out
}
