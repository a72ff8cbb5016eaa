package registrar

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"sipxdp/sipd/redisconn"
)

// RedisStore is a location table in Redis that several sipd share, laid
// out after Kamailio's db_redis location table:
//
//	location:aor:{AOR}            set of the AoR's contact IDs
//	location:contact:{AOR}:ID     hash of one contact: aor, contact,
//	                              received, transport (the socket's),
//	                              path, nated, call_id, cseq, q,
//	                              user_agent, expires (Unix ms),
//	                              updated (Unix ns), node
//	location:count                hash: aors, contacts, as last
//	                              counted by one of the nodes
//	location:count:gate           the node counting this interval
//
// ID is a digest of the contact URI. Each contact hash expires by itself
// (PEXPIRE at its binding's expiry), so no node sweeps; the set expires
// with its last contact, and IDs whose hash is gone are dropped from it
// by the next change of the AoR. The braces make the AoR the Redis
// Cluster hash tag: an AoR's keys share a slot.
//
// Apply is atomic per AoR: it reads the set and its hashes under WATCH,
// merges in Go (the same merge as Store, so the two keep one semantics)
// and writes in MULTI/EXEC, again if another node changed the AoR
// meanwhile. Every call is bounded by a timeout; a Redis that cannot be
// reached fails it with an error wrapping ErrUnavailable, counted in
// Errors and logged when Redis goes away and when it is back.
type RedisStore struct {
	conn    *redisconn.Conn // its bookkeeping: errors, down, logging
	c       *redis.Client
	now     func() time.Time
	node    string
	timeout time.Duration

	cmu              sync.Mutex
	counting         bool
	counted          time.Time
	aorsN, contactsN int
	countEvery       time.Duration
}

// RedisOptions are a RedisStore's collaborators and limits; the zero
// value works.
type RedisOptions struct {
	Now func() time.Time
	Log *slog.Logger
	// Node names this sipd in the contacts it stores (default: none).
	Node string
	// Timeout bounds each operation, retries included (default 1 s).
	Timeout time.Duration
	// CountEvery is how often Count reads the shared count, and how
	// often one of the nodes sharing the store scans the whole keyspace
	// to renew it (default 10 s). Count may be two intervals old.
	CountEvery time.Duration
}

// OpenRedis returns a store on the Redis at url. It does not wait for
// Redis: a store opened while Redis is down works once it is up.
func OpenRedis(url string, o RedisOptions) (*RedisStore, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.CountEvery <= 0 {
		o.CountEvery = 10 * time.Second
	}
	// The store does not use conn.Begin: a REGISTER is refused with a
	// Retry-After either way, and every one tries Redis.
	conn, err := redisconn.Open(url, "location store", redisconn.Options{Log: o.Log, Timeout: o.Timeout,
		Down: "REGISTERs are refused with 500 and lookups fail until it is back"})
	if err != nil {
		return nil, err
	}
	return &RedisStore{conn: conn, c: conn.C, now: o.Now, node: o.Node,
		timeout: o.Timeout, countEvery: o.CountEvery}, nil
}

// Close closes the connections.
func (s *RedisStore) Close() error { return s.c.Close() }

// Errors is the number of operations that failed for want of Redis.
func (s *RedisStore) Errors() uint64 { return s.conn.Errors() }

// Down reports whether the last operation failed for want of Redis, and
// why.
func (s *RedisStore) Down() (bool, string) { return s.conn.Down() }

// fail counts and wraps an error of Redis itself.
func (s *RedisStore) fail(op string, err error) error {
	return fmt.Errorf("%w: %w", ErrUnavailable, s.conn.Fail(op, err))
}

func (s *RedisStore) ok() { s.conn.OK() }

func aorKey(aor string) string { return "location:aor:{" + aor + "}" }

func contactID(contact string) string {
	h := sha256.Sum256([]byte(contact))
	return hex.EncodeToString(h[:8])
}

func contactKey(aor, id string) string { return "location:contact:{" + aor + "}:" + id }

// read loads aor's live bindings and the IDs in its set, live or not.
func (s *RedisStore) read(ctx context.Context, c redis.Cmdable, aor string) ([]Binding, []string, error) {
	ids, err := c.SMembers(ctx, aorKey(aor)).Result()
	if err != nil || len(ids) == 0 {
		return nil, ids, err
	}
	cmds, err := s.hashes(ctx, c, aor, ids)
	if err != nil {
		return nil, nil, err
	}
	t := s.now()
	var out []Binding
	for _, cmd := range cmds {
		if b, ok := decode(cmd.Val()); ok && b.Expires.After(t) {
			out = append(out, b)
		}
	}
	return out, ids, nil
}

func (s *RedisStore) hashes(ctx context.Context, c redis.Cmdable, aor string, ids []string) ([]*redis.MapStringStringCmd, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, contactKey(aor, id))
		}
		return nil
	})
	return cmds, err
}

// Lookup returns the live bindings of aor, highest q first.
func (s *RedisStore) Lookup(aor string) ([]Binding, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	out, _, err := s.read(ctx, s.c, aor)
	if err != nil {
		return nil, s.fail("lookup", err)
	}
	s.ok()
	sortRedis(out)
	return out, nil
}

// sortRedis orders bindings by q, then by contact: a set has no order of
// insertion to keep, as Store does.
func sortRedis(list []Binding) {
	slices.SortFunc(list, func(a, b Binding) int { return strings.Compare(a.Contact, b.Contact) })
	sortByQ(list)
}

// Apply updates aor's bindings in one step, atomically against every
// node sharing the store: either all changes apply or none (on
// ErrOutOfOrder, ErrTooManyContacts, or ErrUnavailable when Redis cannot
// be reached, when nothing was written or the write is unknown). The
// bindings stored are stamped with this store's node.
func (s *RedisStore) Apply(aor, callID string, cseq uint32, removeAll bool, changes []Change, maxContacts int) ([]Binding, error) {
	for i := range changes {
		if len(changes[i].Contact) > 0xffff || len(changes[i].Received) > 0xffff || len(changes[i].CallID) > 0xffff {
			return nil, ErrTooLong
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	packed := make([]Binding, len(changes))
	for i := range changes {
		packed[i] = changes[i].Binding
		packed[i].AoR, packed[i].Node = aor, s.node
	}
	var out []Binding
	var refused error
	txf := func(tx *redis.Tx) error {
		cur, ids, err := s.read(ctx, tx, aor)
		if err != nil {
			return err
		}
		next, err := merge(cur, packed, (*Binding).key, callID, cseq, removeAll, changes, maxContacts)
		if err != nil {
			refused = err
			return nil
		}
		out = next
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			s.write(ctx, p, aor, ids, next, changes)
			return nil
		})
		return err
	}
	var err error
	// Another node changing the same AoR between WATCH and EXEC makes
	// EXEC fail: try again, after a short random pause that spreads the
	// contenders, until the timeout.
	for try := 1; ; try++ {
		if err = s.c.Watch(ctx, txf, aorKey(aor)); !errors.Is(err, redis.TxFailedErr) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: redis: aor %q changed by others %d times in a row", ErrUnavailable, aor, try)
		case <-time.After(time.Duration(rand.Int64N(int64(min(try, 10)) * int64(time.Millisecond)))):
		}
	}
	if err != nil {
		return nil, s.fail("apply", err)
	}
	s.ok()
	if refused != nil {
		return nil, refused
	}
	sortRedis(out)
	return out, nil
}

// write queues the commands that make aor's keys hold next: ids is the
// set as read, changes the REGISTER's contacts (only those are
// rewritten). The set itself is always written, which is what makes a
// concurrent Apply's EXEC fail (WATCH sees any write to it).
func (s *RedisStore) write(ctx context.Context, p redis.Pipeliner, aor string, ids []string, next []Binding, changes []Change) {
	t := s.now()
	keep := make(map[string]bool, len(next))
	var last time.Duration
	for i := range next {
		keep[contactID(next[i].Contact)] = true
		last = max(last, next[i].Expires.Sub(t))
	}
	for _, id := range ids {
		if !keep[id] {
			p.Del(ctx, contactKey(aor, id))
			p.SRem(ctx, aorKey(aor), id)
		}
	}
	written := map[string]bool{}
	for _, c := range changes {
		if !c.Remove {
			written[c.Contact] = true
		}
	}
	for i := range next {
		b := &next[i]
		if !written[b.Contact] {
			continue
		}
		key := contactKey(aor, contactID(b.Contact))
		p.Del(ctx, key) // no field of an older binding stays behind
		p.HSet(ctx, key, encode(b))
		p.PExpire(ctx, key, max(b.Expires.Sub(t), time.Millisecond))
		p.SAdd(ctx, aorKey(aor), contactID(b.Contact))
	}
	if len(next) == 0 {
		p.Del(ctx, aorKey(aor))
		return
	}
	p.PExpire(ctx, aorKey(aor), max(last, time.Millisecond))
}

func (b *Binding) key() (contact, callID string, cseq uint32) { return b.Contact, b.CallID, b.CSeq }

func encode(b *Binding) map[string]any {
	nated := ""
	if b.NATed {
		nated = "1"
	}
	return map[string]any{
		"aor": b.AoR, "contact": b.Contact, "received": b.Received, "transport": b.Transport,
		"path": b.Path, "nated": nated, "call_id": b.CallID, "cseq": strconv.FormatUint(uint64(b.CSeq), 10),
		"q": b.Q, "user_agent": b.UserAgent,
		"expires": strconv.FormatInt(b.Expires.UnixMilli(), 10),
		"updated": strconv.FormatInt(nanos(b.Updated), 10), "node": b.Node,
	}
}

// decode reads a contact hash; false for one that is gone (an empty
// map) or not ours.
func decode(h map[string]string) (Binding, bool) {
	if h["contact"] == "" || h["aor"] == "" {
		return Binding{}, false
	}
	cseq, err1 := strconv.ParseUint(h["cseq"], 10, 32)
	exp, err2 := strconv.ParseInt(h["expires"], 10, 64)
	upd, err3 := strconv.ParseInt(h["updated"], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Binding{}, false
	}
	return Binding{
		AoR: h["aor"], Contact: h["contact"], Received: h["received"], Transport: h["transport"],
		NATed: h["nated"] == "1", CallID: h["call_id"], CSeq: uint32(cseq), Q: h["q"],
		UserAgent: h["user_agent"], Expires: time.UnixMilli(exp), Updated: fromNanos(upd), Node: h["node"],
		Path: h["path"],
	}, true
}

// All returns every live binding, by AoR and contact. It scans the whole
// keyspace: for the API's listing, not for calls.
func (s *RedisStore) All() ([]Binding, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*s.timeout)
	defer cancel()
	var out []Binding
	t := s.now()
	iter := s.c.Scan(ctx, 0, "location:contact:*", 1000).Iterator()
	var keys []string
	flush := func() error {
		cmds := make([]*redis.MapStringStringCmd, len(keys))
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.HGetAll(ctx, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, c := range cmds {
			if b, ok := decode(c.Val()); ok && b.Expires.After(t) {
				out = append(out, b)
			}
		}
		keys = keys[:0]
		return nil
	}
	for iter.Next(ctx) {
		if keys = append(keys, iter.Val()); len(keys) == 1000 {
			if err := flush(); err != nil {
				return nil, s.fail("list", err)
			}
		}
	}
	if err := errors.Join(iter.Err(), flush()); err != nil {
		return nil, s.fail("list", err)
	}
	s.ok()
	sortByAoR(out)
	return out, nil
}

// The count is shared by every node on the store: the node that sets
// countGate (SET NX, expiring after CountEvery) scans the keyspace once
// and leaves the result in countKey; the others read that. So Redis does
// one scan per interval however many nodes there are.
const (
	countKey  = "location:count"      // hash: aors, contacts
	countGate = "location:count:gate" // the node counting this interval
)

// Count returns the number of AoRs and contacts as last counted (zeros
// until the first count ends). It never waits for Redis: at most every
// CountEvery it starts a read of the shared count in the background, so
// the numbers may be two intervals old.
func (s *RedisStore) Count() (aors, contacts int) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if !s.counting && time.Since(s.counted) >= s.countEvery {
		s.counting = true
		go s.recount()
	}
	return s.aorsN, s.contactsN
}

func (s *RedisStore) recount() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*s.timeout)
	defer cancel()
	a, c, ok, err := s.sharedCount(ctx)
	s.cmu.Lock()
	defer s.cmu.Unlock()
	s.counting, s.counted = false, time.Now()
	if err != nil {
		s.fail("count", err)
		return
	}
	s.ok()
	if ok {
		s.aorsN, s.contactsN = a, c
	}
}

// sharedCount counts if no node did this interval, else reads the last
// count; ok is false while there is none yet.
func (s *RedisStore) sharedCount(ctx context.Context) (aors, contacts int, ok bool, err error) {
	won, err := s.c.SetNX(ctx, countGate, s.node, s.countEvery).Result()
	if err != nil {
		return 0, 0, false, err
	}
	if !won {
		return s.readCount(ctx)
	}
	// A failed scan leaves the gate to expire: deleting it could delete
	// the next node's once a slow scan outlived it.
	if aors, contacts, err = s.scanCount(ctx); err != nil {
		return 0, 0, false, err
	}
	// The count outlives the gate, so it is there while the next
	// interval's node scans, but not for long once no node counts.
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, countKey, "aors", aors, "contacts", contacts)
		p.PExpire(ctx, countKey, 3*s.countEvery+10*s.timeout)
		return nil
	})
	return aors, contacts, err == nil, err
}

// readCount reads countKey; ok is false while there is none. A count
// that is not numbers is taken as none, not as Redis failing: the next
// scan overwrites it.
func (s *RedisStore) readCount(ctx context.Context) (aors, contacts int, ok bool, err error) {
	v, err := s.c.HMGet(ctx, countKey, "aors", "contacts").Result()
	if err != nil || v[0] == nil || v[1] == nil {
		return 0, 0, false, err
	}
	a, errA := strconv.Atoi(fmt.Sprint(v[0]))
	c, errC := strconv.Atoi(fmt.Sprint(v[1]))
	return a, c, errA == nil && errC == nil, nil
}

// scanCount counts both kinds of key in one pass over the keyspace.
func (s *RedisStore) scanCount(ctx context.Context) (aors, contacts int, err error) {
	iter := s.c.Scan(ctx, 0, "location:*", 1000).Iterator()
	for iter.Next(ctx) {
		switch k := iter.Val(); {
		case strings.HasPrefix(k, "location:aor:"):
			aors++
		case strings.HasPrefix(k, "location:contact:"):
			contacts++
		}
	}
	return aors, contacts, iter.Err()
}
