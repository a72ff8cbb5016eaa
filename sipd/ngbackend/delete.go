package ngbackend

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"sipxdp/ng"
	"sipxdp/sipd/media"
)

// WarnNotFound is rtpengine's warning for a delete whose call or tags are
// unknown (rtpengine's call_interfaces.c, call_delete_ng), sent with
// result ok unless the delete has the fatal flag.
const WarnNotFound = "Call-ID not found or tags didn't match"

// ErrNotFound is the error of a delete with the fatal flag whose call or
// tags are unknown; its text is rtpengine's.
var ErrNotFound = errors.New(WarnNotFound)

// Delete ends a call, or one branch of a forked call, as rtpengine's
// delete does (NG control protocol documentation, "delete Message";
// rtpengine's call.c, call_delete_branch; media's fork.go):
//   - without from-tag, the whole call goes;
//   - a via-branch without to-tag names the branch offered with it;
//   - otherwise the tag looked up is the to-tag when the to-tag flag is
//     given (rtpengine ignores a delete's to-tag without it), else the
//     from-tag. The caller's tag deletes the whole call (every branch is
//     left without a peer); a branch's answering tag (or an earlier one
//     it answered with) deletes that branch; failing a tag, the
//     via-branch names the branch;
//   - a to-tag naming no branch still deletes the call when the from-tag
//     is the caller's and the call's one branch has not answered
//     (rtpengine's "last resort");
//   - otherwise the call is kept and the delete is "not found".
//
// Deleting a branch leaves the call's other branches as they are (their
// ports, flows and kernel entries); deleting the last one deletes the
// call. A delete of an unknown call, or one that names nothing of it,
// answers ok with rtpengine's warning; with the fatal flag, it fails with
// that text. delete-delay (seconds) schedules the delete and answers at
// once; an offer or answer for the call meanwhile cancels it, as
// rtpengine clears a scheduled deletion on new signalling. Stats are
// returned unless the fast flag is given: the call's, and for a branch
// the call's as it was before (rtpengine reports the call too).
func (b *Backend) Delete(r *ng.Request) (ng.CallStats, error) {
	if r.CallID == "" {
		return ng.CallStats{}, ErrNoCallID
	}
	delay, err := deleteDelay(r)
	if err != nil {
		return ng.CallStats{}, err
	}
	b.aliases.resolve(r)
	ref := deleteRef(r)
	whole, ok := b.ctrl.Deletes(r.CallID, ref)
	if !ok {
		if _, known := b.ctrl.Call(r.CallID); known {
			b.log.Debug("ng: delete names nothing of the call; call kept", "call_id", r.CallID,
				"from_tag", r.FromTag, "to_tag", r.ToTag, "via_branch", r.ViaBranch)
		}
		if _, fatal := r.Flags["fatal"]; fatal {
			// rtpengine's text alone: scripts match on it.
			return ng.CallStats{}, ErrNotFound
		}
		return ng.CallStats{Warning: WarnNotFound}, nil
	}
	_, fast := r.Flags["fast"]
	if delay > 0 {
		ci, _ := b.ctrl.Call(r.CallID)
		key := r.CallID
		if !whole {
			// A branch's scheduled delete is its own: one for the call,
			// or another branch's, does not replace it.
			key = r.CallID + "\x00" + ref.FromTag + "\x00" + ref.ToTag + "\x00" + ref.ViaBranch
		}
		b.delays.schedule(key, ci.LastSignal, delay, func(lastSignal time.Time) { b.deleteIfQuiet(r.CallID, ref, lastSignal) })
		b.log.Debug("ng: deletion scheduled", "call_id", r.CallID, "whole", whole, "delay", delay)
		if fast {
			return ng.CallStats{}, nil
		}
		return b.Query(r)
	}
	if whole {
		b.delays.cancel(r.CallID)
		b.origins.drop(r.CallID)
		b.aliases.drop(r.CallID)
	}
	var stats ng.CallStats
	if !fast && !whole {
		// Taken before: a branch's streams leave the session with it.
		stats, _ = b.Query(r)
	}
	d, ok := b.ctrl.DeleteBranch(r.CallID, ref, media.ReasonNGDelete)
	if !ok || fast {
		// Gone between the look-up and here: deleted all the same.
		return ng.CallStats{}, nil
	}
	if !whole {
		for _, br := range d.Branches {
			b.log.Debug("ng: branch deleted", "call_id", r.CallID, "tag", br.Tag, "via_branch", br.ViaBranch)
		}
		return stats, nil
	}
	// The final statistics count a leg's RTP and RTCP together (no
	// per-component split and no path after the flows are gone): they are
	// reported on the RTP stream.
	return callStats(d.Info, d.Stats, nil), nil
}

// deleteRef is what a delete names: the to-tag counts only with the
// to-tag flag, as in rtpengine.
func deleteRef(r *ng.Request) media.BranchRef {
	ref := media.BranchRef{FromTag: r.FromTag, ViaBranch: r.ViaBranch}
	if _, useTo := r.Flags["to-tag"]; useTo {
		ref.ToTag = r.ToTag
	}
	return ref
}

// deleteDelay reads delete-delay (the "delete delay" key or the flag
// delete-delay=N). rtpengine takes a negative value as "the configured
// default"; sipd's default is no delay.
func deleteDelay(r *ng.Request) (time.Duration, error) {
	v, ok := r.Flags["delete-delay"]
	if !ok || v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("delete-delay: want whole seconds, have %q", v)
	}
	if n <= 0 {
		return 0, nil
	}
	return time.Duration(n) * time.Second, nil
}

// deleteIfQuiet is a scheduled delete firing: what ref names goes
// unless the call was signalled (offer or answer) since the delete, or is
// another call of the same Call-ID.
func (b *Backend) deleteIfQuiet(callID string, ref media.BranchRef, lastSignal time.Time) {
	ci, ok := b.ctrl.Call(callID)
	if !ok {
		return
	}
	if !ci.LastSignal.Equal(lastSignal) {
		b.log.Debug("ng: scheduled delete dropped: call signalled since", "call_id", callID)
		return
	}
	b.delays.mu.Lock()
	told := b.delays.deleted
	b.delays.mu.Unlock()
	if d, ok := b.ctrl.DeleteBranch(callID, ref, media.ReasonNGDelete+" (delete-delay)"); ok && d.Whole && told != nil {
		told(callID)
	}
}

// OnScheduledDelete sets f to be told of each call a delete-delay
// deleted: the NG command that asked for it answered long before, so a
// replicator wrapping the backend did not see the call go.
func (b *Backend) OnScheduledDelete(f func(callID string)) *Backend {
	b.delays.mu.Lock()
	b.delays.deleted = f
	b.delays.mu.Unlock()
	return b
}

// delays are the scheduled deletes, one per call and one per branch: a
// later delete of the same call (or branch) replaces the earlier one.
type delays struct {
	mu sync.Mutex
	m  map[string]*time.Timer
	// after is time.AfterFunc; tests replace it.
	after func(time.Duration, func()) *time.Timer
	// deleted is told of each call a scheduled delete removed.
	deleted func(callID string)
}

func (d *delays) schedule(key string, lastSignal time.Time, delay time.Duration, fire func(time.Time)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]*time.Timer{}
	}
	if t := d.m[key]; t != nil {
		t.Stop()
	}
	after := d.after
	if after == nil {
		after = time.AfterFunc
	}
	var t *time.Timer
	t = after(delay, func() {
		d.mu.Lock()
		mine := d.m[key] == t
		if mine {
			delete(d.m, key)
		}
		d.mu.Unlock()
		if mine {
			fire(lastSignal)
		}
	})
	d.m[key] = t
}

func (d *delays) cancel(callID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.m[callID]; t != nil {
		t.Stop()
		delete(d.m, callID)
	}
}
