// Package dialog tracks calls through the proxy, from INVITE to BYE, and
// writes a record of each finished call as a JSON line (a CDR).
//
// A CDR is durable before the call's end is acknowledged: Bye returns
// once its CDR is on disk (the proxy relays the BYE's 200 after it), so a
// crash right after the 200 keeps it. A CDR that cannot be written then
// is counted (Stats.CDRErrors); its line stays queued in the journal and
// is written when the disk recovers, unless the journal's backlog is full.
//
// When sipd stops cleanly, Shutdown ends the calls still up with a CDR
// whose end_reason is "shutdown" and whose duration runs to the stop:
// media may go on without sipd, but sipd no longer knows the call, so
// the CDR says when it stopped knowing rather than leaving no record.
package dialog

import (
	"encoding/json"
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
}

// Tracker holds calls being set up and in progress. Confirmed calls are
// keyed by Call-ID and From tag: the To tag is not needed to tell calls
// apart at a proxy, and a BYE from either side carries both tags in some
// order.
type Tracker struct {
	now    func() time.Time
	maxAge time.Duration

	mu      sync.Mutex
	pending map[string]*Call // by call-id + from tag, until final answer
	active  map[string]*Call // by call-id + from tag, until BYE
	out     Sink
	done    uint64
	failed  uint64

	cdrs, cdrErrors atomic.Uint64
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
	return &Tracker{now: now, maxAge: maxAge, out: out, pending: map[string]*Call{}, active: map[string]*Call{}}
}

func key(callID, fromTag string) string { return callID + "\x00" + fromTag }

// Invite notes an initial INVITE forwarded.
func (t *Tracker) Invite(callID, fromTag, from, to string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := key(callID, fromTag)
	if _, ok := t.active[k]; ok {
		return
	}
	if _, ok := t.pending[k]; !ok {
		t.pending[k] = &Call{CallID: callID, FromTag: fromTag, From: from, To: to, Invited: t.now()}
	}
}

// Final notes the final response relayed for the initial INVITE.
func (t *Tracker) Final(callID, fromTag, toTag string, status int) {
	t.mu.Lock()
	k := key(callID, fromTag)
	c, ok := t.pending[k]
	if !ok {
		t.mu.Unlock()
		return
	}
	delete(t.pending, k)
	now := t.now()
	c.Status = status
	if status >= 200 && status < 300 {
		c.ToTag = toTag
		c.Answered = now
		c.SetupMs = now.Sub(c.Invited).Milliseconds()
		t.active[k] = c
		t.mu.Unlock()
		return
	}
	t.failed++
	t.mu.Unlock()
	c.Ended = now
	c.EndReason = "failed"
	t.wait(t.write(c))
}

// Bye ends the call that callID belongs to; either party may send it, so
// both tag orders are tried.
func (t *Tracker) Bye(callID, fromTag, toTag, reason string) {
	t.mu.Lock()
	k := key(callID, fromTag)
	c, ok := t.active[k]
	if !ok {
		k = key(callID, toTag)
		c, ok = t.active[k]
	}
	if !ok {
		t.mu.Unlock()
		return
	}
	delete(t.active, k)
	t.done++
	t.mu.Unlock()
	c.Ended = t.now()
	c.Duration = c.Ended.Sub(c.Answered).Seconds()
	c.EndReason = reason
	t.wait(t.write(c))
}

// Live tells whether a request with this Call-ID and these tags (From and
// To, in either order; toTag empty for a CANCEL) belongs to a call being
// set up or in progress. Nobody who has not seen the call's signaling can
// name one: the flood filter lets such requests from a banned source
// through.
func (t *Tracker) Live(callID, fromTag, toTag string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tags := range [2][2]string{{fromTag, toTag}, {toTag, fromTag}} {
		if tags[0] == "" {
			continue
		}
		k := key(callID, tags[0])
		if c, ok := t.active[k]; ok && c.ToTag == tags[1] {
			return true
		}
		// Early dialogs (PRACK, UPDATE) and CANCEL: the caller's tag names
		// the call before a To tag is final.
		if _, ok := t.pending[k]; ok {
			return true
		}
	}
	return false
}

// Sweep ends calls older than maxAge (a BYE lost for good), and forgets
// setups that never got an answer.
func (t *Tracker) Sweep() {
	now := t.now()
	var ended []*Call
	t.mu.Lock()
	for k, c := range t.active {
		if now.Sub(c.Answered) > t.maxAge {
			delete(t.active, k)
			ended = append(ended, c)
		}
	}
	for k, c := range t.pending {
		if now.Sub(c.Invited) > time.Hour {
			delete(t.pending, k)
		}
	}
	t.mu.Unlock()
	t.end(ended, now, "timeout")
}

// Shutdown ends every call still up with end_reason "shutdown" (see the
// package doc) and forgets calls in setup; it returns once their CDRs are
// written, or could not be.
func (t *Tracker) Shutdown() {
	t.mu.Lock()
	ended := make([]*Call, 0, len(t.active))
	for k, c := range t.active {
		delete(t.active, k)
		ended = append(ended, c)
	}
	clear(t.pending)
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
	return len(t.pending), len(t.active), t.done, t.failed
}

// Active lists the calls in progress.
func (t *Tracker) Active() []Call {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Call, 0, len(t.active))
	for _, c := range t.active {
		out = append(out, *c)
	}
	return out
}
