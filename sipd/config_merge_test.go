package sipd

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"sipxdp/internal/confload"
	"sipxdp/sipd/sipconf"
)

// TestConfigMerge: a file holds only what differs from the embedded
// default; environment variables and flags override it in that order;
// every problem is reported, each with where it is.
func TestConfigMerge(t *testing.T) {
	cases := []struct {
		name      string
		file      string
		env       []string
		flags     []Override
		relayOnly bool
		// want edits the default config into the expected one (nil: the
		// default as it is); ignored when errs is set.
		want func(c *Config)
		// errs are the error lines expected, each a prefix of one line,
		// in order; no other lines may appear.
		errs []string
	}{
		{name: "empty file", file: ""},
		{name: "comments only", file: "# nothing differs\n"},
		{name: "empty section keeps its defaults", file: "http:\nmedia: {}\n"},
		{name: "only media.datapath", file: "media:\n  datapath: userspace\n",
			want: func(c *Config) { c.Media.Datapath = "userspace" }},
		{name: "partial file", file: "log:\n  level: debug\nhttp:\n  max_connections: 8\nsip:\n  registrar:\n    max_contacts: 3\n",
			want: func(c *Config) { c.Log.Level, c.HTTP.MaxConnections, c.SIP.Registrar.MaxContacts = "debug", 8, 3 }},
		{name: "flow style", file: "{media: {timeout: 90s}, runtime: {gc_percent: 0}}",
			want: func(c *Config) { c.Media.Timeout, c.Runtime.GCPercent = Duration(90*time.Second), 0 }},
		{name: "list replaces", file: "sip:\n  domains: [example.com]\n",
			want: func(c *Config) { c.SIP.Domains = []string{"example.com"} }},
		{name: "explicit empty list", file: "ng:\n  allow: []\n",
			want: func(c *Config) { c.NG.Allow = nil }},
		{name: "null list is empty", file: "sip:\n  protect:\n    exempt:\n",
			want: func(c *Config) { c.SIP.Protect.Exempt = nil }},
		{name: "explicit empty string", file: "sip:\n  registrar:\n    store: ''\n",
			errs: []string{`config:3:12: sip.registrar.store is empty`}},
		{name: "list of mappings replaces whole", file: "media:\n  addresses:\n    - {name: pub, local: 10.0.0.1, port_min: 30000, port_max: 30099}\n",
			want: func(c *Config) {
				c.Media.Addresses = []AddressConfig{{Name: "pub", Local: "10.0.0.1", PortMin: 30000, PortMax: 30099}}
			}},
		{name: "anchors", file: "x: &d [a.example]\n", errs: []string{"config:1:1: x: unknown key"}},
		{name: "alias", file: "sip:\n  domains: &d [a.example]\n  protect:\n    exempt: [10.0.0.0/8]\n",
			want: func(c *Config) { c.SIP.Domains, c.SIP.Protect.Exempt = []string{"a.example"}, []string{"10.0.0.0/8"} }},
		{name: "unknown key", file: "log:\n  level: info\nmedia:\n  datapth: userspace\n",
			errs: []string{"config:4:3: media.datapth: unknown key"}},
		{name: "unknown key in a list element", file: "sip:\n  listen:\n    - {transport: udp, adr: 127.0.0.1:5060}\n",
			errs: []string{"config:3:24: sip.listen[0].adr: unknown key", "config:3:7: sip.listen[0].addr \"\""}},
		{name: "several errors", file: "log:\n  formt: json\n  level: loud\nmedia:\n  mode: some\n  timeout: sixty\nhttp:\n  max_connections: many\n",
			errs: []string{
				"config:2:3: log.formt: unknown key",
				`config:6:12: media.timeout: want a duration`,
				`config:8:20: http.max_connections: want an integer, have "many"`,
				`config:3:10: log.level "loud": want debug, info, warn or error`,
				`config:5:9: media.mode "some": want none, all or nat`,
			}},
		{name: "wrong shape", file: "media: userspace\nsip:\n  listen: udp\n",
			errs: []string{`config:1:8: media: want a mapping`, `config:3:11: sip.listen: want a list`}},
		{name: "out of range", file: "media:\n  addresses:\n    - name: a\n      local: 127.0.0.1\n      port_min: 80\n      port_max: 90\n",
			errs: []string{"config:3:7: media.addresses[0]: port range 80-90"}},
		{name: "invalid address", file: "http:\n  listen: 127.0.0.1\nmedia:\n  addresses: [{name: a, local: 10.1.2.300, port_min: 20000, port_max: 20010}]\n",
			errs: []string{`config:2:11: http.listen "127.0.0.1"`, `config:4:32: media.addresses[0].local "10.1.2.300"`}},
		{name: "undecodable value not also invalid", file: "media:\n  addresses: [{name: a, local: 10.0.0.1, port_min: x, port_max: 20010}]\n",
			errs: []string{`config:2:52: media.addresses[0].port_min: want an integer, have "x"`}},
		{name: "repeated key", file: "log:\n  level: info\n  level: debug\n",
			errs: []string{"config:3:3: log.level: repeated (first at line 2)"}},
		{name: "syntax error", file: "log:\n  level: info\n   bad: x\n", errs: []string{"config:3: mapping values are not allowed"}},
		{name: "second document", file: "log: {level: info}\n---\nlog: {level: debug}\n",
			errs: []string{"config:3: a second YAML document"}},
		{name: "relay-only uses the merge", file: "media:\n  mode: none\n", relayOnly: true,
			errs: []string{"config:2:9: relay-only mode relays media: media.mode none"}},
		{name: "env applies", env: []string{"PATH=/bin", "SIPD_MEDIA_DATAPATH=userspace", "SIPD_HTTP_ALLOW=[10.0.0.0/8, 192.0.2.7]", "SIPD_STATE_DIR=/srv/sipd", "SIPD_SIP_AUTH_NONCE_TTL=1m"},
			want: func(c *Config) {
				c.Media.Datapath, c.HTTP.Allow, c.StateDir = "userspace", []string{"10.0.0.0/8", "192.0.2.7"}, "/srv/sipd"
				c.SIP.StateDir, c.SIP.Auth.NonceTTL = "/srv/sipd", sipconf.Duration(time.Minute)
			}},
		{name: "env beats file", file: "media:\n  datapath: tc\nhttp:\n  token: 0123456789abcdef0123\n",
			env:  []string{"SIPD_MEDIA_DATAPATH=userspace", "SIPD_HTTP_TOKEN="},
			want: func(c *Config) { c.Media.Datapath = "userspace" }},
		{name: "env list of mappings", env: []string{"SIPD_SIP_LISTEN=[{transport: tcp, addr: '127.0.0.1:5070'}]"},
			want: func(c *Config) { c.SIP.Listen = []sipconf.Listen{{Transport: "tcp", Addr: "127.0.0.1:5070"}} }},
		{name: "env number-like string kept as written", env: []string{"SIPD_SIP_SECRET=00123456789012345678e5"},
			want: func(c *Config) { c.SIP.Secret = "00123456789012345678e5" }},
		{name: "unknown env vars all reported", env: []string{"SIPD_NOPE=1", "SIPD_MEDIA_DATAPTH=tc", "SIPD_MEDIA=x"},
			errs: []string{"$SIPD_MEDIA: no such setting", "$SIPD_MEDIA_DATAPTH: no such setting", "$SIPD_NOPE: no such setting"}},
		{name: "bad env value", env: []string{"SIPD_MEDIA_TIMEOUT=soon", "SIPD_MEDIA_MODE=some", "SIPD_HTTP_ALLOW=[10.0.0.0/8"},
			errs: []string{"$SIPD_HTTP_ALLOW: http.allow: ", "$SIPD_MEDIA_TIMEOUT: media.timeout: want a duration", `$SIPD_MEDIA_MODE: media.mode "some"`}},
		{name: "env error is located at env, not at the file", file: "http:\n  allow: [10.0.0.0/8]\n", env: []string{"SIPD_HTTP_ALLOW=[nowhere]"},
			errs: []string{`$SIPD_HTTP_ALLOW: http.allow: "nowhere"`}},
		{name: "flags beat env", env: []string{"SIPD_MEDIA_DATAPATH=tc", "SIPD_LOG_LEVEL=warn"},
			flags: []Override{{Key: "media.datapath", Value: "userspace", From: "-datapath"}},
			want:  func(c *Config) { c.Media.Datapath, c.Log.Level = "userspace", "warn" }},
		{name: "flag value is a plain string", flags: []Override{{Key: "http.listen", Value: "[::1]:9090", From: "-http"}},
			want: func(c *Config) { c.HTTP.Listen = "[::1]:9090" }},
		{name: "bad flag", flags: []Override{{Key: "media.datapath", Value: "dpdk", From: "-datapath"}},
			errs: []string{`-datapath: media.datapath "dpdk"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := load("config", []byte(c.file), Sources{Env: c.env, Flags: c.flags, RelayOnly: c.relayOnly})
			if c.errs != nil {
				if err == nil {
					t.Fatalf("accepted; want errors %q", c.errs)
				}
				lines := strings.Split(err.Error(), "\n")
				if len(lines) != len(c.errs) {
					t.Fatalf("%d errors, want %d:\n%v", len(lines), len(c.errs), err)
				}
				for i, w := range c.errs {
					if !strings.HasPrefix(lines[i], w) {
						t.Errorf("error %d %q, want it to start %q", i, lines[i], w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, err := LoadConfig("")
			if err != nil {
				t.Fatal(err)
			}
			if c.want != nil {
				c.want(want)
			}
			want.RelayOnly = c.relayOnly
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got\n%+v\nwant\n%+v", *got, *want)
			}
		})
	}
}

// TestEnvNamesUnambiguous: "." and "_" both become "_" in a SIPD_ name,
// so two keys could share one; none may (Env would refuse the name).
func TestEnvNamesUnambiguous(t *testing.T) {
	names := confload.EnvNames(reflect.TypeFor[Config](), EnvPrefix)
	if len(names) < 50 {
		t.Fatalf("only %d names: leaves missing?", len(names))
	}
	for n, keys := range names {
		if len(keys) != 1 {
			t.Errorf("%s names %v", n, keys)
		}
	}
	for _, n := range []string{"SIPD_STATE_DIR", "SIPD_SIP_USERS_FILE", "SIPD_MEDIA_ADDRESSES", "SIPD_SIP_CONNECTIONS_TLS_HANDSHAKE_TIMEOUT"} {
		if len(names[n]) != 1 {
			t.Errorf("%s: %v", n, names[n])
		}
	}
}

// TestConfigRoundTrip: a Config written as YAML reads back identical, so
// tools that edit the typed config and write it out (internal/sipdtest,
// the bench launchers) start sipd on exactly that config.
func TestConfigRoundTrip(t *testing.T) {
	def, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	edited, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	edited.StateDir = "/srv/sipd"
	edited.Log = LogConfig{Level: "debug", Format: "json"}
	edited.HTTP = HTTPConfig{Listen: "[::1]:9000", Token: "0123456789abcdef0123", Allow: []string{"10.0.0.0/8"}, MaxConnections: 3, Pprof: true}
	edited.Media.Datapath, edited.Media.Interfaces, edited.Media.Timeout = "userspace", []string{"eth0"}, Duration(90*time.Second)
	edited.Media.Addresses = append(edited.Media.Addresses, AddressConfig{Name: "pub", Local: "192.0.2.1", Advertised: "198.51.100.1", PortMin: 40000, PortMax: 40999})
	edited.NG.Allow, edited.NG.TCP = nil, true
	edited.SIP.Secret, edited.SIP.Auth.Secret = "abcdefghijklmnopq", "x"
	edited.SIP.Protect.Exempt = nil
	edited.SIP.Listen = append(edited.SIP.Listen, sipconf.Listen{Transport: "tls", Addr: "127.0.0.1:5061", Cert: "/c.pem", Key: "/k.pem"})
	edited.Resolve()
	for _, c := range []struct {
		name string
		cfg  *Config
	}{{"default", def}, {"edited", edited}} {
		t.Run(c.name, func(t *testing.T) {
			text, err := yaml.Marshal(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseConfig(text)
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			if !reflect.DeepEqual(back, c.cfg) {
				t.Errorf("read back\n%+v\nwrote\n%+v", *back, *c.cfg)
			}
		})
	}
}

// TestRedacted: secrets are hidden where set, and left empty where not,
// and the original is untouched.
func TestRedacted(t *testing.T) {
	cfg, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Token, cfg.SIP.Secret = "0123456789abcdef0123", "abcdefghijklmnopq"
	r := cfg.Redacted()
	if r.HTTP.Token != Redacted || r.SIP.Secret != Redacted || r.SIP.Auth.Secret != "" {
		t.Errorf("redacted: token %q secret %q auth secret %q", r.HTTP.Token, r.SIP.Secret, r.SIP.Auth.Secret)
	}
	if cfg.HTTP.Token != "0123456789abcdef0123" {
		t.Error("Redacted changed the original")
	}
	// Fed back in, the placeholder is refused rather than used as a key.
	text, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseConfig(text); err == nil || !strings.Contains(err.Error(), "http.token") || !strings.Contains(err.Error(), "sip.secret") {
		t.Errorf("redacted config read back: %v", err)
	}
}
