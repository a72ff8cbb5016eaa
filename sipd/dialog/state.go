package dialog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"sipxdp/sipd/journal"
)

// The tracker's confirmed calls can be kept on disk (OpenState), so that a
// sipd restarted after a crash still knows every call that was up: it can
// match their in-dialog requests, end them with a CDR that has their real
// start, and hand the proxy what it attached to each call (Restored.Media:
// the relay's state and the signaling needed to end the call), to resume
// relaying their media.
//
// Records are JSON lines, each the whole state of one call ("up", and
// "media" when the attachment changes) or its end ("end"), so replaying
// them in order over a snapshot of the same records ends in the state of
// the last one written: the scheme the location store uses. Records are
// made durable before the event they describe is acknowledged: a 2xx is
// relayed, a BYE's 200 relayed, after its record is on disk. Calls in
// setup are not kept: their INVITE transaction dies with the process.
// A callee tag noted after the answer (another fork's 2xx) is kept only
// from the next snapshot on.

// record is one line of the state journal.
type record struct {
	Op    string          `json:"op"`              // "up", "media" or "end"
	Call  *Call           `json:"call,omitempty"`  // up: the call as tracked
	Peers []string        `json:"peers,omitempty"` // up: its other callee tags
	ID    string          `json:"id,omitempty"`    // media, end: Call-ID
	Tag   string          `json:"tag,omitempty"`   // media, end: the caller's tag
	Media json.RawMessage `json:"media,omitempty"` // up, media: the proxy's attachment
	At    time.Time       `json:"at,omitzero"`     // up, media: when the attachment was set
	Node  string          `json:"node,omitempty"`  // in Redis: the sipd that wrote it
}

const (
	opUp    = "up"
	opMedia = "media"
	opEnd   = "end"
)

// Restored is a call read back by OpenState.
type Restored struct {
	Call  Call
	Media []byte // what the proxy attached; nil if nothing
	// MediaAt is when Media was set: the answer, or the last change.
	MediaAt time.Time
}

// state is the on-disk side: a snapshot at path, the journal of changes
// since at path+".journal", and, while a compaction is under way or after
// one failed, the journal it set aside at path+".journal.old".
type state struct {
	path string
	j    *journal.Journal
	log  *slog.Logger
}

// OpenState loads the calls kept at path (snapshot, set-aside journal,
// journal, in that order), makes them the tracker's confirmed calls, and
// keeps every later change there. It returns the calls it restored. Call
// it once, before the tracker is used.
func (t *Tracker) OpenState(path string, log *slog.Logger) ([]Restored, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	live := map[[2]string]*Call{}
	var order [][2]string
	apply := func(b []byte) error {
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		switch r.Op {
		case opUp:
			c := r.confirmed()
			if c == nil {
				return errors.New("up record without a call")
			}
			k := [2]string{c.CallID, c.FromTag}
			if _, ok := live[k]; !ok {
				order = append(order, k)
			}
			live[k] = c
		case opMedia:
			c, ok := live[[2]string{r.ID, r.Tag}]
			if !ok {
				return nil // its call ended before the snapshot: nothing to do
			}
			c.media, c.mediaAt = r.Media, r.At
		case opEnd:
			delete(live, [2]string{r.ID, r.Tag})
		default:
			return fmt.Errorf("unknown op %q", r.Op)
		}
		return nil
	}
	for _, name := range []string{path, path + ".journal.old", path + ".journal"} {
		st, err := journal.Replay(name, apply)
		if err != nil {
			return nil, fmt.Errorf("dialog state: %w", err)
		}
		if st.Bad > 0 || st.Torn > 0 {
			log.Warn("dialog state: skipped damaged records", "file", name, "bad", st.Bad, "torn_bytes", st.Torn)
		}
	}
	j, err := journal.Open(path+".journal", journal.Options{Name: "dialogs", Log: log})
	if err != nil {
		return nil, fmt.Errorf("dialog state: %w", err)
	}
	t.mu.Lock()
	t.state = &state{path: path, j: j, log: log}
	var out []Restored
	for _, k := range order {
		c, ok := live[k]
		if !ok {
			continue
		}
		t.calls[c.CallID] = append(t.calls[c.CallID], c)
		t.active++
		out = append(out, Restored{Call: c.public(), Media: c.media, MediaAt: c.mediaAt})
	}
	t.mu.Unlock()
	if _, err := os.Stat(path + ".journal.old"); err == nil {
		// A compaction was interrupted: finish it before a new one could
		// want to set the journal aside again.
		if err := t.CompactState(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// confirmed is the call an "up" record (or a shared "media" one) holds,
// as the tracker keeps it; nil when it names no call.
func (r *record) confirmed() *Call {
	if r.Call == nil || r.Call.CallID == "" || r.Call.FromTag == "" {
		return nil
	}
	c := *r.Call
	c.peers = r.Peers
	if len(c.peers) > MaxPeerTags {
		c.peers = c.peers[:MaxPeerTags]
	}
	c.media, c.mediaAt = r.Media, r.At
	c.active = true
	return &c
}

// public is the call as listed and written in CDRs.
func (c *Call) public() Call {
	cc := *c
	cc.peers, cc.media, cc.mediaAt = nil, nil, time.Time{}
	return cc
}

// pending is a state record on its way: queued in the journal, or to be
// written to Redis.
type pending struct {
	commit *journal.Commit
	shared *record
}

// persist queues rec in the state journal, or keeps it for Redis; t.mu
// is held, so records of one call keep their order in the journal (a
// call's events come one after another in SIP, so its Redis writes do
// too). Settle the result outside the lock.
func (t *Tracker) persist(rec record) pending {
	if t.shared != nil {
		return pending{shared: &rec}
	}
	if t.state == nil {
		return pending{}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return pending{commit: journal.Finished(fmt.Errorf("dialog record: %w", err))}
	}
	return pending{commit: t.state.j.Append(b)}
}

// settle waits until a state record is durable, or could not be made so.
// A call goes on either way (its answer cannot be taken back): the
// journal keeps the record queued, retries, logs and shows the failure
// in its stats (/health degraded, sipxdp_journal_errors_total); a Redis
// write that fails is counted and logged (sipxdp_dialog_store_errors_total),
// and the call stays known to this node only.
func (t *Tracker) settle(p pending) {
	switch {
	case p.commit != nil:
		_ = p.commit.Wait()
	case p.shared != nil:
		t.shared.write(*p.shared)
	}
}

func upRecord(c *Call) record {
	cc := c.public()
	return record{Op: opUp, Call: &cc, Peers: slices.Clone(c.peers), Media: c.media, At: c.mediaAt}
}

// SetMedia replaces what the proxy attached to a confirmed call (its
// media state changed: a re-INVITE, an UPDATE, a late answer in the ACK)
// and returns once that is durable. tagA and tagB are the request's tags
// in either order; a request outside the call's confirmed dialog changes
// nothing.
func (t *Tracker) SetMedia(callID, tagA, tagB string, media []byte) {
	t.mu.Lock()
	var c *Call
	for _, x := range t.calls[callID] {
		if x.active && (x.FromTag == tagA && x.ToTag == tagB || x.FromTag == tagB && x.ToTag == tagA) {
			c = x
			break
		}
	}
	if c == nil || t.state == nil && t.shared == nil {
		if c != nil {
			c.media, c.mediaAt = media, t.now()
		}
		t.mu.Unlock()
		return
	}
	c.media, c.mediaAt = media, t.now()
	rec := record{Op: opMedia, ID: callID, Tag: c.FromTag, Media: media, At: c.mediaAt}
	if t.shared != nil {
		// Redis holds each call's whole record: rewritten.
		rec = upRecord(c)
		rec.Op = opMedia
	}
	cm := t.persist(rec)
	t.mu.Unlock()
	t.settle(cm)
}

// StateStats reports the state journal; ok is false when calls are not
// kept on disk.
func (t *Tracker) StateStats() (journal.Stats, bool) {
	if t.state == nil {
		return journal.Stats{}, false
	}
	return t.state.j.Stats(), true
}

// StateSize is the state journal's size in bytes, to decide when to
// compact.
func (t *Tracker) StateSize() int64 {
	if t.state == nil {
		return 0
	}
	fi, err := os.Stat(t.state.j.Path())
	if err != nil {
		return 0
	}
	return fi.Size()
}

// CompactState writes a snapshot of the confirmed calls and starts an
// empty journal (journal.Journal.Compact: a failure at any step loses
// nothing).
func (t *Tracker) CompactState() error {
	if t.state == nil {
		return nil
	}
	st := t.state
	err := st.j.Compact(st.path, 0o600, func(w *bufio.Writer) error {
		// The calls up now, each as an "up" record: what replaying the
		// set-aside journal would end in.
		t.mu.Lock()
		var recs []record
		for _, cs := range t.calls {
			for _, c := range cs {
				if c.active {
					recs = append(recs, upRecord(c))
				}
			}
		}
		t.mu.Unlock()
		for _, r := range recs {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			w.Write(b)
			w.WriteByte('\n')
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dialog state: %w", err)
	}
	return nil
}

// CloseState closes the state journal; the calls stay on disk for the
// next start.
func (t *Tracker) CloseState() error {
	if t.state == nil {
		return nil
	}
	return t.state.j.Close()
}
