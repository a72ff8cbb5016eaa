package relayrepl

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"sipxdp/relay"
	"sipxdp/sipd/media"
)

// follow loads the group's calls and follows its stream of changes
// until ctx is done (the node became active, or stops). After a Redis
// error it waits a poll interval and loads everything again: what
// changed meanwhile may have been trimmed from the stream.
func (r *Replicator) follow(ctx context.Context) {
	first := true
	for ctx.Err() == nil {
		last, err := r.load(ctx)
		if first {
			first = false
			close(r.loaded)
		}
		if err == nil {
			err = r.tail(ctx, last)
		}
		if ctx.Err() != nil {
			return
		}
		r.fail("follow", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.o.Poll):
		}
	}
}

// load applies every call key and drops the followed calls whose key is
// gone. It returns the stream position to follow from, read before the
// keys so that no change falls between the two.
func (r *Replicator) load(ctx context.Context) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, r.conn.Timeout)
	msgs, err := r.conn.C.XRevRangeN(cctx, ChangesKey(r.o.Group), "+", "-", 1).Result()
	cancel()
	if err != nil {
		return "", err
	}
	last := "0-0"
	if len(msgs) > 0 {
		last = msgs[0].ID
	}
	keys, err := r.keys(ctx)
	if err != nil {
		return "", err
	}
	seen := map[string]bool{}
	for len(keys) > 0 {
		n := min(len(keys), writeBatch)
		cctx, cancel := context.WithTimeout(ctx, r.conn.Timeout)
		vals, err := r.conn.C.MGet(cctx, keys[:n]...).Result()
		cancel()
		if err != nil {
			return "", err
		}
		for i, v := range vals {
			id := strings.TrimPrefix(keys[i], r.prefix+"call:")
			s, ok := v.(string)
			if !ok {
				continue // deleted since the scan
			}
			seen[id] = true
			r.apply(id, s)
		}
		keys = keys[n:]
	}
	r.mu.Lock()
	var gone []string
	for id := range r.followed {
		if !seen[id] {
			gone = append(gone, id)
		}
	}
	r.mu.Unlock()
	for _, id := range gone {
		r.drop(id)
	}
	r.up()
	r.log.Info("relay replication: standby loaded the group's calls", "calls", len(seen), "group", r.o.Group)
	return last, nil
}

// followBlock is how long one XREAD waits for changes.
const followBlock = time.Second

// tail applies the stream's changes after last until an error or ctx.
func (r *Replicator) tail(ctx context.Context, last string) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, followBlock+r.conn.Timeout)
		res, err := r.conn.C.XRead(cctx, &redis.XReadArgs{Streams: []string{ChangesKey(r.o.Group), last}, Count: 512, Block: followBlock}).Result()
		cancel()
		if errors.Is(err, redis.Nil) {
			r.up()
			continue // nothing changed
		}
		if err != nil {
			return err
		}
		r.up()
		for _, s := range res {
			if err := r.applyAll(ctx, s.Messages); err != nil {
				return err
			}
			if n := len(s.Messages); n > 0 {
				last = s.Messages[n-1].ID
			}
		}
	}
}

// applyAll applies a batch of changes: each call's key is read once, as
// it is now.
func (r *Replicator) applyAll(ctx context.Context, msgs []redis.XMessage) error {
	var ids []string
	seen := map[string]bool{}
	for _, m := range msgs {
		id, _ := m.Values["call"].(string)
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = CallKey(r.o.Group, id)
	}
	cctx, cancel := context.WithTimeout(ctx, r.conn.Timeout)
	vals, err := r.conn.C.MGet(cctx, keys...).Result()
	cancel()
	if err != nil {
		return err
	}
	for i, v := range vals {
		if s, ok := v.(string); ok {
			r.apply(ids[i], s)
		} else {
			r.drop(ids[i])
		}
	}
	return nil
}

// apply restores or updates a followed call from its record. A call
// whose record did not change is left alone; one that did is restored
// again (a standby forwards nothing, so nothing is lost).
func (r *Replicator) apply(id, val string) {
	r.mu.Lock()
	if r.role != RoleStandby {
		r.mu.Unlock()
		return
	}
	prev, followed := r.followed[id]
	r.mu.Unlock()
	if followed && prev == val {
		return
	}
	rec, err := decodeRecord([]byte(val))
	if err != nil {
		r.log.Warn("relay replication: unreadable record; call not followed", "call_id", id, "error", err)
		return
	}
	if followed {
		r.o.Ctrl.Delete(id, ReasonReplicaUpdated)
	}
	// Silence would count from now, but the session is held before the
	// engine's next scan could time it out.
	if err := r.o.Ctrl.Restore(id, rec.Call, time.Now()); err != nil {
		r.forget(id)
		if errors.Is(err, media.ErrRestore) {
			r.log.Info("relay replication: call not followed", "call_id", id, "error", err)
		} else {
			r.log.Warn("relay replication: restore followed call", "call_id", id, "error", err)
		}
		return
	}
	if err := r.o.Engine.Hold(id, true); err != nil {
		r.log.Warn("relay replication: hold followed call", "call_id", id, "error", err)
	}
	r.lock(id, rec.Latches)
	r.mu.Lock()
	if r.role != RoleStandby {
		// Promoted while restoring: the call is this node's now.
		r.mu.Unlock()
		_ = r.o.Engine.Hold(id, false)
		r.Changed(id)
		return
	}
	r.followed[id] = val
	r.mu.Unlock()
}

// lock locks every direction of a followed call whose side announced its
// media: to the source the active locked it to, else to the announced
// address. So the kernel forwards the call's first packet after the
// address moves, with no learning in userspace.
func (r *Replicator) lock(id string, replicated []Latch) {
	si, err := r.o.Engine.Session(id)
	if err != nil {
		return
	}
	type dirKey struct {
		stream int
		side   relay.Side
		rtcp   bool
	}
	known := map[dirKey]relay.Latch{}
	for _, l := range replicated {
		known[dirKey{l.Stream, l.Side, l.RTCP}] = l.Latch
	}
	for _, st := range si.Streams {
		for s, leg := range [2]relay.LegInfo{st.A, st.B} {
			for _, rtcp := range []bool{false, true} {
				peer := leg.PeerRTP
				if rtcp {
					if leg.RTCPMux {
						continue
					}
					peer = leg.PeerRTCP
				}
				l, ok := known[dirKey{st.Index, relay.Side(s), rtcp}]
				if !ok {
					if !peer.IsValid() || peer.Addr().IsUnspecified() || peer.Port() == 0 {
						continue // nothing announced: it learns after the move
					}
					l = relay.Latch{Source: peer, Rank: relay.RankExact, Locked: true}
				}
				if err := r.o.Engine.SetLatch(id, st.Index, relay.Side(s), rtcp, l); err != nil {
					r.log.Debug("relay replication: lock followed flow", "call_id", id, "error", err)
				}
			}
		}
	}
}

// Reasons a standby gives the controller for ending a call it follows:
// the active node's call (rtpengine's foreign call), not this node's, so
// the statistics of ended calls leave it out.
const (
	ReasonReplicaUpdated = "replica updated"
	ReasonActiveDeleted  = "deleted by the active relay"
)

// drop removes a followed call whose key is gone (the active deleted it).
func (r *Replicator) drop(id string) {
	r.mu.Lock()
	_, ok := r.followed[id]
	if ok && r.role == RoleStandby {
		delete(r.followed, id)
	} else {
		ok = false
	}
	r.mu.Unlock()
	if ok {
		r.o.Ctrl.Delete(id, ReasonActiveDeleted)
	}
}

func (r *Replicator) forget(id string) {
	r.mu.Lock()
	delete(r.followed, id)
	r.mu.Unlock()
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "sipd"
	}
	return h
}
