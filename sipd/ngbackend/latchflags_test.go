package ngbackend

import (
	"testing"

	"sipxdp/relay"
)

// TestLatchFlags drives the latching flags through ng.Server: each side's
// flags reach the engine as that side's options, from every offer and
// answer of the side, while the SDP still points at the relay.
func TestLatchFlags(t *testing.T) {
	side := func(a, b relay.SideOptions) *[2]relay.SideOptions { return &[2]relay.SideOptions{a, b} }
	none := relay.SideOptions{}
	for _, tc := range []struct {
		name, section string
		steps         []step
	}{
		{name: "endpoint-learning: the key, each value, per side", section: `"endpoint-learning"; call_flags.c ng_el_option`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "endpoint-learning", "immediate"), port: 40002,
					opts: side(relay.SideOptions{Learning: relay.LearnImmediate}, none)},
				{cmd: answerCmd("c1", 20000, "endpoint-learning", "off"), port: 40000,
					opts: side(relay.SideOptions{Learning: relay.LearnImmediate}, relay.SideOptions{Learning: relay.LearnOff})},
				{cmd: offerCmd("c1", 10000, "endpoint-learning", "delayed"), port: 40002,
					opts: side(relay.SideOptions{Learning: relay.LearnDelayed}, relay.SideOptions{Learning: relay.LearnOff})},
				// A message without it: the default again.
				{cmd: offerCmd("c1", 10000), port: 40002, opts: side(none, relay.SideOptions{Learning: relay.LearnOff})},
				{cmd: answerCmd("c1", 20000, "endpoint-learning", "heuristic"), port: 40000, opts: side(none, none)},
			}},
		{name: "endpoint-learning in the flags list and rtpp-flags", section: `"endpoint-learning" ("a prefix of endpoint-learning-")`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "flags", flags("endpoint-learning-immediate")), port: 40002,
					opts: side(relay.SideOptions{Learning: relay.LearnImmediate}, none)},
				{cmd: answerCmd("c1", 20000, "rtpp-flags", "endpoint-learning=delayed"), port: 40000,
					opts: side(relay.SideOptions{Learning: relay.LearnImmediate}, relay.SideOptions{Learning: relay.LearnDelayed})},
				// Unknown: logged, the default.
				{cmd: offerCmd("c1", 10000, "endpoint-learning", "sometimes"), port: 40002,
					opts: side(none, relay.SideOptions{Learning: relay.LearnDelayed})},
			}},
		{name: "NAT-wait is the sender's", section: `"NAT-wait"; call.c __fill_stream`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "flags", flags("NAT-wait")), port: 40002,
					opts: side(relay.SideOptions{NATWait: true}, none)},
				{cmd: answerCmd("c1", 20000, "rtpp-flags", "nat-wait"), port: 40000,
					opts: side(relay.SideOptions{NATWait: true}, relay.SideOptions{NATWait: true})},
				{cmd: offerCmd("c1", 10000), port: 40002, opts: side(none, relay.SideOptions{NATWait: true})},
			}},
		{name: "media handover is the sender's", section: `"media handover"; sdp.c SP_FLAG_MEDIA_HANDOVER`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "flags", flags("media handover")), port: 40002,
					opts: side(relay.SideOptions{Handover: true}, none)},
				{cmd: answerCmd("c1", 20000, "flags", flags("media-handover", "asymmetric")), port: 40000,
					opts: side(relay.SideOptions{Handover: true}, relay.SideOptions{Handover: true, Asymmetric: true})},
				{cmd: answerCmd("c1", 20000), port: 40000, opts: side(relay.SideOptions{Handover: true}, none)},
			}},
		{name: "pierce NAT is the sender's", section: `"pierce NAT"; call.c __fill_stream, call_stream_state_machine`,
			steps: []step{
				{cmd: offerCmd("c1", 10000, "flags", flags("pierce NAT")), port: 40002,
					opts: side(relay.SideOptions{PierceNAT: true}, none)},
				{cmd: answerCmd("c1", 20000, "rtpp-flags", "pierce-nat"), port: 40000,
					opts: side(relay.SideOptions{PierceNAT: true}, relay.SideOptions{PierceNAT: true})},
				{cmd: offerCmd("c1", 10000), port: 40002, opts: side(none, relay.SideOptions{PierceNAT: true})},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) { runSteps(t, tc.section, tc.steps) })
	}
}

func TestLatchFlagsHonoured(t *testing.T) {
	for _, k := range []string{"endpoint-learning", "endpoint-learning-off", "nat-wait", "media-handover", "pierce-nat"} {
		if !honoured(k) {
			t.Errorf("honoured(%q) = false", k)
		}
	}
	for _, k := range []string{"pierce", "endpoint-learnings", "nat"} {
		if latchFlag(k) {
			t.Errorf("latchFlag(%q) = true", k)
		}
	}
}
