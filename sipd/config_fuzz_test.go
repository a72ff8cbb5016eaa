package sipd

import (
	"bytes"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzParseConfig: any file is loaded or refused without a panic, and an
// accepted config validates again and survives being written out and
// read back (sipdtest and operators' tooling rely on that).
func FuzzParseConfig(f *testing.F) {
	def := string(DefaultConfigYAML())
	f.Add([]byte(def))
	for _, r := range [][2]string{
		{"listen: 127.0.0.1:8080", "listen: 0.0.0.0:8080"},
		{`token: ""`, "token: 0123456789abcdef01"},
		{"allow: []", "allow: [10.0.0.0/8, 192.0.2.7]"},
		{`allow: [127.0.0.0/8, "::1/128"]`, "allow: []"},
		{"idle_timeout: 5m", "idle_timeout: -1s"},
		{"timeout: 60s", "timeout: {a: b}"},
		{"mode: all", "mode: [all]"},
	} {
		f.Add([]byte(strings.Replace(def, r[0], r[1], 1)))
	}
	f.Add([]byte("http: {listen: '[::1]:1', max_connections: 1}\nsip: {domains: [a]}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted, then refused by Validate: %v", err)
		}
		text, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, err := ParseConfig(text)
		if err != nil {
			t.Fatalf("written out, refused: %v\n%s", err, text)
		}
		text2, err := yaml.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(text, text2) {
			t.Fatalf("round trip changed the config:\n%s\n---\n%s", text, text2)
		}
	})
}
