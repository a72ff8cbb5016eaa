// Package registrar is the location service: bindings of an address of
// record to contacts, their expiry, the REGISTER procedure (RFC 3261 §10.3)
// and a snapshot file that carries bindings across restarts.
package registrar

import (
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

// Store holds bindings in memory and, with a path, in a snapshot file that
// is rewritten (atomically) after changes.
type Store struct {
	now  func() time.Time
	path string

	mu    sync.RWMutex
	m     map[string][]Binding
	dirty bool
}

// NewStore loads the snapshot at path, if any; expired bindings are dropped.
func NewStore(path string, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	s := &Store{now: now, path: path, m: map[string][]Binding{}}
	if path == "" {
		return s, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read location snapshot: %w", err)
	}
	var list []Binding
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("location snapshot %s: %w", path, err)
	}
	t := now()
	for _, b := range list {
		if b.Expires.After(t) {
			s.m[b.AoR] = append(s.m[b.AoR], b)
		}
	}
	return s, nil
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
	s.dirty = true
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
	if n > 0 {
		s.dirty = true
	}
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

// Flush writes the snapshot if anything changed since the last one.
func (s *Store) Flush() error {
	if s.path == "" {
		return nil
	}
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	s.dirty = false
	var list []Binding
	for _, l := range s.m {
		list = append(list, l...)
	}
	s.mu.Unlock()
	data, err := json.Marshal(list)
	if err != nil {
		return fmt.Errorf("encode location snapshot: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".location-*")
	if err != nil {
		s.markDirty()
		return fmt.Errorf("write location snapshot: %w", err)
	}
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		s.markDirty()
		return fmt.Errorf("write location snapshot: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		os.Remove(tmp.Name())
		s.markDirty()
		return fmt.Errorf("write location snapshot: %w", err)
	}
	return nil
}

func (s *Store) markDirty() {
	s.mu.Lock()
	s.dirty = true
	s.mu.Unlock()
}
