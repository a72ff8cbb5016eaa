package relay

import (
	"errors"
	"fmt"
)

// ErrRenewCrypto: a leg whose SRTP the relay terminates keeps its ports
// (its DTLS and ICE-lite state are bound to them).
var ErrRenewCrypto = errors.New("leg terminates SRTP")

// RenewPorts gives side's leg of a stream new relay ports from the same
// pool and frees the old ones: rtpengine's "no port latching", where a
// side that announces a new address gets new local ports (call.c
// __get_endpoint_map looks the ports up by the remote endpoint). The
// other leg keeps its ports. Every flow of the stream moves with it (the
// flows from the side arrive on the new ports, those toward it leave by
// them); what was latched stays, and SetPeer with the new address resets
// it as usual. A leg with crypto (ErrRenewCrypto) keeps its ports.
func (e *Engine) RenewPorts(callID string, index int, side Side) (StreamPorts, error) {
	if side > SideB {
		return StreamPorts{}, fmt.Errorf("renew ports %q/%d: bad side %d", callID, index, side)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	st, err := e.streamOf("renew ports", callID, index)
	if err != nil {
		return StreamPorts{}, err
	}
	l := &st.legs[side]
	if l.sec != nil {
		return st.ports(), fmt.Errorf("renew ports %q/%d side %s: %w", callID, index, side, ErrRenewCrypto)
	}
	nr, err := l.pool.pool.alloc()
	if err != nil {
		return st.ports(), fmt.Errorf("renew ports %q/%d side %s on %s: %w", callID, index, side, l.pool.cfg.Local, err)
	}
	// Every direction uses the leg: as its key (from the side) or its
	// source (toward it). Take them all out before the ports change.
	for i := range st.dirs {
		if d := &st.dirs[i]; d.valid {
			e.uninstall(d)
		}
	}
	for c := range l.latch {
		delete(e.flows, l.local(uint8(c)))
	}
	if err := l.pool.pool.free(l.rtp); err != nil {
		e.log.Error("free relay ports", "call", callID, "err", err)
	}
	l.rtp = nr
	for c := range l.latch {
		e.flows[l.local(uint8(c))] = st.dir(side, uint8(c))
	}
	if err := e.reconcile(st); err != nil {
		return st.ports(), fmt.Errorf("renew ports %q/%d side %s: %w", callID, index, side, err)
	}
	return st.ports(), nil
}
