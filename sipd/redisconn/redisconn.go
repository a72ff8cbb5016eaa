// Package redisconn is the Redis client sipd's shared state uses beyond
// the location table (dialogs, the CDR stream, relay stickiness): a
// go-redis client whose every call is bounded by a timeout, with the
// bookkeeping each of them reports in /health and /metrics: operations
// that failed for want of Redis, whether it is down now and why, the
// loss and the recovery logged once each.
//
// While Redis is down, Begin lets one operation a second through to find
// out whether it is back and fails the rest at once (ErrDown): a Redis
// that drops packets would otherwise hold every call's answer for the
// whole timeout.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrDown is wrapped by the errors of operations not tried because Redis
// failed less than a second ago.
var ErrDown = errors.New("redis down")

// retry is how often an operation is let through to Redis while it is down.
const retry = time.Second

// Conn is a Redis client for one of sipd's shared stores.
type Conn struct {
	C       *redis.Client
	Timeout time.Duration

	what string // the store, in log lines: "dialog store"
	down string // what Redis being down means for it, logged once
	log  *slog.Logger

	errors  atomic.Uint64
	isDown  atomic.Bool
	lastErr atomic.Pointer[string]
	failed  atomic.Int64 // Unix ns of the last failure
}

// Options are a Conn's collaborators; the zero value works.
type Options struct {
	Log *slog.Logger
	// Timeout bounds each operation (default 1 s).
	Timeout time.Duration
	// Down says, for the log, what the store does while Redis is down.
	Down string
}

// IsURL reports whether a setting names Redis.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "redis://") || strings.HasPrefix(s, "rediss://")
}

// ParseURL checks a redis:// or rediss:// URL (host:port, database
// number, optional password and go-redis options) and returns the client
// options it names.
func ParseURL(url string) (*redis.Options, error) {
	if !IsURL(url) {
		return nil, errors.New("want redis://host:port/db or rediss://host:port/db")
	}
	return redis.ParseURL(url)
}

// Open returns a client of the Redis at url for the store named what. It
// does not wait for Redis: one opened while Redis is down works once it
// is up.
func Open(url, what string, o Options) (*Conn, error) {
	ro, err := ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, url, err)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	ro.ContextTimeoutEnabled = true
	ro.DialTimeout = min(ro.DialTimeout, o.Timeout)
	// go-redis logs every failed dial through the standard logger; the
	// Conn logs Redis going away and coming back itself.
	quiet.Do(func() { redis.SetLogger(debugLog{o.Log}) })
	return &Conn{C: redis.NewClient(ro), Timeout: o.Timeout, what: what, down: o.Down, log: o.Log}, nil
}

var quiet sync.Once

type debugLog struct{ l *slog.Logger }

func (d debugLog) Printf(ctx context.Context, format string, v ...any) {
	d.l.DebugContext(ctx, "redis client", "msg", fmt.Sprintf(format, v...))
}

// Close closes the connections.
func (c *Conn) Close() error { return c.C.Close() }

// Begin returns the context an operation runs in, or ErrDown (counted)
// when Redis failed less than a second ago and another operation has
// been let through to try it since.
func (c *Conn) Begin(op string) (context.Context, context.CancelFunc, error) {
	if c.isDown.Load() {
		last := c.failed.Load()
		now := time.Now().UnixNano()
		if now-last < int64(retry) || !c.failed.CompareAndSwap(last, now) {
			c.errors.Add(1)
			return nil, nil, fmt.Errorf("%s: redis %s: %w", c.what, op, ErrDown)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	return ctx, cancel, nil
}

// Fail counts and wraps an error of Redis itself (not redis.Nil).
func (c *Conn) Fail(op string, err error) error {
	c.errors.Add(1)
	msg := err.Error()
	c.lastErr.Store(&msg)
	c.failed.Store(time.Now().UnixNano())
	if !c.isDown.Swap(true) {
		c.log.Error(c.what+": redis unreachable; "+c.down, "op", op, "error", err)
	}
	return fmt.Errorf("%s: redis %s: %w", c.what, op, err)
}

// OK notes an operation that Redis answered. It reports whether Redis
// was down until now, for a store that has to catch up on what it could
// not write meanwhile.
func (c *Conn) OK() (recovered bool) {
	if c.isDown.Swap(false) {
		c.log.Info(c.what + ": redis reachable again")
		return true
	}
	return false
}

// Done is Fail or OK as err says; redis.Nil (no such key) is an answer.
func (c *Conn) Done(op string, err error) error {
	if err != nil && !errors.Is(err, redis.Nil) {
		return c.Fail(op, err)
	}
	c.OK()
	return err
}

// Errors is the number of operations that failed for want of Redis.
func (c *Conn) Errors() uint64 { return c.errors.Load() }

// Down reports whether the last operation failed for want of Redis, and
// why.
func (c *Conn) Down() (bool, string) {
	if !c.isDown.Load() {
		return false, ""
	}
	if p := c.lastErr.Load(); p != nil {
		return true, *p
	}
	return true, ""
}
