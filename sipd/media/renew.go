package media

import (
	"errors"
	"net/netip"

	"sipxdp/relay"
	"sipxdp/sipd/sdprewrite"
)

// PortRenewer is an Engine that can give one leg of a stream new ports
// (relay.Engine.RenewPorts). An engine without it keeps every stream's
// ports, as with port latching.
type PortRenewer interface {
	RenewPorts(callID string, index int, side relay.Side) (relay.StreamPorts, error)
}

// renewPorts is rtpengine's no port latching for one stream of a message
// from side: when the side announces another media address than it had,
// its leg gets new relay ports (call.c __get_endpoint_map finds the
// ports by the remote endpoint, so a new endpoint gets new ones), which
// the SDP back to the side then names. It returns the stream's ports.
// Called with c.mu held, before SetPeer.
func (c *Controller) renewPorts(id string, cl *call, side relay.Side, m sdprewrite.Media, o *Options, sp relay.StreamPorts) relay.StreamPorts {
	r, ok := c.cfg.Engine.(PortRenewer)
	prev := cl.announced[m.Index][side]
	if !ok || !prev.Set || prev.RTP == netip.AddrPortFrom(from(m.Addr, o), m.Port) {
		return sp
	}
	np, err := r.RenewPorts(id, cl.base+m.Index, side)
	if err != nil {
		if !errors.Is(err, relay.ErrRenewCrypto) {
			c.log.Warn("media: no port latching: new ports", "call_id", id, "index", m.Index, "side", side.String(), "error", err)
		}
		return sp
	}
	cl.streams[m.Index] = np
	// The other side's last SDP, rewritten, names the old ports: a
	// retransmission of it must be rewritten again.
	cl.lastOut[1-side] = nil
	return np
}
