package relay

// pierce NAT (rtpengine's NG flag "pierce NAT"): while a side's flow has
// not locked to a source, the relay sends a small packet from the port
// the side sends to, to the side's SDP address, once a second, so that a
// NAT or firewall in front of the side opens a binding for the relay's
// address before the side's first packet. rtpengine sends it from its
// call timer (call.c call_stream_state_machine, once a second and after
// signaling) while the stream is not confirmed; the payload is its:
// an RTP header with payload type 127, sequence 0xffff, all else zero.
var pierceRTP = []byte{0x80, 0x7f, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}

// pierce sends the pierce NAT packets of every call that asked for them.
// The port sends only once the slow path holds it (its flow is installed:
// both sides announced). Called with e.mu held, about once a second.
func (e *Engine) pierce() {
	sender, ok := e.slow.(Sender)
	if !ok {
		return
	}
	for s := range e.piercing {
		if s.deleted || !s.opts[SideA].PierceNAT && !s.opts[SideB].PierceNAT {
			delete(e.piercing, s)
			continue
		}
		for _, st := range s.streams {
			for side := range st.legs {
				if !s.opts[side].PierceNAT {
					continue
				}
				l := &st.legs[side]
				for c := range l.latch {
					d := st.dir(Side(side), uint8(c))
					dst := l.announced[c]
					if !l.peerSet || l.latch[c].Locked || !d.valid || !d.inSlow || !known(dst) {
						continue
					}
					if err := sender.SendFrom(d.key().Local, dst, pierceRTP); err != nil {
						e.pierceErrors.Add(1)
					} else {
						e.pierces.Add(1)
					}
				}
			}
		}
	}
}
