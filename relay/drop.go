package relay

import "fmt"

// SetDrop starts (true) or stops dropping every packet of the call's media,
// in both directions (rtpengine's drop-traffic, a per-call flag that any
// offer or answer sets or clears: CALL_FLAG_DROP_TRAFFIC in its
// call_interfaces.c). Every stream's flows carry it (Flow.Drop), streams
// added later too.
func (e *Engine) SetDrop(callID string, drop bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return fmt.Errorf("set drop %q: %w", callID, ErrSessionNotFound)
	}
	if s.drop == drop {
		return nil
	}
	s.drop = drop
	return e.reconcileSession("set drop", s)
}
