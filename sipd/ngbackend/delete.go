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

// Delete ends a call as rtpengine's delete does (NG control protocol
// documentation, "delete Message"; rtpengine's call.c,
// call_delete_branch), mapped onto sipd's two-sided call:
//   - without from-tag, the whole call goes;
//   - otherwise the tag looked up is the to-tag when the to-tag flag is
//     given (rtpengine ignores a delete's to-tag without it), else the
//     from-tag. rtpengine deletes that side and, with it, every side left
//     without a peer: with two sides that is the whole call, so a tag
//     naming either side deletes the call;
//   - a to-tag naming neither side still deletes the call when the
//     from-tag is side A and no side B has answered (rtpengine's "last
//     resort");
//   - otherwise the call is kept and the delete is "not found".
//
// A delete of an unknown call, or one whose tags match no side, answers
// ok with rtpengine's warning; with the fatal flag, it fails with that
// text. delete-delay (seconds) schedules the delete and answers at once;
// an offer or answer for the call meanwhile cancels it, as rtpengine
// clears a scheduled deletion on new signalling. Stats are returned
// unless the fast flag is given.
func (b *Backend) Delete(r *ng.Request) (ng.CallStats, error) {
	if r.CallID == "" {
		return ng.CallStats{}, ErrNoCallID
	}
	delay, err := deleteDelay(r)
	if err != nil {
		return ng.CallStats{}, err
	}
	ci, ok := b.ctrl.Call(r.CallID)
	if ok && !tagsMatch(r, ci) {
		b.log.Debug("ng: delete's tags match no side; call kept", "call_id", r.CallID,
			"from_tag", r.FromTag, "to_tag", r.ToTag)
		ok = false
	}
	if !ok {
		if _, fatal := r.Flags["fatal"]; fatal {
			// rtpengine's text alone: scripts match on it.
			return ng.CallStats{}, ErrNotFound
		}
		return ng.CallStats{Warning: WarnNotFound}, nil
	}
	_, fast := r.Flags["fast"]
	if delay > 0 {
		b.delays.schedule(r.CallID, ci.LastSignal, delay, b.deleteIfQuiet)
		b.log.Debug("ng: call deletion scheduled", "call_id", r.CallID, "delay", delay)
		if fast {
			return ng.CallStats{}, nil
		}
		return b.Query(r)
	}
	b.delays.cancel(r.CallID)
	ci, si, ok := b.ctrl.Delete(r.CallID, "ng delete")
	if !ok || fast {
		// Gone between the look-up and here: deleted all the same.
		return ng.CallStats{}, nil
	}
	// The final statistics count a leg's RTP and RTCP together (no
	// per-component split and no path after the flows are gone): they are
	// reported on the RTP stream.
	return callStats(ci, si, nil), nil
}

// tagsMatch says whether the delete names a side of ci (see Delete).
func tagsMatch(r *ng.Request, ci media.CallInfo) bool {
	if r.FromTag == "" {
		return true
	}
	tag := r.FromTag
	_, useTo := r.Flags["to-tag"]
	useTo = useTo && r.ToTag != ""
	if useTo {
		tag = r.ToTag
	}
	if tag == ci.Tags[0] || (ci.Tags[1] != "" && tag == ci.Tags[1]) {
		return true
	}
	return useTo && r.FromTag == ci.Tags[0] && ci.Tags[1] == ""
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

// deleteIfQuiet is a scheduled delete firing: the call goes unless it was
// signalled (offer or answer) since the delete, or is another call of the
// same Call-ID.
func (b *Backend) deleteIfQuiet(callID string, lastSignal time.Time) {
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
	if _, _, ok := b.ctrl.Delete(callID, "ng delete (delete-delay)"); ok && told != nil {
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

// delays are the scheduled deletes, one per call: a later delete of the
// same call replaces the earlier one.
type delays struct {
	mu sync.Mutex
	m  map[string]*time.Timer
	// after is time.AfterFunc; tests replace it.
	after func(time.Duration, func()) *time.Timer
	// deleted is told of each call a scheduled delete removed.
	deleted func(callID string)
}

func (d *delays) schedule(callID string, lastSignal time.Time, delay time.Duration, fire func(string, time.Time)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]*time.Timer{}
	}
	if t := d.m[callID]; t != nil {
		t.Stop()
	}
	after := d.after
	if after == nil {
		after = time.AfterFunc
	}
	var t *time.Timer
	t = after(delay, func() {
		d.mu.Lock()
		mine := d.m[callID] == t
		if mine {
			delete(d.m, callID)
		}
		d.mu.Unlock()
		if mine {
			fire(callID, lastSignal)
		}
	})
	d.m[callID] = t
}

func (d *delays) cancel(callID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.m[callID]; t != nil {
		t.Stop()
		delete(d.m, callID)
	}
}
