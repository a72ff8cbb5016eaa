package media

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/relay"
)

// A relayed call's state can be saved (State) when its media is set up or
// changes, and given back to a new controller after a restart (Restore),
// so that the call's in-dialog requests still have their SDP pointed at
// the relay, a BYE still ends its relaying, and a media timeout still
// sends each side a BYE. What is saved is signaling state only: the relay
// ports of each leg, what each side announced, the sides' signaling
// addresses and tags, and the messages a BYE is built from; never
// anything that changes per packet (latches: the kernel's pinned flows
// keep those).

// savedCall is the JSON form of a call.
type savedCall struct {
	CallerTag string            `json:"caller_tag"`
	LockedTag string            `json:"locked_tag,omitempty"`
	Confirmed bool              `json:"confirmed,omitempty"`
	Sig       [2]netip.Addr     `json:"sig"`
	Streams   []savedStream     `json:"streams"`
	Kinds     map[int]MediaKind `json:"kinds,omitempty"`
	Invite    *savedMsg         `json:"invite,omitempty"`
	OK        *savedMsg         `json:"ok,omitempty"`
	Created   time.Time         `json:"created"`
	// Bridged: the relay terminated SRTP or DTLS on a leg. Its keys and
	// DTLS associations live in memory only, so the call's media cannot
	// resume after a restart.
	Bridged bool `json:"bridged,omitempty"`
	// Per-call options of the NG flags (options.go).
	Labels   [2]string            `json:"labels,omitzero"`
	SideOpts [2]relay.SideOptions `json:"side_options,omitzero"`
	TOS      relay.TOS            `json:"tos,omitzero"`
	Drop     bool                 `json:"drop_traffic,omitempty"`
	// Interfaces and Domains: each side's interface by NG direction and
	// SIP domain, for the streams a later offer adds.
	Interfaces [2]string `json:"interfaces,omitzero"`
	Domains    [2]string `json:"domains,omitzero"`

	// A forked call's branch (fork.go): Base is the relay stream index
	// of its m-line 0, Via the via-branch of its offer, Aliases the
	// tags it answered with before LockedTag. Forks are the call's other
	// branches, saved the same way without their dialog messages (NG
	// calls, the only ones that fork, have none).
	Base    int         `json:"base,omitempty"`
	Via     string      `json:"via,omitempty"`
	Aliases []string    `json:"aliases,omitempty"`
	Forks   []savedCall `json:"forks,omitempty"`
}

type savedStream struct {
	Index int               `json:"index"`
	Ports [2]relay.LegPorts `json:"ports"`
	Peers [2]announcement   `json:"peers"`
}

// savedMsg is a slim INVITE or 2xx (see Dialog) and what its text does
// not carry.
type savedMsg struct {
	Text      string `json:"text"`
	Source    string `json:"source,omitempty"`
	Transport string `json:"transport,omitempty"`
}

func saveMsg(m sip.Message, source, transport string) *savedMsg {
	return &savedMsg{Text: m.String(), Source: source, Transport: transport}
}

// State returns the call's state as JSON, for keeping with the dialog;
// ok is false for a call that is not relayed.
func (c *Controller) State(callID string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.calls[callID]
	if !ok {
		return nil, false
	}
	sc := saveBranch(cl)
	for _, f := range cl.forks {
		fs := saveBranch(f)
		sc.Bridged = sc.Bridged || fs.Bridged
		sc.Forks = append(sc.Forks, fs)
	}
	if d := cl.dialog.Invite; d != nil {
		sc.Invite = saveMsg(d, d.Source(), d.Transport())
	}
	if d := cl.dialog.OK; d != nil {
		sc.OK = saveMsg(d, d.Source(), d.Transport())
	}
	b, err := json.Marshal(sc)
	if err != nil {
		return nil, false // addresses, strings and times only: cannot happen
	}
	return b, true
}

// saveBranch is State's record of one branch, without dialog messages.
func saveBranch(cl *call) savedCall {
	sc := savedCall{CallerTag: cl.callerTag, LockedTag: cl.lockedTag, Confirmed: cl.confirmed, Sig: cl.sig,
		Kinds: cl.kinds, Created: cl.created, Labels: cl.labels, SideOpts: cl.opts, TOS: cl.tos, Drop: cl.drop,
		Interfaces: cl.iface, Domains: cl.dom, Base: cl.base, Via: cl.via, Aliases: cl.aliases}
	for _, ss := range cl.sec {
		sc.Bridged = sc.Bridged || ss.bridged()
	}
	for idx, sp := range cl.streams {
		sc.Streams = append(sc.Streams, savedStream{Index: idx, Ports: [2]relay.LegPorts{sp.A, sp.B}, Peers: cl.announced[idx]})
	}
	sort.Slice(sc.Streams, func(i, j int) bool { return sc.Streams[i].Index < sc.Streams[j].Index })
	return sc
}

// ErrRestore wraps what keeps a saved call from being relayed again.
var ErrRestore = errors.New("cannot restore relayed call")

// Restore relays a call saved by State again, after a restart: the same
// relay ports, the same peers, flows the kernel kept forwarding taken
// over as they are. since is when the call's media was last set up: a
// call silent from then on times out at once (it timed out while sipd was
// down) and goes to the OnTimeout function like any other.
func (c *Controller) Restore(callID string, state []byte, since time.Time) error {
	var sc savedCall
	if err := json.Unmarshal(state, &sc); err != nil {
		return fmt.Errorf("%w %q: %w", ErrRestore, callID, err)
	}
	if sc.Bridged {
		return fmt.Errorf("%w %q: its SRTP keys and DTLS associations do not survive a restart", ErrRestore, callID)
	}
	if len(sc.Forks) >= c.maxBranches() {
		return fmt.Errorf("%w %q: %w: %d", ErrRestore, callID, ErrTooManyBranches, len(sc.Forks)+1)
	}
	if err := checkBases(append([]savedCall{sc}, sc.Forks...)); err != nil {
		return fmt.Errorf("%w %q: %w", ErrRestore, callID, err)
	}
	cl := loadBranch(sc, since)
	for _, fs := range sc.Forks {
		cl.forks = append(cl.forks, loadBranch(fs, since))
	}
	var err error
	if cl.dialog.Invite, err = loadRequest(sc.Invite); err != nil {
		return fmt.Errorf("%w %q: invite: %w", ErrRestore, callID, err)
	}
	if cl.dialog.OK, err = loadResponse(sc.OK); err != nil {
		return fmt.Errorf("%w %q: 2xx: %w", ErrRestore, callID, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.calls[callID]; ok {
		return fmt.Errorf("%w %q: already relayed", ErrRestore, callID)
	}
	if err := c.cfg.Engine.CreateSession(callID); err != nil {
		return fmt.Errorf("%w %q: %w", ErrRestore, callID, err)
	}
	// Before the streams: the flows they install have the call's options
	// from the start.
	for s, o := range sc.SideOpts {
		if o != (relay.SideOptions{}) {
			if err := c.cfg.Engine.SetSideOptions(callID, relay.Side(s), o); err != nil {
				c.log.Warn("media: restore side options", "call_id", callID, "error", err)
			}
		}
	}
	if sc.TOS.Set {
		if err := c.cfg.Engine.SetTOS(callID, sc.TOS); err != nil {
			c.log.Warn("media: restore tos", "call_id", callID, "error", err)
		}
	}
	if sc.Drop {
		if err := c.cfg.Engine.SetDrop(callID, true); err != nil {
			c.log.Warn("media: restore drop traffic", "call_id", callID, "error", err)
		}
	}
	for i, b := range cl.branches() {
		bs := sc
		if i > 0 {
			bs = sc.Forks[i-1]
		}
		if err := c.restoreStreams(callID, b, bs, since); err != nil {
			c.cfg.Engine.DeleteSession(callID)
			return fmt.Errorf("%w %q: %w", ErrRestore, callID, err)
		}
	}
	for s, a := range sc.Sig {
		if a.IsValid() {
			if err := c.cfg.Engine.SetSignal(callID, relay.Side(s), a); err != nil {
				c.log.Warn("media: restore signaling hint", "call_id", callID, "error", err)
			}
		}
	}
	c.calls[callID] = cl
	return nil
}

// checkBases refuses saved branches whose streams could not be told apart
// in the relay session (fork.go): each base a multiple of branchStride,
// none shared, every m-line below branchStride.
func checkBases(bs []savedCall) error {
	seen := map[int]bool{}
	for _, b := range bs {
		if b.Base < 0 || b.Base%branchStride != 0 || seen[b.Base] {
			return fmt.Errorf("branch base %d unusable", b.Base)
		}
		seen[b.Base] = true
		for _, st := range b.Streams {
			if st.Index < 0 || st.Index >= branchStride {
				return fmt.Errorf("%w: stream %d", ErrTooManyStreams, st.Index)
			}
		}
	}
	return nil
}

// loadBranch is a branch as saveBranch saved it, streams not restored.
func loadBranch(sc savedCall, since time.Time) *call {
	return &call{callerTag: sc.CallerTag, lockedTag: sc.LockedTag, confirmed: sc.Confirmed, sig: sc.Sig,
		streams: map[int]relay.StreamPorts{}, kinds: sc.Kinds, created: sc.Created, lastSignal: since,
		announced: map[int][2]announcement{}, labels: sc.Labels, opts: sc.SideOpts, tos: sc.TOS, drop: sc.Drop,
		iface: sc.Interfaces, dom: sc.Domains, base: sc.Base, via: sc.Via, aliases: sc.Aliases}
}

// restoreStreams gives the engine back the streams of branch cl, saved as
// sc.
func (c *Controller) restoreStreams(callID string, cl *call, sc savedCall, since time.Time) error {
	for _, st := range sc.Streams {
		var legs [2]relay.RestoreLeg
		for s := range legs {
			a := st.Peers[s]
			legs[s] = relay.RestoreLeg{Ports: st.Ports[s], Set: a.Set, RTP: a.RTP, RTCP: a.RTCP, Mux: a.Mux}
		}
		if err := c.cfg.Engine.RestoreStream(callID, sc.Base+st.Index, legs, since); err != nil {
			return err
		}
		cl.streams[st.Index] = relay.StreamPorts{A: st.Ports[0], B: st.Ports[1]}
		cl.announced[st.Index] = st.Peers
	}
	return nil
}

func loadRequest(m *savedMsg) (*sip.Request, error) {
	if m == nil {
		return nil, nil
	}
	msg, err := sip.ParseMessage([]byte(m.Text))
	if err != nil {
		return nil, err
	}
	r, ok := msg.(*sip.Request)
	if !ok {
		return nil, errors.New("not a request")
	}
	r.SetSource(m.Source)
	r.SetTransport(m.Transport)
	return r, nil
}

func loadResponse(m *savedMsg) (*sip.Response, error) {
	if m == nil {
		return nil, nil
	}
	msg, err := sip.ParseMessage([]byte(m.Text))
	if err != nil {
		return nil, err
	}
	r, ok := msg.(*sip.Response)
	if !ok {
		return nil, errors.New("not a response")
	}
	r.SetSource(m.Source)
	r.SetTransport(m.Transport)
	return r, nil
}

// savedDialog is a Dialog as SaveDialog keeps it.
type savedDialog struct {
	Invite *savedMsg `json:"invite,omitempty"`
	OK     *savedMsg `json:"ok,omitempty"`
}

// SaveDialog returns a Dialog's messages as JSON, the way State keeps
// them, for controllers that keep a call's state themselves (ngmedia).
func SaveDialog(d Dialog) json.RawMessage {
	var sd savedDialog
	if d.Invite != nil {
		sd.Invite = saveMsg(d.Invite, d.Invite.Source(), d.Invite.Transport())
	}
	if d.OK != nil {
		sd.OK = saveMsg(d.OK, d.OK.Source(), d.OK.Transport())
	}
	b, _ := json.Marshal(sd) // strings only: cannot fail
	return b
}

// LoadDialog reads what SaveDialog wrote.
func LoadDialog(b []byte) (Dialog, error) {
	var sd savedDialog
	var d Dialog
	if len(b) == 0 {
		return d, nil
	}
	if err := json.Unmarshal(b, &sd); err != nil {
		return d, err
	}
	var err error
	if d.Invite, err = loadRequest(sd.Invite); err != nil {
		return Dialog{}, fmt.Errorf("invite: %w", err)
	}
	if d.OK, err = loadResponse(sd.OK); err != nil {
		return Dialog{}, fmt.Errorf("2xx: %w", err)
	}
	return d, nil
}
