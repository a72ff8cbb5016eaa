package ngbackend

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"sipxdp/ng"
	"sipxdp/sipd/media"
	"sipxdp/sipd/sdprewrite"
)

// TestForks drives forked and spiralled calls through the NG server, a
// command at a time, and checks each reply (result, warning, the port
// the rewritten SDP names) and then what is left: the call, the tags a
// query reports, and the relay streams removed. Each row names where its
// semantics come from: rtpengine's NG control protocol documentation
// (the "via-branch" key, "delete Message") and its call.c
// (call_get_monologue_new, call_get_dialogue, call_delete_branch). The
// fake engine gives branch n the ports 40000+100n (toward the caller)
// and 40002+100n (toward its callee).
func TestForks(t *testing.T) {
	const relay = "203.0.113.1"
	offer := func(via string) map[string]any {
		m := map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a", "sdp": string(sdp("192.0.2.10", 10000))}
		if via != "" {
			m["via-branch"] = via
		}
		return m
	}
	answer := func(to, via string) map[string]any {
		m := map[string]any{"command": "answer", "call-id": "c1", "from-tag": "a", "to-tag": to, "sdp": string(sdp("192.0.2.20", 20000))}
		if via != "" {
			m["via-branch"] = via
		}
		return m
	}
	del := func(kv ...any) map[string]any {
		d := map[string]any{"command": "delete", "call-id": "c1"}
		for i := 0; i+1 < len(kv); i += 2 {
			d[kv[i].(string)] = kv[i+1]
		}
		return d
	}
	// step is one command and what its reply must be: result ok unless
	// result says otherwise; port, when not 0, is the SDP's m= port.
	type step struct {
		cmd     map[string]any
		port    int
		result  string
		warning string
	}
	forked := []step{
		{cmd: offer("b1"), port: 40002}, {cmd: offer("b2"), port: 40102},
		{cmd: answer("t1", "b1"), port: 40000}, {cmd: answer("t2", "b2"), port: 40100},
	}
	with := func(steps ...step) []step { return append(slices.Clone(forked), steps...) }
	const branch2 = 1 << 16 // the engine index of branch 2's m-line 0
	for _, tc := range []struct {
		name  string
		steps []step
		// After the steps: whether the call is listed, the tags a query
		// reports (nil: not checked), the streams removed.
		kept    bool
		tags    []string
		removed []int
	}{
		{name: "offer Message, via-branch: a new via-branch opens a branch with ports of its own (call.c call_get_monologue_new)",
			steps: []step{{cmd: offer("b1"), port: 40002}, {cmd: offer("b2"), port: 40102}},
			kept:  true, tags: []string{"a"}},
		{name: "offer Message, via-branch: a known via-branch is a re-offer on its branch",
			steps: []step{{cmd: offer("b1"), port: 40002}, {cmd: offer("b2"), port: 40102}, {cmd: offer("b1"), port: 40002}},
			kept:  true},
		{name: "offer Message: without via-branch an offer stays on the oldest branch, as before forks",
			steps: []step{{cmd: offer(""), port: 40002}, {cmd: offer(""), port: 40002}},
			kept:  true},
		{name: "offer Message, to-tag: the caller's re-INVITE (a new via-branch, the to-tag of a branch) stays on that branch (call.c call_get_dialogue)",
			steps: with(step{cmd: map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a", "to-tag": "t2",
				"via-branch": "reinvite", "sdp": string(sdp("192.0.2.10", 10002))}, port: 40102}),
			kept: true, tags: []string{"a", "t1", "t2"}},
		{name: "answer Message, via-branch: each fork's answer (183 early media) reaches its own branch (call.c call_get_dialogue)",
			steps: forked, kept: true, tags: []string{"a", "t1", "t2"}},
		{name: "answer Message: an answer without via-branch and an unknown to-tag goes to the oldest branch",
			steps: []step{{cmd: offer("b1"), port: 40002}, {cmd: offer("b2"), port: 40102}, {cmd: answer("t2", ""), port: 40000}},
			kept:  true, tags: []string{"a", "t2"}},
		{name: "answer Message: a known to-tag finds its branch when the via-branch is unknown (the 200 after the 183)",
			steps: with(step{cmd: answer("t2", "other"), port: 40100}), kept: true, tags: []string{"a", "t1", "t2"}},
		{name: "answer Message: one branch answered by two tags keeps the first as an alias (call.c __monologue_tag)",
			steps: []step{{cmd: offer(""), port: 40002}, {cmd: answer("t1", ""), port: 40000}, {cmd: answer("t2", ""), port: 40000},
				{cmd: del("from-tag", "a", "to-tag", "t1", "flags", []any{"to-tag"})}},
			kept: false},
		{name: "delete Message, via-branch: the losing branch goes, the winner stays (call.c call_delete_branch)",
			steps: with(step{cmd: del("from-tag", "a", "via-branch", "b2")}),
			kept:  true, tags: []string{"a", "t1"}, removed: []int{branch2}},
		{name: "delete Message, to-tag flag: a branch's to-tag deletes that branch only",
			steps: with(step{cmd: del("from-tag", "a", "to-tag", "t2", "flags", []any{"to-tag"})}),
			kept:  true, tags: []string{"a", "t1"}, removed: []int{branch2}},
		{name: "delete Message, to-tag: without the flag the to-tag is ignored and the caller's from-tag deletes the call",
			steps: with(step{cmd: del("from-tag", "a", "to-tag", "t2")}), kept: false},
		{name: "delete Message: a callee's from-tag (its BYE) deletes its branch; the other takes the call's place",
			steps: with(step{cmd: del("from-tag", "t1")}, step{cmd: answer("t2", "b2"), port: 40100}),
			kept:  true, tags: []string{"a", "t2"}, removed: []int{0}},
		{name: "delete Message: deleting the last branch deletes the call",
			steps: with(step{cmd: del("from-tag", "a", "via-branch", "b2")}, step{cmd: del("from-tag", "a", "via-branch", "b1")}),
			kept:  false, removed: []int{branch2}},
		{name: "delete Message: no from-tag deletes every branch",
			steps: with(step{cmd: del()}), kept: false},
		{name: "delete Message: a via-branch and tags naming nothing keep the call, ok with a warning",
			steps: with(step{cmd: del("from-tag", "x", "via-branch", "b9"), warning: WarnNotFound}),
			kept:  true, tags: []string{"a", "t1", "t2"}},
		{name: "delete Message, via-branch with delete-delay 0: the branch goes at once",
			steps: with(step{cmd: del("from-tag", "a", "via-branch", "b1", "delete delay", int64(0))}),
			kept:  true, tags: []string{"a", "t2"}, removed: []int{0}},
		{name: "via-branch, spiral: the INVITE's second pass (same from-tag, its own via-branch, SDP on the relay) is a branch of its own",
			steps: []step{{cmd: offer("vC"), port: 40002},
				{cmd: map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a", "via-branch": "vK",
					"sdp": string(sdp(relay, 40002))}, port: 40102},
				// The answer passes back twice: inside first, then out, each
				// with the via-branch of its own pass.
				{cmd: answer("bob", "vK"), port: 40100},
				{cmd: map[string]any{"command": "answer", "call-id": "c1", "from-tag": "a", "to-tag": "bob", "via-branch": "vC",
					"sdp": string(sdp(relay, 40100))}, port: 40000},
				// The callee's BYE ends both passes: the call.
				{cmd: del("from-tag", "bob")}},
			kept: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, f := newBackend()
			s := ng.NewServer(b, ng.Options{})
			for i, st := range tc.steps {
				rep := roundTrip(t, s, fmt.Sprint("s", i), st.cmd)
				want := st.result
				if want == "" {
					want = "ok"
				}
				if rep["result"] != want {
					t.Fatalf("step %d %v: result %v, want %s (reply %v)", i, st.cmd["command"], rep["result"], want, rep)
				}
				if w, _ := rep["warning"].(string); w != st.warning {
					t.Errorf("step %d: warning %q, want %q", i, w, st.warning)
				}
				if st.port != 0 {
					out, _ := rep["sdp"].(string)
					ms, err := sdprewrite.Parse([]byte(out))
					if err != nil || len(ms) != 1 || ms[0].Port != uint16(st.port) || ms[0].Addr.String() != relay {
						t.Errorf("step %d %v: sdp names %+v (%v), want %s:%d", i, st.cmd["command"], ms, err, relay, st.port)
					}
				}
			}
			if got := len(b.List(0)) == 1; got != tc.kept {
				t.Fatalf("call kept %v, want %v", got, tc.kept)
			}
			if !tc.kept && len(f.sessions) != 0 {
				t.Errorf("relay sessions left: %v", slices.Collect(maps.Keys(f.sessions)))
			}
			if tc.tags != nil {
				cs, err := b.Query(&ng.Request{Command: "query", CallID: "c1"})
				if err != nil {
					t.Fatal(err)
				}
				var tags []string
				for _, ts := range cs.Tags {
					tags = append(tags, ts.Tag)
				}
				if !slices.Equal(tags, tc.tags) {
					t.Errorf("query tags %v, want %v", tags, tc.tags)
				}
			}
			if !slices.Equal(f.removed, tc.removed) {
				t.Errorf("streams removed %v, want %v", f.removed, tc.removed)
			}
		})
	}
}

// TestForkLimit: a call's branches are bounded; the offer over the
// bound fails with a clear error and sets nothing up, and the branches
// before it are untouched.
func TestForkLimit(t *testing.T) {
	b, f := newBackend()
	off := func(via string) error {
		_, err := b.Offer(&ng.Request{Command: "offer", CallID: "c1", FromTag: "a", ViaBranch: via, SDP: sdp("192.0.2.10", 10000)})
		return err
	}
	for i := range media.DefaultMaxBranches {
		if err := off(fmt.Sprint("b", i)); err != nil {
			t.Fatalf("branch %d: %v", i, err)
		}
	}
	err := off("one-too-many")
	if !errors.Is(err, media.ErrTooManyBranches) {
		t.Fatalf("offer of branch %d: %v, want %v", media.DefaultMaxBranches+1, err, media.ErrTooManyBranches)
	}
	if n := len(f.sessions["c1"].Streams); n != media.DefaultMaxBranches {
		t.Errorf("%d streams after the refused branch, want %d", n, media.DefaultMaxBranches)
	}
	if err := off("b0"); err != nil {
		t.Errorf("re-offer on a branch at the bound: %v", err)
	}
}

// TestForkQueryStreams: a query of a forked call reports each answered
// branch's callee leg under its tag, with the branch's own ports and m-line
// numbers from 1.
func TestForkQueryStreams(t *testing.T) {
	b, _ := newBackend()
	for _, r := range []*ng.Request{
		{Command: "offer", CallID: "c1", FromTag: "a", ViaBranch: "b1", SDP: sdp("192.0.2.10", 10000)},
		{Command: "offer", CallID: "c1", FromTag: "a", ViaBranch: "b2", SDP: sdp("192.0.2.10", 10000)},
	} {
		if _, err := b.Offer(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []*ng.Request{
		{Command: "answer", CallID: "c1", FromTag: "a", ToTag: "t1", ViaBranch: "b1", SDP: sdp("192.0.2.21", 21000)},
		{Command: "answer", CallID: "c1", FromTag: "a", ToTag: "t2", ViaBranch: "b2", SDP: sdp("192.0.2.22", 22000)},
	} {
		if _, err := b.Answer(r); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := b.Query(&ng.Request{Command: "query", CallID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		local    uint16
		peer     string
		dialogue string
	}{"a": {40000, "192.0.2.10:10000", "t1"}, "t1": {40002, "192.0.2.21:21000", "a"}, "t2": {40102, "192.0.2.22:22000", "a"}}
	if len(cs.Tags) != len(want) {
		t.Fatalf("tags %+v, want %v", cs.Tags, want)
	}
	for _, ts := range cs.Tags {
		w, ok := want[ts.Tag]
		if !ok || len(ts.Medias) != 1 || len(ts.Medias[0].Streams) == 0 {
			t.Fatalf("tag %+v", ts)
		}
		m := ts.Medias[0]
		ss := m.Streams[0]
		if m.Index != 1 || m.Type != "audio" || ss.LocalPort != w.local || ss.Advertised.String() != w.peer || ts.InDialogueWith != w.dialogue {
			t.Errorf("tag %s: media %d %s, local %d, peer %v, in dialogue with %q; want 1 audio, %d, %s, %q",
				ts.Tag, m.Index, m.Type, ss.LocalPort, ss.Advertised, ts.InDialogueWith, w.local, w.peer, w.dialogue)
		}
	}
}

// TestForkDeleteDelay: a branch's delete with delete-delay (NG control
// protocol documentation, "delete Message": "Call/branch will be
// deleted" after the delay) answers at once and, when it fires, removes
// that branch alone.
func TestForkDeleteDelay(t *testing.T) {
	b, f := newBackend()
	var fire []func()
	b.delays.after = func(_ time.Duration, fn func()) *time.Timer {
		fire = append(fire, fn)
		return time.AfterFunc(time.Hour, func() {})
	}
	s := ng.NewServer(b, ng.Options{})
	for i, cmd := range []map[string]any{
		{"command": "offer", "call-id": "c1", "from-tag": "a", "via-branch": "b1", "sdp": string(sdp("192.0.2.10", 10000))},
		{"command": "offer", "call-id": "c1", "from-tag": "a", "via-branch": "b2", "sdp": string(sdp("192.0.2.10", 10000))},
		{"command": "delete", "call-id": "c1", "from-tag": "a", "via-branch": "b2", "delete delay": int64(5)},
	} {
		if rep := roundTrip(t, s, fmt.Sprint("s", i), cmd); rep["result"] != "ok" || rep["warning"] != nil {
			t.Fatalf("%v: %v", cmd["command"], rep)
		}
	}
	if len(fire) != 1 || len(f.removed) != 0 {
		t.Fatalf("%d deletes scheduled, streams removed %v: want one scheduled, none removed yet", len(fire), f.removed)
	}
	fire[0]()
	if !slices.Equal(f.removed, []int{1 << 16}) || len(b.List(0)) != 1 {
		t.Errorf("after the delay: streams removed %v, calls %v; want branch 2's stream, the call kept", f.removed, b.List(0))
	}
}
