package relayset

import (
	"time"

	"sipxdp/sipd/redisconn"
)

// RedisSticky is the Call-ID to relay map in Redis, which proxies sharing
// state use so that a call set up through one goes to the same relay from
// any other (its answer, re-INVITEs, delete):
//
//	relayset:call:{CALL-ID}    string: the relay's URL (as in media.relays)
//
// with the set's StickyIdle as TTL, so a call whose delete never comes
// does not stay. Errors are counted by the connection; a call goes on
// with the map in this proxy's memory.
type RedisSticky struct{ c *redisconn.Conn }

// NewRedisSticky returns the map on c.
func NewRedisSticky(c *redisconn.Conn) *RedisSticky { return &RedisSticky{c: c} }

// StickyKey is the Redis key of a call's relay.
func StickyKey(callID string) string { return "relayset:call:{" + callID + "}" }

// Stick records the call's relay.
func (r *RedisSticky) Stick(callID, url string, ttl time.Duration) {
	ctx, cancel, err := r.c.Begin("stick")
	if err != nil {
		return
	}
	defer cancel()
	_ = r.c.Done("stick", r.c.C.Set(ctx, StickyKey(callID), url, ttl).Err())
}

// Relay reads the call's relay.
func (r *RedisSticky) Relay(callID string) (string, bool) {
	ctx, cancel, err := r.c.Begin("relay")
	if err != nil {
		return "", false
	}
	defer cancel()
	url, err := r.c.C.Get(ctx, StickyKey(callID)).Result()
	if r.c.Done("relay", err) != nil {
		return "", false
	}
	return url, true
}

// Unstick removes the call.
func (r *RedisSticky) Unstick(callID string) {
	ctx, cancel, err := r.c.Begin("unstick")
	if err != nil {
		return
	}
	defer cancel()
	_ = r.c.Done("unstick", r.c.C.Del(ctx, StickyKey(callID)).Err())
}
