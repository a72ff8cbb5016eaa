package sipconf

import (
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
	c.Protect.Exempt = []string{"10.0.0.0/33"}
	c.Protect.BannedChallengeInterval = -1
	c.Protect.SetupPerSource = -1
	c.Protect.SetupUnauthenticatedShare = 0
	err := c.Validate()
	for _, want := range []string{"sip.domains", "sip.listen[0].transport", "sip.listen[0].addr", "tls needs cert", "needs sip.advertise", "max_message_size", "SHA-1", "sip.registrar", "exempt",
		"banned_challenge_interval", "setup_per_source", "setup_unauthenticated_share"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
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
