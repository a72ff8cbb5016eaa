package sipserver

import (
	"bytes"
	"net/netip"

	"sipxdp/sipd/protect"
	"sipxdp/sipd/proxy"
)

// A source over the flood limit is banned: what it sends is dropped
// before parsing. Over UDP the source may be forged, and then the ban
// lands on whoever really owns the address. bannedPass lets through, from
// the raw bytes, what only that owner can send (the core checks each
// again before serving it), within a per-source allowance so the owner
// of a banned address cannot flood with it either:
//
//   - credentials whose opaque ties their nonce to this address
//     (protect.Binder): the forger never saw a challenge sent there;
//   - in-dialog requests, and CANCELs, of a call the dialog tracker has
//     live: the forger does not know its Call-ID and tags;
//   - responses to our requests (our branch), as from a source that is
//     not banned: responses are never counted;
//   - once per sip.protect.banned_challenge_interval, a request without
//     credentials, to be challenged: a phone whose nonce expired gets a
//     new one. Under a running flood the forged requests take most of
//     these turns; once it stops, the owner gets in at once rather than
//     after ban_time. Each turn reflects one challenge to the address.
//
// What remains possible: a flood in someone's name still stops that
// address's requests that carry no proof (keep-alives, a first REGISTER,
// a phone that does not return the opaque) for ban_time.

// isBanned is the core's view of the ban: only datagram sources are
// banned and still heard (a banned connection is closed).
func (s *Server) isBanned(transport string, ip netip.Addr) bool {
	return transport == "UDP" && s.pike.Banned(ip)
}

// bannedPass tells whether a datagram from the banned source ip carries
// proof (see above) and may go on to the core.
func (s *Server) bannedPass(ip netip.Addr, data []byte) bool {
	if len(data) > s.cfg.MaxSize {
		return false
	}
	sc, ok := protect.ScanMessage(data)
	if !ok {
		return false
	}
	if sc.Response {
		return bytes.HasPrefix(sc.Branch, []byte(proxy.BranchPrefix)) && s.pike.Pass(ip, protect.PassResponse)
	}
	for _, c := range sc.Creds[:sc.NCreds] {
		if s.binder.Check(ip, c.Nonce, c.Opaque) {
			return s.pike.Pass(ip, protect.PassCredentials)
		}
	}
	cancel := bytes.Equal(sc.Method, []byte("CANCEL"))
	if len(sc.ToTag) > 0 || cancel {
		return s.inLiveDialog(sc) && s.pike.Pass(ip, protect.PassDialog)
	}
	if sc.NCreds == 0 && !bytes.Equal(sc.Method, []byte("ACK")) {
		return s.pike.ChallengeSlot(ip)
	}
	return false
}

// inLiveDialog tells whether a scanned request names a call being set up
// or in progress. A Record-Route token (proxy's dialog-bound routing)
// proves less than this, that sipd routed the dialog once, not that it is
// live; it could admit a call's requests here for a dialog the tracker
// no longer knows (after a restart without dialog state), within the
// same allowance.
func (s *Server) inLiveDialog(sc protect.Scan) bool {
	if len(sc.CallID) == 0 || len(sc.FromTag) == 0 {
		return false
	}
	return s.dialogs.Live(string(sc.CallID), string(sc.FromTag), string(sc.ToTag))
}
