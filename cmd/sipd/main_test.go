package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sipxdp/internal/sipdtest"
	"sipxdp/sipd"
)

// TestCheckConfig runs the built sipd with -check-config as an operator
// would: a partial file passes and prints the whole effective config, a
// bad one fails with every problem on stderr, located.
func TestCheckConfig(t *testing.T) {
	bin := sipdtest.Binary(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	partial := write("partial.yaml", "media:\n  datapath: userspace\nlog:\n  level: debug\n")
	bad := write("bad.yaml", "log:\n  formt: json\nmedia:\n  mode: some\n  datapth: tc\nhttp:\n  max_connections: -1\n")
	const token = "0123456789abcdef0123456789"
	cases := []struct {
		name   string
		args   []string
		env    []string
		fail   bool
		stdout []string // each must appear
		stderr []string // each must appear as a line, in order, and no others
		check  func(t *testing.T, cfg *sipd.Config)
	}{
		{name: "partial file", args: []string{"-config", partial},
			stdout: []string{"datapath: userspace", "format: text", "level: debug"},
			check: func(t *testing.T, cfg *sipd.Config) {
				if cfg.Media.Datapath != "userspace" || cfg.Log.Format != "text" || cfg.Media.Mode != "all" {
					t.Errorf("effective config %+v %+v", cfg.Media, cfg.Log)
				}
			}},
		{name: "no file", args: nil, stdout: []string{"datapath: auto"}},
		{name: "env and flags", args: []string{"-config", partial, "-log-level", "warn", "-relay-only"},
			env:    []string{"SIPD_LOG_LEVEL=error", "SIPD_MEDIA_DATAPATH=tc", "SIPD_HTTP_TOKEN=" + token},
			stdout: []string{"(relay-only)", "level: warn", "datapath: tc", "token: " + sipd.Redacted},
			check: func(t *testing.T, cfg *sipd.Config) {
				if cfg.Log.Level != "warn" || cfg.Media.Datapath != "tc" {
					t.Errorf("flags and env: level %q datapath %q", cfg.Log.Level, cfg.Media.Datapath)
				}
			}},
		{name: "bad file", args: []string{"-config", bad}, fail: true,
			stderr: []string{
				"sipd: " + bad + ":2:3: log.formt: unknown key; did you mean format?",
				"sipd: " + bad + ":5:3: media.datapth: unknown key; did you mean datapath?",
				"sipd: " + bad + `:7:20: http.max_connections -1: want 1 or more`,
				"sipd: " + bad + `:4:9: media.mode "some": want none, all or nat`,
			}},
		{name: "unknown env", args: []string{"-config", partial}, env: []string{"SIPD_MEDIA_DATAPTH=tc", "SIPD_HTTP_LISEN=x", "SIPD_NOTHING_LIKE_IT=1"}, fail: true,
			stderr: []string{
				"sipd: $SIPD_HTTP_LISEN: no such setting; did you mean SIPD_HTTP_LISTEN?",
				"sipd: $SIPD_MEDIA_DATAPTH: no such setting; did you mean SIPD_MEDIA_DATAPATH?",
				"sipd: $SIPD_NOTHING_LIKE_IT: no such setting: want SIPD_ and a key path with . written _, such as SIPD_STATE_DIR",
			}},
		{name: "missing file", args: []string{"-config", filepath.Join(dir, "nope.yaml")}, fail: true,
			stderr: []string{"sipd: read config: open " + filepath.Join(dir, "nope.yaml") + ": no such file or directory"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"-check-config"}, c.args...)...)
			cmd.Env = append(cleanEnv(), c.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			switch {
			case c.fail && !errors.As(err, &exit):
				t.Fatalf("exit %v, want a non-zero status; stdout:\n%s", err, stdout.String())
			case !c.fail && err != nil:
				t.Fatalf("exit %v; stderr:\n%s", err, stderr.String())
			}
			for _, w := range c.stdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			if strings.Contains(stdout.String(), token) {
				t.Error("stdout shows the token")
			}
			var lines []string
			if s := strings.TrimSuffix(stderr.String(), "\n"); s != "" {
				lines = strings.Split(s, "\n")
			}
			if c.fail && stdout.Len() != 0 {
				t.Errorf("a failed check printed a config:\n%s", stdout.String())
			}
			if !c.fail && len(lines) != 0 {
				t.Errorf("stderr:\n%s", stderr.String())
			}
			if c.fail && strings.Join(lines, "\n") != strings.Join(c.stderr, "\n") {
				t.Errorf("stderr\n%s\nwant\n%s", stderr.String(), strings.Join(c.stderr, "\n"))
			}
			if c.check != nil {
				// What -check-config prints is a config sipd takes.
				cfg, err := sipd.ParseConfig(bytes.ReplaceAll(stdout.Bytes(), []byte(sipd.Redacted), []byte(token)))
				if err != nil {
					t.Fatalf("printed config does not load: %v\n%s", err, stdout.String())
				}
				c.check(t, cfg)
			}
		})
	}
}

// TestPrintDefaultAndHelp: -print-default-config prints the embedded file
// as it is, and -h documents the layers and the SIPD_ variables.
func TestPrintDefaultAndHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"-print-default-config"}, nil, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), sipd.DefaultConfigYAML()) {
		t.Error("-print-default-config differs from the embedded default")
	}
	out.Reset()
	if err := run([]string{"-h"}, nil, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"SIPD_MEDIA_DATAPATH", "-check-config", "-config file", "each overriding the one before"} {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("-h lacks %q:\n%s", w, errOut.String())
		}
	}
}

// cleanEnv is the test's environment without SIPD_ variables, which would
// change what sipd reads.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, sipd.EnvPrefix) {
			env = append(env, kv)
		}
	}
	return env
}
