package sipconf

import (
	"errors"
	"strings"
	"testing"
)

func TestDefaultValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Realm() != "localhost" {
		t.Fatalf("realm %q", c.Realm())
	}
}

func TestValidateReportsEachProblem(t *testing.T) {
	c := Default()
	c.Domains = nil
	c.Listen = []Listen{{Transport: "sctp", Addr: "x"}, {Transport: "tls", Addr: "127.0.0.1:5061"}, {Transport: "udp", Addr: "0.0.0.0:5060"}}
	c.MaxSize = 10
	c.Auth.Algorithms = []string{"SHA-1"}
	c.Registrar.MinExpires = Duration(2 * c.Registrar.MaxExpires)
	c.Registrar.CountEvery /= 100
	c.Protect.Exempt = []string{"10.0.0.0/33"}
	c.Protect.BannedChallengeInterval = -1
	c.Protect.SetupPerSource = -1
	c.Protect.SetupUnauthenticatedShare = 0
	c.Connections = Connections{Max: 10, PerSource: 20, IdleTimeout: -1}
	err := c.Validate()
	for _, want := range []string{"sip.domains", "sip.listen[0].transport", "sip.listen[0].addr", "tls needs cert", "needs sip.advertise", "max_message_size", "SHA-1", "sip.registrar", "sip.registrar.count_every 100ms", "exempt",
		"banned_challenge_interval", "setup_per_source", "setup_unauthenticated_share",
		"sip.connections.per_source 20 is above max 10", "sip.connections.message_timeout 0s", "sip.connections.idle_timeout -1ns", "sip.connections.tls_handshake_timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

func TestValidateListenTransports(t *testing.T) {
	cases := []struct {
		name string
		l    Listen
		want string // "": valid
	}{
		{"ws", Listen{Transport: "ws", Addr: "127.0.0.1:8088"}, ""},
		{"ws upper case", Listen{Transport: "WS", Addr: "[::1]:8088"}, ""},
		{"wss with cert", Listen{Transport: "wss", Addr: "127.0.0.1:8089", Cert: "c.pem", Key: "k.pem"}, ""},
		{"wss without key", Listen{Transport: "wss", Addr: "127.0.0.1:8089", Cert: "c.pem"}, "sip.listen[1]: wss needs cert and key"},
		{"wss without cert", Listen{Transport: "wss", Addr: "127.0.0.1:8089"}, "wss needs cert and key"},
		{"tls without cert", Listen{Transport: "tls", Addr: "127.0.0.1:5061"}, "tls needs cert and key"},
		{"unknown", Listen{Transport: "sctp", Addr: "127.0.0.1:5060"}, "want udp, tcp, tls, ws or wss"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Listen = append(c.Listen[:1:1], tc.l)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestProtectSetupShareRange(t *testing.T) {
	for _, c := range []struct {
		share int
		ok    bool
	}{{0, false}, {1, true}, {50, true}, {100, true}, {101, false}, {-5, false}} {
		cfg := Default()
		cfg.Protect.SetupUnauthenticatedShare = c.share
		if err := cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("share %d: %v", c.share, err)
		}
	}
}

func TestConnectionsValidate(t *testing.T) {
	cases := []struct {
		name string
		c    Connections
		want string // "" : valid
	}{
		{"default", Default().Connections, ""},
		{"derived caps", Connections{MessageTimeout: 1, IdleTimeout: 1, TLSHandshakeTimeout: 1}, ""},
		{"set caps", Connections{Max: 100, PerSource: 100, MessageTimeout: 1, IdleTimeout: 1, TLSHandshakeTimeout: 1}, ""},
		{"per source with derived max", Connections{PerSource: 5000, MessageTimeout: 1, IdleTimeout: 1, TLSHandshakeTimeout: 1}, ""},
		{"negative max", Connections{Max: -1, MessageTimeout: 1, IdleTimeout: 1, TLSHandshakeTimeout: 1}, "sip.connections.max -1"},
		{"negative per source", Connections{PerSource: -1, MessageTimeout: 1, IdleTimeout: 1, TLSHandshakeTimeout: 1}, "sip.connections.per_source -1"},
		{"no idle timeout", Connections{MessageTimeout: 1, TLSHandshakeTimeout: 1}, "sip.connections.idle_timeout 0s: must be positive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := errors.Join(tc.c.validate()...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
