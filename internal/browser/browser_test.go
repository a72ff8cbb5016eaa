package browser

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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

// TestPageServer drives the page's side of the protocol by hand: files,
// events in, commands out, and Await and Seen over what came in.
func TestPageServer(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<p>page</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(t.TempDir(), "lib.js")
	if err := os.WriteFile(extra, []byte("var lib;"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newPage(t)
	srv := httptest.NewServer(p.handler(Config{PageDir: dir, Files: map[string]string{"/jssip.js": extra}}))
	defer srv.Close()
	get := func(path string) (int, string) {
		r, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	post := func(body string) int {
		r, err := http.Post(srv.URL+"/event", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if code, body := get("/index.html"); code != 200 || body != "<p>page</p>" {
		t.Errorf("page: %d %q", code, body)
	}
	if code, body := get("/jssip.js"); code != 200 || body != "var lib;" {
		t.Errorf("extra file: %d %q", code, body)
	}
	for _, e := range []string{`{"seq":1,"type":"loaded"}`, `{"seq":2,"type":"failed","data":{"status":486}}`, `{"seq":3,"type":"failed","data":{"status":487}}`} {
		if code := post(e); code != http.StatusNoContent {
			t.Fatalf("post %s: %d", e, code)
		}
	}
	if code := post(`{"seq":4}`); code != http.StatusBadRequest {
		t.Errorf("an event without a type: %d, want 400", code)
	}
	if e := p.Await(time.Second, []string{"failed"}); e.Seq != 2 {
		t.Errorf("Await: %v, want the first failed", e)
	}
	if e := p.Await(time.Second, []string{"failed", "loaded"}); e.Seq != 1 {
		t.Errorf("Await: %v, want loaded, the first not yet returned", e)
	}
	if e, ok := p.Seen("failed"); !ok || e.Seq != 3 {
		t.Errorf("Seen: %v %v, want the latest failed", e, ok)
	}
	p.Command("call", map[string]any{"target": "bob"})
	if code, body := get("/command"); code != 200 || body != `{"op":"call","target":"bob"}` {
		t.Errorf("command: %d %s", code, body)
	}
}

func TestTranscript(t *testing.T) {
	p := newPage(t)
	add := func(typ, data string) {
		p.events = append(p.events, Event{Seq: len(p.events) + 1, Type: typ, Data: []byte(data)})
	}
	add("registered", `{}`)
	for range 10 {
		add("console", `{"level":"log","text":"jssip"}`)
		add("stats", `{}`)
	}
	add("failed", `{"status":488}`)
	got := p.Transcript(2)
	for _, want := range []string{"#1 registered", "#18 console.log: jssip", "#20 console.log: jssip", "#21 stats", "#22 failed"} {
		if !strings.Contains(got, want) {
			t.Errorf("transcript lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "console."); n != 2 {
		t.Errorf("%d console lines, want 2:\n%s", n, got)
	}
	if n := strings.Count(got, " stats "); n != 3 {
		t.Errorf("%d stats lines, want 3:\n%s", n, got)
	}
}

func TestEnv(t *testing.T) {
	got := Env([]string{"PATH=/bin", "HOME=/root", "XDG_CONFIG_HOME=/root/.config", "XDG_RUNTIME_DIR=/run/user/0", "TMPDIR=/var/tmp", "LANG=C"}, "/t")
	want := []string{"PATH=/bin", "LANG=C", "HOME=/t", "TMPDIR=/t/tmp", "XDG_RUNTIME_DIR=/t/run"}
	if !slices.Equal(got, want) {
		t.Errorf("Env: %q, want %q", got, want)
	}
}
