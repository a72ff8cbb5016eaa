package sipd

import (
	"bytes"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzParseConfig: any file, merged onto the embedded default, is loaded
// or refused without a panic, and an accepted config validates again and
// survives being written out and read back (sipdtest and operators'
// tooling rely on that). The same text as the value of environment
// overrides (a list of mappings, a list, a scalar) must not panic either.
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
		{"interface_for: {}", "interface_for: {10.0.0.0/8: default, itsp.example: default, '::1': nowhere}"},
	} {
		f.Add([]byte(strings.Replace(def, r[0], r[1], 1)))
	}
	f.Add([]byte("http: {listen: '[::1]:1', max_connections: 1}\nsip: {domains: [a]}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("{}"))
	f.Add([]byte(""))
	f.Add([]byte("media:\n  datapath: userspace\n"))
	f.Add([]byte("sip:\n  listen: [{transport: tls, addr: '[::1]:5061', cert: c, key: k}]\n  protect:\n    exempt:\n"))
	f.Add([]byte("log: {level: debug}\nlog: {level: info}\n"))
	f.Add([]byte("media: {addresses: &a [*a]}\n"))
	f.Add([]byte("x: 1\n---\ny: 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		v := string(data)
		_, _ = Load(Sources{Env: []string{"SIPD_MEDIA_ADDRESSES=" + v, "SIPD_HTTP_ALLOW=" + v, "SIPD_LOG_LEVEL=" + v}})
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
