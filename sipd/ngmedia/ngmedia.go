// Package ngmedia relays calls' media through a set of NG relays
// (rtpengine, or sipd -relay-only nodes) instead of the embedded engine:
// it follows each call's offer/answer exchange (RFC 3264) in the SIP
// messages the proxy shows it and sends offer, answer and delete to the
// call's relay, as Kamailio's rtpengine_manage does.
package ngmedia

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/ng"
	"sipxdp/sipd/media"
	"sipxdp/sipd/relayset"
)

// commandTimeout bounds one NG exchange including failover: the client's
// retransmissions on each relay tried stay within it.
const commandTimeout = 10 * time.Second

// Flags every offer and answer carries, so the relay writes its own
// address into the SDP (origin and session c= line too) and strips ICE
// candidates that would let media bypass it, as Kamailio configurations
// usually ask with rtpengine_manage("replace-origin
// replace-session-connection ICE=remove").
var (
	replace = []string{"origin", "session-connection"}
	flags   = []string{"ICE=remove"}
)

// Controller is a proxy.MediaController over a relay set.
type Controller struct {
	mode string
	set  *relayset.Set
	log  *slog.Logger

	mu        sync.Mutex
	calls     map[string]*call // by Call-ID
	onTimeout func(media.Ended)
}

// call is what the controller keeps of a relayed call: whose offer awaits
// an answer.
type call struct {
	callerTag string
	offerer   string // tag of the side whose offer is unanswered; "": none
	calleeTag string // the tag of the 2xx's sender, once answered
	dialog    media.Dialog
}

// New returns a controller relaying the calls media mode mode selects
// through set. A nil log discards.
func New(mode string, set *relayset.Set, log *slog.Logger) *Controller {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Controller{mode: mode, set: set, log: log, calls: map[string]*call{}}
}

// Relays reports whether a new call is relayed (media.Relays).
func (c *Controller) Relays(req *sip.Request, nated bool) bool {
	return media.Relays(c.mode, req, nated)
}

// OfferPairs is media.OfferPairs: the relay's ports are not this host's,
// but the setup caps count calls in setup the same way.
func (c *Controller) OfferPairs(req *sip.Request) int { return media.OfferPairs(req) }

// Active returns how many calls are relayed now.
func (c *Controller) Active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

// Invite starts relaying a call: its offer, if any, goes to the relay the
// set picks (failing over to the next when one is down or full).
func (c *Controller) Invite(req *sip.Request, callee netip.Addr, calleeTransport string) error {
	id := req.CallID().Value()
	from := req.From().Params.GetOr("tag", "")
	c.mu.Lock()
	if _, ok := c.calls[id]; !ok {
		c.calls[id] = &call{callerTag: from, dialog: media.SlimDialog(req, nil)}
	}
	c.mu.Unlock()
	if !media.IsSDP(req) {
		return nil // late offer: it comes in the 2xx
	}
	if err := c.exchange(id, from, "", req.Body(), source(req), req.SetBody); err != nil {
		c.forget(id)
		return err
	}
	return nil
}

// Request follows SDP in an in-dialog request (re-INVITE, UPDATE, ACK,
// PRACK); a BYE deletes the call on its relay.
func (c *Controller) Request(req *sip.Request) error {
	id := req.CallID().Value()
	if req.Method == sip.BYE {
		c.End(id, "bye")
		return nil
	}
	if !media.IsSDP(req) || !c.known(id) {
		return nil
	}
	return c.exchange(id, req.From().Params.GetOr("tag", ""), req.To().Params.GetOr("tag", ""), req.Body(), source(req), req.SetBody)
}

// Response rewrites the SDP of a provisional or successful response.
func (c *Controller) Response(res *sip.Response) {
	if res.StatusCode < 101 || res.StatusCode >= 300 {
		return
	}
	id := res.CallID().Value()
	if !c.known(id) {
		return
	}
	if res.IsSuccess() && res.CSeq() != nil && res.CSeq().MethodName == sip.INVITE {
		c.answered(id, res)
	}
	if !media.IsSDP(res) {
		return
	}
	// A response is sent by the request's recipient: its To tag.
	sender, peer := res.To().Params.GetOr("tag", ""), res.From().Params.GetOr("tag", "")
	final := res.IsSuccess()
	err := c.exchange(id, sender, peer, res.Body(), source(res), func(b []byte) {
		res.SetBody(b)
	})
	if err != nil {
		c.log.Warn("ngmedia: response sdp left as is", "call_id", id, "code", res.StatusCode, "err", err)
		return
	}
	if !final {
		// An early answer: the 2xx repeats it, and is an answer too.
		c.mu.Lock()
		if cl := c.calls[id]; cl != nil && cl.offerer == "" {
			cl.offerer = peer
		}
		c.mu.Unlock()
	}
}

// exchange sends sender's SDP to the call's relay: as an answer when the
// peer's offer is pending, else as an offer. set receives the relay's SDP.
func (c *Controller) exchange(id, sender, peer string, sdp []byte, src netip.Addr, set func([]byte)) error {
	c.mu.Lock()
	cl := c.calls[id]
	answer := cl != nil && cl.offerer != "" && cl.offerer == peer
	c.mu.Unlock()
	cmd := &ng.Command{CallID: id, FromTag: sender, ToTag: peer, SDP: sdp, Flags: flags, Replace: replace}
	if src.IsValid() {
		family := "IP4"
		if src.Is6() {
			family = "IP6"
		}
		cmd.Extra = map[string]any{"received-from": []string{family, src.String()}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var (
		out []byte
		err error
	)
	if answer {
		// NG's answer names the offerer in from-tag.
		cmd.FromTag, cmd.ToTag = peer, sender
		out, err = c.set.Answer(ctx, cmd)
	} else {
		out, _, err = c.set.Offer(ctx, cmd)
	}
	if err != nil {
		if errors.Is(err, relayset.ErrNoRelay) || errors.Is(err, ng.ErrTimeout) || ng.IsOverloaded(err) {
			return fmt.Errorf("%w: %w", media.ErrUnavailable, err)
		}
		return err
	}
	c.mu.Lock()
	if cl := c.calls[id]; cl != nil {
		if answer {
			cl.offerer = ""
		} else {
			cl.offerer = sender
		}
	}
	c.mu.Unlock()
	set(out)
	return nil
}

// End deletes the call on its relay (BYE, CANCEL, failure). Unknown
// calls are ignored.
func (c *Controller) End(callID, reason string) {
	if !c.forget(callID) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	if _, err := c.set.Delete(ctx, &ng.Command{CallID: callID}); err != nil && !errors.Is(err, relayset.ErrUnknownCall) {
		c.log.Warn("ngmedia: delete on relay", "call_id", callID, "reason", reason, "err", err)
		return
	}
	c.log.Debug("ngmedia: call no longer relayed", "call_id", callID, "reason", reason)
}

// saved is a call's state as State keeps it with the dialog: the relay
// it is on and what the controller follows of it. The media state itself
// is on the relay.
type saved struct {
	Relay     string          `json:"relay"`
	CallerTag string          `json:"caller_tag"`
	CalleeTag string          `json:"callee_tag,omitempty"`
	Offerer   string          `json:"offerer,omitempty"`
	Dialog    json.RawMessage `json:"dialog,omitempty"`
}

// State is the call's relay and tags, kept with the dialog (in the file
// journal, or in Redis for the other proxies), so that a restarted sipd
// or another node can send its answers, re-offers and delete to the same
// relay (Restore). False for a call not relayed, or on no relay yet.
func (c *Controller) State(callID string) ([]byte, bool) {
	url := c.set.RelayOf(callID)
	c.mu.Lock()
	cl := c.calls[callID]
	if cl == nil || url == "" {
		c.mu.Unlock()
		return nil, false
	}
	sv := saved{Relay: url, CallerTag: cl.callerTag, CalleeTag: cl.calleeTag, Offerer: cl.offerer}
	d := cl.dialog
	c.mu.Unlock()
	sv.Dialog = media.SaveDialog(d)
	b, err := json.Marshal(sv)
	if err != nil {
		return nil, false
	}
	return b, true
}

// Restore takes over a call State saved: it sticks to its relay again,
// and its in-dialog requests, BYE and media timeout are followed as if
// this controller had set it up. A call already known is left as is.
func (c *Controller) Restore(callID string, state []byte, _ time.Time) error {
	var sv saved
	if err := json.Unmarshal(state, &sv); err != nil {
		return fmt.Errorf("%w %q: %w", media.ErrRestore, callID, err)
	}
	if sv.Relay == "" {
		return fmt.Errorf("%w %q: no relay named (state of the embedded relay?)", media.ErrRestore, callID)
	}
	d, err := media.LoadDialog(sv.Dialog)
	if err != nil {
		return fmt.Errorf("%w %q: %w", media.ErrRestore, callID, err)
	}
	if !c.set.Adopt(callID, sv.Relay) {
		return fmt.Errorf("%w %q: relay %s is not in media.relays", media.ErrRestore, callID, sv.Relay)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls[callID] == nil {
		c.calls[callID] = &call{callerTag: sv.CallerTag, calleeTag: sv.CalleeTag, offerer: sv.Offerer, dialog: d}
	}
	return nil
}

// answered keeps the first 2xx to the initial INVITE, from the callee,
// for the BYEs Watch may send.
func (c *Controller) answered(id string, res *sip.Response) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.calls[id]
	if cl == nil || cl.dialog.OK != nil || res.From().Params.GetOr("tag", "") != cl.callerTag {
		return
	}
	cl.calleeTag = res.To().Params.GetOr("tag", "")
	inv := cl.dialog.Invite
	cl.dialog = media.SlimDialog(nil, res)
	cl.dialog.Invite = inv
}

// OnTimeout sets the function Watch calls for an answered call its relay
// no longer has (it timed out there for lack of media); the call is
// already forgotten then.
func (c *Controller) OnTimeout(f func(media.Ended)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onTimeout = f
}

// Watch queries every answered call's relay each interval until ctx is
// done. The relays end silent calls themselves; a query refused (the
// relay answers, but not for this call) means the relay has ended it, and
// the call is reported to the OnTimeout function, so that sipd sends its
// BYEs and CDR as it does for the embedded relay. A relay that does not
// answer says nothing about the call: it is asked again next time.
func (c *Controller) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		var ids []string
		for id, cl := range c.calls {
			if cl.dialog.OK != nil {
				ids = append(ids, id)
			}
		}
		c.mu.Unlock()
		for _, id := range ids {
			qctx, cancel := context.WithTimeout(ctx, interval)
			_, err := c.set.Query(qctx, &ng.Command{CallID: id})
			cancel()
			var re *ng.ReplyError
			if !errors.As(err, &re) || re.Overloaded() {
				continue
			}
			c.mu.Lock()
			cl, f := c.calls[id], c.onTimeout
			delete(c.calls, id)
			c.mu.Unlock()
			c.set.Forget(id)
			if cl == nil {
				continue // ended meanwhile
			}
			c.log.Info("ngmedia: the relay ended the call", "call_id", id, "reply", re.Reason)
			if f != nil {
				f(media.Ended{CallID: id, CallerTag: cl.callerTag, CalleeTag: cl.calleeTag,
					Reason: "media timeout", Dialog: cl.dialog})
			}
		}
	}
}

func (c *Controller) known(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id] != nil
}

func (c *Controller) forget(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.calls[id]
	delete(c.calls, id)
	return ok
}

func source(m interface{ Source() string }) netip.Addr {
	ap, err := netip.ParseAddrPort(m.Source())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
