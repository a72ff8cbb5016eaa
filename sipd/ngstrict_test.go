package sipd

import (
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestNGStrictConfig: ng.strict is off by default, read from the file and
// from SIPD_NG_STRICT, and a value that is not a boolean is refused with
// its place.
func TestNGStrictConfig(t *testing.T) {
	cfg, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NG.Strict {
		t.Error("ng.strict on by default")
	}
	base := string(DefaultConfigYAML())
	if !strings.Contains(base, "\n  strict: false\n") {
		t.Fatal("default config does not document ng.strict")
	}
	on := strings.Replace(base, "\n  strict: false\n", "\n  strict: true\n", 1)
	if cfg, err = ParseConfig([]byte(on)); err != nil || !cfg.NG.Strict {
		t.Errorf("strict: true read as %v (%v)", cfg != nil && cfg.NG.Strict, err)
	}
	if cfg, err = Load(Sources{Env: []string{"SIPD_NG_STRICT=true"}}); err != nil || !cfg.NG.Strict {
		t.Errorf("SIPD_NG_STRICT=true read as %v (%v)", cfg != nil && cfg.NG.Strict, err)
	}
	bad := strings.Replace(base, "\n  strict: false\n", "\n  strict: maybe\n", 1)
	if _, err := ParseConfig([]byte(bad)); err == nil || !strings.Contains(err.Error(), "ng.strict") || !lineRE.MatchString(err.Error()) {
		t.Errorf("strict: maybe: %v, want an error at its line naming ng.strict", err)
	}
	if _, err := Load(Sources{Env: []string{"SIPD_NG_STRICT=maybe"}}); err == nil || !strings.Contains(err.Error(), "ng.strict") {
		t.Errorf("SIPD_NG_STRICT=maybe: %v, want an error naming ng.strict", err)
	}
}

// TestRelayOnlyNGStrict runs sipd -relay-only with ng.strict on: an offer
// asking for transcoding is refused naming the flag, as is a recording
// command, while a plain offer is relayed; with ng.strict off the same
// offer is relayed.
func TestRelayOnlyNGStrict(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, strict := range []bool{true, false} {
		_, n, _, _, stop := startRelayOnly(t, func(c *Config) { c.NG.Strict = strict })
		alice := newUA(t, "alice", netip.AddrPort{})
		transcode := n.do(map[string]any{"command": "offer", "call-id": "strict-1", "from-tag": "a", "sdp": alice.sdp(),
			"codec": map[string]any{"transcode": []any{"PCMA"}}})
		if strict {
			if transcode["result"] != "error" || transcode["error-reason"] != "transcoding not supported: codec-transcode-pcma" {
				t.Errorf("strict: offer with codec transcode: %v", transcode)
			}
		} else if transcode["result"] != "ok" {
			t.Errorf("not strict: offer with codec transcode: %v", transcode)
		}
		if r := n.do(map[string]any{"command": "offer", "call-id": "strict-2", "from-tag": "a", "sdp": alice.sdp()}); r["result"] != "ok" {
			t.Errorf("strict %v: plain offer: %v", strict, r)
		}
		if r := n.do(map[string]any{"command": "start recording", "call-id": "strict-2"}); r["error-reason"] != "recording not supported: start recording" {
			t.Errorf("strict %v: start recording: %v", strict, r)
		}
		stop()
	}
}
