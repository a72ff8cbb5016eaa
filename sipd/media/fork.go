package media

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"sipxdp/relay"
)

// Forks and spirals (the NG entry points). rtpengine keeps one
// monologue per SIP tag and lets a proxy that forks an INVITE send one
// offer per branch, told apart by the branch's Via branch ("via-branch";
// rtpengine's call.c, call_get_monologue_new and call_get_dialogue). Each
// such offer gets media of its own toward its callee, and a delete can
// end one branch and keep the others (call_delete_branch).
//
// Here a branch is a two-sided call of its own (the call struct) that
// shares the call's relay session: its streams sit in the session at
// engine indexes base+m-line, so that the session's timeout, query,
// flows and deletion keep working by Call-ID, while removing one
// branch's streams frees its ports and flows and touches no other
// branch's. Unlike rtpengine, whose caller side is one monologue for all
// branches, each branch has its own relay ports toward the caller too:
// the relay has no fan-out of one leg to several.
//
// An offer from the caller with a via-branch no branch has opens a new
// branch; one without via-branch, or with a known one, or naming a
// branch by to-tag, is a re-offer on that branch. A spiral (the INVITE
// back through the proxy, same From tag, another Via branch) is a new
// branch too, as in rtpengine: the second branch's caller side is the
// first branch's callee side, and the media crosses the relay twice.

// branchStride is the engine index space of one branch: an SDP of more
// m-lines is refused (it cannot fit in an NG datagram anyway).
const branchStride = 1 << 16

// DefaultMaxBranches bounds the branches of one call when
// Config.MaxBranches is 0: each costs relay ports on both of its legs.
const DefaultMaxBranches = 8

// Errors of forked calls.
var (
	ErrTooManyBranches = errors.New("too many branches of one call")
	ErrTooManyStreams  = errors.New("too many m-lines in one sdp")
)

func (c *Controller) maxBranches() int {
	if c.cfg.MaxBranches > 0 {
		return c.cfg.MaxBranches
	}
	return DefaultMaxBranches
}

// branches returns the call's branches, oldest first; cl is the call
// c.calls holds.
func (cl *call) branches() []*call { return append([]*call{cl}, cl.forks...) }

// hasTag reports whether tag is the branch's answering tag or one it had.
func (cl *call) hasTag(tag string) bool {
	return tag != "" && (tag == cl.lockedTag || slices.Contains(cl.aliases, tag))
}

// byTag returns the branch answered with tag, nil if none.
func (cl *call) byTag(tag string) *call {
	for _, b := range cl.branches() {
		if b.hasTag(tag) {
			return b
		}
	}
	return nil
}

// byVia returns the branch offered with via-branch via, nil if none.
func (cl *call) byVia(via string) *call {
	if via == "" {
		return nil
	}
	for _, b := range cl.branches() {
		if b.via == via {
			return b
		}
	}
	return nil
}

// setTag makes tag the branch's answering tag, keeping the one it had as
// an alias, as rtpengine's __monologue_tag does: a delete or re-INVITE
// naming the earlier tag still finds the branch.
func (cl *call) setTag(tag string) {
	if tag == "" || tag == cl.lockedTag {
		return
	}
	if cl.lockedTag != "" && !slices.Contains(cl.aliases, cl.lockedTag) {
		cl.aliases = append(cl.aliases, cl.lockedTag)
	}
	cl.aliases = slices.DeleteFunc(cl.aliases, func(a string) bool { return a == tag })
	cl.lockedTag = tag
}

// newBranch opens a branch of the call root for an offer with via-branch
// via: a call of its own in root's relay session, the caller's side
// known as root's is.
func (c *Controller) newBranch(id string, root *call, via string) (*call, error) {
	all := root.branches()
	if len(all) >= c.maxBranches() {
		return nil, fmt.Errorf("%w: %d (via-branch %q)", ErrTooManyBranches, c.maxBranches(), via)
	}
	base := 0
	for _, b := range all {
		base = max(base, b.base+branchStride)
	}
	br := &call{callerTag: root.callerTag, streams: map[int]relay.StreamPorts{}, created: root.created,
		offerer: -1, base: base, via: via, sig: [2]netip.Addr{root.sig[relay.SideA]},
		// The caller's label, the session's options and the interfaces
		// of the call's legs (by direction and domain) are the call's; an
		// offer's direction for this branch changes only this branch's.
		labels: [2]string{root.labels[relay.SideA]}, opts: root.opts, tos: root.tos,
		iface: root.iface, dom: root.dom}
	root.forks = append(root.forks, br)
	c.log.Debug("media: new branch", "call_id", id, "via_branch", via, "branches", len(all)+1)
	return br, nil
}

// dropBranch ends one branch of a call that has others: its streams
// leave the relay session (ports, flows, kernel entries), the other
// branches' stay as they are. The oldest branch left takes the call's
// place in c.calls.
func (c *Controller) dropBranch(id string, root, br *call, reason string) {
	for idx := range br.streams {
		if err := c.cfg.Engine.RemoveStream(id, br.base+idx); err != nil && !errors.Is(err, relay.ErrStreamNotFound) {
			c.log.Warn("media: remove branch stream", "call_id", id, "index", idx, "error", err)
		}
	}
	all := slices.DeleteFunc(root.branches(), func(b *call) bool { return b == br })
	head := all[0]
	head.forks = all[1:]
	if head != root {
		root.forks = nil
	}
	c.calls[id] = head
	c.log.Debug("media: branch no longer relayed", "call_id", id, "tag", br.lockedTag, "via_branch", br.via, "reason", reason)
}

// BranchRef is what a delete names (rtpengine's call_delete_branch):
// no FromTag is the whole call; ToTag, when given, is looked up in place
// of FromTag; ViaBranch names a branch by the via-branch of its offer.
type BranchRef struct{ FromTag, ToTag, ViaBranch string }

// Deleted is what DeleteBranch ended.
type Deleted struct {
	// Info is the call as it was before the delete.
	Info CallInfo
	// Whole: the call went, not one branch; Stats are then the relay
	// session's final statistics.
	Whole bool
	Stats relay.SessionInfo
	// Branches are the branches that went when not Whole.
	Branches []BranchInfo
}

// target finds what ref deletes of the call root, as rtpengine's
// call_delete_branch does, with the relay's model of a call: the
// caller's side is one, each branch a callee's side. Deleting the
// caller's side deletes every branch with it (each is left without a
// peer); deleting branches leaves the others, and deleting the last one
// deletes the call. A tag names every branch answered with it (the two
// passes of a spiral answer with the same tag). ok is false when ref
// names nothing of the call.
func (root *call) target(ref BranchRef) (brs []*call, whole, ok bool) {
	all := root.branches()
	some := func(bs []*call) ([]*call, bool, bool) { return bs, len(bs) == len(all), len(bs) > 0 }
	if ref.FromTag == "" {
		return all, true, true
	}
	if ref.ToTag == "" {
		if b := root.byVia(ref.ViaBranch); b != nil {
			return some([]*call{b})
		}
	}
	tag := ref.FromTag
	if ref.ToTag != "" {
		tag = ref.ToTag
	}
	if tag == root.callerTag {
		return all, true, true
	}
	if bs := slices.DeleteFunc(slices.Clone(all), func(b *call) bool { return !b.hasTag(tag) }); len(bs) > 0 {
		return some(bs)
	}
	if b := root.byVia(ref.ViaBranch); b != nil {
		return some([]*call{b})
	}
	// rtpengine's "last resort": an unknown to-tag with the caller's
	// from-tag while the call's one branch has not answered.
	if ref.ToTag != "" && ref.FromTag == root.callerTag && len(all) == 1 && root.lockedTag == "" {
		return all, true, true
	}
	return nil, false, false
}

// Deletes reports whether a delete naming ref would end anything of the
// call (ok) and whether that is the whole call, without deleting.
func (c *Controller) Deletes(callID string, ref BranchRef) (whole, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	root, ok := c.calls[callID]
	if !ok {
		return false, false
	}
	_, whole, ok = root.target(ref)
	return whole, ok
}

// DeleteBranch ends what a delete naming ref names: one branch of a
// forked call, or the whole call (see target). ok is false for an
// unknown call or a ref that names nothing of it; the call is then kept.
func (c *Controller) DeleteBranch(callID string, ref BranchRef, reason string) (d Deleted, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	root, ok := c.calls[callID]
	if !ok {
		return Deleted{}, false
	}
	brs, whole, ok := root.target(ref)
	if !ok {
		return Deleted{}, false
	}
	d = Deleted{Info: root.info(callID), Whole: whole}
	if whole {
		d.Stats, _ = c.deleteInfoLocked(callID, reason)
		return d, true
	}
	for i, b := range root.branches() {
		if slices.Contains(brs, b) {
			d.Branches = append(d.Branches, d.Info.Branches[i])
		}
	}
	for _, b := range brs {
		c.dropBranch(callID, c.calls[callID], b, reason)
	}
	return d, true
}
