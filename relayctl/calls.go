package relayctl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"sipxdp/sipd/dialog"
	"sipxdp/sipd/wire"
)

// Call is one row of relayctl calls: the call as the proxy saw it (/calls)
// joined with its relay flows (/flows) by Call-ID.
type Call struct {
	CallID string `json:"call_id"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	// State is up (answered), setup or ended; empty for calls only the
	// relay knows (NG calls in relay-only mode, proxied calls not yet
	// answered).
	State string `json:"state,omitempty"`
	// MediaPath is the path of the call's flows: kernel, userspace, both
	// joined by "+" while some still learn, or none when no relay carries
	// the call's media.
	MediaPath string    `json:"media_path"`
	Answered  time.Time `json:"answered,omitzero"`
	Duration  float64   `json:"duration_s"` // since the answer
	Legs      []Leg     `json:"legs"`
}

// Leg is one relay address of a call: where the relay receives RTP from
// one side of one stream, and from whom.
type Leg struct {
	Stream int    `json:"stream"`
	Leg    string `json:"leg"` // A (caller's side) or B
	Local  string `json:"local"`
	Peer   string `json:"peer,omitempty"` // empty until latched
	Path   string `json:"path"`
	State  string `json:"state"`
}

func (c *client) calls(ctx context.Context, args []string) error {
	asJSON, err := c.jsonOnly("calls", args)
	if err != nil {
		return err
	}
	var calls []dialog.Call
	if err := c.get(ctx, "/calls", &calls); err != nil {
		return err
	}
	var flows []wire.FlowJSON
	if err := c.get(ctx, "/flows", &flows); err != nil {
		return err
	}
	rows := joinCalls(calls, flows, now())
	if asJSON {
		return c.printJSON(rows)
	}
	return printCalls(c.out, rows)
}

// joinCalls makes one row per call of /calls, and one per Call-ID that
// only /flows has, sorted by Call-ID.
func joinCalls(calls []dialog.Call, flows []wire.FlowJSON, at time.Time) []Call {
	byCall := map[string][]wire.FlowJSON{}
	for _, f := range flows {
		byCall[f.CallID] = append(byCall[f.CallID], f)
	}
	out := make([]Call, 0, len(calls))
	seen := map[string]bool{}
	for _, dc := range calls {
		r := Call{CallID: dc.CallID, From: dc.From, To: dc.To, State: callState(dc), Answered: dc.Answered}
		switch {
		case !dc.Ended.IsZero():
			r.Duration = dc.Duration
		case !dc.Answered.IsZero():
			r.Duration = at.Sub(dc.Answered).Seconds()
		}
		r.MediaPath, r.Legs = media(byCall[dc.CallID])
		seen[dc.CallID] = true
		out = append(out, r)
	}
	for id, fs := range byCall {
		if seen[id] || id == "" {
			continue
		}
		r := Call{CallID: id}
		r.MediaPath, r.Legs = media(fs)
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CallID < out[j].CallID })
	return out
}

func callState(c dialog.Call) string {
	switch {
	case !c.Ended.IsZero():
		return "ended"
	case !c.Answered.IsZero():
		return "up"
	}
	return "setup"
}

// media sums up a call's flows: the paths they take and the relay address
// of each side's RTP.
func media(flows []wire.FlowJSON) (path string, legs []Leg) {
	var paths []string
	legs = []Leg{}
	for _, f := range flows {
		if !slices.Contains(paths, f.Path) {
			paths = append(paths, f.Path)
		}
		if f.Component != "" && f.Component != "rtp" {
			continue
		}
		legs = append(legs, Leg{Stream: f.Stream, Leg: f.Leg, Local: f.Local, Peer: f.Peer, Path: f.Path, State: f.State})
	}
	if len(paths) == 0 {
		return "none", legs
	}
	sort.Strings(paths)
	sort.Slice(legs, func(i, j int) bool {
		if legs[i].Stream != legs[j].Stream {
			return legs[i].Stream < legs[j].Stream
		}
		return legs[i].Leg < legs[j].Leg
	})
	return strings.Join(paths, "+"), legs
}

func printCalls(w io.Writer, rows []Call) error {
	t := newTable(left("CALL-ID"), left("FROM"), left("TO"), left("STATE"), left("MEDIA"), right("DURATION"), left("RELAY LEGS"))
	for _, r := range rows {
		dur := "-"
		if !r.Answered.IsZero() {
			dur = (time.Duration(r.Duration) * time.Second).String()
		}
		legs := make([]string, 0, len(r.Legs))
		for _, l := range r.Legs {
			name := l.Leg
			if l.Stream > 0 {
				name += fmt.Sprintf("/%d", l.Stream)
			}
			legs = append(legs, name+"="+l.Local)
		}
		t.add(r.CallID, dash(r.From), dash(r.To), dash(r.State), r.MediaPath, dur, dash(strings.Join(legs, " ")))
	}
	return t.write(w, "(no calls)")
}
