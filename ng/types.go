// Package ng speaks rtpengine's NG control protocol: "<cookie> <bencoded
// dictionary>" (or a JSON object in its place) over UDP (and TCP), so a
// SIP proxy's rtpengine module (Kamailio, OpenSIPS) can drive this
// project's relay without change.
//
// The package decodes and encodes the wire format, answers ping and
// statistics itself, caches replies by cookie so a retransmitted command
// is not executed twice, and hands offer, answer, delete, query and list
// to a Backend.
package ng

import (
	"net/netip"
	"time"
)

// Request is one decoded command. Keys are normalised: rtpengine treats
// "call-id" and "call id" alike, and so does this package.
type Request struct {
	Command   string // ping, offer, answer, delete, query, list, statistics
	CallID    string
	FromTag   string
	ToTag     string
	ViaBranch string
	SDP       []byte
	// Flags holds the "flags" list and key=value entries: a bare flag
	// maps to "", "key=value" to value. Keys are lower case.
	Flags             map[string]string
	Replace           []string // "origin", "session-connection", ...
	ICE               string   // "remove", "force", ...
	Direction         []string // e.g. ["external", "internal"]
	ReceivedFrom      []string // ["IP4", "192.0.2.1"]
	RTCPMux           []string // "demux", "offer", ...
	TransportProtocol string   // "RTP/AVP", ...
	SIPMessageType    string   // "sip-request" / "sip-reply"
	Limit             int      // list: the most call IDs to return; 0: all
	// Source is where the command came from (for logs and for
	// received-from defaults).
	Source netip.AddrPort
}

// Backend does the media work behind the commands.
type Backend interface {
	// Offer and Answer return the SDP rewritten to point at the relay.
	// Offer refuses a new call it cannot take for load with an error
	// wrapping ErrLoadLimit or ErrOutOfPorts, so the proxy tries the next
	// relay of its set. A nil SDP with no error is a message consumed
	// with no SDP to return (a trickle ICE fragment): the reply has no
	// "sdp" key, as rtpengine's.
	Offer(r *Request) ([]byte, error)
	Answer(r *Request) ([]byte, error)
	// Delete removes the call's flows (all of them, or the from-tag's
	// side when only that is given, as rtpengine does for a fork); the
	// returned call stats are what the call carried.
	Delete(r *Request) (CallStats, error)
	// Query reports the call's counters.
	Query(r *Request) (CallStats, error)
	// List returns up to limit call IDs (0: all).
	List(limit int) []string
}

// CallStats is what query and delete report, shaped into rtpengine's
// reply by the package.
type CallStats struct {
	Created    time.Time
	LastSignal time.Time
	Tags       []TagStats
	// Warning goes into the reply's "warning" key with result ok
	// (rtpengine's answer to a delete of an unknown call).
	Warning string
}

// TagStats is one side (one SIP tag) of a call.
type TagStats struct {
	Tag string
	// Label is the side's label (rtpengine's label flag), "" for none.
	Label          string
	InDialogueWith string
	Created        time.Time
	Medias         []MediaStats
}

// MediaStats is one m= line of a side.
type MediaStats struct {
	Index    int           // 1-based, as rtpengine numbers them
	Type     string        // "audio"
	Protocol string        // "RTP/AVP"
	Streams  []StreamStats // RTP, then RTCP
}

// StreamStats is one relay port of a side.
type StreamStats struct {
	LocalPort  uint16
	Endpoint   netip.AddrPort // the peer the relay sends to / latched from
	Advertised netip.AddrPort // the endpoint as the SDP announced it
	LastPacket time.Time
	RTCP       bool
	Packets    uint64
	Bytes      uint64
	Errors     uint64
	Kernel     bool // forwarded by the kernel datapath
}
