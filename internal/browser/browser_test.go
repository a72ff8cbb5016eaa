package browser

import (
	"slices"
	"strings"
	"testing"
)

func TestParseEvent(t *testing.T) {
	cases := []struct {
		in, typ, data, err string
	}{
		{in: `{"seq":3,"type":"registered","data":{}}`, typ: "registered", data: `{}`},
		{in: `{"seq":4,"type":"loaded"}`, typ: "loaded", data: `{}`},
		{in: `{"seq":5,"type":"stats","data":null}`, typ: "stats", data: `{}`},
		{in: `{"seq":6,"type":"ended","data":{"cause":"BYE"}}`, typ: "ended", data: `{"cause":"BYE"}`},
		{in: `{"seq":1,"data":{}}`, err: "no type"},
		{in: `{"seq":1,"type":"x","extra":1}`, err: "unknown field"},
		{in: `{"seq":1,"type":"x"} {}`, err: "more than one"},
		{in: `[1]`, err: "cannot unmarshal"},
		{in: ``, err: "EOF"},
	}
	for _, c := range cases {
		e, err := ParseEvent([]byte(c.in))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || e.Type != c.typ || string(e.Data) != c.data {
			t.Errorf("%q: got %+v %v, want type %s data %s", c.in, e, err, c.typ, c.data)
		}
	}
}

func TestArgs(t *testing.T) {
	for _, root := range []bool{false, true} {
		a := Args("/tmp/p", root)
		for _, want := range []string{"--headless", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
			"--user-data-dir=/tmp/p", "--autoplay-policy=no-user-gesture-required"} {
			if !slices.Contains(a, want) {
				t.Errorf("root %v: no %s in %q", root, want, a)
			}
		}
		if slices.Contains(a, "--no-sandbox") != root {
			t.Errorf("root %v: --no-sandbox %v", root, !root)
		}
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add([]byte(`{"seq":3,"type":"stats","data":{"inbound":{"packetsReceived":4}}}`))
	f.Add([]byte(`{"type":"x","data":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEvent(b)
		if err != nil {
			return
		}
		if e.Type == "" || len(e.Data) == 0 {
			t.Fatalf("%+v", e)
		}
		var s Stats
		_ = e.Decode(&s)
	})
}
