package sipd

import (
	"strings"
	"testing"
	"time"
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
}

func TestConfigErrors(t *testing.T) {
	base := string(DefaultConfigYAML())
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown key", "strict_source: false", "strict_sorce: false", "field strict_sorce not found"},
		{"bad mode", "mode: all", "mode: some", `media.mode "some"`},
		{"bad datapath", "datapath: auto", "datapath: dpdk", `media.datapath "dpdk"`},
		{"bad timeout", "timeout: 60s", "timeout: sixty", "line"},
		{"bad address", "local: 127.0.0.1", "local: 127.0.0.300", "media.addresses[0].local"},
		{"bad range", "port_max: 29999", "port_max: 20001", "port range 20000-20001"},
		{"bad listen", "listen: 127.0.0.1:8080", "listen: nowhere", "http.listen"},
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
		})
	}
}
