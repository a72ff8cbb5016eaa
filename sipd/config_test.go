package sipd

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"sipxdp/sipd/sipconf"
)

func TestDefaultConfigLoads(t *testing.T) {
	cfg, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Media.Datapath != "auto" || time.Duration(cfg.Media.Timeout) != 60*time.Second {
		t.Fatalf("unexpected defaults: %+v", cfg.Media)
	}
	if len(cfg.Media.Addresses) != 1 || cfg.Media.Addresses[0].Local != "127.0.0.1" {
		t.Fatalf("unexpected addresses: %+v", cfg.Media.Addresses)
	}
	// Registrations and CDRs are kept in state_dir unless said otherwise,
	// in the file and in a config built in Go alike.
	def := sipconf.Default()
	for _, c := range []struct{ name, got, want string }{
		{"store", cfg.SIP.StorePath(cfg.SIP.Registrar.Store), "/var/lib/sipd/location.json"},
		{"cdr_file", cfg.SIP.StorePath(cfg.SIP.Dialog.CDRFile), "/var/lib/sipd/cdr.jsonl"},
		{"sipconf store", def.Registrar.Store, cfg.SIP.Registrar.Store},
		{"sipconf cdr_file", def.Dialog.CDRFile, cfg.SIP.Dialog.CDRFile},
	} {
		if c.got != c.want {
			t.Errorf("default %s %q, want %q", c.name, c.got, c.want)
		}
	}
	cfg.SIP.StateDir = ""
	if p := cfg.SIP.StorePath("location.json"); p != "" {
		t.Errorf("relative store without a state_dir: %q, want memory only", p)
	}
	if p := cfg.SIP.StorePath("/srv/loc.json"); p != "/srv/loc.json" {
		t.Errorf("absolute store: %q", p)
	}
}

// TestRuntimeDefaults: the embedded file and a file without a runtime
// section both give the documented GC target; 0 is allowed (Go's own).
func TestRuntimeDefaults(t *testing.T) {
	cfg, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Runtime.GCPercent != DefaultGCPercent {
		t.Errorf("default file: gc_percent %d, want %d", cfg.Runtime.GCPercent, DefaultGCPercent)
	}
	base := string(DefaultConfigYAML())
	i, j := strings.Index(base, "runtime:"), strings.Index(base, "http:")
	if i < 0 || j < i {
		t.Fatal("default config has no runtime section before http")
	}
	cfg, err = ParseConfig([]byte(base[:i] + base[j:]))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Runtime.GCPercent != DefaultGCPercent {
		t.Errorf("no runtime section: gc_percent %d, want %d", cfg.Runtime.GCPercent, DefaultGCPercent)
	}
	if cfg, err = ParseConfig([]byte(strings.Replace(base, "gc_percent: 50", "gc_percent: 0", 1))); err != nil || cfg.Runtime.GCPercent != 0 {
		t.Errorf("gc_percent 0: %v, %v", cfg, err)
	}
}

// TestLearningDefault: a file without media.learning gets the default
// window, the one the embedded file documents.
func TestLearningDefault(t *testing.T) {
	base := string(DefaultConfigYAML())
	cfg, err := ParseConfig([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(cfg.Media.Learning) != DefaultLearning {
		t.Errorf("default file: learning %v, want %v", time.Duration(cfg.Media.Learning), DefaultLearning)
	}
	without := strings.Replace(base, "  learning: 3s\n", "", 1)
	if without == base {
		t.Fatal("default config has no learning line")
	}
	if cfg, err = ParseConfig([]byte(without)); err != nil || time.Duration(cfg.Media.Learning) != DefaultLearning {
		t.Errorf("no learning key: %v, %v; want %v", cfg.Media.Learning, err, DefaultLearning)
	}
}

// lineRE is a single error line located in ParseConfig's text.
var lineRE = regexp.MustCompile(`^config:[0-9]+:[0-9]+: [^\n]+$`)

func TestConfigErrors(t *testing.T) {
	base := string(DefaultConfigYAML())
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown key", "strict_source: false", "strict_sorce: false", "media.strict_sorce: unknown key"},
		{"bad mode", "mode: all", "mode: some", `media.mode "some"`},
		{"bad datapath", "datapath: auto", "datapath: dpdk", `media.datapath "dpdk"`},
		{"bad timeout", "timeout: 60s", "timeout: sixty", `media.timeout: want a duration such as 500ms, 15s or 1h: time: invalid duration "sixty"`},
		{"bad address", "local: 127.0.0.1", "local: 127.0.0.300", "media.addresses[0].local"},
		{"bad range", "port_max: 29999", "port_max: 20001", "port range 20000-20001"},
		{"bad listen", "listen: 127.0.0.1:8080", "listen: nowhere", "http.listen"},
		{"negative gc", "gc_percent: 50", "gc_percent: -1", "runtime.gc_percent -1"},
		{"empty store", "store: location.json", `store: ""`, `sip.registrar.store is empty: name a file (relative paths are in state_dir), "memory" to keep registrations in memory only, or redis://host:port/db`},
		{"redis store bad db", "store: location.json", `store: redis://127.0.0.1:6379/zero`, `sip.registrar.store "redis://127.0.0.1:6379/zero": not a Redis URL`},
		{"store of another scheme", "store: location.json", `store: http://127.0.0.1:6379/0`, `sip.registrar.store "http://127.0.0.1:6379/0": not a Redis URL (want redis://host:port/db`},
		{"empty cdr file", "cdr_file: cdr.jsonl", `cdr_file: ""`, `sip.dialog.cdr_file is empty: name a file (relative paths are in state_dir), or "none"`},
		{"empty dialog store", "store: dialogs.json", `store: ""`, `sip.dialog.store is empty: name a file (relative paths are in state_dir), "memory" to keep calls in memory only, or redis://host:port/db`},
		{"dialog store bad redis url", "store: dialogs.json", `store: redis://127.0.0.1:6379/zero`, `sip.dialog.store "redis://127.0.0.1:6379/zero": not a Redis URL`},
		{"cdr stream not redis", `cdr_stream: ""`, `cdr_stream: cdrs.jsonl`, `sip.dialog.cdr_stream "cdrs.jsonl": not a Redis URL`},
		{"cdr stream maxlen negative", "cdr_stream_maxlen: 1000000", "cdr_stream_maxlen: -1", "sip.dialog.cdr_stream_maxlen -1: must not be negative"},
		{"negative connections max", "    max: 0\n", "    max: -1\n", "sip.connections.max -1"},
		{"negative per source", "per_source: 0", "per_source: -3", "sip.connections.per_source -3"},
		{"no message timeout", "message_timeout: 10s", "message_timeout: 0s", "sip.connections.message_timeout 0s: must be positive"},
		{"bad idle timeout", "idle_timeout: 2m", "idle_timeout: soon", "sip.connections.idle_timeout: want a duration"},
		{"learning too short", "learning: 3s", "learning: 10ms", "media.learning 10ms"},
		{"learning too long", "learning: 3s", "learning: 90s", "media.learning 1m30s"},
		{"relays without scheme", `relays: ""`, `relays: "10.0.0.2:2223=2"`, `media.relays: relay "10.0.0.2:2223=2": want udp:host:port`},
		{"relays bad weight", `relays: ""`, `relays: "udp:10.0.0.2:2223=two"`, `media.relays: relay "udp:10.0.0.2:2223=two": weight`},
		{"relay ping too fast", "relay_ping: 1s", "relay_ping: 10ms", "media.relay_ping 10ms"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := strings.Replace(base, c.from, c.to, 1)
			if text == base {
				t.Fatalf("fixture edit %q did not apply", c.from)
			}
			_, err := ParseConfig([]byte(text))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
			// Each problem is one line that says where it is.
			if !lineRE.MatchString(err.Error()) {
				t.Errorf("err = %v, want config:LINE:COL: before it", err)
			}
		})
	}
}

// TestNGConfig: the default NG address is rtpengine's port, a file
// without an ng section gets it too, a bad address is refused, and
// relay-only mode refuses media.mode none.
func TestNGConfig(t *testing.T) {
	cfg, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NG.Listen != "127.0.0.1:2223" || cfg.NG.TCP || cfg.RelayOnly {
		t.Errorf("ng defaults %+v, relay-only %v", cfg.NG, cfg.RelayOnly)
	}
	base := string(DefaultConfigYAML())
	i, j := strings.Index(base, "\nng:"), strings.Index(base, "\nsip:")
	if i < 0 || j < i {
		t.Fatal("default config has no ng section before sip")
	}
	if cfg, err = ParseConfig([]byte(base[:i] + base[j:])); err != nil || cfg.NG.Listen != DefaultNGListen {
		t.Errorf("no ng section: %v, listen %q", err, cfg.NG.Listen)
	}
	if _, err := ParseConfig([]byte(strings.Replace(base, "listen: 127.0.0.1:2223", "listen: nowhere", 1))); err == nil || !strings.Contains(err.Error(), "ng.listen") {
		t.Errorf("bad ng.listen: %v", err)
	}
	cfg, err = ParseConfig([]byte(strings.Replace(base, "mode: all", "mode: none", 1)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RelayOnly = true
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "media.mode none") {
		t.Errorf("relay-only with media.mode none: %v", err)
	}
}

// TestRedisStoreAccepted: a redis:// location store passes validation
// and is not taken for a file.
func TestRedisStoreAccepted(t *testing.T) {
	for _, url := range []string{"redis://127.0.0.1:6379/0", "redis://:secret@10.0.0.5:6380/3?dial_timeout=1s", "rediss://redis.example:6379/1"} {
		text := strings.Replace(string(DefaultConfigYAML()), "store: location.json", "store: "+url, 1)
		cfg, err := ParseConfig([]byte(text))
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if cfg.SIP.Registrar.Store != url {
			t.Fatalf("store %q, want %q", cfg.SIP.Registrar.Store, url)
		}
	}
}

// TestNGRedisConfig: ng.redis needs relay-only mode, a redis:// URL, a
// group name and, with the kernel hook, explicit media.interfaces; a
// group without a URL is a mistake too. Unset, nothing is asked.
func TestNGRedisConfig(t *testing.T) {
	for _, c := range []struct {
		name      string
		relayOnly bool
		change    func(*Config)
		want      string // "" for valid
	}{
		{"unset", true, func(*Config) {}, ""},
		{"valid", true, func(c *Config) {
			c.NG.Redis, c.NG.RedisGroup, c.NG.RedisNode = "redis://10.0.0.9:6379/2", "relay-a", "relay1"
			c.Media.Interfaces = []string{"eth0"}
		}, ""},
		{"userspace needs no interfaces", true, func(c *Config) {
			c.NG.Redis, c.NG.RedisGroup, c.Media.Datapath = "redis://10.0.0.9:6379/2", "relay-a", "userspace"
		}, ""},
		{"kernel hook needs interfaces", true, func(c *Config) {
			c.NG.Redis, c.NG.RedisGroup = "redis://10.0.0.9:6379/2", "relay-a"
		}, "media.interfaces"},
		{"not relay-only: no interfaces asked", false, func(c *Config) {
			c.NG.Redis, c.NG.RedisGroup = "redis://10.0.0.9:6379/2", "relay-a"
		}, ""},
		{"bad url", true, func(c *Config) {
			c.NG.Redis, c.NG.RedisGroup, c.Media.Datapath = "http://10.0.0.9", "relay-a", "userspace"
		}, `ng.redis "http://10.0.0.9": not a Redis URL`},
		{"bad db", true, func(c *Config) {
			c.NG.Redis, c.NG.RedisGroup, c.Media.Datapath = "redis://10.0.0.9:6379/zero", "relay-a", "userspace"
		}, `ng.redis "redis://10.0.0.9:6379/zero": not a Redis URL`},
		{"no group", true, func(c *Config) {
			c.NG.Redis, c.Media.Datapath = "redis://10.0.0.9:6379/2", "userspace"
		}, "ng.redis_group"},
		{"bad node", true, func(c *Config) {
			c.NG.Redis, c.NG.RedisGroup, c.NG.RedisNode, c.Media.Datapath = "redis://10.0.0.9:6379/2", "relay-a", "a:b", "userspace"
		}, "ng.redis_node"},
		{"group without url", true, func(c *Config) { c.NG.RedisGroup = "relay-a" }, "ng.redis"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := LoadConfig("")
			if err != nil {
				t.Fatal(err)
			}
			cfg.RelayOnly = c.relayOnly
			c.change(cfg)
			err = cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("want valid: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want one naming %s", err, c.want)
			}
		})
	}
}
