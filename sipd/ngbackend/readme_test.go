package ngbackend

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// readmeTable returns the names (normalised as ng does keys) in the
// first column of README's "Every NG command and flag" tables, with the
// state column of their row. The README, not this package, is what
// operators read to learn which flags act; this keeps the two in step.
func readmeTable(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "**Every NG command and flag.**")
	if i < 0 {
		t.Fatal("README has no \"Every NG command and flag\" table")
	}
	s = s[i:]
	if j := strings.Index(s, "\n## "); j >= 0 {
		s = s[:j]
	}
	tick := regexp.MustCompile("`([^`]+)`")
	names := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "| `") || len(cells) < 4 {
			continue
		}
		state := strings.TrimSpace(cells[2])
		for _, m := range tick.FindAllStringSubmatch(cells[1], -1) {
			n := strings.ToLower(strings.TrimSuffix(m[1], "="))
			n = strings.NewReplacer(" ", "-", "_", "-").Replace(n)
			n = strings.TrimSuffix(n, "-name")
			names[n] = state
		}
	}
	if len(names) == 0 {
		t.Fatal("README's NG table has no rows")
	}
	return names
}

// covered reports whether a row names k itself or a family k belongs to
// (replace for replace-origin, codec-strip for codec-strip-pcmu).
func covered(names map[string]string, k string) (string, bool) {
	for n, state := range names {
		if k == n || strings.HasPrefix(k, n+"-") {
			return state, true
		}
	}
	return "", false
}

func TestREADMEListsHonouredFlags(t *testing.T) {
	names := readmeTable(t)
	// One key of each form honoured() accepts.
	for _, k := range []string{
		"ice", "dtls", "sdes", "transport-protocol", "generate-mid",
		"replace-origin", "replace-session-connection", "rtcp-mux-offer", "rtcp-mux-demux",
		"dtls-passive", "sdes-off", "supports-load-limit",
		"codec-strip-pcmu", "codec-mask-opus", "codec-except-g722", "codec-offer-pcma", "allow-no-codec-media",
		"from-interface", "to-interface", "inbound-peer", "outbound-peer",
		"rtp/avp", "rtp/savp", "rtp/avpf", "rtp/savpf", "udp/tls/rtp/savp", "udp/tls/rtp/savpf",
		"label", "from-label", "set-label", "to-label", "from-tags", "from-tags-a1b2",
		"symmetric", "asymmetric", "strict-source", "port-latching", "tos", "loop-protect",
		"endpoint-learning", "endpoint-learning-immediate", "nat-wait", "media-handover", "pierce-nat", "no-port-latching",
	} {
		if !honoured(k) {
			t.Errorf("honoured(%q) = false; this list is of keys it accepts", k)
			continue
		}
		state, ok := covered(names, k)
		if !ok {
			t.Errorf("README's NG table has no row for %q, which the relay acts on", k)
		} else if state == "ignored" {
			t.Errorf("README marks %q ignored, but honoured() accepts it", k)
		}
	}
}

func TestREADMEIgnoredFlagsAreLogged(t *testing.T) {
	// A row marked plain "ignored" promises the debug log, which is only
	// written for keys honoured() rejects.
	n := 0
	for k, state := range readmeTable(t) {
		if state != "ignored" {
			continue
		}
		n++
		if honoured(k) {
			t.Errorf("README marks %q ignored (logged at debug), but honoured() accepts it, so it is not logged", k)
		}
	}
	if n == 0 {
		t.Fatal("README's NG table has no ignored rows")
	}
}

// TestREADMEForkRows: the via-branch and delete to-tag rows say what
// TestForks checks, per-branch state; their old text said one state per
// call.
func TestREADMEForkRows(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `via-branch` |") && !strings.HasPrefix(line, "| `to-tag` |") {
			continue
		}
		rows++
		cells := strings.Split(line, "|")
		if state := strings.TrimSpace(cells[2]); state != "honoured" {
			t.Errorf("README row %q: state %q, want honoured (per-branch state, sipd/media/fork.go)", cells[1], state)
		}
		if strings.Contains(line, "one state per call") || strings.Contains(line, "no per-branch state") {
			t.Errorf("README row still says there is no per-branch state: %s", line)
		}
	}
	if rows != 3 {
		t.Errorf("README has %d via-branch and delete to-tag rows, want 3 (offer/answer via-branch, delete to-tag and via-branch)", rows)
	}
}
