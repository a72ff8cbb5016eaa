package sipd

import (
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"sipxdp/internal/guard"
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

// Defaults of the control surfaces' limits when the file leaves them out.
const (
	DefaultHTTPMaxConnections = 64
	DefaultNGMaxConnections   = 64
	DefaultNGIdleTimeout      = 5 * time.Minute
)

// DefaultNGAllow is ng.allow when the file leaves it out: the host
// itself, where a proxy beside the relay runs.
var DefaultNGAllow = []string{"127.0.0.0/8", "::1/128"}

// minTokenLen is the shortest http.token accepted: 16 characters of a
// hex or base64 secret carry 64 to 96 bits.
const minTokenLen = 16

type NGConfig struct {
	// Listen is the UDP address of the NG control protocol.
	Listen string `yaml:"listen"`
	// TCP also listens on TCP at the same address.
	TCP bool `yaml:"tcp"`
	// Allow lists the sources (CIDRs or addresses) whose commands are
	// served; others are dropped without a reply. Empty: every source,
	// which Validate accepts only on a loopback listen address.
	Allow []string `yaml:"allow"`
	// MaxConnections caps NG connections over TCP at once.
	MaxConnections int `yaml:"max_connections"`
	// IdleTimeout closes an NG TCP connection that sends nothing for
	// this long.
	IdleTimeout Duration `yaml:"idle_timeout"`
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
	// Token, when set, is the bearer token every endpoint but /health
	// and /metrics requires.
	Token string `yaml:"token"`
	// Allow lists the sources (CIDRs or addresses) that may connect;
	// others are disconnected at once. Empty: any source.
	Allow []string `yaml:"allow"`
	// MaxConnections caps API connections at once.
	MaxConnections int `yaml:"max_connections"`
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
		HTTP: HTTPConfig{MaxConnections: DefaultHTTPMaxConnections},
		NG: NGConfig{Listen: DefaultNGListen, Allow: append([]string(nil), DefaultNGAllow...),
			MaxConnections: DefaultNGMaxConnections, IdleTimeout: Duration(DefaultNGIdleTimeout)},
		Media: MediaConfig{Learning: Duration(DefaultLearning)}}
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
	errs = append(errs, c.HTTP.validate()...)
	errs = append(errs, c.NG.validate(c.RelayOnly)...)
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

// validate checks the http section. An API that other hosts can reach
// must have a token or an allow list: without either, anyone who reaches
// the port could read every call and registration and drain the relay.
func (h *HTTPConfig) validate() []error {
	var errs []error
	ap, err := netip.ParseAddrPort(h.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("http.listen %q: %w", h.Listen, err))
	}
	if h.Token != "" && !validToken(h.Token) {
		errs = append(errs, fmt.Errorf("http.token: want at least %d characters of A-Z a-z 0-9 - . _ ~ + / (such as the output of openssl rand -hex 24), or empty for none", minTokenLen))
	}
	allow, err := guard.ParsePrefixes(h.Allow)
	if err != nil {
		errs = append(errs, fmt.Errorf("http.allow: %w", err))
	}
	if h.MaxConnections < 1 {
		errs = append(errs, fmt.Errorf("http.max_connections %d: want 1 or more", h.MaxConnections))
	}
	if err != nil || !ap.IsValid() || ap.Addr().IsLoopback() {
		return errs
	}
	switch {
	case h.Token == "" && len(allow) == 0:
		errs = append(errs, fmt.Errorf("http.listen %s is reachable from other hosts and the API would have no protection: "+
			"set http.token (a secret bearer token, e.g. from openssl rand -hex 24), http.allow (the CIDRs of the hosts that may use the API), "+
			"or both; or listen on 127.0.0.1", h.Listen))
	case guard.LoopbackOnly(allow):
		errs = append(errs, fmt.Errorf("http.allow admits only loopback, but http.listen %s is not a loopback address: "+
			"no client could ever use the API; add your clients' addresses to http.allow, or listen on 127.0.0.1", h.Listen))
	}
	return errs
}

// validToken reports whether t can be sent as a bearer token (RFC 6750's
// b64token) and is long enough to be a secret.
func validToken(t string) bool {
	if len(t) < minTokenLen {
		return false
	}
	body := strings.TrimRight(t, "=")
	if body == "" {
		return false
	}
	for _, r := range body {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._~+/", r)) {
			return false
		}
	}
	return true
}

// validate checks the ng section. NG has no authentication of its own
// (rtpengine's has none either), so its allow list is all that stands
// between the port and whoever reaches it; the exposure rules apply only
// when NG is served (relay-only mode).
func (n *NGConfig) validate(served bool) []error {
	var errs []error
	ap, err := netip.ParseAddrPort(n.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("ng.listen %q: %w", n.Listen, err))
	}
	allow, err := guard.ParsePrefixes(n.Allow)
	if err != nil {
		errs = append(errs, fmt.Errorf("ng.allow: %w", err))
	}
	if n.MaxConnections < 1 {
		errs = append(errs, fmt.Errorf("ng.max_connections %d: want 1 or more", n.MaxConnections))
	}
	if n.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("ng.idle_timeout %v: must be positive", time.Duration(n.IdleTimeout)))
	}
	if !served || err != nil || !ap.IsValid() || ap.Addr().IsLoopback() {
		return errs
	}
	switch {
	case len(allow) == 0:
		errs = append(errs, fmt.Errorf("ng.listen %s is reachable from other hosts and NG has no authentication: "+
			"set ng.allow to the addresses (CIDRs) of the SIP proxies that drive the relay, or listen on 127.0.0.1", n.Listen))
	case guard.LoopbackOnly(allow):
		errs = append(errs, fmt.Errorf("ng.allow admits only loopback (the default), but ng.listen %s is not a loopback address: "+
			"no proxy could ever use it; add the proxies' addresses to ng.allow (e.g. allow: [192.0.2.10/32]), or listen on 127.0.0.1", n.Listen))
	}
	return errs
}
