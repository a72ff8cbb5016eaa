package security

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/netns"
	"sipxdp/internal/sipua"
	"sipxdp/ng"
	"sipxdp/sipd"
)

// The control surfaces: sipd's HTTP API and, in relay-only mode, the NG
// port. Each test exposes the surface on the namespace's own address, so
// the attacker's namespace can reach it as a host on the network would.

const apiToken = "ctl-token-5f0c2a9e71d4b836"

// apiAddr is the API on sipd's caller-side address, reachable from the
// attacker's link through the relay namespace.
var apiAddr = netip.AddrPortFrom(netns.V4.RelayA, 8080)

// httpFrom is an HTTP client whose connections start in ns.
func httpFrom(ns *netns.NS) *http.Client {
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext}}
}

// apiCall sends one API request and returns the status, the body and the
// response headers; status 0 when the request got no HTTP answer.
func apiCall(t *testing.T, c *http.Client, method, path string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+apiAddr.String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Logf("%s %s: %v", method, path, err)
		return 0, "", nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), resp.Header
}

// TestCrossSiteDrain: a web page on an attacker's site makes the
// operator's browser POST /drain to the API (the browser's host may reach
// it: it is on the allow list). Browsers send such requests with a
// foreign Origin and Sec-Fetch-Site: cross-site, and a form post needs no
// preflight. Each is refused with 403 and the relay keeps taking calls;
// the operator's own client (no Origin, or its own, with the token) still
// drains and resumes, and a subscriber's call still goes through.
func TestCrossSiteDrain(t *testing.T) {
	e := newEnv(t, func(c *sipd.Config) {
		c.HTTP.Listen = apiAddr.String()
		c.HTTP.Token = apiToken
		c.HTTP.Allow = []string{"10.252.1.0/24", "10.252.3.0/24"}
	})
	browser := httpFrom(e.attacker.NS)
	const evil = "http://attacker.example"
	attacks := []struct {
		name string
		hdr  map[string]string
	}{
		{"foreign Origin", map[string]string{"Origin": evil}},
		{"Sec-Fetch-Site cross-site", map[string]string{"Origin": evil, "Sec-Fetch-Site": "cross-site"}},
		{"form post", map[string]string{"Origin": evil, "Sec-Fetch-Site": "cross-site",
			"Content-Type": "application/x-www-form-urlencoded"}},
		// A page that somehow holds the token (a dashboard it framed, a
		// leaked bookmark) is still cross-site.
		{"foreign Origin with the token", map[string]string{"Origin": evil, "Authorization": "Bearer " + apiToken}},
		{"same-site sibling", map[string]string{"Origin": "http://other.10.252.1.1.nip.example", "Sec-Fetch-Site": "same-site"}},
	}
	for _, a := range attacks {
		code, body, _ := apiCall(t, browser, "POST", "/drain", a.hdr)
		drained := e.sipd.Health().Media.Draining
		if code != http.StatusForbidden || drained {
			t.Errorf("%s: POST /drain answered %d %q; relay draining: %v (want 403, not draining)",
				a.name, code, strings.TrimSpace(body), drained)
		}
		if drained { // undo, so the next attack is judged on its own
			e.sipd.Do("POST", "/drain?off=1", nil, nil)
		}
	}
	if n, _ := e.sipd.Metric(`sipxdp_http_refused_total{reason="cross_origin"}`); n < float64(len(attacks)) {
		t.Errorf("cross-origin refusals counted: %v, want %d", n, len(attacks))
	}

	// The operator: a script with no Origin, then a page of the API's own
	// origin, both with the token, from the caller's side.
	admin := httpFrom(e.tp.Caller)
	auth := map[string]string{"Authorization": "Bearer " + apiToken}
	if code, body, _ := apiCall(t, admin, "POST", "/drain", auth); code != 200 || !e.sipd.Health().Media.Draining {
		t.Fatalf("operator's drain: %d %s", code, body)
	}
	auth["Origin"] = "http://" + apiAddr.String()
	auth["Sec-Fetch-Site"] = "same-origin"
	if code, body, _ := apiCall(t, admin, "POST", "/drain?off=1", auth); code != 200 || e.sipd.Health().Media.Draining {
		t.Fatalf("operator's resume: %d %s", code, body)
	}
	e.legitCall()
}

// TestAPITokenRequired: with http.token set and the API on a routable
// address, a stranger reads nothing and changes nothing without the
// token (401 with a Bearer challenge, the wrong token too), while
// /health and /metrics stay open for monitoring and the operator's
// client with the token is served.
func TestAPITokenRequired(t *testing.T) {
	e := newEnv(t, func(c *sipd.Config) {
		c.HTTP.Listen = apiAddr.String()
		c.HTTP.Token = apiToken
	})
	e.legitCall() // something to list: registrations
	x := httpFrom(e.attacker.NS)
	protected := []struct{ method, path string }{
		{"GET", "/flows"}, {"GET", "/calls"}, {"GET", "/registrations"}, {"GET", "/stats"}, {"POST", "/drain"},
	}
	refusals := 0
	for _, p := range protected {
		for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer wrong-" + apiToken},
			{"Authorization": "Basic " + apiToken}} {
			code, body, h := apiCall(t, x, p.method, p.path, hdr)
			refusals++
			if code != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("stranger %s %s (%v): %d %.80q, WWW-Authenticate %q; want 401 with a Bearer challenge",
					p.method, p.path, hdr, code, body, h.Get("WWW-Authenticate"))
			}
		}
	}
	if e.sipd.Health().Media.Draining {
		t.Error("a stranger drained the relay")
		e.sipd.Do("POST", "/drain?off=1", nil, nil)
	}
	for _, path := range []string{"/health", "/metrics"} {
		if code, _, _ := apiCall(t, x, "GET", path, nil); code != 200 {
			t.Errorf("GET %s without a token: %d, want 200", path, code)
		}
	}
	if n, _ := e.sipd.Metric(`sipxdp_http_refused_total{reason="token"}`); n < float64(refusals) {
		t.Errorf("token refusals counted: %v, want %d", n, refusals)
	}

	// The operator (the harness's client sends the token).
	for _, p := range protected {
		path := p.path
		if p.method == "POST" {
			path += "?off=1"
		}
		if code, body := e.sipd.Do(p.method, path, nil, nil); code != 200 {
			t.Errorf("operator %s %s: %d %s", p.method, path, code, body)
		}
	}
	var regs []map[string]any
	e.sipd.GetJSON("/registrations", &regs)
	if len(regs) == 0 {
		t.Error("operator sees no registrations after alice and bob registered")
	}
	e.legitCall()
}

// ngPeer sends NG commands over one socket (UDP or TCP) opened in a
// namespace, as a SIP proxy's rtpengine module would.
type ngPeer struct {
	t      *testing.T
	c      net.Conn
	stream bool
	seq    int
}

func dialNG(t *testing.T, ns *netns.NS, network string, addr netip.AddrPort) *ngPeer {
	t.Helper()
	p, err := tryDialNG(t, ns, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tryDialNG is dialNG for a peer that may be refused: a TCP connection
// reset as soon as it is accepted can fail the dial itself.
func tryDialNG(t *testing.T, ns *netns.NS, network string, addr netip.AddrPort) (*ngPeer, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, network, addr.String())
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &ngPeer{t: t, c: c, stream: network == "tcp"}, nil
}

// errNoReply is cmd's error when nothing came back in time (or a TCP
// peer closed the connection without a reply).
var errNoReply = errors.New("no NG reply")

// cmd sends one command and waits up to wait for its reply.
func (p *ngPeer) cmd(d map[string]any, wait time.Duration) (map[string]any, error) {
	p.t.Helper()
	body, err := ng.Encode(d)
	if err != nil {
		p.t.Fatal(err)
	}
	p.seq++
	cookie := fmt.Sprintf("k%d", p.seq)
	if _, err := p.c.Write(append([]byte(cookie+" "), body...)); err != nil {
		return nil, fmt.Errorf("%w: write: %v", errNoReply, err)
	}
	_ = p.c.SetReadDeadline(time.Now().Add(wait))
	var buf []byte
	chunk := make([]byte, 65536)
	for {
		n, err := p.c.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if n > 0 {
			got, rest, ok := bytes.Cut(buf, []byte(" "))
			if ok && string(got) == cookie {
				v, derr := ng.Decode(rest)
				if derr == nil {
					m, _ := v.(map[string]any)
					return m, nil
				}
				if !p.stream || !errors.Is(derr, ng.ErrUnexpectedEOF) {
					p.t.Fatalf("NG reply %q: %v", buf, derr)
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errNoReply, err)
		}
		if !p.stream {
			buf = buf[:0] // a datagram for another cookie
		}
	}
}

// TestNGFromStranger: sipd -relay-only serves NG on a routable address,
// and ng.allow admits the proxy on the caller's side only. The attacker
// lists the relay's calls, deletes the proxy's live call, offers its
// own, and tries TCP: every command is dropped without a reply and
// counted, the proxy's call survives, and the proxy is still served.
func TestNGFromStranger(t *testing.T) {
	ngAddr := netip.AddrPortFrom(netns.V4.RelayA, 2223)
	e := newEnvArgs(t, []string{"-relay-only"}, func(c *sipd.Config) {
		c.NG.Listen = ngAddr.String()
		c.NG.TCP = true
		c.NG.Allow = []string{netns.V4.Caller.String() + "/32"}
	})
	proxy := dialNG(t, e.tp.Caller, "udp", ngAddr)
	const callID = "ng-victim-1"
	offer := map[string]any{"command": "offer", "call-id": callID, "from-tag": "ft1",
		"sdp": sipua.CRLF(sipua.SDP(netip.AddrPortFrom(netns.V4.Caller, 40000)))}
	if r, err := proxy.cmd(offer, 3*time.Second); err != nil || r["result"] != "ok" {
		t.Fatalf("proxy's offer: %v %v", r, err)
	}
	answer := map[string]any{"command": "answer", "call-id": callID, "from-tag": "ft1", "to-tag": "tt1",
		"sdp": sipua.CRLF(sipua.SDP(netip.AddrPortFrom(netns.V4.Callee, 40002)))}
	if r, err := proxy.cmd(answer, 3*time.Second); err != nil || r["result"] != "ok" {
		t.Fatalf("proxy's answer: %v %v", r, err)
	}

	x := dialNG(t, e.attacker.NS, "udp", ngAddr)
	attacks := []map[string]any{
		{"command": "ping"},
		{"command": "list"},
		{"command": "query", "call-id": callID},
		{"command": "delete", "call-id": callID, "from-tag": "ft1"},
		{"command": "offer", "call-id": "x-1", "from-tag": "xf",
			"sdp": sipua.CRLF(sipua.SDP(netip.AddrPortFrom(e.attacker.V4, 40000)))},
	}
	for _, a := range attacks {
		if r, err := x.cmd(a, 700*time.Millisecond); !errors.Is(err, errNoReply) {
			t.Errorf("stranger's %v over UDP answered: %v", a["command"], r)
		}
	}
	if xt, err := tryDialNG(t, e.attacker.NS, "tcp", ngAddr); err != nil {
		t.Logf("stranger's TCP connection refused at once: %v", err)
	} else if r, err := xt.cmd(map[string]any{"command": "list"}, 2*time.Second); !errors.Is(err, errNoReply) {
		t.Errorf("stranger's list over TCP answered: %v", r)
	}

	// The proxy's call is intact and the proxy is served.
	r, err := proxy.cmd(map[string]any{"command": "query", "call-id": callID}, 3*time.Second)
	if err != nil || r["result"] != "ok" {
		t.Errorf("proxy's query after the attack: %v %v (the stranger's delete went through?)", r, err)
	}
	r, err = proxy.cmd(map[string]any{"command": "list"}, 3*time.Second)
	if err != nil || fmt.Sprint(r["calls"]) != "["+callID+"]" {
		t.Errorf("proxy's list: %v %v, want only %s (the stranger's offer went through?)", r, err, callID)
	}
	pt := dialNG(t, e.tp.Caller, "tcp", ngAddr)
	if r, err := pt.cmd(map[string]any{"command": "ping"}, 3*time.Second); err != nil || r["result"] != "pong" {
		t.Errorf("proxy's ping over TCP: %v %v", r, err)
	}
	if r, err := proxy.cmd(map[string]any{"command": "delete", "call-id": callID, "from-tag": "ft1"}, 3*time.Second); err != nil || r["result"] != "ok" {
		t.Errorf("proxy's delete: %v %v", r, err)
	}
	want := float64(len(attacks) + 1) // every datagram, and the TCP connection
	if n, _ := e.sipd.Metric(`sipxdp_ng_refused_total{reason="source"}`); n < want {
		t.Errorf("NG refusals counted: %v, want %v", n, want)
	}
}
