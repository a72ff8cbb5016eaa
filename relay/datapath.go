// Package relay is the media relay engine: it owns the truth about sessions,
// legs and flows, and pushes copies of ready flows to a Datapath. It
// decides who may latch a relay port (latch.go: a ranked learning window,
// then a lock; the kernel map holds a copy of the decision) and hands out
// relay ports at random (ports.go), so a call's media cannot be taken by
// whoever sprays the relay's ports (RTP bleed).
package relay

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"sipxdp/relay/cryptoleg"
)

// FlowKey names one direction of media: packets that arrive at the relay's
// Local address and port.
type FlowKey struct {
	Local netip.AddrPort
}

func (k FlowKey) String() string { return k.Local.String() }

// Flow is one direction of a relayed stream. A packet that arrives at
// Key.Local from Peer is sent on with source Out and destination Dst.
type Flow struct {
	Key FlowKey
	// Peer is the expected source. While Learning it is the latched
	// source (Rank says how good; a RankOther one is only a candidate),
	// or the announced address while nothing is latched (Rank RankNone).
	// Once locked it is the real source observed on the wire, and the
	// only one accepted.
	Peer netip.AddrPort
	// Learning means the source is not locked yet: the kernel passes every
	// packet up, and the userspace datapath ranks sources (see Latch).
	Learning bool
	// Strict restricts latching to sources whose IP is the announced one.
	Strict bool

	// What a learning flow ranks sources by; ignored once locked.
	//
	// Announced is the side's media address from SDP (invalid until the
	// side announces).
	Announced netip.AddrPort
	// Hints are IPs as trusted as the announced one (RankIP): the side's
	// signaling address, and for RTCP the IP its RTP latched to.
	Hints [2]netip.Addr
	// Rank of Peer.
	Rank Rank
	// LearnUntil closes the learning window; zero: never (the side has not
	// announced).
	LearnUntil time.Time
	// NoCandidates: RankOther sources are dropped, never held (RTCP, and a
	// side that has not announced).
	NoCandidates bool
	// Learn is how the sending side learns (SideOptions.Learning): the
	// userspace datapath locks to the first source under LearnImmediate,
	// and ranks every source alike under LearnDelayed.
	Learn LearnMode
	// Handover: once locked, a packet from another source moves the flow
	// to that source (SideOptions.Handover). The kernel passes such
	// packets up as it does every wrong source; userspace re-latches.
	Handover bool
	// Hold: the flow learns, but forwards nothing (the receiver asked for
	// NAT-wait and has not sent yet). Userspace only.
	Hold bool

	// Out is the relay's address and port on the other leg: the new source.
	Out netip.AddrPort
	// Dst is the other party: the new destination.
	Dst netip.AddrPort
	// SrcMAC, DstMAC and OutIfindex pin the layer-2 next hop. When all are
	// set the kernel path uses them and skips the FIB lookup.
	SrcMAC, DstMAC net.HardwareAddr
	OutIfindex     int

	// What only the userspace datapath does (see UserspaceOnly).
	//
	// In is the crypto of the leg packets arrive on: it decrypts them, and
	// answers STUN and DTLS on its port. OutLeg encrypts for the leg they
	// leave by. Nil: plain RTP on that leg.
	In, OutLeg *cryptoleg.Leg
	// ICE: In is ICE-lite, and only a source that passed STUN with the
	// leg's credentials is latched.
	ICE bool
	// RTCP: the flow arrives on an RTCP port, so its packets are RTCP
	// (on a muxed port the payload type tells).
	RTCP bool
	// RTCPOut and RTCPDst take a muxed sender's RTCP to a receiver that
	// does not mux (rtpengine's rtcp-mux-demux); zero: RTCP goes with RTP.
	RTCPOut, RTCPDst netip.AddrPort

	// TOS, when set, is the IPv4 TOS byte or IPv6 traffic class of every
	// packet the flow sends (rtpengine's TOS). Unset, the kernel keeps
	// the packet's own and userspace sends with the socket's default (0).
	TOS TOS
	// Drop: the call's media is dropped (rtpengine's drop-traffic=start):
	// packets from Peer are discarded, not counted in the flow's stats
	// (rtpengine drops them before its stream counts them), and not
	// forwarded. Those from elsewhere are treated as without it.
	Drop bool
}

// TOS is an IP TOS byte (IPv6: traffic class), DSCP and ECN bits alike,
// written whole as rtpengine does; the zero value leaves it alone.
type TOS struct {
	Set   bool  `json:"set,omitempty"`
	Value uint8 `json:"value,omitempty"`
}

func (t TOS) String() string {
	if !t.Set {
		return "default"
	}
	return fmt.Sprintf("0x%02x", t.Value)
}

// UserspaceOnly says why f needs the userspace datapath ("" if it does
// not): the kernel programs forward packets unchanged to one place.
func (f Flow) UserspaceOnly() string {
	switch {
	case f.In != nil || f.OutLeg != nil:
		in, out := cryptoleg.Plain, cryptoleg.Plain
		if f.In != nil {
			in = f.In.Kind()
		}
		if f.OutLeg != nil {
			out = f.OutLeg.Kind()
		}
		return "SRTP bridged in userspace (" + in.String() + " to " + out.String() + ")"
	case f.RTCPOut.IsValid():
		return "rtcp-mux demultiplexed in userspace"
	case f.Hold:
		return "held until the receiver sends (NAT-wait)"
	}
	return ""
}

// FlowStats are the counters of one flow on one datapath. Bytes counts UDP
// payload bytes, so kernel and userspace figures add up.
type FlowStats struct {
	Packets  uint64
	Bytes    uint64
	LastSeen time.Time // zero if no packet was seen
}

// Add returns the sum of two sets of counters, keeping the latest LastSeen.
func (s FlowStats) Add(o FlowStats) FlowStats {
	s.Packets += o.Packets
	s.Bytes += o.Bytes
	if o.LastSeen.After(s.LastSeen) {
		s.LastSeen = o.LastSeen
	}
	return s
}

// Datapath forwards flows. Implementations: the kernel (XDP or tc) in
// package bpf and the Go relay in usrelay.
type Datapath interface {
	Name() string                       // "xdp", "xdp-generic", "tc", "userspace"
	Upsert(f Flow) error                // install or replace one direction
	Delete(k FlowKey) error             // ErrFlowNotFound if absent
	Stats(k FlowKey) (FlowStats, error) // ErrFlowNotFound if absent
	Close() error
}

// CrossFamilyPath is implemented by a Datapath that may relay a flow whose
// Out and Dst are of the other address family than its Key: an IPv4 leg
// and an IPv6 leg of one stream. The userspace relay always can (its
// sockets send in either family); the kernel programs can when they were
// loaded with the translation (bpf.Kernel). A datapath that does not
// implement it is not asked to.
type CrossFamilyPath interface {
	CrossFamily() bool
}

// crossFamily reports whether dp relays flows between families.
func crossFamily(dp Datapath) bool {
	c, ok := dp.(CrossFamilyPath)
	return ok && c.CrossFamily()
}
