package media

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"sipxdp/relay"
)

// The SIP-free entry points below serve a control protocol (rtpengine's
// NG) whose client, a SIP proxy, names the call by Call-ID and the sides
// by their SIP tags. They share the offer/answer core with the SIP hooks:
// side A is the tag of the first offer's From, side B the tag that
// answered it; a later offer or answer from either tag updates that side.

// Errors of the SIP-free entry points (rtpengine answers "Unknown
// call-id" and "Unknown from-tag" in the same cases).
var (
	ErrUnknownCall = errors.New("unknown call-id")
	ErrUnknownTag  = errors.New("unknown from-tag/to-tag")
	ErrNoTag       = errors.New("missing from-tag")
)

// CallInfo is what the controller knows of one call, for query and list.
type CallInfo struct {
	CallID string
	// Tags of side A (the first offer's From) and side B (the answering
	// tag of the oldest branch; "" until an answer).
	Tags                [2]string
	Created, LastSignal time.Time
	// Kinds maps a stream index (m-line from 0) of the oldest branch to
	// what it carries, as last announced.
	Kinds map[int]MediaKind
	// Labels of side A and B of the oldest branch (Options.Label; ""
	// when none was given).
	Labels [2]string
	// Branches are the call's branches, oldest first (one unless the
	// call forked, see fork.go).
	Branches []BranchInfo
}

// BranchInfo is one branch of a call.
type BranchInfo struct {
	Tag       string // the answering tag; "" until an answer
	ViaBranch string // the via-branch of its offer
	// Base is the relay stream index of its m-line 0: its streams are
	// Base+m-line in the relay session.
	Base  int
	Kinds map[int]MediaKind
	// Labels of side A and B (Options.Label; "" when none was given).
	Labels [2]string
}

// info describes the call cl holds (cl is the call c.calls holds).
func (cl *call) info(id string) CallInfo {
	ci := CallInfo{CallID: id, Tags: [2]string{cl.callerTag, cl.lockedTag}, Labels: cl.labels,
		Created: cl.created, LastSignal: cl.lastSignal, Kinds: make(map[int]MediaKind, len(cl.kinds))}
	for k, v := range cl.kinds {
		ci.Kinds[k] = v
	}
	for _, b := range cl.branches() {
		if b.lastSignal.After(ci.LastSignal) {
			ci.LastSignal = b.lastSignal
		}
		bi := BranchInfo{Tag: b.lockedTag, ViaBranch: b.via, Base: b.base, Kinds: make(map[int]MediaKind, len(b.kinds)), Labels: b.labels}
		for k, v := range b.kinds {
			bi.Kinds[k] = v
		}
		ci.Branches = append(ci.Branches, bi)
	}
	return ci
}

// Offer handles an SDP offer from the party whose tag is fromTag: on a
// new call that party is side A; on a known call it is side A (a re-offer
// from the caller, or the offer of a new branch: see fork.go and o's
// ViaBranch and ToTag) or side B (a re-INVITE from a callee, whose From
// tag is the tag that answered). sig is the sender's signaling address (zero
// when unknown), used to pick the relay address of its leg until its
// media address is known. It returns the SDP rewritten to the relay; a
// retransmitted offer gets the same bytes. An error wrapping
// ErrUnavailable means the relay refuses new media.
//
// o, when not nil, says how to write the SDP toward the other side
// (rtpengine's NG flags).
func (c *Controller) Offer(callID, fromTag string, body []byte, sig netip.Addr, o *Options) ([]byte, error) {
	if fromTag == "" {
		return nil, ErrNoTag
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	root, ok := c.calls[callID]
	if !ok {
		if err := c.cfg.Engine.CreateSession(callID); err != nil && !errors.Is(err, relay.ErrSessionExists) {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		root = &call{callerTag: fromTag, streams: map[int]relay.StreamPorts{}, created: now, offerer: -1, via: o.viaBranch()}
		c.calls[callID] = root
	}
	cl, side, fresh := root, relay.SideA, false
	switch {
	case fromTag == root.callerTag:
		// The caller's offer: the branch its to-tag names (a re-INVITE),
		// else the one offered with its via-branch, else a new branch
		// for a via-branch not seen yet (a fork's or spiral's offer),
		// else the oldest (rtpengine's call_get_monologue_new).
		if b := root.byTag(o.toTag()); b != nil {
			cl = b
		} else if b := root.byVia(o.viaBranch()); b != nil {
			cl = b
		} else if ok && o.viaBranch() != "" {
			b, err := c.newBranch(callID, root, o.viaBranch())
			if err != nil {
				return nil, err
			}
			cl, fresh = b, true
		}
	case root.byTag(fromTag) != nil:
		cl, side = root.byTag(fromTag), relay.SideB // a callee's re-INVITE
	default:
		return nil, fmt.Errorf("%w: offer from tag %q, call has %q and %q", ErrUnknownTag, fromTag, root.callerTag, root.lockedTag)
	}
	if sig.IsValid() {
		cl.sig[side] = sig.Unmap()
	}
	c.signal(callID, side, sig.Unmap())
	c.options(callID, cl, side, o, true)
	out, err := c.sdp(callID, cl, side, body, true, o, true)
	if err != nil {
		switch {
		case !ok:
			c.deleteLocked(callID, ReasonSetupFailed)
		case fresh:
			c.dropBranch(callID, root, cl, ReasonSetupFailed)
		}
		return nil, err
	}
	cl.label(side, o)
	cl.lastSignal = now
	return out, nil
}

// Answer handles an SDP answer: fromTag and toTag are those of the SIP
// reply, so the answering party is toTag's. An answer to the caller's
// offer (fromTag is the caller's) goes to the branch offered with o's
// via-branch, else to the one toTag already answered, else to the oldest
// branch; there toTag becomes side B, and a branch that had another tag
// keeps it as an alias: the relay follows the branch that answered last,
// as a 2xx comes after any other fork's early media (rtpengine's
// call_get_dialogue). rtpengine looks the to-tag up before the
// via-branch; taking a known via-branch first lets the two passes of a
// spiral, which answer with the same to-tag, each reach their own
// branch. An answer whose toTag is the caller's answers a re-offer from
// a branch's callee.
func (c *Controller) Answer(callID, fromTag, toTag string, body []byte, sig netip.Addr, o *Options) ([]byte, error) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	root, ok := c.calls[callID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCall, callID)
	}
	var side relay.Side
	var cl *call
	switch {
	case toTag != "" && toTag == root.callerTag && root.byTag(fromTag) != nil:
		cl, side = root.byTag(fromTag), relay.SideA
	case fromTag == root.callerTag:
		side = relay.SideB
		cl = root.byVia(o.viaBranch())
		if cl == nil {
			cl = root.byTag(toTag)
		}
		if cl == nil {
			cl = root
		}
		if toTag != "" && toTag != cl.lockedTag {
			if cl.lockedTag != "" {
				c.log.Debug("media: answer from another branch followed", "call_id", callID, "was", cl.lockedTag, "now", toTag)
			}
			cl.setTag(toTag)
			cl.labels[relay.SideB] = "" // the other tag's
		}
	default:
		return nil, fmt.Errorf("%w: answer from %q to %q, call has %q and %q", ErrUnknownTag, fromTag, toTag, root.callerTag, root.lockedTag)
	}
	if sig.IsValid() {
		cl.sig[side] = sig.Unmap()
	}
	c.signal(callID, side, sig.Unmap())
	c.options(callID, cl, side, o, false)
	out, err := c.sdp(callID, cl, side, body, true, o, false)
	if err != nil {
		return nil, err
	}
	cl.label(side, o)
	cl.confirmed = true
	cl.lastSignal = now
	return out, nil
}

// Delete ends a call's relaying and returns what the controller knew of
// it and the relay session's final statistics; ok is false for an
// unknown call.
func (c *Controller) Delete(callID, reason string) (ci CallInfo, si relay.SessionInfo, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.calls[callID]
	if !ok {
		return CallInfo{}, relay.SessionInfo{}, false
	}
	ci = cl.info(callID)
	si, _ = c.deleteInfoLocked(callID, reason)
	return ci, si, true
}

// Call returns what the controller knows of a call.
func (c *Controller) Call(callID string) (CallInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.calls[callID]
	if !ok {
		return CallInfo{}, false
	}
	return cl.info(callID), true
}

// CallIDs returns up to limit (0: all) relayed call IDs, sorted.
func (c *Controller) CallIDs(limit int) []string {
	c.mu.Lock()
	ids := make([]string, 0, len(c.calls))
	for id := range c.calls {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	sort.Strings(ids)
	if limit > 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	return ids
}
