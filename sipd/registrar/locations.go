package registrar

import (
	"slices"
	"sort"
	"strings"
)

// Locations is the location table as the registrar and the proxy use it:
// Store, one node's table in memory with its journal on disk (the
// default), or RedisStore, one table that several nodes share. Lookup,
// Apply and All fail only on a shared store that cannot be reached, with
// an error that wraps ErrUnavailable.
type Locations interface {
	// Lookup returns the live bindings of aor, highest q first.
	Lookup(aor string) ([]Binding, error)
	// Apply updates aor's bindings in one step (see Store.Apply).
	Apply(aor, callID string, cseq uint32, removeAll bool, changes []Change, maxContacts int) ([]Binding, error)
	// Count returns the number of AoRs and contacts held.
	Count() (aors, contacts int)
	// All returns every binding, by AoR and contact.
	All() ([]Binding, error)
	Close() error
}

var (
	_ Locations = (*Store)(nil)
	_ Locations = (*RedisStore)(nil)
)

// merge applies one REGISTER's changes to cur, the AoR's live bindings,
// and returns the new list: RFC 3261 §10.3 steps 6 to 8. packed[i] is
// changes[i] as the store holds a binding; key reads a held binding's
// contact, Call-ID and CSeq. Nothing is applied on ErrOutOfOrder (a
// contact last registered by this Call-ID with a CSeq at least this one)
// or ErrTooManyContacts. Both stores go through it, so they keep one
// semantics. cur may be reused.
func merge[T any](cur, packed []T, key func(*T) (contact, callID string, cseq uint32),
	callID string, cseq uint32, removeAll bool, changes []Change, maxContacts int) ([]T, error) {
	stale := func(i int) bool {
		_, id, seq := key(&cur[i])
		return id == callID && cseq <= seq
	}
	if removeAll {
		for i := range cur {
			if stale(i) {
				return nil, ErrOutOfOrder
			}
		}
		cur = cur[:0]
	}
	for k, c := range changes {
		i := slices.IndexFunc(cur, func(b T) bool {
			contact, _, _ := key(&b)
			return contact == c.Contact
		})
		if i >= 0 && stale(i) {
			return nil, ErrOutOfOrder
		}
		switch {
		case c.Remove && i >= 0:
			cur = append(cur[:i], cur[i+1:]...)
		case c.Remove:
		case i >= 0:
			cur[i] = packed[k]
		default:
			cur = append(cur, packed[k])
		}
	}
	if len(cur) > maxContacts {
		return nil, ErrTooManyContacts
	}
	return cur, nil
}

func sortByQ(list []Binding) {
	sort.SliceStable(list, func(i, j int) bool { return list[i].Q > list[j].Q })
}

func sortByAoR(list []Binding) {
	slices.SortFunc(list, func(a, b Binding) int {
		if c := strings.Compare(a.AoR, b.AoR); c != 0 {
			return c
		}
		return strings.Compare(a.Contact, b.Contact)
	})
}
