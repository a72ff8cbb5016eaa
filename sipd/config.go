package sipd

import (
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"sipxdp/sipd/sipconf"
)

//go:embed default.yaml
var defaultConfig []byte

// DefaultConfigYAML returns the embedded default configuration text.
func DefaultConfigYAML() []byte { return append([]byte(nil), defaultConfig...) }

// Config is sipd's whole configuration.
type Config struct {
	// StateDir is where sipd keeps what must survive a restart: its
	// secret, registrations, calls, CDRs. Relative paths in the sip
	// section are taken from it.
	StateDir string      `yaml:"state_dir"`
	Log      LogConfig   `yaml:"log"`
	HTTP     HTTPConfig  `yaml:"http"`
	Media    MediaConfig `yaml:"media"`
	// SIP is the proxy and registrar; its types live in sipconf so the SIP
	// server can take them without importing this package.
	SIP sipconf.Config `yaml:"sip"`
	// Runtime tunes the Go runtime.
	Runtime RuntimeConfig `yaml:"runtime"`
	// NG is rtpengine's control protocol, served in relay-only mode.
	NG NGConfig `yaml:"ng"`
	// RelayOnly runs the media relay driven over NG (a drop-in for
	// rtpengine) and no SIP listener: the -relay-only flag.
	RelayOnly bool `yaml:"-"`
}

// DefaultNGListen is ng.listen when the file leaves it out: rtpengine's
// usual control port.
const DefaultNGListen = "127.0.0.1:2223"

type NGConfig struct {
	// Listen is the UDP address of the NG control protocol.
	Listen string `yaml:"listen"`
	// TCP also listens on TCP at the same address.
	TCP bool `yaml:"tcp"`
}

// DefaultStateDir is state_dir when the file leaves it out.
const DefaultStateDir = "/var/lib/sipd"

// DefaultGCPercent is runtime.gc_percent when the file leaves it out.
const DefaultGCPercent = 50

type RuntimeConfig struct {
	// GCPercent is the garbage collector's target (as GOGC): the heap may
	// grow this many percent above the live data before a collection.
	// 0 leaves Go's own setting (the GOGC environment variable, or 100).
	GCPercent int `yaml:"gc_percent"`
}

type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

type HTTPConfig struct {
	Listen string `yaml:"listen"`
	// Pprof serves Go's runtime profiles under /debug/pprof/ (heap,
	// goroutine, profile, ...). Off by default: profiles reveal internals
	// and a CPU profile costs CPU while it runs.
	Pprof bool `yaml:"pprof"`
}

type MediaConfig struct {
	Mode         string   `yaml:"mode"`
	Datapath     string   `yaml:"datapath"`
	Interfaces   []string `yaml:"interfaces"`
	PinPath      string   `yaml:"pin_path"`
	StrictSource bool     `yaml:"strict_source"`
	// Learning is how long after a call's signaling a relay flow may still
	// move to a better source (see relay.Latch); then it is locked.
	Learning  Duration        `yaml:"learning"`
	Timeout   Duration        `yaml:"timeout"`
	Addresses []AddressConfig `yaml:"addresses"`
}

type AddressConfig struct {
	Name       string `yaml:"name"`
	Local      string `yaml:"local"`
	Advertised string `yaml:"advertised"`
	PortMin    int    `yaml:"port_min"`
	PortMax    int    `yaml:"port_max"`
}

// Duration reads Go duration syntax from YAML.
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// LoadConfig reads the file at path, or the embedded default when path is
// empty, rejecting unknown keys so a typo is an error and not a silent
// default.
func LoadConfig(path string) (*Config, error) {
	data := defaultConfig
	src := "embedded default"
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		data, src = b, path
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", src, err)
	}
	return cfg, nil
}

// ParseConfig parses and validates YAML configuration text.
func ParseConfig(data []byte) (*Config, error) {
	// SIP fields left out of the file keep their documented defaults.
	cfg := Config{StateDir: DefaultStateDir, SIP: sipconf.Default(), Runtime: RuntimeConfig{GCPercent: DefaultGCPercent},
		NG: NGConfig{Listen: DefaultNGListen}, Media: MediaConfig{Learning: Duration(DefaultLearning)}}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Resolve copies settings that more than one section uses into the
// sections that use them (the state directory into sip). Validate calls
// it, so a Config that has been validated is resolved.
func (c *Config) Resolve() { c.SIP.StateDir = c.StateDir }

// Learning window of relay flows (media.learning).
const (
	// DefaultLearning is rtpengine's: phones start sending within it.
	DefaultLearning = 3 * time.Second
	// MinLearning: a shorter window would lock a NATed phone to whatever
	// came first before its own packets arrive.
	MinLearning = 100 * time.Millisecond
	// MaxLearning: a longer one keeps flows open to a better source, and
	// in userspace, for no gain.
	MaxLearning = 30 * time.Second
)

// Media modes: which calls have their RTP relayed.
const (
	MediaNone = "none" // signaling only: SDP untouched, no relay started
	MediaAll  = "all"  // every call
	MediaNAT  = "nat"  // calls where either party is behind NAT
)

var datapaths = map[string]bool{"auto": true, "xdp": true, "xdp-generic": true, "tc": true, "userspace": true}

// Validate checks every field and reports all problems at once.
func (c *Config) Validate() error {
	c.Resolve()
	var errs []error
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir is empty: sipd needs a directory for its secret and what survives restarts"))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", c.Log.Format))
	}
	if c.Runtime.GCPercent < 0 {
		errs = append(errs, fmt.Errorf("runtime.gc_percent %d: want 0 (Go's default) or more", c.Runtime.GCPercent))
	}
	if _, err := netip.ParseAddrPort(c.HTTP.Listen); err != nil {
		errs = append(errs, fmt.Errorf("http.listen %q: %w", c.HTTP.Listen, err))
	}
	if _, err := netip.ParseAddrPort(c.NG.Listen); err != nil {
		errs = append(errs, fmt.Errorf("ng.listen %q: %w", c.NG.Listen, err))
	}
	m := &c.Media
	switch m.Mode {
	case MediaNone, MediaAll, MediaNAT:
		if m.Mode == MediaNone && c.RelayOnly {
			errs = append(errs, errors.New("relay-only mode relays media: media.mode none starts no relay; set it to all"))
		}
	default:
		errs = append(errs, fmt.Errorf("media.mode %q: want none, all or nat", m.Mode))
	}
	if !datapaths[m.Datapath] {
		errs = append(errs, fmt.Errorf("media.datapath %q: want auto, xdp, xdp-generic, tc or userspace", m.Datapath))
	}
	if m.PinPath == "" {
		errs = append(errs, errors.New("media.pin_path is empty"))
	}
	if m.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("media.timeout %v: must be positive", time.Duration(m.Timeout)))
	}
	if m.Learning < Duration(MinLearning) || m.Learning > Duration(MaxLearning) {
		errs = append(errs, fmt.Errorf("media.learning %v: want %v to %v", time.Duration(m.Learning), MinLearning, MaxLearning))
	}
	if len(m.Addresses) == 0 {
		errs = append(errs, errors.New("media.addresses: at least one relay address is needed"))
	}
	names := map[string]bool{}
	for i, a := range m.Addresses {
		where := fmt.Sprintf("media.addresses[%d]", i)
		if a.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name is empty", where))
		} else if names[a.Name] {
			errs = append(errs, fmt.Errorf("%s.name %q is used twice", where, a.Name))
		}
		names[a.Name] = true
		if _, err := netip.ParseAddr(a.Local); err != nil {
			errs = append(errs, fmt.Errorf("%s.local %q: %w", where, a.Local, err))
		}
		if a.Advertised != "" {
			if _, err := netip.ParseAddr(a.Advertised); err != nil {
				errs = append(errs, fmt.Errorf("%s.advertised %q: %w", where, a.Advertised, err))
			}
		}
		if a.PortMin < 1024 || a.PortMax > 65535 || a.PortMin > a.PortMax || a.PortMax-a.PortMin < 3 {
			errs = append(errs, fmt.Errorf("%s: port range %d-%d: want 1024 <= port_min < port_max <= 65535 with room for at least two RTP/RTCP pairs", where, a.PortMin, a.PortMax))
		}
	}
	if err := c.SIP.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
