package ngbackend

import (
	"log/slog"
	"strings"

	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/media"
)

// latchFlags reads the sender's latching flags (NG control protocol
// documentation: "endpoint-learning", "NAT-wait", "media handover",
// "pierce NAT", "no port latching";
// rtpengine's call_flags.c for the spellings: the key endpoint-learning,
// or endpoint-learning-VALUE in the flags list). Each offer and answer
// sets them for its sender's side, as rtpengine fills the sender's
// streams from each message (call.c __fill_stream); a message without
// endpoint-learning goes back to the default, heuristic, as rtpengine's
// flags start from its configured default. An unknown value is logged
// and leaves the default (ng_el_option).
func latchFlags(r *ng.Request, o *media.Options) {
	_, o.NATWait = r.Flags["nat-wait"]
	_, o.Handover = r.Flags["media-handover"]
	_, o.PierceNAT = r.Flags["pierce-nat"]
	_, o.NoPortLatching = r.Flags["no-port-latching"]
	o.Learning = relay.LearnHeuristic
	for k, v := range r.Flags {
		if k == "endpoint-learning" {
			// the key's value
		} else if s, ok := strings.CutPrefix(k, "endpoint-learning-"); ok {
			v = s
		} else {
			continue
		}
		m, ok := relay.ParseLearnMode(strings.ToLower(strings.TrimSpace(v)))
		if !ok {
			slog.Warn("ng: unknown endpoint-learning", "call_id", r.CallID, "value", v)
			continue
		}
		o.Learning = m
	}
}

// latchFlag reports whether k is one of the latching flags latchFlags reads.
func latchFlag(k string) bool {
	return k == "nat-wait" || k == "media-handover" || k == "pierce-nat" || k == "no-port-latching" ||
		k == "endpoint-learning" ||
		strings.HasPrefix(k, "endpoint-learning-")
}
