package relayrepl

import "sipxdp/ng"

// Backend wraps an NG backend: a command that changes a call (offer,
// answer, delete) marks it for writing, and on a standby that follows
// the call it makes the node take over first (the proxy has moved to
// it). Query and list change nothing.
func (r *Replicator) Backend(b ng.Backend) ng.Backend { return backend{b, r} }

type backend struct {
	ng.Backend
	r *Replicator
}

func (b backend) Offer(req *ng.Request) ([]byte, error) {
	b.r.Claim(req.CallID)
	out, err := b.Backend.Offer(req)
	b.changed(req)
	return out, err
}

func (b backend) Answer(req *ng.Request) ([]byte, error) {
	b.r.Claim(req.CallID)
	out, err := b.Backend.Answer(req)
	b.changed(req)
	return out, err
}

// changed marks the call of an offer or answer for writing unless the
// script said no-redis-update, which rtpengine honours for these two
// commands (call_interfaces.c): the call's record is written with its
// next change instead (a later command, a latch locking).
func (b backend) changed(req *ng.Request) {
	if _, skip := req.Flags["no-redis-update"]; skip {
		return
	}
	b.r.Changed(req.CallID)
}

func (b backend) Delete(req *ng.Request) (ng.CallStats, error) {
	b.r.Claim(req.CallID)
	cs, err := b.Backend.Delete(req)
	b.r.Changed(req.CallID)
	return cs, err
}
