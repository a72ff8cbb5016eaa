package relayrepl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"sipxdp/relay"
	"sipxdp/sipd/media"
	"sipxdp/sipd/redisconn"
)

// Roles of a node.
const (
	RoleStandby = "standby" // follows another node's calls
	RoleActive  = "active"  // holds the relay address and writes its calls
)

// Engine is what the replicator uses of relay.Engine.
type Engine interface {
	Session(callID string) (relay.SessionInfo, error)
	SetLatch(callID string, index int, side relay.Side, rtcp bool, l relay.Latch) error
	Hold(callID string, on bool) error
	SetOnLock(f func(callID string))
}

// Controller is what the replicator uses of media.Controller.
type Controller interface {
	State(callID string) ([]byte, bool)
	Restore(callID string, state []byte, since time.Time) error
	Delete(callID, reason string) (media.CallInfo, relay.SessionInfo, bool)
	CallIDs(limit int) []string
}

// Options configure a Replicator.
type Options struct {
	// URL is the Redis: redis://host:port/db (or rediss://).
	URL string
	// Group names the relay address the nodes share: their keys are
	// under sipxdp:relay:GROUP:.
	Group string
	// Node names this node in what it writes (default: the host name).
	Node string
	// Addresses are the relay's local addresses: the node is active while
	// one of them is assigned to one of its interfaces.
	Addresses []netip.Addr
	Ctrl      Controller
	Engine    Engine
	Log       *slog.Logger
	// Timeout bounds each Redis operation (default 1 s).
	Timeout time.Duration
	// Poll is how often the node looks whether it holds the address, and
	// pings Redis (default 200 ms).
	Poll time.Duration
	// Local reports whether an address is assigned here (default: the
	// host's interface addresses). Tests inject one.
	Local func(netip.Addr) bool
}

// Status is the replication's state, for /health and metrics.
type Status struct {
	Group string `json:"group"`
	Node  string `json:"node"`
	Role  string `json:"role"`
	// Redis is "up" or "down"; LastError why, while down.
	Redis     string `json:"redis"`
	LastError string `json:"last_error,omitempty"`
	// Errors counts Redis operations that failed.
	Errors uint64 `json:"errors"`
	// Writes counts call records written or deleted.
	Writes uint64 `json:"writes"`
	// Followed are the calls a standby holds for the active; TakenOver
	// those it took over when it became active.
	Followed  int    `json:"followed"`
	TakenOver uint64 `json:"taken_over"`
}

// Replicator writes or follows a relay's calls.
type Replicator struct {
	o      Options
	log    *slog.Logger
	conn   *redisconn.Conn // counts errors, tracks down, logs loss and recovery
	prefix string

	writes, takenOver atomic.Uint64

	mu       sync.Mutex
	role     string
	followed map[string]string // call ID -> the record applied
	dirty    map[string]bool
	wake     chan struct{}
	// loaded is closed once the first load of the group's calls is done
	// (or failed): a node that holds the address becomes active only
	// then, or it would start without its calls and delete their keys.
	loaded     chan struct{}
	stopFollow context.CancelFunc
	resync     bool // rewrite every call at the next write (Redis came back)
}

// ValidName reports whether s may name a group or node: it goes into
// key names and SCAN patterns, so no separator or glob character.
func ValidName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// KeyPrefix is where a group's keys live.
func KeyPrefix(group string) string { return "sipxdp:relay:" + group + ":" }

// CallKey is a call's record key.
func CallKey(group, callID string) string { return KeyPrefix(group) + "call:" + callID }

// ChangesKey is the group's stream of changes.
func ChangesKey(group string) string { return KeyPrefix(group) + "changes" }

// streamLen bounds the changes stream (approximately): a follower that
// falls further behind than this reloads every key.
const streamLen = 100000

// New checks the options and connects lazily: Redis may be down at
// start.
func New(o Options) (*Replicator, error) {
	if !ValidName(o.Group) {
		return nil, fmt.Errorf("relay replication: group %q: want letters, digits, '-', '_' and '.'", o.Group)
	}
	if o.Ctrl == nil || o.Engine == nil {
		return nil, errors.New("relay replication: no media controller or engine")
	}
	if len(o.Addresses) == 0 {
		return nil, errors.New("relay replication: no relay address")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Poll <= 0 {
		o.Poll = 200 * time.Millisecond
	}
	if o.Local == nil {
		o.Local = hostHolds
	}
	if o.Node == "" {
		o.Node = hostname()
	}
	conn, err := redisconn.Open(o.URL, "relay replication", redisconn.Options{Log: o.Log, Timeout: o.Timeout,
		Down: "calls are served but not replicated until it is back"})
	if err != nil {
		return nil, err
	}
	r := &Replicator{o: o, log: o.Log, conn: conn, prefix: KeyPrefix(o.Group),
		role: RoleStandby, followed: map[string]string{}, dirty: map[string]bool{}, wake: make(chan struct{}, 1),
		loaded: make(chan struct{})}
	return r, nil
}

// Close closes the connections.
func (r *Replicator) Close() error { return r.conn.Close() }

// Status reports the replication's state.
func (r *Replicator) Status() Status {
	r.mu.Lock()
	st := Status{Group: r.o.Group, Node: r.o.Node, Role: r.role, Followed: len(r.followed)}
	r.mu.Unlock()
	st.Redis, st.Errors, st.Writes, st.TakenOver = "up", r.conn.Errors(), r.writes.Load(), r.takenOver.Load()
	if down, why := r.conn.Down(); down {
		st.Redis, st.LastError = "down", why
	}
	return st
}

// Changed marks a call to be written (or its key deleted, once it is
// gone): after an offer, answer or delete, a media timeout, a latch
// lock. It never waits for Redis. A standby writes nothing.
func (r *Replicator) Changed(callID string) {
	r.mu.Lock()
	if r.role != RoleActive {
		r.mu.Unlock()
		return
	}
	r.dirty[callID] = true
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run writes or follows until ctx is done: it starts as a standby,
// loading and following the group's calls, and becomes active when it
// holds the relay address (at once, if it does at start: a restarted
// active takes its calls back from Redis).
func (r *Replicator) Run(ctx context.Context) {
	r.o.Engine.SetOnLock(r.Changed)
	defer r.o.Engine.SetOnLock(nil)
	fctx, stop := context.WithCancel(ctx)
	r.mu.Lock()
	r.stopFollow = stop
	r.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.follow(fctx) }()
	defer wg.Wait()
	defer stop()
	tick := time.NewTicker(r.o.Poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			r.flush(ctx)
		case <-tick.C:
			if r.Role() == RoleStandby && r.isLoaded() && r.holdsAddress() {
				r.Promote("the relay address is local")
			}
			if r.Role() == RoleActive {
				r.ping(ctx)
				r.flush(ctx)
			}
		}
	}
}

func (r *Replicator) isLoaded() bool {
	select {
	case <-r.loaded:
		return true
	default:
		return false
	}
}

// Role is the node's role now.
func (r *Replicator) Role() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.role
}

func (r *Replicator) holdsAddress() bool {
	for _, a := range r.o.Addresses {
		if r.o.Local(a) {
			return true
		}
	}
	return false
}

// Promote makes a standby active: it stops following, the calls it
// followed are its own (their media timeouts run from now) and every
// call is written as this node's.
func (r *Replicator) Promote(why string) {
	r.mu.Lock()
	if r.role == RoleActive {
		r.mu.Unlock()
		return
	}
	r.role = RoleActive
	followed := r.followed
	r.followed = map[string]string{}
	r.resync = true
	stop := r.stopFollow
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
	for id := range followed {
		if err := r.o.Engine.Hold(id, false); err != nil {
			r.log.Warn("relay replication: take over call", "call_id", id, "error", err)
		}
	}
	r.takenOver.Add(uint64(len(followed)))
	r.log.Info("relay replication: active; calls taken over", "why", why, "calls", len(followed), "group", r.o.Group)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Claim is told of an NG command that changes callID (offer, answer,
// delete): a standby that follows the call takes over, as the proxy
// has moved to it.
func (r *Replicator) Claim(callID string) {
	r.mu.Lock()
	_, ok := r.followed[callID]
	r.mu.Unlock()
	if ok {
		r.Promote("NG command for a followed call")
	}
}

// fail counts an error of Redis and logs the first of an outage.
func (r *Replicator) fail(op string, err error) { _ = r.conn.Fail(op, err) }

// up notes a successful operation; after an outage the active re-writes
// every call.
func (r *Replicator) up() {
	if r.conn.OK() {
		r.mu.Lock()
		r.resync = true
		r.mu.Unlock()
	}
}

func (r *Replicator) isDown() bool {
	down, _ := r.conn.Down()
	return down
}

func (r *Replicator) ping(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, r.conn.Timeout)
	defer cancel()
	if err := r.conn.C.Ping(cctx).Err(); err != nil {
		if ctx.Err() == nil {
			r.fail("ping", err)
		}
		return
	}
	r.up()
}

// flush writes the dirty calls, or every call after an outage or a
// take-over (deleting the keys of calls that ended meanwhile).
func (r *Replicator) flush(ctx context.Context) {
	if r.isDown() {
		return // the next ping finds it back and sets resync
	}
	r.mu.Lock()
	if r.role != RoleActive {
		clear(r.dirty)
		r.mu.Unlock()
		return
	}
	all := r.resync
	r.resync = false
	ids := make([]string, 0, len(r.dirty))
	for id := range r.dirty {
		ids = append(ids, id)
	}
	clear(r.dirty)
	r.mu.Unlock()
	var err error
	if all {
		err = r.writeAll(ctx)
	} else {
		err = r.write(ctx, ids)
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		r.fail("write", err)
		if !all {
			r.mu.Lock()
			r.resync = true // what was lost is re-written when Redis is back
			r.mu.Unlock()
		}
		return
	}
	r.up()
}

// writeBatch bounds the commands of one pipeline.
const writeBatch = 256

// write sets or deletes the keys of ids, with a stream entry each.
func (r *Replicator) write(ctx context.Context, ids []string) error {
	for len(ids) > 0 {
		n := min(len(ids), writeBatch)
		if err := r.writeSome(ctx, ids[:n]); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

func (r *Replicator) writeSome(ctx context.Context, ids []string) error {
	cctx, cancel := context.WithTimeout(ctx, r.conn.Timeout)
	defer cancel()
	p := r.conn.C.Pipeline()
	now := time.Now()
	for _, id := range ids {
		b, ok := r.record(id, now)
		key := CallKey(r.o.Group, id)
		op := "set"
		if ok {
			p.Set(cctx, key, b, 0)
		} else {
			p.Del(cctx, key)
			op = "del"
		}
		p.XAdd(cctx, &redis.XAddArgs{Stream: ChangesKey(r.o.Group), MaxLen: streamLen, Approx: true,
			Values: []string{"op", op, "call", id, "node", r.o.Node}})
	}
	if _, err := p.Exec(cctx); err != nil {
		return err
	}
	r.writes.Add(uint64(len(ids)))
	return nil
}

// bridged is the one field of the controller's state the writer reads.
type bridged struct {
	Bridged bool `json:"bridged"`
}

// record returns the call's record, or false when it is gone or its
// media cannot be carried by another node (bridged SRTP or DTLS).
func (r *Replicator) record(id string, now time.Time) ([]byte, bool) {
	state, ok := r.o.Ctrl.State(id)
	if !ok {
		return nil, false
	}
	var br bridged
	if json.Unmarshal(state, &br) == nil && br.Bridged {
		r.log.Info("relay replication: call not replicated: the relay terminates its SRTP or DTLS, whose keys stay in this process",
			"call_id", id)
		return nil, false
	}
	rec := Record{Node: r.o.Node, Updated: now, Call: state}
	if si, err := r.o.Engine.Session(id); err == nil {
		rec.Latches = latches(si)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, false // state is JSON already, latches plain data
	}
	return b, true
}

// writeAll writes every call and deletes the keys of calls this node no
// longer has.
func (r *Replicator) writeAll(ctx context.Context) error {
	ids := r.o.Ctrl.CallIDs(0)
	have := make(map[string]bool, len(ids))
	for _, id := range ids {
		have[id] = true
	}
	keys, err := r.keys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if id := strings.TrimPrefix(k, r.prefix+"call:"); !have[id] {
			ids = append(ids, id)
		}
	}
	if err := r.write(ctx, ids); err != nil {
		return err
	}
	r.log.Info("relay replication: every call written", "calls", len(have), "group", r.o.Group)
	return nil
}

// keys lists the group's call keys.
func (r *Replicator) keys(ctx context.Context) ([]string, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*r.conn.Timeout)
	defer cancel()
	var out []string
	it := r.conn.C.Scan(cctx, 0, r.prefix+"call:*", 1000).Iterator()
	for it.Next(cctx) {
		out = append(out, it.Val())
	}
	return out, it.Err()
}

// hostHolds reports whether a is assigned to an interface of this host.
func hostHolds(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if pn, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(pn.IP); ok && ip.Unmap() == a.Unmap() {
				return true
			}
		}
	}
	return false
}
