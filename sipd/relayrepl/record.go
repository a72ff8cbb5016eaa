// Package relayrepl replicates the calls of a relay-only sipd (sipd
// -relay-only) through Redis, so that a standby node for the same
// floating relay address holds every call's ports and kernel flows ahead
// of time and carries their media as soon as the address moves to it
// (keepalived, or an operator with ip addr). It is the counterpart of
// rtpengine's Redis keyspaces, in keys of its own:
//
//	sipxdp:relay:GROUP:call:CALLID   string: a Record as JSON
//	sipxdp:relay:GROUP:changes       stream: one entry per write,
//	                                 fields op (set or del), call, node
//
// The node that holds the relay address (active) writes a call's record
// on offer, answer and delete, and when one of its flows locks its
// latch (an event per flow, not per packet). A node that does not hold
// the address (standby) loads every record at start, then follows the
// stream with XREAD BLOCK: a stream does not lose the changes made while
// the follower reconnects, which keyspace notifications would. It
// restores each call with the same ports, its latches locked to the
// replicated (or else announced) peers, and holds it out of its media
// timeout; when the address becomes local, or a proxy sends NG for one of
// those calls, it takes them over: their timeouts run from then, it
// answers query and delete, and it writes their records itself.
//
// Not replicated: packet counters, and calls whose media the relay
// terminates (SRTP or DTLS bridged by the relay): their keys and DTLS
// associations live in the active's memory only, so such calls are not
// followed and their phones must re-handshake with a new call.
package relayrepl

import (
	"encoding/json"
	"fmt"
	"time"

	"sipxdp/relay"
)

// Record is what a call's key holds.
type Record struct {
	// Node is the relay-only node that wrote the record.
	Node    string    `json:"node"`
	Updated time.Time `json:"updated"`
	// Call is the media controller's state of the call (media.Controller
	// State): tags, the relay address name and ports of each leg, the
	// announced peers and rtcp-mux, the sides' signaling addresses.
	Call json.RawMessage `json:"call"`
	// Latches are the directions whose latch is locked, with the source
	// they locked to.
	Latches []Latch `json:"latches,omitempty"`
}

// Latch is one locked direction of a call: the packets arriving on side
// Side of stream Stream (RTP, or RTCP when RTCP is set) come from
// Latch.Source.
type Latch struct {
	Stream int         `json:"stream"`
	Side   relay.Side  `json:"side"`
	RTCP   bool        `json:"rtcp,omitempty"`
	Latch  relay.Latch `json:"latch"`
}

// decodeRecord reads a key's value.
func decodeRecord(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("decode call record: %w", err)
	}
	if len(r.Call) == 0 {
		return Record{}, fmt.Errorf("decode call record: no call state")
	}
	for _, l := range r.Latches {
		if l.Side > relay.SideB {
			return Record{}, fmt.Errorf("decode call record: latch side %d", l.Side)
		}
		if err := l.Latch.Validate(); err != nil {
			return Record{}, fmt.Errorf("decode call record: %w", err)
		}
	}
	return r, nil
}

// latches lists the locked directions of a session.
func latches(si relay.SessionInfo) []Latch {
	var out []Latch
	for _, st := range si.Streams {
		for s, leg := range [2]relay.LegInfo{st.A, st.B} {
			for i, l := range [2]relay.Latch{leg.RTPLatch, leg.RTCPLatch} {
				if l.Locked {
					l.Until = time.Time{}
					out = append(out, Latch{Stream: st.Index, Side: relay.Side(s), RTCP: i == 1, Latch: l})
				}
			}
		}
	}
	return out
}
