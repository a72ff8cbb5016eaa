// Package registrar is the location service: bindings of an address of
// record to contacts, their expiry, the REGISTER procedure (RFC 3261 §10.3)
// and a snapshot file that carries bindings across restarts.
package registrar

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Sentinel errors.
var (
	ErrTooManyContacts = errors.New("too many contacts")
	ErrOutOfOrder      = errors.New("request out of order")
)

// Binding is one registered contact.
type Binding struct {
	AoR       string    `json:"aor"`
	Contact   string    `json:"contact"`             // the Contact URI as registered
	Received  string    `json:"received,omitempty"`  // ip:port the REGISTER came from
	Transport string    `json:"transport,omitempty"` // UDP, TCP or TLS, of that flow
	NATed     bool      `json:"nated,omitempty"`
	CallID    string    `json:"call_id"`
	CSeq      uint32    `json:"cseq"`
	Q         string    `json:"q,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	Expires   time.Time `json:"expires"`
	Updated   time.Time `json:"updated"`
}

// Store holds bindings in memory. With a path it also keeps them on disk
// as a snapshot (path) plus an append-only journal (path + ".journal") of
// every AoR whose bindings changed, each record that AoR's whole set, so
// replaying is idempotent. A refresh costs one journal line, not a rewrite
// of the table; Compact folds the journal into a new snapshot.
type Store struct {
	now  func() time.Time
	path string

	mu      sync.RWMutex
	m       map[string][]Binding
	journal *os.File
	jw      *bufio.Writer
	jbytes  int64
	jerr    error
}

type record struct {
	AoR      string    `json:"aor"`
	Bindings []Binding `json:"b"`
}

// NewStore loads the snapshot and journal at path, if any; expired
// bindings are dropped.
func NewStore(path string, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	s := &Store{now: now, path: path, m: map[string][]Binding{}}
	if path == "" {
		return s, nil
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read location snapshot: %w", err)
	default:
		var list []Binding
		if err := json.Unmarshal(data, &list); err != nil {
			return nil, fmt.Errorf("location snapshot %s: %w", path, err)
		}
		for _, b := range list {
			s.m[b.AoR] = append(s.m[b.AoR], b)
		}
	}
	// A journal set aside by an interrupted Compact comes before the
	// current one; replaying it over the newer snapshot changes nothing.
	for _, j := range []string{path + ".journal.old", path + ".journal"} {
		if err := s.replay(j); err != nil {
			return nil, err
		}
	}
	t := now()
	for aor, list := range s.m {
		keep := list[:0]
		for _, b := range list {
			if b.Expires.After(t) {
				keep = append(keep, b)
			}
		}
		if len(keep) == 0 {
			delete(s.m, aor)
		} else {
			s.m[aor] = keep
		}
	}
	if err := s.openJournal(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path + ".journal.old"); err == nil {
		// A Compact was interrupted: finish it before a new one could
		// overwrite the set-aside journal.
		if err := s.Compact(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

func (s *Store) replay(name string) error {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read location journal: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			// A torn last line from a crash mid-write: everything before it
			// stands.
			break
		}
		if len(r.Bindings) == 0 {
			delete(s.m, r.AoR)
		} else {
			s.m[r.AoR] = r.Bindings
		}
	}
	return nil
}

func (s *Store) openJournal() error {
	f, err := os.OpenFile(s.path+".journal", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open location journal: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open location journal: %w", err)
	}
	s.journal, s.jw, s.jbytes = f, bufio.NewWriterSize(f, 64*1024), fi.Size()
	return nil
}

// log appends aor's current set to the journal; s.mu is held.
func (s *Store) log(aor string, list []Binding) {
	if s.jw == nil {
		return
	}
	b, err := json.Marshal(record{AoR: aor, Bindings: list})
	if err != nil {
		return
	}
	b = append(b, '\n')
	n, err := s.jw.Write(b)
	s.jbytes += int64(n)
	if err != nil && s.jerr == nil {
		s.jerr = err
	}
}

// Close flushes and closes the journal.
func (s *Store) Close() error {
	err := s.Flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.journal != nil {
		err = errors.Join(err, s.journal.Close())
		s.journal, s.jw = nil, nil
	}
	return err
}

// Lookup returns the live bindings of aor, highest q first.
func (s *Store) Lookup(aor string) []Binding {
	t := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Binding
	for _, b := range s.m[aor] {
		if b.Expires.After(t) {
			out = append(out, b)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Q > out[j].Q })
	return out
}

// Change is one Contact of a REGISTER: Expires zero removes it.
type Change struct {
	Binding
	Remove bool
}

// Apply updates aor's bindings in one step: either all changes apply or
// none (on ErrOutOfOrder or ErrTooManyContacts). removeAll is the `*`
// contact.
func (s *Store) Apply(aor, callID string, cseq uint32, removeAll bool, changes []Change, maxContacts int) ([]Binding, error) {
	t := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := make([]Binding, 0, len(s.m[aor])+len(changes))
	for _, b := range s.m[aor] {
		if b.Expires.After(t) {
			cur = append(cur, b)
		}
	}
	if removeAll {
		for _, b := range cur {
			if b.CallID == callID && cseq <= b.CSeq {
				return nil, ErrOutOfOrder
			}
		}
		cur = cur[:0]
	}
	for _, c := range changes {
		i := indexOf(cur, c.Contact)
		if i >= 0 && cur[i].CallID == callID && cseq <= cur[i].CSeq {
			return nil, ErrOutOfOrder
		}
		switch {
		case c.Remove && i >= 0:
			cur = append(cur[:i], cur[i+1:]...)
		case c.Remove:
		case i >= 0:
			cur[i] = c.Binding
		default:
			cur = append(cur, c.Binding)
		}
	}
	if len(cur) > maxContacts {
		return nil, ErrTooManyContacts
	}
	if len(cur) == 0 {
		delete(s.m, aor)
	} else {
		s.m[aor] = cur
	}
	s.log(aor, cur)
	return append([]Binding(nil), cur...), nil
}

func indexOf(list []Binding, contact string) int {
	for i, b := range list {
		if b.Contact == contact {
			return i
		}
	}
	return -1
}

// Sweep drops expired bindings and returns how many went.
func (s *Store) Sweep() int {
	t := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for aor, list := range s.m {
		keep := list[:0]
		for _, b := range list {
			if b.Expires.After(t) {
				keep = append(keep, b)
			} else {
				n++
			}
		}
		if len(keep) == 0 {
			delete(s.m, aor)
		} else {
			s.m[aor] = keep
		}
	}
	// Expired bindings need no journal record: loading drops them too.
	return n
}

// Count returns the number of AoRs and contacts held.
func (s *Store) Count() (aors, contacts int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, l := range s.m {
		contacts += len(l)
	}
	return len(s.m), contacts
}

// All returns every binding, for listing.
func (s *Store) All() []Binding {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Binding
	for _, l := range s.m {
		out = append(out, l...)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].AoR != out[j].AoR {
			return out[i].AoR < out[j].AoR
		}
		return out[i].Contact < out[j].Contact
	})
	return out
}

// Flush pushes buffered journal records to disk.
func (s *Store) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jw == nil {
		return nil
	}
	if err := s.jw.Flush(); err != nil {
		return fmt.Errorf("write location journal: %w", err)
	}
	if err := s.jerr; err != nil {
		s.jerr = nil
		return fmt.Errorf("write location journal: %w", err)
	}
	return nil
}

// JournalSize is the journal's length in bytes, to decide when to Compact.
func (s *Store) JournalSize() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.jbytes
}

// Compact writes a snapshot of the table and starts an empty journal. The
// table is copied under the lock and written outside it, so registrations
// go on meanwhile, into the new journal.
func (s *Store) Compact() error {
	if s.path == "" {
		return nil
	}
	old := s.path + ".journal.old"
	s.mu.Lock()
	var list []Binding
	for _, l := range s.m {
		list = append(list, l...)
	}
	var err error
	if s.jw != nil {
		err = errors.Join(s.jw.Flush(), s.journal.Close())
		s.journal, s.jw = nil, nil
	}
	if err == nil {
		err = os.Rename(s.path+".journal", old)
	}
	if oerr := s.openJournal(); oerr != nil {
		err = errors.Join(err, oerr)
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("compact location journal: %w", err)
	}
	data, err := json.Marshal(list)
	if err != nil {
		return fmt.Errorf("encode location snapshot: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".location-*")
	if err != nil {
		return fmt.Errorf("write location snapshot: %w", err)
	}
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write location snapshot: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write location snapshot: %w", err)
	}
	// Only now is the set-aside journal redundant.
	os.Remove(old)
	return nil
}
