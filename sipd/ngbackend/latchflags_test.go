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

// RenewPorts moves one leg of the fake's stream 10 ports up, as the
// engine hands out a new pair (relay.Engine.RenewPorts).
func (f *fake) RenewPorts(id string, index int, side relay.Side) (relay.StreamPorts, error) {
	s, ok := f.sessions[id]
	if !ok {
		return relay.StreamPorts{}, relay.ErrSessionNotFound
	}
	for i := range s.Streams {
		st := &s.Streams[i]
		if st.Index != index {
			continue
		}
		l := &st.A
		if side == relay.SideB {
			l = &st.B
		}
		l.RTP, l.RTCP = l.RTP+10, l.RTCP+10
		return relay.StreamPorts{A: st.A.LegPorts, B: st.B.LegPorts}, nil
	}
	return relay.StreamPorts{}, relay.ErrStreamNotFound
}

// no port latching (ng_control_protocol.md "no port latching"; call.c
// __get_endpoint_map): a side that announces a new address gets new relay
// ports, which the SDP back to it names; the other side's stay. Without
// the flag, and for an unchanged address, the ports stay (port latching).
func TestNoPortLatching(t *testing.T) {
	runSteps(t, `"no port latching", "port latching"`, []step{
		{cmd: offerCmd("c1", 10000, "flags", flags("no port latching")), port: 40002},
		{cmd: answerCmd("c1", 20000), port: 40000},
		// Same address again: kept.
		{cmd: offerCmd("c1", 10000, "flags", flags("no-port-latching")), port: 40002},
		{cmd: answerCmd("c1", 20000), port: 40000},
		// A moved: A's leg is renewed, B's (in this offer) is not.
		{cmd: offerCmd("c1", 10002, "rtpp-flags", "no-port-latching"), port: 40002},
		{cmd: answerCmd("c1", 20000), port: 40010},
		// A moves again without the flag: kept.
		{cmd: offerCmd("c1", 10004), port: 40002},
		{cmd: answerCmd("c1", 20000), port: 40010},
		// B moves with it, in an answer: B's leg is renewed.
		{cmd: offerCmd("c1", 10004), port: 40002},
		{cmd: answerCmd("c1", 20002, "flags", flags("no port latching")), port: 40010},
		{cmd: offerCmd("c1", 10004), port: 40012},
	})
}
