package ngbackend

import (
	"bytes"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/media"
	"sipxdp/sipd/sdprewrite"
)

// TestStrict drives the backend through ng.Server, as a proxy's
// rtpengine module would, with one flag per row that needs media work
// the relay does not do. With ng.strict on, the offer (or answer) is
// refused with an error-reason naming the flag and why, and a refused
// offer leaves no call behind; with it off, the command goes through as
// if the flag were absent and the flag is logged at debug. Rows marked
// ok are flags that look alike but need no media work, or commands
// rtpengine ignores them in: they go through either way. Each row names
// its section of rtpengine's ng_control_protocol.md.
func TestStrict(t *testing.T) {
	type row struct {
		name, doc string
		command   string         // offer or answer
		keys      map[string]any // added to the command
		reason    string         // error-reason under strict; "" when it goes through
		logged    string         // what the strict-off debug log shows of it
	}
	flags := func(f ...any) map[string]any { return map[string]any{"flags": f} }
	rows := []row{
		{"codec transcode (dictionary)", "offer: codec manipulations, transcode", "offer",
			map[string]any{"codec": map[string]any{"transcode": []any{"PCMA"}}}, "transcoding not supported: codec-transcode-pcma", "codec-transcode-pcma"},
		{"codec transcode (flags form)", "offer: codec manipulations (codec- prefix), transcode", "offer",
			flags("codec-transcode-PCMA"), "transcoding not supported: codec-transcode-pcma", "codec-transcode-pcma"},
		{"codec transcode=... in flags", "offer: codec manipulations, transcode", "offer",
			flags("codec-transcode=G722"), "transcoding not supported: codec-transcode=G722", "codec-transcode=G722"},
		{"transcode- prefix", "offer: codec manipulations, transcode (call_flags.c transcode-)", "offer",
			flags("transcode-G722"), "transcoding not supported: transcode-g722", "transcode-g722"},
		{"codec accept", "offer: codec manipulations, accept", "offer",
			map[string]any{"codec": map[string]any{"accept": []any{"AMR-WB"}}}, "transcoding not supported: codec-accept-amr-wb", "codec-accept-amr-wb"},
		{"codec consume", "offer: codec manipulations, consume", "offer",
			map[string]any{"codec": map[string]any{"consume": []any{"opus"}}}, "transcoding not supported: codec-consume-opus", "codec-consume-opus"},
		{"codec set", "offer: codec manipulations, set", "offer",
			flags("codec-set-AMR/8000/1/7400"), "transcoding not supported: codec-set-amr/8000/1/7400", "codec-set-amr/8000/1/7400"},
		{"codec ignore", "offer: codec manipulations, ignore", "offer",
			map[string]any{"codec": map[string]any{"ignore": []any{"G729"}}}, "transcoding not supported: codec-ignore-g729", "codec-ignore-g729"},
		{"always transcode", "offer flags: always transcode", "offer",
			flags("always transcode"), "transcoding not supported: always-transcode", "always-transcode"},
		{"force transcoding", "offer flags: force transcoding", "offer",
			flags("force-transcoding"), "transcoding not supported: force-transcoding", "force-transcoding"},
		{"force transcoding in an answer", "offer flags: force transcoding; answer", "answer",
			flags("force-transcoding"), "transcoding not supported: force-transcoding", "force-transcoding"},
		{"ptime", "offer: ptime", "offer",
			map[string]any{"ptime": int64(30)}, "repacketization (transcoding) not supported: ptime=30", "ptime=30"},
		{"ptime-reverse", "offer: ptime-reverse", "offer",
			map[string]any{"ptime reverse": "40"}, "repacketization (transcoding) not supported: ptime-reverse=40", "ptime-reverse=40"},
		{"OpenSIPS repacketize", "OpenSIPS rtpengine module: repacketize", "offer",
			map[string]any{"repacketize": int64(30)}, "repacketization (transcoding) not supported: repacketize=30", "repacketize=30"},
		{"T.38 decode", "offer: T.38", "offer",
			map[string]any{"T.38": []any{"decode"}}, "T.38 gateway (transcoding) not supported: t.38-decode", "t.38-decode"},
		{"T38=force", "offer: T.38", "offer",
			map[string]any{"T38": "force"}, "T.38 gateway (transcoding) not supported: t38=force", "t38=force"},
		{"T.38-force in flags", "offer: T.38", "offer",
			flags("T.38-force"), "T.38 gateway (transcoding) not supported: t.38-force", "t.38-force"},
		{"detect DTMF", "offer flags: detect DTMF", "offer",
			flags("detect DTMF"), "in-band DTMF detection (transcoding) not supported: detect-dtmf", "detect-dtmf"},
		{"block DTMF flag", "offer flags: block DTMF", "offer",
			flags("block-DTMF"), "DTMF blocking not supported: block-dtmf", "block-dtmf"},
		{"DTMF-delay", "offer: DTMF-delay", "answer",
			map[string]any{"DTMF-delay": int64(200)}, "DTMF delay not supported: dtmf-delay=200", "dtmf-delay=200"},
		{"delay-buffer", "offer: delay-buffer", "offer",
			map[string]any{"delay-buffer": int64(100)}, "delay buffer not supported: delay-buffer=100", "delay-buffer=100"},
		{"generate RTCP flag", "offer flags: generate RTCP", "offer",
			flags("generate RTCP"), "RTCP generation not supported: generate-rtcp", "generate-rtcp"},
		{"generate RTCP=on", "offer: generate RTCP", "answer",
			map[string]any{"generate RTCP": "on"}, "RTCP generation not supported: generate-rtcp=on", "generate-rtcp=on"},
		{"media echo", "offer: media echo", "offer",
			map[string]any{"media echo": "both"}, "media echo not supported: media-echo=both", "media-echo=both"},
		{"inject DTMF", "offer flags: inject DTMF; play DTMF message", "answer",
			flags("inject DTMF"), "DTMF injection (media playback) not supported: inject-dtmf", "inject-dtmf"},
		{"audio player=force", "offer: audio player", "offer",
			map[string]any{"audio player": "force"}, "media playback not supported: audio-player=force", "audio-player=force"},
		{"music on hold", "Music on hold functionality (MoH)", "offer",
			map[string]any{"moh": map[string]any{"file": "/tmp/moh.wav"}}, "music on hold (media playback) not supported: moh-file=/tmp/moh.wav", "moh-file=/tmp/moh.wav"},
		{"recording announcement", "offer flags: recording announcement", "offer",
			flags("recording announcement"), "media playback not supported: recording-announcement", "recording-announcement"},
		{"record call flag", "offer flags: record call", "offer",
			flags("record-call"), "recording not supported: record-call", "record-call"},
		{"record call=yes", "offer: record call", "offer",
			map[string]any{"record call": "yes"}, "recording not supported: record-call=yes", "record-call=yes"},
		{"record call=on in an answer", "offer: record call; answer", "answer",
			map[string]any{"record-call": "on"}, "recording not supported: record-call=on", "record-call=on"},
		{"recording-vsc", "call_flags.c: recording-vsc", "offer",
			flags("recording-vsc"), "recording not supported: recording-vsc", "recording-vsc"},
		{"SIPREC", "call_flags.c: SIPREC", "offer",
			flags("SIPREC"), "recording not supported: siprec", "siprec"},

		// Alike, but no media work: through under strict too.
		{"drop-traffic=start", "offer: drop-traffic (honoured: callflags.go)", "offer", map[string]any{"drop-traffic": "start"}, "", ""},
		{"drop-traffic=start in an answer", "offer: drop-traffic (offer or answer)", "answer", map[string]any{"drop-traffic": "start"}, "", ""},
		{"drop-traffic-start in the flags", "offer: drop-traffic (flags form)", "offer", flags("drop-traffic-start"), "", ""},
		{"drop-traffic=stop", "offer: drop-traffic (stop)", "offer", map[string]any{"drop-traffic": "stop"}, "", ""},
		{"ptime=0", "offer: ptime (0: unchanged)", "offer", map[string]any{"ptime": int64(0)}, "", ""},
		{"ptime in an answer", "offer: ptime (ignored in answer messages)", "answer", map[string]any{"ptime": int64(30)}, "", ""},
		{"codec transcode in an answer", "offer: codec manipulations, transcode (only processed in offer messages)", "answer",
			map[string]any{"codec": map[string]any{"transcode": []any{"PCMA"}}}, "", ""},
		{"codec strip", "offer: codec manipulations, strip (an SDP edit)", "offer",
			map[string]any{"codec": map[string]any{"strip": []any{"G722"}}}, "", ""},
		{"T.38 stop", "offer: T.38 stop (no gateway to stop)", "offer", map[string]any{"T.38": []any{"stop"}}, "", ""},
		{"record call=no", "offer: record call", "offer", map[string]any{"record call": "no"}, "", ""},
		{"generate RTCP=off", "offer: generate RTCP", "offer", map[string]any{"generate RTCP": "off"}, "", ""},
		{"audio player=transcoding", "offer: audio player (only when transcoding)", "offer", map[string]any{"audio player": "transcoding"}, "", ""},
		{"recording-dir alone", "start recording message: recording-dir (tunes a recording not asked for)", "offer",
			map[string]any{"recording-dir": "/var/rec"}, "", ""},
	}
	for _, strict := range []bool{true, false} {
		for _, tc := range rows {
			t.Run(fmt.Sprintf("strict=%v/%s", strict, tc.name), func(t *testing.T) {
				var logBuf bytes.Buffer
				log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
				f := &fake{sessions: map[string]*relay.SessionInfo{}}
				b := New(media.New(media.Config{Mode: media.ModeAll, Engine: f}), f, log).Strict(strict)
				s := ng.NewServer(b, ng.Options{})
				cmd := map[string]any{"command": "offer", "call-id": "c1", "from-tag": "a", "sdp": string(sdp("192.0.2.10", 10000))}
				if tc.command == "answer" {
					if rep := roundTrip(t, s, "ck-offer", cmd); rep["result"] != "ok" {
						t.Fatalf("offer before the answer: %v", rep)
					}
					cmd = map[string]any{"command": "answer", "call-id": "c1", "from-tag": "a", "to-tag": "b",
						"sdp": string(sdp("192.0.2.20", 20000))}
				}
				for k, v := range tc.keys {
					cmd[k] = v
				}
				logBuf.Reset()
				rep := roundTrip(t, s, "ck", cmd)
				if strict && tc.reason != "" {
					want := map[string]any{"result": "error", "error-reason": tc.reason}
					if !reflect.DeepEqual(rep, want) {
						t.Fatalf("%s (%s): reply %v, want %v", tc.name, tc.doc, rep, want)
					}
					calls := roundTrip(t, s, "ck-list", map[string]any{"command": "list"})["calls"].([]any)
					if wantCalls := map[string]int{"offer": 0, "answer": 1}[tc.command]; len(calls) != wantCalls {
						t.Errorf("calls after the refusal %v, want %d", calls, wantCalls)
					}
					return
				}
				// Through: the relay's SDP, and nothing else in the reply.
				if rep["result"] != "ok" || len(rep) != 2 {
					t.Fatalf("%s (%s): reply %v, want result ok and sdp", tc.name, tc.doc, rep)
				}
				ms, err := sdprewrite.Parse([]byte(rep["sdp"].(string)))
				if err != nil || len(ms) != 1 || ms[0].Addr != relayIP {
					t.Errorf("sdp %q (%v): want the relay's address", rep["sdp"], err)
				}
				if tc.logged != "" && !strings.Contains(logBuf.String(), tc.logged) {
					t.Errorf("debug log does not show %q:\n%s", tc.logged, logBuf.String())
				}
			})
		}
	}
}

// TestUnsupportedError: the error is what the reply's error-reason
// carries, and mediaFlags names a source for every rule.
func TestUnsupportedError(t *testing.T) {
	if got := (&Unsupported{What: "transcoding", Flag: "codec-transcode-pcma"}).Error(); got != "transcoding not supported: codec-transcode-pcma" {
		t.Errorf("Error() = %q", got)
	}
	for _, f := range mediaFlags {
		if f.key == "" || f.what == "" || f.doc == "" {
			t.Errorf("rule %+v: key, what and doc must be set", f)
		}
	}
}

// FuzzUnsupported: whatever dictionary a proxy sends, the strict check
// does not panic, and a refusal names a flag the command carried with
// its value.
func FuzzUnsupported(f *testing.F) {
	for _, s := range []string{
		"d7:command5:offer5:codecd9:transcodel4:PCMAeee",
		"d7:command5:offer5:flagsl11:record-calle5:ptimei30ee",
		"d7:command6:answer4:T.38l6:decodee3:mohd4:file5:/x.wavee",
		"d7:command5:offer10:media echo4:both12:audio player11:transcodinge",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ng.Decode(b)
		if err != nil {
			return
		}
		d, ok := v.(map[string]any)
		if !ok {
			return
		}
		r, _, _ := ng.ParseRequest(d)
		u := unsupported(r)
		if u == nil {
			return
		}
		named := false
		for k, v := range r.Flags {
			named = named || k == u.Flag || k+"="+v == u.Flag
		}
		if !named {
			t.Fatalf("refusal %q names no flag of %v", u.Error(), r.Flags)
		}
		if u.What == "" {
			t.Fatalf("refusal %q says not why", u.Error())
		}
	})
}
