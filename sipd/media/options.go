package media

import (
	"errors"

	"sipxdp/relay"
)

// Per-call options of rtpengine's NG flags that outlive one message:
// each side's label, asymmetric flag and latching (endpoint-learning,
// NAT-wait, media handover, pierce NAT), and the call's TOS and
// drop-traffic. rtpengine reads asymmetric from every offer and answer of
// a side (media_update_flags in its call.c), the latching flags likewise
// into the streams of the SDP's sender (__fill_stream; media handover
// through sdp.c's stream flags), TOS from offers only, for the whole call
// (__tos_change), drop-traffic from offers and answers, for the whole call
// (CALL_FLAG_DROP_TRAFFIC in call_interfaces.c), and keeps a label until
// the side gives another (__call_monologue_init_from_flags).

// DropTraffic is what a message says of rtpengine's drop-traffic.
type DropTraffic uint8

const (
	DropKeep  DropTraffic = iota // no drop-traffic: as the call was
	DropStart                    // drop-traffic=start: drop all of the call's media
	DropStop                     // drop-traffic=stop: forward it again
)

// options hands o's per-call options to the engine before side's SDP is
// followed, so the flows that SDP installs have them. Called with c.mu
// held.
func (c *Controller) options(id string, cl *call, side relay.Side, o *Options, offer bool) {
	if o == nil {
		return // sipd's own calls: no NG flags
	}
	so := relay.SideOptions{Asymmetric: o.Asymmetric, Learning: o.Learning, NATWait: o.NATWait, Handover: o.Handover,
		PierceNAT: o.PierceNAT}
	if err := c.cfg.Engine.SetSideOptions(id, side, so); err != nil && !errors.Is(err, relay.ErrSessionNotFound) {
		c.log.Warn("media: side options", "call_id", id, "side", side.String(), "error", err)
	}
	cl.opts[side] = so
	if o.Drop != DropKeep {
		drop := o.Drop == DropStart
		if err := c.cfg.Engine.SetDrop(id, drop); err != nil && !errors.Is(err, relay.ErrSessionNotFound) {
			c.log.Warn("media: drop traffic", "call_id", id, "drop", drop, "error", err)
		}
		cl.drop = drop
	}
	if !offer || o.KeepTOS {
		return
	}
	if err := c.cfg.Engine.SetTOS(id, o.TOS); err != nil && !errors.Is(err, relay.ErrSessionNotFound) {
		c.log.Warn("media: tos", "call_id", id, "tos", o.TOS.String(), "error", err)
	}
	cl.tos = o.TOS
}

// label records the label o gives side, once its message went through.
func (cl *call) label(side relay.Side, o *Options) {
	if o != nil && o.Label != "" {
		cl.labels[side] = o.Label
	}
}
