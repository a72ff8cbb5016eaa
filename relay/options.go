package relay

import "fmt"

// Per-call options that signaling sets (rtpengine's NG flags asymmetric
// and TOS). They live in the session, so streams added later get them too,
// and reach the datapaths through each direction's Flow.

// SideOptions are what one side's offer or answer says about its media.
type SideOptions struct {
	// Asymmetric: the side sends from another address than the one it
	// receives on (rtpengine's asymmetric, rtpproxy's "a"). Its flows
	// still latch the source they accept, but what is sent to the side
	// goes to the address its SDP announced, never to the latched source.
	Asymmetric bool `json:"asymmetric,omitempty"`
}

// SetSideOptions sets the options of one side of a call, replacing what
// it had (rtpengine reads them from every offer and answer of that side),
// and brings every stream's flows in step.
func (e *Engine) SetSideOptions(callID string, side Side, o SideOptions) error {
	if side > SideB {
		return fmt.Errorf("set side options %q: bad side %d", callID, side)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return fmt.Errorf("set side options %q: %w", callID, ErrSessionNotFound)
	}
	if s.opts[side] == o {
		return nil
	}
	s.opts[side] = o
	return e.reconcileSession("set side options", s)
}

// SetTOS sets the IP TOS (IPv6 traffic class) of every packet the relay
// sends for the call, in both directions; the zero TOS goes back to the
// default (see Flow.TOS).
func (e *Engine) SetTOS(callID string, tos TOS) error {
	if !tos.Set {
		tos.Value = 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sessions[callID]
	if !ok {
		return fmt.Errorf("set tos %q: %w", callID, ErrSessionNotFound)
	}
	if s.tos == tos {
		return nil
	}
	s.tos = tos
	return e.reconcileSession("set tos", s)
}

// reconcileSession brings every stream of s in step. Called with e.mu held.
func (e *Engine) reconcileSession(op string, s *session) error {
	var errs []error
	for _, st := range s.streams {
		if err := e.reconcile(st); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s %q: %v", op, s.callID, errs)
	}
	return nil
}
