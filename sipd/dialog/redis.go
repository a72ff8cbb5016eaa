package dialog

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"sipxdp/sipd/redisconn"
)

// The confirmed calls can live in Redis instead of the file journal
// (ShareState), so that every sipd sharing it can take over the calls of
// a node that failed: an in-dialog request for a call this node does not
// hold is looked up there (Match), and the call is adopted with what the
// proxy attached to it.
//
// One key per call, a string holding the same "up" record the journal
// writes (the call, its other callee tags, the media attachment and when
// it was set, and the node that wrote it):
//
//	dialog:LEN:{CALL-ID}:CALLER-TAG
//
// LEN is the Call-ID's length, so no Call-ID and tag pair reads as
// another; the braces make the Call-ID the Redis Cluster hash tag. Every
// in-dialog request carries the caller's tag in From or in To, so the two
// keys its tags name, read with one MGET, find its call without an index.
// The answer writes the key (SET, with a TTL of the tracker's maxAge plus
// an hour: a call whose BYE never comes cannot stay for ever), a media
// change rewrites it (SET XX: an end that came first is not undone), the
// end deletes it. Each write is done before the event is acknowledged, as
// with the journal. Calls in setup stay in the memory of the node that
// forwards the INVITE, as they do with the journal.

// sharedState is the tracker's side in Redis.
type sharedState struct {
	c    *redisconn.Conn
	ttl  time.Duration
	node string
}

// StateKey is the Redis key of the call with this Call-ID and caller tag.
func StateKey(callID, callerTag string) string {
	return "dialog:" + strconv.Itoa(len(callID)) + ":{" + callID + "}:" + callerTag
}

// ShareState keeps the confirmed calls in Redis through c, stamped with
// node, instead of in a file (OpenState): calls another node set up are
// adopted when their requests come here, and calls up when this node
// stops stay for the others. adopt, when not nil, is told each adopted
// call (to resume its media). Call it once, before the tracker is used.
func (t *Tracker) ShareState(c *redisconn.Conn, node string, adopt func(Restored)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.shared = &sharedState{c: c, ttl: t.maxAge + time.Hour, node: node}
	t.onAdopt = adopt
}

// SharedStats reports the shared state: operations that failed for want
// of Redis, and whether it is down now; ok is false when calls are not
// shared.
func (t *Tracker) SharedStats() (errs uint64, down bool, why string, ok bool) {
	if t.shared == nil {
		return 0, false, "", false
	}
	down, why = t.shared.c.Down()
	return t.shared.c.Errors(), down, why, true
}

// write makes Redis hold rec: up and media records set the call's key
// (media only if it is still there), end deletes it. A failure is counted
// and logged by the connection; the call goes on, known to this node only.
func (s *sharedState) write(rec record) {
	ctx, cancel, err := s.c.Begin(rec.Op)
	if err != nil {
		return
	}
	defer cancel()
	switch rec.Op {
	case opEnd:
		err = s.c.C.Del(ctx, StateKey(rec.ID, rec.Tag)).Err()
	default:
		rec.Node = s.node
		b, merr := json.Marshal(rec)
		if merr != nil {
			return // strings, numbers, times and JSON only: cannot happen
		}
		key := StateKey(rec.Call.CallID, rec.Call.FromTag)
		if rec.Op == opMedia {
			err = s.c.C.SetArgs(ctx, key, b, redis.SetArgs{Mode: "XX", TTL: s.ttl}).Err()
		} else {
			err = s.c.C.Set(ctx, key, b, s.ttl).Err()
		}
	}
	_ = s.c.Done(rec.Op, err) // redis.Nil: a media change after the end
}

// lookup reads the call whose caller tag is tagA or tagB. A Redis that
// cannot be reached is an error; no such call is (nil, nil).
func (s *sharedState) lookup(callID, tagA, tagB string) (*Call, error) {
	ctx, cancel, err := s.c.Begin("lookup")
	if err != nil {
		return nil, err
	}
	defer cancel()
	keys := []string{StateKey(callID, tagA)}
	if tagB != "" && tagB != tagA {
		keys = append(keys, StateKey(callID, tagB))
	}
	vals, err := s.c.C.MGet(ctx, keys...).Result()
	if err := s.c.Done("lookup", err); err != nil {
		return nil, err
	}
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		c, err := DecodeShared([]byte(str))
		if err != nil || c.CallID != callID || StateKey(c.CallID, c.FromTag) != keys[i] {
			continue // not a record of ours, or not this call's: ignored
		}
		return c, nil
	}
	return nil, nil
}

// DecodeShared reads a call's record as ShareState stores it.
func DecodeShared(b []byte) (*Call, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	c := r.confirmed()
	if r.Op != opUp && r.Op != opMedia || c == nil || c.ToTag == "" {
		return nil, fmt.Errorf("dialog record: not a confirmed call (op %q)", r.Op)
	}
	return c, nil
}

// adopt looks for a call in the shared state that this tracker does not
// hold, and takes it over: ok is true when the tracker holds it now.
func (t *Tracker) adopt(callID, tagA, tagB string) bool {
	c, err := t.shared.lookup(callID, tagA, tagB)
	if err != nil || c == nil {
		return false
	}
	t.mu.Lock()
	if x, _ := t.find(callID, c.FromTag); x != nil {
		t.mu.Unlock()
		return true // adopted meanwhile by another request
	}
	t.calls[callID] = append(t.calls[callID], c)
	t.active++
	r := Restored{Call: c.public(), Media: c.media, MediaAt: c.mediaAt}
	f := t.onAdopt
	t.mu.Unlock()
	t.adopted.Add(1)
	if f != nil {
		f(r)
	}
	return true
}

// Adopted is the number of calls taken over from the shared state.
func (t *Tracker) Adopted() uint64 { return t.adopted.Load() }
