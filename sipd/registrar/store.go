// Package registrar is the location service: bindings of an address of
// record to contacts, their expiry, the REGISTER procedure (RFC 3261 §10.3)
// and a snapshot file plus journal that carry bindings across restarts and
// crashes: a REGISTER is answered 200 only once its binding is durable.
package registrar

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sipxdp/sipd/journal"
)

// Sentinel errors.
var (
	ErrTooManyContacts = errors.New("too many contacts")
	ErrOutOfOrder      = errors.New("request out of order")
	ErrTooLong         = errors.New("contact, source or Call-ID too long")
	// ErrUnavailable: the change could not be made durable (the journal
	// cannot write). It is kept in memory and its record stays queued,
	// written when the disk recovers, but nothing was promised.
	ErrUnavailable = errors.New("location store cannot write")
)

// Binding is one registered contact.
type Binding struct {
	AoR       string    `json:"aor"`
	Contact   string    `json:"contact"`             // the Contact URI as registered
	Received  string    `json:"received,omitempty"`  // ip:port the REGISTER came from
	Transport string    `json:"transport,omitempty"` // UDP, TCP, TLS, WS or WSS, of that flow
	NATed     bool      `json:"nated,omitempty"`
	CallID    string    `json:"call_id"`
	CSeq      uint32    `json:"cseq"`
	Q         string    `json:"q,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	Expires   time.Time `json:"expires"`
	Updated   time.Time `json:"updated"`
	// Node is the sipd that stored the binding, in a shared store (the
	// one whose address Received is reachable from); empty in Store.
	Node string `json:"node,omitempty"`
	// Path is the route to the contact through Node (RFC 3327), when only
	// that node reaches it; kept by a shared store only.
	Path string `json:"path,omitempty"`
}

// binding is how a Binding is held: the AoR is the map key; contact,
// received, Call-ID and q share one allocation; transport and user agent
// are interned (a million phones have a handful of them); times are Unix
// nanoseconds. About 80 bytes plus the strings, against 180 plus the
// strings as a Binding.
type binding struct {
	data       string // contact + received + callID + q
	lc, lr, li uint16 // lengths of contact, received, callID in data
	nated      bool
	cseq       uint32
	transport  string // interned
	ua         string // interned
	expires    int64  // Unix ns
	updated    int64  // Unix ns; 0 is the zero time
}

func (b *binding) contact() string  { return b.data[:b.lc] }
func (b *binding) received() string { return b.data[b.lc : int(b.lc)+int(b.lr)] }
func (b *binding) callID() string {
	i := int(b.lc) + int(b.lr)
	return b.data[i : i+int(b.li)]
}
func (b *binding) q() string { return b.data[int(b.lc)+int(b.lr)+int(b.li):] }

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (b *binding) public(aor string) Binding {
	return Binding{
		AoR: aor, Contact: b.contact(), Received: b.received(), Transport: b.transport, NATed: b.nated,
		CallID: b.callID(), CSeq: b.cseq, Q: b.q(), UserAgent: b.ua,
		Expires: fromNanos(b.expires), Updated: fromNanos(b.updated),
	}
}

// interner shares the copies of strings that repeat across bindings. It
// stops growing at a bound, so odd values cannot fill memory: past it they
// are copied instead.
type interner struct {
	mu sync.Mutex
	m  map[string]string
}

const internMax = 4096

func (in *interner) get(s string) string {
	switch s {
	case "":
		return ""
	case "UDP":
		return "UDP"
	case "TCP":
		return "TCP"
	case "TLS":
		return "TLS"
	case "WS":
		return "WS"
	case "WSS":
		return "WSS"
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if v, ok := in.m[s]; ok {
		return v
	}
	v := strings.Clone(s)
	if in.m == nil {
		in.m = map[string]string{}
	}
	if len(in.m) < internMax {
		in.m[v] = v
	}
	return v
}

func (s *Store) pack(b *Binding) (binding, error) {
	if len(b.Contact) > 0xffff || len(b.Received) > 0xffff || len(b.CallID) > 0xffff {
		return binding{}, ErrTooLong
	}
	return binding{
		data: b.Contact + b.Received + b.CallID + b.Q,
		lc:   uint16(len(b.Contact)), lr: uint16(len(b.Received)), li: uint16(len(b.CallID)),
		nated: b.NATed, cseq: b.CSeq,
		transport: s.intern.get(b.Transport), ua: s.intern.get(b.UserAgent),
		expires: nanos(b.Expires), updated: nanos(b.Updated),
	}, nil
}

// Store holds bindings in memory. With a path it also keeps them on disk
// as a snapshot (path) plus an append-only journal (path + ".journal") of
// every AoR whose bindings changed, each record that AoR's whole set, so
// replaying is idempotent. A refresh costs one journal line, not a rewrite
// of the table; Compact folds the journal into a new snapshot.
//
// Apply returns once its record is durable: the journal (package journal)
// commits the records of concurrent REGISTERs together, one write and one
// fdatasync for all of them. When the journal cannot write, Apply fails
// with ErrUnavailable, the journal retries in the background, and Apply
// succeeds again once it can.
//
// The table is split into shards, each with its own lock, so that a sweep
// or a snapshot holds up registrations for one shard's worth of work at a
// time, not the whole table's. A shard's binding lists are never changed in
// place, only replaced, so a snapshot can copy the list headers and encode
// them outside the lock.
type Store struct {
	now    func() time.Time
	path   string
	log    *slog.Logger
	seed   maphash.Seed
	intern interner
	shards [nShards]shard

	journal *journal.Journal // nil: memory only
	cmu     sync.Mutex       // one Compact at a time
	// healed is the journal's Dropped count that the last snapshot covers:
	// records dropped after it are in no file until the next one.
	healed uint64
	// snapSize is the snapshot file's length, as loaded or last written.
	snapSize atomic.Int64
}

const nShards = 64

type shard struct {
	mu       sync.RWMutex
	m        map[string][]binding
	contacts int
}

func (s *Store) shard(aor string) *shard {
	return &s.shards[maphash.String(s.seed, aor)%nShards]
}

// set replaces aor's list in sh; sh.mu is held.
func (sh *shard) set(aor string, list []binding) {
	old, ok := sh.m[aor]
	sh.contacts += len(list) - len(old)
	switch {
	case len(list) == 0 && ok:
		delete(sh.m, aor)
	case len(list) == 0:
	case ok:
		sh.m[aor] = list
	default:
		sh.m[strings.Clone(aor)] = list
	}
}

type record struct {
	AoR      string    `json:"aor"`
	Bindings []Binding `json:"b"`
}

// StoreOptions are a Store's collaborators; the zero value works.
type StoreOptions struct {
	Now func() time.Time
	Log *slog.Logger
	// Retry is how often a journal that cannot write tries again
	// (default 1 s).
	Retry time.Duration
}

// NewStore is OpenStore with a clock and no logger.
func NewStore(path string, now func() time.Time) (*Store, error) {
	return OpenStore(path, StoreOptions{Now: now})
}

// OpenStore loads the snapshot and journals at path, if any (expired
// bindings are dropped), and opens the journal for appending. An empty
// path keeps bindings in memory only.
func OpenStore(path string, o StoreOptions) (*Store, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Store{now: o.Now, path: path, log: o.Log, seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].m = map[string][]binding{}
	}
	if path == "" {
		return s, nil
	}
	if err := s.load(path); err != nil {
		return nil, err
	}
	// A journal set aside by an interrupted Compact comes before the
	// current one; replaying it over the newer snapshot changes nothing.
	for _, j := range []string{path + ".journal.old", path + ".journal"} {
		if err := s.replay(j); err != nil {
			return nil, err
		}
	}
	s.Sweep()
	var err error
	if s.journal, err = journal.Open(path+".journal", journal.Options{Name: "location", Log: o.Log, Retry: o.Retry}); err != nil {
		return nil, fmt.Errorf("location store: %w", err)
	}
	if _, err := os.Stat(path + ".journal.old"); err == nil {
		// A Compact was interrupted: finish it.
		if err := s.Compact(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// load reads the snapshot, a JSON array of Binding, one at a time.
func (s *Store) load(path string) error {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("read location snapshot: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		s.snapSize.Store(fi.Size())
	}
	bad := func(err error) error { return fmt.Errorf("location snapshot %s: %w", path, err) }
	dec := json.NewDecoder(bufio.NewReaderSize(f, 256*1024))
	tok, err := dec.Token()
	if err != nil {
		return bad(err)
	}
	if tok == nil { // null: an empty table
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return bad(fmt.Errorf("not a list"))
	}
	for dec.More() {
		var b Binding
		if err := dec.Decode(&b); err != nil {
			return bad(err)
		}
		p, err := s.pack(&b)
		if err != nil {
			return bad(err)
		}
		sh := s.shard(b.AoR)
		list := sh.m[b.AoR]
		sh.set(b.AoR, append(list[:len(list):len(list)], p))
	}
	if _, err := dec.Token(); err != nil {
		return bad(err)
	}
	return nil
}

// replay applies the journal at name. A torn last record (a crash
// mid-write) and records that do not parse are skipped; the ones after
// them still apply.
func (s *Store) replay(name string) error {
	st, err := journal.Replay(name, s.applyRecord)
	if err != nil {
		return fmt.Errorf("location journal: %w", err)
	}
	if st.Bad > 0 || st.Torn > 0 {
		s.log.Warn("location journal: damaged records skipped", "path", name, "records", st.Records,
			"bad", st.Bad, "torn_tail_bytes", st.Torn)
	}
	return nil
}

// applyRecord sets the AoR of one journal record to its bindings.
func (s *Store) applyRecord(rec []byte) error {
	var r record
	if err := json.Unmarshal(rec, &r); err != nil {
		return err
	}
	if r.AoR == "" {
		return errors.New("record without an aor")
	}
	list := make([]binding, 0, len(r.Bindings))
	for i := range r.Bindings {
		if p, err := s.pack(&r.Bindings[i]); err == nil {
			list = append(list, p)
		}
	}
	s.shard(r.AoR).set(r.AoR, list)
	return nil
}

// record queues aor's current set in the journal; aor's shard lock is
// held, which keeps one AoR's records in order. nil: memory only.
func (s *Store) record(aor string, list []Binding) *journal.Commit {
	if s.journal == nil {
		return nil
	}
	b, err := json.Marshal(record{AoR: aor, Bindings: list})
	if err != nil {
		return nil // strings and times only: cannot happen
	}
	return s.journal.Append(b)
}

// Close writes what is queued and closes the journal.
func (s *Store) Close() error {
	if s.journal == nil {
		return nil
	}
	return s.journal.Close()
}

// Lookup returns the live bindings of aor, highest q first. It never
// fails: the error is Locations'.
func (s *Store) Lookup(aor string) ([]Binding, error) {
	t := s.now().UnixNano()
	sh := s.shard(aor)
	sh.mu.RLock()
	var out []Binding
	list := sh.m[aor]
	for i := range list {
		if b := &list[i]; b.expires > t {
			out = append(out, b.public(aor))
		}
	}
	sh.mu.RUnlock()
	sortByQ(out)
	return out, nil
}

// Change is one Contact of a REGISTER: Expires zero removes it.
type Change struct {
	Binding
	Remove bool
}

// Apply updates aor's bindings in one step: either all changes apply or
// none (on ErrOutOfOrder or ErrTooManyContacts). removeAll is the `*`
// contact.
//
// With a journal, Apply returns once the change is durable. If it cannot
// be made so, the error is ErrUnavailable: the change stands in memory
// and its record is written when the journal recovers, but the caller
// must not confirm it.
func (s *Store) Apply(aor, callID string, cseq uint32, removeAll bool, changes []Change, maxContacts int) ([]Binding, error) {
	out, c, err := s.apply(aor, callID, cseq, removeAll, changes, maxContacts)
	if err != nil || c == nil {
		return out, err
	}
	// Waited for outside the shard lock: other REGISTERs go on and join
	// the same commit.
	if err := c.Wait(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return out, nil
}

func (s *Store) apply(aor, callID string, cseq uint32, removeAll bool, changes []Change, maxContacts int) ([]Binding, *journal.Commit, error) {
	packed := make([]binding, len(changes))
	for i := range changes {
		var err error
		if packed[i], err = s.pack(&changes[i].Binding); err != nil {
			return nil, nil, err
		}
	}
	t := s.now().UnixNano()
	sh := s.shard(aor)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old := sh.m[aor]
	cur := make([]binding, 0, len(old)+len(changes))
	for _, b := range old {
		if b.expires > t {
			cur = append(cur, b)
		}
	}
	cur, err := merge(cur, packed, (*binding).key, callID, cseq, removeAll, changes, maxContacts)
	if err != nil {
		return nil, nil, err
	}
	if len(cur) < cap(cur) {
		cur = append([]binding(nil), cur...) // most AoRs have one contact: hold no spare room
	}
	sh.set(aor, cur)
	out := make([]Binding, len(cur))
	for i := range cur {
		out[i] = cur[i].public(aor)
	}
	return out, s.record(aor, out), nil
}

func (b *binding) key() (contact, callID string, cseq uint32) {
	return b.contact(), b.callID(), b.cseq
}

// Sweep drops expired bindings and returns how many went.
func (s *Store) Sweep() int {
	n := 0
	for i := range s.shards {
		t := s.now().UnixNano()
		sh := &s.shards[i]
		sh.mu.Lock()
		for aor, list := range sh.m {
			live := 0
			for j := range list {
				if list[j].expires > t {
					live++
				}
			}
			if live == len(list) {
				continue
			}
			n += len(list) - live
			keep := make([]binding, 0, live)
			for _, b := range list {
				if b.expires > t {
					keep = append(keep, b)
				}
			}
			sh.set(aor, keep)
		}
		sh.mu.Unlock()
	}
	// Expired bindings need no journal record: loading drops them too.
	return n
}

// Count returns the number of AoRs and contacts held.
func (s *Store) Count() (aors, contacts int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		aors += len(sh.m)
		contacts += sh.contacts
		sh.mu.RUnlock()
	}
	return aors, contacts
}

// All returns every binding, for listing. It never fails: the error is
// Locations'.
func (s *Store) All() ([]Binding, error) {
	var out []Binding
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for aor, l := range sh.m {
			for j := range l {
				out = append(out, l[j].public(aor))
			}
		}
		sh.mu.RUnlock()
	}
	sortByAoR(out)
	return out, nil
}

// Flush returns once every change made so far is durable, or with the
// reason it is not.
func (s *Store) Flush() error {
	if s.journal == nil {
		return nil
	}
	if err := s.journal.Sync(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// SnapshotSize is the snapshot's length in bytes: compacting before the
// journal has grown about as large costs more than replaying it would.
func (s *Store) SnapshotSize() int64 { return s.snapSize.Load() }

// JournalSize is the journal's length in bytes, to decide when to Compact.
func (s *Store) JournalSize() int64 {
	if s.journal == nil {
		return 0
	}
	st := s.journal.Stats()
	return st.Size + int64(st.PendingBytes)
}

// Journal reports the journal's state; ok is false for a memory-only
// store.
func (s *Store) Journal() (st journal.Stats, ok bool) {
	if s.journal == nil {
		return journal.Stats{}, false
	}
	return s.journal.Stats(), true
}

// NeedsSnapshot reports whether records were dropped while the journal
// could not write (its backlog was full) and no snapshot has covered
// them since: only a Compact puts those changes on disk.
func (s *Store) NeedsSnapshot() bool {
	if s.journal == nil {
		return false
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.journal.Stats().Dropped > s.healed
}

// Compact writes a snapshot of the table and starts an empty journal.
//
// The journal is set aside first (path.journal.old), after every record
// queued so far is durable; then each shard in turn is copied (its AoRs
// and list headers, under its lock) and written out. A change made after
// the journal was set aside may or may not be in the snapshot, but it is
// in the new journal, which is replayed over the snapshot, so loading
// ends with it either way. Registrations go on meanwhile, and the
// snapshot is streamed: it costs a shard's worth of memory, not the
// table's.
//
// Nothing is lost on failure: the snapshot replaces the old one only once
// it is complete and synced (and its directory entry with it), and the
// set-aside journal is removed only then. If one is still there from a
// compaction that failed or was interrupted, it is never overwritten:
// the journal is not set aside this time, and the new snapshot, which
// covers both journals, makes it redundant.
func (s *Store) Compact() error {
	if s.path == "" {
		return nil
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	var dropped uint64
	err := s.journal.Compact(s.path, 0o600, func(w *bufio.Writer) error {
		// What was dropped so far is in this snapshot.
		dropped = s.journal.Stats().Dropped
		return s.writeSnapshot(w)
	})
	if err != nil {
		return fmt.Errorf("location snapshot: %w", err)
	}
	s.healed = dropped
	if fi, err := os.Stat(s.path); err == nil {
		s.snapSize.Store(fi.Size())
	}
	return nil
}

type aorList struct {
	aor  string
	list []binding
}

// writeSnapshot writes the table as a JSON array of Binding, one per line.
func (s *Store) writeSnapshot(w *bufio.Writer) error {
	w.WriteString("[")
	first := true
	var part []aorList
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		part = part[:0]
		for aor, l := range sh.m {
			part = append(part, aorList{aor, l})
		}
		sh.mu.RUnlock()
		for _, p := range part {
			for j := range p.list {
				data, err := json.Marshal(p.list[j].public(p.aor))
				if err != nil {
					return err
				}
				if !first {
					w.WriteString(",")
				}
				first = false
				w.WriteString("\n")
				if _, err := w.Write(data); err != nil {
					return err
				}
			}
		}
	}
	_, err := w.WriteString("\n]\n")
	return err
}
