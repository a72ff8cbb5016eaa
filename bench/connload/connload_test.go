package connload

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icholy/digest"

	"sipxdp/internal/childproc"
)

// TestMain turns the test binary into a client child when the bench
// starts it as one.
func TestMain(m *testing.M) { childproc.Main(m) }

func TestConnsQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts sipd and hundreds of connections")
	}
	out := t.TempDir()
	cfg := QuickConfig(Config{Mode: "both", Out: out})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rs, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Mode != "tcp" || rs[1].Mode != "tls" {
		t.Fatalf("results %+v", rs)
	}
	for _, r := range rs {
		t.Log(r.Summary())
		if r.Failures() != 0 {
			t.Errorf("%s: %d failures: %v", r.Mode, r.Failures(), r.Errors)
		}
		if r.Held != r.Conns {
			t.Errorf("%s: held %d of %d", r.Mode, r.Held, r.Conns)
		}
		if r.PerConn == 0 || r.RSSHeldMB == 0 {
			t.Errorf("%s: no memory figure: %+v", r.Mode, r)
		}
	}
	if rs[0].ReqOK == 0 || rs[0].OptP50 == 0 || rs[0].RefP50 == 0 {
		t.Errorf("tcp: no requests measured: %+v", rs[0])
	}
	if rs[1].ChurnOK == 0 || rs[1].Handshakes == 0 {
		t.Errorf("tls: no churn measured: %+v", rs[1])
	}
	if want := int(cfg.TLSCalls * cfg.Duration.Seconds()); rs[1].CallOK != want || rs[1].CallFailed != 0 || rs[1].CallP50 == 0 {
		t.Errorf("tls: calls %d ok, %d failed, want %d ok: %v", rs[1].CallOK, rs[1].CallFailed, want, rs[1].Errors)
	}
	b, err := os.ReadFile(filepath.Join(out, "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("results.jsonl has %d lines", len(lines))
	}
	for _, l := range lines {
		var r Result
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{"results.csv": "mode,conns,held", "report.md": "## TLS calls", "memory.svg": "<svg",
		"tcp/heap-held.pb.gz": "", "tls/heap-held.pb.gz": ""} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), want) || len(b) == 0 {
			t.Errorf("%s lacks %q", name, want)
		}
	}
}

func TestDigestAnswer(t *testing.T) {
	// RFC 2617 section 3.5's example, with its method and URI.
	got, err := digestAnswer([]string{`Digest realm="testrealm@host.com", qop="auth", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", algorithm=MD5`},
		"Mufasa", "Circle Of Life", "GET", "/dir/index.html")
	if err != nil {
		t.Fatal(err)
	}
	p, err := digest.ParseCredentials(got)
	if err != nil || p.Username != "Mufasa" || p.QOP != "auth" || len(p.Response) != 32 {
		t.Fatalf("answer %q", got)
	}
	if _, err := digestAnswer([]string{`Digest realm="r", nonce="n", algorithm=SHA-256`}, "u", "p", "REGISTER", "sip:x"); err == nil {
		t.Fatal("answered a SHA-256-only challenge")
	}
}
