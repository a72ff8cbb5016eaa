package proxy

import (
	"context"
	"net"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/relay"
	"sipxdp/sipd/media"
)

// byeCSeqStep is the CSeq of the BYEs the proxy sends on its own. It must be
// above anything either side has used in the dialog, which the proxy does
// not count; phones start low and count up by one per request.
const byeCSeqStep = 100000

// MediaEnded closes a call the relay found silent: the CDR records the
// reason, and each side gets a BYE so the phones hang up too.
//
// Each BYE carries the route set on its side of sipd, taken from the 2xx's
// Record-Route, so other record-routing proxies on the path see it too;
// it is sent to the address that side's signaling came from, which is the
// first of those proxies, or the phone itself.
func (p *Proxy) MediaEnded(e media.Ended) {
	if p.dialogs != nil {
		p.dialogs.End(e.CallID, e.CallerTag, e.CalleeTag, e.Reason)
	}
	inv, ok := e.Dialog.Invite, e.Dialog.OK
	if inv == nil || ok == nil || p.stopped.Load() {
		return
	}
	// A failed crypto leg is a media negotiation that did not work out
	// (488); silence is a timeout (408). The text is the engine's, quoted.
	cause := "408"
	if relay.IsLegFailure(e.Reason) {
		cause = "488"
	}
	reason := sip.NewHeader("Reason", `SIP;cause=`+cause+`;text="`+strings.NewReplacer(`"`, "'", `\`, "/", "\r", " ", "\n", " ").Replace(e.Reason)+`"`)
	var seq uint32 = byeCSeqStep
	if c := inv.CSeq(); c != nil {
		seq += c.SeqNo
	}
	toCallee, toCaller := p.routeSets(ok)
	// Towards the callee, in the caller's name.
	if c, okc := ok.GetHeader("Contact").(*sip.ContactHeader); okc {
		p.sendBye(c.Address, toCallee, ok.Source(), ok.Transport(), sip.HeaderClone(inv.From()).(*sip.FromHeader),
			sip.HeaderClone(ok.To()).(*sip.ToHeader), inv.CallID(), seq, reason)
	}
	// Towards the caller, in the callee's name: From and To swap.
	if c, okc := inv.GetHeader("Contact").(*sip.ContactHeader); okc {
		from := &sip.FromHeader{DisplayName: ok.To().DisplayName, Address: ok.To().Address, Params: ok.To().Params.Clone()}
		to := &sip.ToHeader{DisplayName: inv.From().DisplayName, Address: inv.From().Address, Params: inv.From().Params.Clone()}
		p.sendBye(c.Address, toCaller, inv.Source(), inv.Transport(), from, to, inv.CallID(), byeCSeqStep, reason)
	}
}

// routeSets splits the 2xx's Record-Route list at sipd's own entries (one,
// or two when the sides use different transports; with PeerRoutes, a
// failed node's when the call was taken over). The entries above
// ours are the proxies between sipd and the callee, whom a BYE towards the
// callee visits in reverse order; those below ours lie between sipd and
// the caller, visited in order. Without an entry of ours there is no
// dialog route through sipd, and both sets are empty.
func (p *Proxy) routeSets(ok *sip.Response) (toCallee, toCaller []sip.Uri) {
	var rr []sip.Uri
	for _, h := range ok.GetHeaders("Record-Route") {
		if r, isRR := h.(*sip.RecordRouteHeader); isRR {
			rr = append(rr, r.Address)
		}
	}
	first, last := -1, -1
	for i := range rr {
		if p.self.IsSelf(&rr[i]) {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 && p.cfg.PeerRoutes {
		// A call taken over from a failed node: its entries are that
		// node's, known by their token.
		callID, tagA, tagB := ok.CallID().Value(), ok.From().Params.GetOr("tag", ""), ok.To().Params.GetOr("tag", "")
		for i := range rr {
			if p.routes.fits(&rr[i], callID, tagA, tagB) {
				if first < 0 {
					first = i
				}
				last = i
			}
		}
	}
	if first < 0 {
		return nil, nil
	}
	for i := first - 1; i >= 0; i-- {
		toCallee = append(toCallee, rr[i])
	}
	toCaller = append(toCaller, rr[last+1:]...)
	return toCallee, toCaller
}

// sendBye sends one BYE outside any dialog state of ours, through the
// given route set; the answer is read and dropped.
func (p *Proxy) sendBye(ruri sip.Uri, routes []sip.Uri, dest, transport string, from *sip.FromHeader, to *sip.ToHeader, callID *sip.CallIDHeader, seq uint32, extra sip.Header) {
	if p.stopped.Load() {
		return // at shutdown a send would open a socket nobody closes
	}
	host, _, err := net.SplitHostPort(dest)
	if err != nil {
		p.log.Debug("media timeout bye: bad destination", "dest", dest, "error", err)
		return
	}
	transport = strings.ToUpper(transport)
	if transport == "" {
		transport = "UDP"
	}
	l, ok := p.self.Listener(transport, hostIP(host))
	if !ok {
		p.log.Debug("media timeout bye: no listener", "transport", transport)
		return
	}
	req := sip.NewRequest(sip.BYE, *ruri.Clone())
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport,
		Host: l.host(), Port: int(l.Addr.Port()), Params: sip.NewParams()}
	via.Params.Add("branch", branchMagic+randHex(8))
	via.Params.Add("rport", "")
	req.AppendHeader(via)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(sip.HeaderClone(callID))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: sip.BYE})
	for _, r := range routes {
		req.AppendHeader(&sip.RouteHeader{Address: *r.Clone()})
	}
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	if extra != nil {
		req.AppendHeader(extra)
	}
	req.SetBody(nil)
	req.SetTransport(transport)
	req.SetDestination(dest)
	if transport == "UDP" {
		req.Laddr = sip.Addr{IP: l.Addr.Addr().AsSlice(), Port: int(l.Addr.Port())}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tx, err := p.ua.TransactionLayer().Request(ctx, req)
	if err != nil {
		p.log.Debug("media timeout bye failed", "dest", dest, "error", err)
		return
	}
	p.forwarded.Add(1)
	go func() {
		defer tx.Terminate()
		for {
			select {
			case <-tx.Responses():
			case <-tx.Done():
				return
			}
		}
	}()
}
