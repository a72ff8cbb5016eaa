package security

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/sipua"
	"sipxdp/sipd"
)

// Nothing lost in a crash (issue 11, section 9): a 200 OK to a REGISTER
// promises the binding is on disk, and a finished call's CDR is on disk
// before the BYE's 200 goes back. These tests run sipd on its defaults
// (registrar store and CDR file in state_dir) and kill it.

// registerNoAuth registers aor (REGISTER authentication is off in these
// tests, so any name will do and one request is one binding) and returns
// the answer.
func registerNoAuth(ua *sipua.UA, aor string) *sip.Response {
	m := sipua.Msg{Method: "REGISTER", RURI: "sip:" + domain, From: "sip:" + aor + "@" + domain, To: "sip:" + aor + "@" + domain,
		CallID: "reg-" + aor, CSeq: 1, Headers: []string{"Expires: 600"}}
	ua.Send(ua.Request(m))
	return ua.Response(3 * time.Second)
}

// registeredAoRs reads /registrations.
func registeredAoRs(e *env) map[string]bool {
	e.t.Helper()
	var bs []struct {
		AoR string `json:"aor"`
	}
	e.sipd.GetJSON("/registrations", &bs)
	out := map[string]bool{}
	for _, b := range bs {
		out[b.AoR] = true
	}
	return out
}

func noRegisterAuth(c *sipd.Config) { c.SIP.Auth.Register = false }

// N REGISTERs answered 200, sipd killed at once with SIGKILL, restarted on
// the same state directory: every binding is back.
func TestRegistrationsSurviveSIGKILL(t *testing.T) {
	e := newEnv(t, noRegisterAuth)
	const n = 50
	ua := e.caller()
	for i := range n {
		aor := fmt.Sprintf("kill%02d", i)
		if r := registerNoAuth(ua, aor); r == nil || r.StatusCode != 200 {
			t.Fatalf("register %s: %v", aor, r)
		}
	}
	e.sipd.Kill()
	e.sipd.Restart()
	got := registeredAoRs(e)
	var lost []string
	for i := range n {
		if aor := fmt.Sprintf("kill%02d", i); !got[aor] {
			lost = append(lost, aor)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d bindings answered 200 lost by kill -9: %v", len(lost), n, lost)
	}
	e.legitCall()
}

// mountTmpfs mounts a tmpfs of size bytes at dir until the test ends.
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
}

// fill writes path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{'x'}, 4096)
	for range 1 << 16 { // bounded: 256 MiB at most
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			return
		}
	}
	t.Fatal("fill: the file system never filled up")
}

// The state directory fills up: REGISTERs are refused with 500 and
// Retry-After (never a 200 that is not kept), /health says degraded and
// /metrics counts the errors. Space is freed: sipd recovers by itself,
// and a clean restart keeps every binding that was answered 200.
func TestRegistrationsOnFullDisk(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	mountTmpfs(t, state, 256<<10)
	e := newEnv(t, func(c *sipd.Config) {
		noRegisterAuth(c)
		c.StateDir = state
	})
	ua := e.caller()
	ok := map[string]bool{}
	reg := func(aor string) *sip.Response {
		t.Helper()
		r := registerNoAuth(ua, aor)
		if r == nil {
			t.Fatalf("register %s: no answer", aor)
		}
		if r.StatusCode == 200 {
			ok[aor] = true
		}
		return r
	}
	for i := range 5 {
		if r := reg(fmt.Sprintf("before%d", i)); r.StatusCode != 200 {
			t.Fatalf("before the disk filled: %d %s", r.StatusCode, r.Reason)
		}
	}
	alice, bob := e.caller(), e.callee()
	alice.Register("alice", domain, password)
	bob.Register("bob", domain, password)
	ok["alice"], ok["bob"] = true, true
	filler := filepath.Join(state, "filler")
	fill(t, filler)
	// A call ends while the CDR cannot be written: the call is not held
	// up, the error is counted, the CDR is kept for later.
	fullCall := e.call(alice, bob)
	if v, _ := e.sipd.Metric("sipxdp_sip_cdr_errors_total"); v < 1 {
		t.Errorf("disk full: sipxdp_sip_cdr_errors_total %v, want >= 1", v)
	}
	// What is left of the journal's last page still takes a few records.
	var refused *sip.Response
	for i := 0; i < 100 && refused == nil; i++ {
		if r := reg(fmt.Sprintf("full%02d", i)); r.StatusCode != 200 {
			refused = r
		}
	}
	switch {
	case refused == nil:
		t.Errorf("disk full: 100 REGISTERs all answered 200")
	case refused.StatusCode != 500 || refused.GetHeader("Retry-After") == nil:
		t.Errorf("disk full: REGISTER answered %d %s (Retry-After %v), want 500 with Retry-After",
			refused.StatusCode, refused.Reason, refused.GetHeader("Retry-After"))
	}
	if h := e.sipd.Health(); h.Status != "degraded" {
		t.Errorf("disk full: /health status %q, want degraded", h.Status)
	}
	if v, _ := e.sipd.Metric(`sipxdp_journal_errors_total{journal="location"}`); v < 1 {
		t.Errorf("disk full: sipxdp_journal_errors_total{journal=\"location\"} %v, want >= 1", v)
	}

	// Stay full across several background retries: they fail too, and
	// none of them may leave the journal unusable once space is back.
	time.Sleep(2500 * time.Millisecond)
	if h := e.sipd.Health(); h.Status != "degraded" {
		t.Errorf("disk still full: /health status %q, want degraded", h.Status)
	}
	if r := reg("stillfull"); r.StatusCode != 500 {
		t.Errorf("disk still full: REGISTER answered %d %s, want 500", r.StatusCode, r.Reason)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.sipd.Health().Status != "ok" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if h := e.sipd.Health(); h.Status != "ok" {
		t.Errorf("space freed: /health status %q after 5 s, want ok", h.Status)
	}
	if r := reg("after"); r.StatusCode != 200 {
		t.Errorf("space freed: REGISTER answered %d %s, want 200", r.StatusCode, r.Reason)
	}
	// Logged once when it broke and once when it recovered, not per
	// request or per retry.
	log := e.sipd.Log()
	// location, cdr, and dialogs (the call made while the disk was full)
	if n := strings.Count(log, "journal cannot write"); n != 3 {
		t.Errorf("%d log lines say a journal cannot write, want one per journal:\n%s", n, log)
	}
	if n := strings.Count(log, "journal writes again"); n != 3 {
		t.Errorf("%d log lines say a journal writes again, want one per journal", n)
	}

	if err := e.sipd.Stop(); err != nil {
		t.Fatal(err)
	}
	e.sipd.Restart()
	got := registeredAoRs(e)
	var lost []string
	for aor := range ok {
		if !got[aor] {
			lost = append(lost, aor)
		}
	}
	if len(lost) > 0 {
		t.Errorf("clean restart after a full disk lost %d of %d bindings answered 200: %v", len(lost), len(ok), lost)
	}
	if !hasCDR(t, filepath.Join(state, "cdr.jsonl"), fullCall) {
		t.Errorf("the CDR of the call that ended on a full disk was not written after recovery")
	}
	e.legitCall()
}

// hasCDR reports whether the CDR file holds callID's record of a call
// answered and ended by BYE.
func hasCDR(t *testing.T, path, callID string) bool {
	t.Helper()
	for _, c := range cdrs(t, path) {
		if c["call_id"] == callID && c["end_reason"] == "bye" && c["status"] == float64(200) {
			return true
		}
	}
	return false
}

// cdrs reads the CDR file in sipd's state directory.
func cdrs(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("cdr file: %v", err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("cdr line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// A call ends with BYE and 200; sipd is killed at once: its CDR is in the
// default CDR file after the restart.
func TestCDRSurvivesSIGKILL(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.caller(), e.callee()
	a.Register("alice", domain, password)
	b.Register("bob", domain, password)
	callID := e.call(a, b)
	e.sipd.Kill()
	if !hasCDR(t, filepath.Join(e.sipd.Cfg.StateDir, "cdr.jsonl"), callID) {
		t.Fatal("no CDR for the call after kill -9")
	}
	e.sipd.Restart()
	e.legitCall()
}
