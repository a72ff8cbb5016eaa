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
		"drop-traffic", "drop-traffic-start", "drop-traffic-stop",
		"no-redis-update",
		"dtls-fingerprint", "dtls-reverse", "ice-lite", "trickle-ice", "reject-ice", "recrypt", "no-tls-id", "webrtc",
		"strip-extmap", "extmap-strip-all", "full-rtcp-attribute", "no-rtcp-attribute", "rtcp-mux-reject",
		"sdes-only-aes-cm-128-hmac-sha1-32", "sdes-no-aes-cm-128-hmac-sha1-80", "sdes-lifetime",
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

// TestREADMERowsAreFinal: issue 15's table marks every command and flag
// honoured, strict, n/a or refused, each with its reason; a row left
// ignored or partly is work not done. Alias rows ("as `direction`") take
// their target's state.
func TestREADMERowsAreFinal(t *testing.T) {
	final := map[string]bool{"honoured": true, "strict": true, "strict (offer)": true, "n/a": true, "refused": true}
	for k, state := range readmeTable(t) {
		if !final[state] && !strings.HasPrefix(state, "as ") {
			t.Errorf("README's NG table marks %q %q; want honoured, strict, n/a or refused", k, state)
		}
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

// fieldKeys are the keys of honoured rows that honoured() never sees:
// those ng.ParseRequest reads into Request fields (or delete.go reads),
// the dictionaries it folds into flags (codec, extmap), and the command
// names of the command table.
var fieldKeys = map[string]bool{
	"call-id": true, "from-tag": true, "to-tag": true, "sdp": true, "via-branch": true,
	"ice": true, "transport-protocol": true, "replace": true, "direction": true,
	"received-from": true, "rtcp-mux": true, "sip-message-type": true,
	"fatal": true, "delete-delay": true, "fast": true, "supports": true,
	"codec": true, "extmap": true,
	"ping": true, "offer": true, "answer": true, "delete": true, "query": true, "list": true, "statistics": true,
}

// TestREADMEHonouredRowsAreRead: a row that says honoured names keys the
// relay reads. Each name of such a row (for "ICE=force", its key) must
// be accepted by honoured(), the flags the backend acts on, or be one of
// fieldKeys, so a row cannot claim a flag nothing reads.
func TestREADMEHonouredRowsAreRead(t *testing.T) {
	n := 0
	for name, state := range readmeTable(t) {
		if state != "honoured" {
			continue
		}
		n++
		k, _, _ := strings.Cut(name, "=")
		if !honoured(k) && !fieldKeys[k] {
			t.Errorf("README marks %q honoured, but honoured() does not accept %q and ng.ParseRequest reads no field by that name", name, k)
		}
	}
	if n == 0 {
		t.Fatal("README's NG table has no honoured rows")
	}
}
