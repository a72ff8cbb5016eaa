package relay

import "fmt"

// Per-call options that signaling sets (rtpengine's NG flags asymmetric,
// endpoint-learning, NAT-wait, media handover, pierce NAT and TOS). They live in the session, so streams added later get them too,
// and reach the datapaths through each direction's Flow.

// SideOptions are what one side's offer or answer says about its media.
type SideOptions struct {
	// Asymmetric: the side sends from another address than the one it
	// receives on (rtpengine's asymmetric, rtpproxy's "a"). Its flows
	// still latch the source they accept, but what is sent to the side
	// goes to the address its SDP announced, never to the latched source.
	Asymmetric bool `json:"asymmetric,omitempty"`
	// Learning is how the side's flows learn its source (rtpengine's
	// endpoint-learning); see LearnMode.
	Learning LearnMode `json:"learning,omitempty"`
	// NATWait: nothing is sent to the side until a packet from it has
	// latched (rtpengine's NAT-wait), so the side's NAT or firewall sees
	// its own packet leave before the relay's arrive.
	NATWait bool `json:"nat_wait,omitempty"`
	// Handover: a locked flow from the side follows a new source instead
	// of dropping it, and what goes to the side follows too (rtpengine's
	// media handover). Anyone who learns the relay's port can take the
	// call's media over: the side asked for it.
	Handover bool `json:"handover,omitempty"`
	// PierceNAT: until the side's flows lock, the relay sends a small
	// packet to the side's SDP address once a second, from the port the
	// side sends to (rtpengine's pierce NAT; see pierce.go).
	PierceNAT bool `json:"pierce_nat,omitempty"`
}

// LearnMode is rtpengine's endpoint-learning for one side.
type LearnMode uint8

const (
	// LearnHeuristic is the relay's default and rtpengine's: sources are
	// ranked during the learning window (see Latch).
	LearnHeuristic LearnMode = iota
	// LearnImmediate locks to the first source a packet comes from,
	// whatever its rank (without media.strict_source).
	LearnImmediate
	// LearnDelayed is rtpengine's legacy learning: every source is as good
	// as another during the window, the latest one seen wins (forwarded
	// and sent to at once), and the flow locks to it when the window
	// closes. Only the announced address and port still locks at once.
	LearnDelayed
	// LearnOff: what goes to the side always goes to its SDP address; the
	// side's flows still latch the source they accept (strict source is
	// always on in this relay).
	LearnOff
)

var learnNames = [...]string{LearnHeuristic: "heuristic", LearnImmediate: "immediate", LearnDelayed: "delayed", LearnOff: "off"}

func (m LearnMode) String() string {
	if int(m) < len(learnNames) {
		return learnNames[m]
	}
	return fmt.Sprintf("learn(%d)", uint8(m))
}

// ParseLearnMode reads rtpengine's endpoint-learning values.
func ParseLearnMode(s string) (LearnMode, bool) {
	for i, n := range learnNames {
		if s == n {
			return LearnMode(i), true
		}
	}
	return LearnHeuristic, false
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
	if o.PierceNAT {
		e.piercing[s] = struct{}{} // pierce drops it when no side asks any more
	}
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
