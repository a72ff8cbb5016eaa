package webrtcsdp

import "net/netip"

// RTCPMux is what a Profile does with rtcp-mux (rtpengine's rtcp-mux-offer, -accept, -demux).
type RTCPMux uint8

const (
	RTCPMuxKeep   RTCPMux = iota // leave as it is
	RTCPMuxOffer                 // add a=rtcp-mux
	RTCPMuxAccept                // keep a=rtcp-mux only if the other side offered it (Profile.MuxOffered)
	RTCPMuxDemux                 // remove a=rtcp-mux, announce Profile.RTCPPort in a=rtcp
)

// DTLS is what the relay announces for DTLS-SRTP on one m-line.
type DTLS struct {
	Fingerprint Fingerprint
	Setup       string
}

// Profile is what one side of a call needs on one m-line: the SDP toward a browser and the SDP toward a phone
// are the same offer through two Profiles.
type Profile struct {
	Proto string // "" keeps the protocol
	// ICE: nil removes ICE, otherwise the relay's ICE-lite attributes replace the endpoint's.
	ICE *ICE
	// DTLS: nil removes the DTLS attributes.
	DTLS *DTLS
	// Crypto: nil or empty removes a=crypto; otherwise these lines replace the endpoint's.
	Crypto []Crypto

	RTCPMux    RTCPMux
	MuxOffered bool   // for RTCPMuxAccept
	RTCPPort   uint16 // for RTCPMuxDemux
}

// Apply rewrites m-line i to p. It stops at the first error, leaving b partly rewritten: callers work on a
// fresh Parse of the body per side.
func Apply(b *Body, i int, p Profile) error {
	if p.Proto != "" {
		if err := SetProto(b, i, p.Proto); err != nil {
			return err
		}
	}
	var err error
	if p.ICE != nil {
		err = SetICE(b, i, *p.ICE)
	} else {
		err = RemoveICE(b, i)
	}
	if err != nil {
		return err
	}
	if p.DTLS != nil {
		err = SetDTLS(b, i, p.DTLS.Fingerprint, p.DTLS.Setup)
	} else {
		err = RemoveDTLS(b, i)
	}
	if err != nil {
		return err
	}
	if err := SetCrypto(b, i, p.Crypto...); err != nil {
		return err
	}
	switch p.RTCPMux {
	case RTCPMuxOffer:
		return OfferRTCPMux(b, i)
	case RTCPMuxAccept:
		return AcceptRTCPMux(b, i, p.MuxOffered)
	case RTCPMuxDemux:
		// RTCP at the m-line's own c= address: a=rtcp needs no address then.
		return DemuxRTCP(b, i, p.RTCPPort, netip.Addr{})
	}
	return nil
}
