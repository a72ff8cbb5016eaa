package registrar

import (
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Options are the registrar's policy.
type Options struct {
	MinExpires, MaxExpires, DefaultExpires time.Duration
	MaxContacts                            int
	Now                                    func() time.Time
}

// Registrar runs the REGISTER procedure over a location store.
type Registrar struct {
	store Locations
	o     Options
	// unavailable counts REGISTERs refused because the store could not
	// make them durable.
	unavailable atomic.Uint64
}

// RetryAfter is what a REGISTER refused for want of a durable store is
// told: long enough for a disk to be freed without a phone hammering us,
// short enough that it is back soon after.
const RetryAfter = 10 * time.Second

// Unavailable is the number of REGISTERs refused with 500 because the
// store could not write (or, shared, could not be reached).
func (r *Registrar) Unavailable() uint64 { return r.unavailable.Load() }

// New returns a registrar on store.
func New(store Locations, o Options) *Registrar {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Registrar{store: store, o: o}
}

// Store is the location store.
func (r *Registrar) Store() Locations { return r.store }

// Flow is where a REGISTER came from: requests to the contact are sent
// back along it when the UA is behind NAT or on a connection.
type Flow struct {
	Received  string // ip:port
	Transport string // UDP, TCP, TLS
	NATed     bool
	// Path is the Path (RFC 3327) stored with the binding, for a shared
	// store; empty: none.
	Path string
}

// Register handles an authenticated REGISTER for aor and builds the
// response.
func (r *Registrar) Register(req *sip.Request, aor string, flow Flow) *sip.Response {
	callID := ""
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	var cseq uint32
	if h := req.CSeq(); h != nil {
		cseq = h.SeqNo
	}
	hdrExpires := -1
	if h := req.GetHeader("Expires"); h != nil {
		v, err := strconv.Atoi(strings.TrimSpace(h.Value()))
		if err != nil || v < 0 {
			return sip.NewResponseFromRequest(req, 400, "Bad Expires", nil)
		}
		hdrExpires = v
	}
	ua := ""
	if h := req.GetHeader("User-Agent"); h != nil {
		ua = h.Value()
	}
	now := r.o.Now()
	contacts := req.GetHeaders("Contact")
	removeAll := false
	var changes []Change
	for _, h := range contacts {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			return sip.NewResponseFromRequest(req, 400, "Bad Contact", nil)
		}
		if c.Address.Wildcard {
			// RFC 3261 §10.3 step 6: `*` only alone and with Expires: 0.
			if len(contacts) != 1 || hdrExpires != 0 {
				return sip.NewResponseFromRequest(req, 400, "Invalid Wildcard Contact", nil)
			}
			removeAll = true
			continue
		}
		if c.Address.Host == "" {
			return sip.NewResponseFromRequest(req, 400, "Bad Contact", nil)
		}
		exp := hdrExpires
		if v, ok := c.Params.Get("expires"); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return sip.NewResponseFromRequest(req, 400, "Bad Contact Expires", nil)
			}
			exp = n
		}
		d := r.o.DefaultExpires
		if exp >= 0 {
			d = time.Duration(exp) * time.Second
		}
		if d > 0 && d < r.o.MinExpires {
			res := sip.NewResponseFromRequest(req, 423, "Interval Too Brief", nil)
			res.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(int(r.o.MinExpires/time.Second))))
			return res
		}
		if d > r.o.MaxExpires {
			d = r.o.MaxExpires
		}
		q, _ := c.Params.Get("q")
		changes = append(changes, Change{
			Remove: d == 0,
			Binding: Binding{
				AoR: aor, Contact: c.Address.String(), Received: flow.Received, Transport: flow.Transport,
				NATed: flow.NATed, Path: flow.Path, CallID: callID, CSeq: cseq, Q: q, UserAgent: ua,
				Expires: now.Add(d), Updated: now,
			},
		})
	}
	var list []Binding
	var err error
	if len(contacts) == 0 {
		list, err = r.store.Lookup(aor) // a query
	} else {
		list, err = r.store.Apply(aor, callID, cseq, removeAll, changes, r.o.MaxContacts)
	}
	switch {
	case errors.Is(err, ErrOutOfOrder):
		return sip.NewResponseFromRequest(req, 500, "Out Of Order", nil)
	case errors.Is(err, ErrTooManyContacts):
		return sip.NewResponseFromRequest(req, 403, "Too Many Contacts", nil)
	case errors.Is(err, ErrUnavailable):
		// A 200 promises the binding survives a crash, or, shared,
		// that the other nodes see it; it would not.
		r.unavailable.Add(1)
		res := sip.NewResponseFromRequest(req, 500, "Location Store Unavailable", nil)
		res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(int(RetryAfter/time.Second))))
		return res
	case err != nil:
		return sip.NewResponseFromRequest(req, 500, "Server Error", nil)
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	for _, b := range list {
		ch := &sip.ContactHeader{}
		if err := sip.ParseUri(b.Contact, &ch.Address); err != nil {
			continue
		}
		left := int(b.Expires.Sub(now).Round(time.Second) / time.Second)
		ch.Params = sip.NewParams()
		ch.Params.Add("expires", strconv.Itoa(left))
		if b.Q != "" {
			ch.Params.Add("q", b.Q)
		}
		res.AppendHeader(ch)
	}
	res.AppendHeader(sip.NewHeader("Date", now.UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT")))
	return res
}
