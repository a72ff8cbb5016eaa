package ng

import "errors"

// Errors a Backend wraps to refuse a new call's offer in a way a proxy's
// rtpengine module takes as "try the next relay of the set" rather than
// failing the call. Any other error fails the command.
//
// What the modules look for, from their sources: Kamailio's
// (https://github.com/kamailio/kamailio/blob/5.6/src/modules/rtpengine/rtpengine.c,
// the same on master) sends supports: ["load limit"] with every command
// and tries the next relay on result "load limit", or on result "error"
// with an error-reason equal, byte for byte, to "Parallel session limit
// reached" or "Ran out of ports". OpenSIPS's
// (https://github.com/OpenSIPS/opensips/blob/master/modules/rtpengine/rtpengine.c,
// rtpe_default_failover_errors) knows no "load limit" result and tries
// the next relay on result "error" whose error-reason matches one of its
// list, ignoring case; both strings are on it. rtpengine itself
// (https://github.com/sipwise/rtpengine/blob/master/daemon/call_interfaces.c)
// answers a client that does not announce "load limit" with the legacy
// error; the Server does the same.
var (
	// ErrLoadLimit: the relay takes no new calls for now (draining).
	// Answered with result "load limit" to a client that supports it,
	// else with error-reason ReasonSessionLimit.
	ErrLoadLimit = errors.New("relay not taking new calls")
	// ErrOutOfPorts: the relay has no free port for the call. Answered
	// with error-reason ReasonOutOfPorts.
	ErrOutOfPorts = errors.New("relay out of ports")
)

// The error-reason strings the modules match exactly (see ErrLoadLimit).
const (
	ReasonSessionLimit = "Parallel session limit reached"
	ReasonOutOfPorts   = "Ran out of ports"
)

// SupportsLoadLimit reports whether the client announced supports:
// ["load limit"] (ParseRequest makes it the flag "supports-load-limit").
func (r *Request) SupportsLoadLimit() bool {
	_, ok := r.Flags["supports-load-limit"]
	return ok
}

// failureReply is the reply to a command the Backend failed with err.
// Only an offer is refused with the replies that send a proxy to the
// next relay: moving an answer or a delete there would lose the call.
// The reply's message says what happened in full.
func failureReply(r *Request, err error) map[string]any {
	if r.Command == "offer" {
		switch {
		case errors.Is(err, ErrLoadLimit) && r.SupportsLoadLimit():
			return map[string]any{"result": "load limit", "message": err.Error()}
		case errors.Is(err, ErrLoadLimit):
			return refusal(ReasonSessionLimit, err)
		case errors.Is(err, ErrOutOfPorts):
			return refusal(ReasonOutOfPorts, err)
		}
	}
	return errorReply(err.Error())
}

func refusal(reason string, err error) map[string]any {
	rep := errorReply(reason)
	rep["message"] = err.Error()
	return rep
}
