package ng

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// docJSON is where rtpengine documents the JSON form: the introduction of
// ng_control_protocol.md ("The dictionary document can be in one of
// two formats").
const docJSON = "ng_control_protocol.md: introduction, JSON object"

// jsonReply splits a reply and decodes its JSON object, failing when it
// is not JSON.
func jsonReply(t *testing.T, cookie string, reply []byte) map[string]any {
	t.Helper()
	c, body, ok := strings.Cut(string(reply), " ")
	if !ok || c != cookie {
		t.Fatalf("reply %q: want cookie %q", reply, cookie)
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("reply %q is not a JSON object: %v", reply, err)
	}
	return d
}

// TestHandleJSON sends commands as JSON objects: the backend gets the
// same Request as from bencode, and the reply comes back as JSON.
func TestHandleJSON(t *testing.T) {
	tests := []struct {
		name, doc string
		in        string
		want      map[string]any             // reply fields, as encoding/json decodes them
		check     func(*testing.T, *Request) // the request the backend got
	}{
		{
			name: "ping", doc: docJSON + "; ping Message",
			in:   `{"command":"ping"}`,
			want: map[string]any{"result": "pong"},
		},
		{
			name: "offer", doc: docJSON + "; offer Message",
			in: `{"command":"offer","call-id":"c1","from-tag":"f1","sdp":"v=0\r\n",` +
				`"flags":["trust-address"],"replace":["origin"],"ICE":"remove","direction":["internal","external"]}`,
			want: map[string]any{"result": "ok", "sdp": "v=0 offer c1"},
			check: func(t *testing.T, r *Request) {
				eq(t, "CallID", r.CallID, "c1")
				eq(t, "FromTag", r.FromTag, "f1")
				eq(t, "SDP", string(r.SDP), "v=0\r\n")
				eq(t, "Replace", r.Replace, []string{"origin"})
				eq(t, "ICE", r.ICE, "remove")
				eq(t, "Direction", r.Direction, []string{"internal", "external"})
				eq(t, "Flags[trust-address]", hasFlag(r, "trust-address"), true)
			},
		},
		{
			name: "offer with rtpp-flags", doc: docJSON + "; " + docRTPP,
			in:   `{"command":"offer","call-id":"c2","from-tag":"f1","sdp":"v=0","rtpp-flags":"replace-origin direction=external"}`,
			want: map[string]any{"result": "ok", "sdp": "v=0 offer c2"},
			check: func(t *testing.T, r *Request) {
				eq(t, "Replace", r.Replace, []string{"origin"})
				eq(t, "Direction", r.Direction, []string{"external"})
			},
		},
		{
			name: "list with integer and boolean", doc: docJSON + "; list Message",
			in:   `{"command":"list","limit":2,"unused":true}`,
			want: map[string]any{"result": "ok", "calls": []any{"a", "b"}},
			check: func(t *testing.T, r *Request) {
				eq(t, "Limit", r.Limit, 2)
			},
		},
		{
			name: "missing field", doc: docJSON + "; answer Message",
			in:   `{"command":"answer","call-id":"c1","from-tag":"f1","sdp":"v=0"}`,
			want: map[string]any{"result": "error", "error-reason": "missing to-tag"},
		},
		{
			name: "malformed JSON", doc: docJSON,
			in:   `{"command":"ping"`,
			want: map[string]any{"result": "error", "error-reason": "malformed message: json: unexpected EOF"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Logf("semantics: %s", tc.doc)
			fb := &fakeBackend{calls: []string{"a", "b", "c"}}
			s := NewServer(fb, Options{})
			got := jsonReply(t, "j1", s.Handle([]byte("j1 "+tc.in), testSrc))
			for k, w := range tc.want {
				eq(t, "reply["+k+"]", got[k], w)
			}
			for k := range got {
				if _, ok := tc.want[k]; !ok {
					t.Errorf("reply has %q, not wanted", k)
				}
			}
			if tc.check != nil {
				reqs := fb.requests()
				if len(reqs) != 1 {
					t.Fatalf("backend got %d requests, want 1", len(reqs))
				}
				tc.check(t, reqs[0])
			}
		})
	}
}

// TestDecodeJSONLimits: the JSON path refuses what the bencode path
// refuses.
func TestDecodeJSONLimits(t *testing.T) {
	long := `{"sdp":"` + strings.Repeat("x", MaxStringLen+1) + `"}`
	deep := strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1)
	ok := strings.Repeat(`{"a":`, MaxDepth) + "1" + strings.Repeat("}", MaxDepth)
	for _, tc := range []struct {
		in      string
		wantErr string
	}{
		{long, "longer than"},
		{deep, "nesting deeper"},
		{ok, ""},
		{`{"a":1,"a":2}`, "duplicate key"},
		{`{"a":null}`, "null"},
		{`{"a":1.5}`, "not an integer"},
		{`{"a":99999999999999999999}`, "not an integer"},
		{`{} {}`, "trailing data"},
		{`{"a":1} x`, "trailing data"},
		{`["a"]`, "not an object"},
		{`{"a":"b"}  ` + "\n", ""},
	} {
		_, err := DecodeJSON([]byte(tc.in))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%.40q: %v", tc.in, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%.40q: error %v, want one with %q", tc.in, err, tc.wantErr)
		}
	}
}

// TestDecodeJSONTypes: JSON values come out as Decode's bencode types.
func TestDecodeJSONTypes(t *testing.T) {
	got, err := DecodeJSON([]byte(`{"s":"x","n":-7,"t":true,"f":false,"l":["a",[1]],"d":{"k":"v"}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"s": "x", "n": int64(-7), "t": int64(1), "f": int64(0),
		"l": []any{"a", []any{int64(1)}}, "d": map[string]any{"k": "v"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v\nwant %#v", got, want)
	}
}

func TestEncodeJSON(t *testing.T) {
	b, err := EncodeJSON(map[string]any{"sdp": []byte("v=0\r\nc=IN IP4 <x>"), "n": uint64(3), "l": []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"l":["a"],"n":3,"sdp":"v=0\r\nc=IN IP4 <x>"}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

// FuzzDecodeJSON: whatever DecodeJSON accepts encodes as bencode and
// parses as a request without panicking.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"command":"ping"}`, `{"command":"offer","flags":["a"],"codec":{"strip":["PCMA"]}}`,
		`{"a":[[[]]]}`, `{"a":true}`, `{`, `{"a":1e3}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeJSON(b)
		if err != nil {
			return
		}
		if _, err := Encode(d); err != nil {
			t.Fatalf("decoded %q does not encode as bencode: %v", b, err)
		}
		_, _, _ = ParseRequest(d)
	})
}

// TestTCPJSON: on TCP, JSON objects are framed like bencoded ones, back
// to back with bencode, and each is answered in its own form.
func TestTCPJSON(t *testing.T) {
	stream := []byte(`j1 {"command":"ping"}` + "\n" + `j2 {"command": "list", "x": "}"}b3 d7:command4:pinge`)
	for _, chunk := range []int{1, 5, len(stream)} {
		got := string(replies(stream, chunk))
		want := `j1 {"result":"pong"}` + `j2 {"calls":["a"],"result":"ok"}` + "b3 d6:result4:ponge"
		if got != want {
			t.Errorf("chunks of %d: got %q, want %q", chunk, got, want)
		}
	}
}
