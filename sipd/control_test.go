package sipd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRefuseExposedListeners: a control surface that other hosts can
// reach needs a token or an allow list, and an allow list that admits
// only loopback on a routable address is a mistake; each error names the
// keys that fix it. NG is checked only where it is served (relay-only).
func TestRefuseExposedListeners(t *testing.T) {
	const tok = "0123456789abcdef0123"
	cases := []struct {
		name      string
		relayOnly bool
		edit      func(c *Config)
		want      []string // substrings of the error; none: valid
	}{
		{"http loopback, nothing set", false, func(c *Config) {}, nil},
		{"http ::1, nothing set", false, func(c *Config) { c.HTTP.Listen = "[::1]:8080" }, nil},
		{"http 0.0.0.0, nothing set", false, func(c *Config) { c.HTTP.Listen = "0.0.0.0:8080" },
			[]string{"http.listen 0.0.0.0:8080", "http.token", "http.allow"}},
		{"http ::, nothing set", false, func(c *Config) { c.HTTP.Listen = "[::]:8080" },
			[]string{"http.token", "http.allow"}},
		{"http routable, nothing set", false, func(c *Config) { c.HTTP.Listen = "192.0.2.1:8080" },
			[]string{"http.token", "http.allow"}},
		{"http 0.0.0.0 with a token", false, func(c *Config) { c.HTTP.Listen = "0.0.0.0:8080"; c.HTTP.Token = tok }, nil},
		{"http 0.0.0.0 with an allow list", false, func(c *Config) {
			c.HTTP.Listen = "0.0.0.0:8080"
			c.HTTP.Allow = []string{"10.0.0.0/8", "192.0.2.7"}
		}, nil},
		{"http 0.0.0.0, loopback-only allow", false, func(c *Config) {
			c.HTTP.Listen = "0.0.0.0:8080"
			c.HTTP.Allow = []string{"127.0.0.1"}
		}, []string{"http.allow admits only loopback"}},
		{"http routable, token and loopback-only allow", false, func(c *Config) {
			c.HTTP.Listen = "192.0.2.1:8080"
			c.HTTP.Token = tok
			c.HTTP.Allow = []string{"127.0.0.0/8", "::1/128"}
		}, []string{"http.allow admits only loopback"}},
		{"short token", false, func(c *Config) { c.HTTP.Token = "short" }, []string{"http.token", "at least 16"}},
		{"token with a space", false, func(c *Config) { c.HTTP.Token = "0123456789 abcdef0123" }, []string{"http.token"}},
		{"token of padding", false, func(c *Config) { c.HTTP.Token = strings.Repeat("=", 20) }, []string{"http.token"}},
		{"base64 token", false, func(c *Config) { c.HTTP.Token = "dGhpcyBpcyBhIHRva2Vu+/9=" }, nil},
		{"bad http.allow", false, func(c *Config) { c.HTTP.Allow = []string{"intranet"} }, []string{"http.allow", "intranet"}},
		{"no http connections", false, func(c *Config) { c.HTTP.MaxConnections = 0 }, []string{"http.max_connections 0"}},

		{"ng served on 0.0.0.0, empty allow", true, func(c *Config) { c.NG.Listen = "0.0.0.0:2223"; c.NG.Allow = nil },
			[]string{"ng.listen 0.0.0.0:2223", "ng.allow"}},
		{"ng served routable, default allow", true, func(c *Config) { c.NG.Listen = "192.0.2.1:2223" },
			[]string{"ng.allow admits only loopback", "192.0.2.1:2223"}},
		{"ng served on 0.0.0.0, default allow", true, func(c *Config) { c.NG.Listen = "0.0.0.0:2223" },
			[]string{"ng.allow admits only loopback"}},
		{"ng served routable, proxies allowed", true, func(c *Config) {
			c.NG.Listen = "192.0.2.1:2223"
			c.NG.Allow = []string{"192.0.2.10/32", "2001:db8::10"}
		}, nil},
		{"ng served on loopback, empty allow", true, func(c *Config) { c.NG.Allow = nil }, nil},
		{"ng not served, exposed", false, func(c *Config) { c.NG.Listen = "0.0.0.0:2223"; c.NG.Allow = nil }, nil},
		{"bad ng.allow", false, func(c *Config) { c.NG.Allow = []string{"10.0.0.0/40"} }, []string{"ng.allow"}},
		{"no ng connections", false, func(c *Config) { c.NG.MaxConnections = -1 }, []string{"ng.max_connections -1"}},
		{"no ng idle timeout", false, func(c *Config) { c.NG.IdleTimeout = 0 }, []string{"ng.idle_timeout"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := ParseConfig(DefaultConfigYAML())
			if err != nil {
				t.Fatal(err)
			}
			cfg.RelayOnly = c.relayOnly
			c.edit(cfg)
			err = cfg.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	// The same from the file, as an operator would meet it.
	text := strings.Replace(string(DefaultConfigYAML()), "listen: 127.0.0.1:8080", "listen: 0.0.0.0:8080", 1)
	if _, err := ParseConfig([]byte(text)); err == nil || !strings.Contains(err.Error(), "http.token") {
		t.Errorf("file with http.listen 0.0.0.0:8080: %v", err)
	}
}

// TestControlDefaults: the file's http and ng settings and the ones a
// file without them gets agree, and a list in the file replaces the
// default rather than adding to it.
func TestControlDefaults(t *testing.T) {
	def, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if def.HTTP.Token != "" || len(def.HTTP.Allow) != 0 || def.HTTP.MaxConnections != DefaultHTTPMaxConnections {
		t.Errorf("http defaults %+v", def.HTTP)
	}
	want := NGConfig{Listen: DefaultNGListen, Allow: DefaultNGAllow, MaxConnections: DefaultNGMaxConnections,
		IdleTimeout: Duration(DefaultNGIdleTimeout)}
	if !reflect.DeepEqual(def.NG, want) {
		t.Errorf("ng in the file %+v, want %+v", def.NG, want)
	}
	base := string(DefaultConfigYAML())
	i, j := strings.Index(base, "\nng:"), strings.Index(base, "\nsip:")
	none, err := ParseConfig([]byte(base[:i] + base[j:]))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(none.NG, want) {
		t.Errorf("ng without the section %+v, want %+v", none.NG, want)
	}
	i, j = strings.Index(base, "  token:"), strings.Index(base, "  pprof:")
	if i < 0 || j < i {
		t.Fatal("no http.token before http.pprof in the default file")
	}
	bare, err := ParseConfig([]byte(base[:i] + base[j:]))
	if err != nil {
		t.Fatal(err)
	}
	// The comment above pprof went with the cut; only the values matter.
	if bare.HTTP.MaxConnections != DefaultHTTPMaxConnections {
		t.Errorf("http without max_connections: %d", bare.HTTP.MaxConnections)
	}
	one, err := ParseConfig([]byte(strings.Replace(base, `allow: [127.0.0.0/8, "::1/128"]`, "allow: [10.0.0.5/32]", 1)))
	if err != nil || !reflect.DeepEqual(one.NG.Allow, []string{"10.0.0.5/32"}) {
		t.Errorf("ng.allow [10.0.0.5/32] read as %v (%v)", one.NG.Allow, err)
	}
}

// apiCall sends one request to the API at base.
func apiCall(t *testing.T, base, method, path, host string, hdr map[string]string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// metricValue reads one sample from /metrics text.
func metricValue(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	t.Fatalf("no %s in /metrics", series)
	return 0
}

// TestAPIAccess: which requests pass the token, Host and cross-origin
// checks, and that each refusal is counted by reason. The API has no
// relay, so a POST /drain that gets through answers 409.
func TestAPIAccess(t *testing.T) {
	const tok = "api-token-0123456789abcdef"
	const pass = http.StatusConflict // POST /drain reached the handler
	evil := map[string]string{"Origin": "http://attacker.example"}
	type req struct {
		name, method, path, host string
		hdr                      map[string]string
		code                     int
		challenge                string
	}
	bearer := func(s string) map[string]string { return map[string]string{"Authorization": s} }
	withToken := []req{
		{"no token", "GET", "/flows", "", nil, 401, `Bearer realm="sipd"`},
		{"wrong token", "GET", "/calls", "", bearer("Bearer x" + tok), 401, `Bearer realm="sipd", error="invalid_token"`},
		{"token prefix", "GET", "/calls", "", bearer("Bearer " + tok[:20]), 401, "Bearer"},
		{"basic scheme", "GET", "/registrations", "", bearer("Basic " + tok), 401, "Bearer"},
		{"token as scheme", "GET", "/registrations", "", bearer(tok), 401, "Bearer"},
		{"unknown path, no token", "GET", "/secret", "", nil, 401, "Bearer"},
		{"token", "GET", "/flows", "", bearer("Bearer " + tok), 200, ""},
		{"lower-case scheme", "GET", "/stats", "", bearer("bearer " + tok), 200, ""},
		{"health is open", "GET", "/health", "", nil, 200, ""},
		{"metrics is open", "GET", "/metrics", "", nil, 200, ""},
		{"drain, no token", "POST", "/drain", "", nil, 401, "Bearer"},
		{"drain", "POST", "/drain", "", bearer("Bearer " + tok), pass, ""},
		{"drain, foreign origin, no token", "POST", "/drain", "", evil, 403, ""},
		{"drain, foreign origin, token", "POST", "/drain", "", map[string]string{"Origin": "http://attacker.example", "Authorization": "Bearer " + tok}, 403, ""},
		{"drain, cross-site fetch", "POST", "/drain", "", map[string]string{"Sec-Fetch-Site": "cross-site", "Authorization": "Bearer " + tok}, 403, ""},
		{"drain, same-origin fetch", "POST", "/drain", "", map[string]string{"Sec-Fetch-Site": "same-origin", "Authorization": "Bearer " + tok}, pass, ""},
		{"a name as Host is fine with a token", "GET", "/flows", "sipd.example:8080", bearer("Bearer " + tok), 200, ""},
	}
	noToken := []req{
		{"flows", "GET", "/flows", "", nil, 200, ""},
		{"localhost", "GET", "/calls", "localhost:8080", nil, 200, ""},
		{"ipv6 literal", "GET", "/calls", "[::1]:8080", nil, 200, ""},
		{"rebound name", "GET", "/registrations", "attacker.example:8080", nil, 403, ""},
		{"rebound name drains", "POST", "/drain", "attacker.example", nil, 403, ""},
		{"rebound name reads metrics", "GET", "/metrics", "attacker.example", nil, 200, ""},
		{"drain", "POST", "/drain", "", nil, pass, ""},
		{"drain, foreign origin", "POST", "/drain", "", evil, 403, ""},
		{"drain, same-site", "POST", "/drain", "", map[string]string{"Sec-Fetch-Site": "same-site"}, 403, ""},
		{"wrong method", "GET", "/drain", "", nil, 405, ""},
	}
	for _, run := range []struct {
		token string
		reqs  []req
		want  map[string]float64
	}{
		{tok, withToken, map[string]float64{"token": 7, "cross_origin": 3, "host": 0}},
		{"", noToken, map[string]float64{"token": 0, "cross_origin": 2, "host": 2}},
	} {
		t.Run(fmt.Sprintf("token=%v", run.token != ""), func(t *testing.T) {
			srv := httptest.NewServer((&API{Started: time.Now(), Version: "test", Token: run.token}).Handler())
			defer srv.Close()
			for _, r := range run.reqs {
				code, h := apiCall(t, srv.URL, r.method, r.path, r.host, r.hdr)
				if code != r.code {
					t.Errorf("%s: %s %s: %d, want %d", r.name, r.method, r.path, code, r.code)
				}
				if got := h.Get("WWW-Authenticate"); !strings.HasPrefix(got, r.challenge) || (r.challenge == "") != (got == "") {
					t.Errorf("%s: WWW-Authenticate %q, want %q", r.name, got, r.challenge)
				}
			}
			for reason, n := range run.want {
				if got := metricValue(t, srv.URL, fmt.Sprintf(`sipxdp_http_refused_total{reason=%q}`, reason)); got != n {
					t.Errorf("refused %s: %v, want %v", reason, got, n)
				}
			}
		})
	}
}

// shortHTTPTimeouts shrinks the API server's timeouts for one test.
func shortHTTPTimeouts(t *testing.T, header, idle time.Duration) {
	h, r, w, i := httpHeaderTimeout, httpReadTimeout, httpWriteTimeout, httpIdleTimeout
	httpHeaderTimeout, httpReadTimeout, httpIdleTimeout = header, 2*header, idle
	t.Cleanup(func() { httpHeaderTimeout, httpReadTimeout, httpWriteTimeout, httpIdleTimeout = h, r, w, i })
}

// serveAPI runs the API as Run does, on the listener and server Run
// builds, until the test ends.
func serveAPI(t *testing.T, c HTTPConfig) (*API, string) {
	t.Helper()
	c.Listen = "127.0.0.1:0"
	ln, err := listenAPI(c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	api := &API{Started: time.Now(), Version: "test", Token: c.Token, Conns: ln}
	srv := newAPIServer(api.Handler(), slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return api, ln.Addr().String()
}

// closedWithin reads from c until it is closed and says how long that
// took; it fails the test if c is still open after limit.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", limit)
	}
	return time.Since(start)
}

// TestAPIServerLimits: silent and half-sent connections are closed after
// the header timeout, a kept-alive connection after the idle timeout,
// oversized headers get 431, connections over http.max_connections and
// from outside http.allow are refused at once, and all is counted.
func TestAPIServerLimits(t *testing.T) {
	// net/http lingers half a second after answering 431, to let the
	// client read the answer before the close; that is not a leak.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
	shortHTTPTimeouts(t, 300*time.Millisecond, 600*time.Millisecond)
	dial := func(addr string) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	t.Run("timeouts", func(t *testing.T) {
		_, addr := serveAPI(t, HTTPConfig{MaxConnections: 10})
		silent := dial(addr)
		half := dial(addr)
		fmt.Fprint(half, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
		if d := closedWithin(t, silent, 3*time.Second); d < 250*time.Millisecond {
			t.Errorf("silent connection closed after %v, before the header timeout", d)
		}
		closedWithin(t, half, 3*time.Second)

		kept := dial(addr)
		fmt.Fprint(kept, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(kept), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("kept-alive request: %v %v", resp, err)
		}
		resp.Body.Close()
		if d := closedWithin(t, kept, 3*time.Second); d < 500*time.Millisecond {
			t.Errorf("kept-alive connection closed after %v, before the idle timeout", d)
		}

		big := dial(addr)
		fmt.Fprintf(big, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 64<<10))
		resp, err = http.ReadResponse(bufio.NewReader(big), nil)
		if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("64 KiB of headers: %v %v, want 431", resp, err)
		}
	})
	t.Run("connection cap", func(t *testing.T) {
		shortHTTPTimeouts(t, 5*time.Second, 5*time.Second)
		api, addr := serveAPI(t, HTTPConfig{MaxConnections: 2})
		a, b := dial(addr), dial(addr)
		fmt.Fprint(a, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n") // held open
		fmt.Fprint(b, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
		deadline := time.Now().Add(3 * time.Second)
		for api.Conns.Stats().Active < 2 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			defer c.Close()
			if d := closedWithin(t, c, 3*time.Second); d > time.Second {
				t.Errorf("connection over the cap closed after %v", d)
			}
		}
		if st := api.Conns.Stats(); st.RefusedConns != 1 {
			t.Errorf("refused over the cap: %d, want 1", st.RefusedConns)
		}
		a.Close()
		b.Close()
		// Slots come back: a new client is served.
		deadline = time.Now().Add(3 * time.Second)
		for api.Conns.Stats().Active > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `sipxdp_http_refused_total{reason="connections"} 1`) {
			t.Errorf("/metrics does not count the refusal:\n%s", body)
		}
	})
	t.Run("pprof profile outlives the write timeout", func(t *testing.T) {
		shortHTTPTimeouts(t, 5*time.Second, 5*time.Second)
		httpWriteTimeout = time.Second
		ln, err := listenAPI(HTTPConfig{Listen: "127.0.0.1:0", MaxConnections: 4}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		srv := newAPIServer((&API{Started: time.Now(), Pprof: true}).Handler(), slog.New(slog.DiscardHandler))
		go srv.Serve(ln)
		defer srv.Close()
		resp, err := http.Get("http://" + ln.Addr().String() + "/debug/pprof/profile?seconds=2")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Errorf("2 s profile with a 1 s write timeout: %d %q", resp.StatusCode, body)
		}
	})
	t.Run("source", func(t *testing.T) {
		api, addr := serveAPI(t, HTTPConfig{MaxConnections: 2, Allow: []string{"192.0.2.0/24"}})
		if _, err := http.Get("http://" + addr + "/health"); err == nil {
			t.Error("a source outside http.allow was served")
		}
		if st := api.Conns.Stats(); st.RefusedSource == 0 {
			t.Errorf("stats %+v: the refusal is not counted", st)
		}
	})
}
