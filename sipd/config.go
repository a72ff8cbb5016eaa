package sipd

import (
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"sipxdp/internal/confload"
	"sipxdp/internal/guard"
	"sipxdp/sipd/redisconn"
	"sipxdp/sipd/relayrepl"
	"sipxdp/sipd/relayset"
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
	// Redis, when set (redis://host:port/db), replicates the relay's
	// calls to the nodes of RedisGroup that share its floating relay
	// address (package relayrepl). Empty: no replication.
	Redis string `yaml:"redis"`
	// RedisGroup names the floating relay address the nodes share; their
	// keys are under sipxdp:relay:<group>:.
	RedisGroup string `yaml:"redis_group"`
	// RedisNode names this node in what it writes (default: host name).
	RedisNode string `yaml:"redis_node"`
	// Strict refuses an offer or answer whose flags need media work the
	// relay does not do (transcoding, recording, playback; see package
	// ngbackend), so the proxy's script can send the call to a real
	// rtpengine set. Off, such flags are logged at debug and ignored.
	Strict bool `yaml:"strict"`
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
	// InterfaceFor names the interface (an addresses name) that faces a
	// party by its address (a CIDR or an address) or its SIP domain, in
	// place of the route's choice (see interfaceRules).
	InterfaceFor map[string]string `yaml:"interface_for"`
	// DTLSTimeout: a WebRTC leg whose DTLS-SRTP handshake has not
	// completed this long after the answer ends its call.
	DTLSTimeout Duration `yaml:"dtls_timeout"`
	// Relays, when set, sends calls to NG relays (relayset.Parse syntax)
	// instead of the embedded relay; RelayPing is their health check.
	Relays    string   `yaml:"relays"`
	RelayPing Duration `yaml:"relay_ping"`
}

type AddressConfig struct {
	Name       string `yaml:"name"`
	Local      string `yaml:"local"`
	Advertised string `yaml:"advertised"`
	PortMin    int    `yaml:"port_min"`
	PortMax    int    `yaml:"port_max"`
}

// Duration reads and writes Go duration syntax in YAML (sipconf's type,
// so both sections read durations alike).
type Duration = sipconf.Duration

// EnvPrefix starts the environment variables that override settings:
// SIPD_ and the key path upper-cased, "." written "_"
// (media.datapath: SIPD_MEDIA_DATAPATH).
const EnvPrefix = "SIPD_"

// Override sets one key from outside the file, the way a command-line
// flag does: Value is taken as a plain string.
type Override struct {
	Key   string // key path, such as media.datapath
	Value string
	From  string // what set it, for errors: "-datapath"
}

// Sources are the layers of a configuration, applied in this order onto
// the embedded default: File, then Env, then Flags. Each layer holds only
// what differs: maps merge key by key, and a scalar or a list replaces
// what was there.
type Sources struct {
	File  string   // a YAML file; empty: none
	Env   []string // "NAME=value" as os.Environ gives them; only SIPD_ names count
	Flags []Override
	// RelayOnly is the -relay-only flag, which Validate needs.
	RelayOnly bool
}

// Load builds and validates the effective configuration from src. Its
// error lists every problem, one a line, each with where the value came
// from (file:line:col, $SIPD_..., a flag) when that is known.
func Load(src Sources) (*Config, error) {
	var data []byte
	if src.File != "" {
		b, err := os.ReadFile(src.File)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		data = b
	}
	return load(src.File, data, src)
}

// LoadConfig reads the file at path merged onto the embedded default
// (path empty: the default alone), with no environment or flags.
func LoadConfig(path string) (*Config, error) { return Load(Sources{File: path}) }

// ParseConfig merges YAML configuration text onto the embedded default
// and validates the result. Errors name the text "config".
func ParseConfig(data []byte) (*Config, error) { return load("config", data, Sources{}) }

func load(name string, data []byte, src Sources) (*Config, error) {
	var cfg Config
	l := confload.New(&cfg)
	l.YAML("embedded default", defaultConfig, false)
	if name != "" {
		l.YAML(name, data, true)
	}
	l.Env(EnvPrefix, src.Env)
	for _, o := range src.Flags {
		l.SetString(o.Key, o.Value, o.From)
	}
	cfg.RelayOnly = src.RelayOnly
	if err := l.Result(cfg.Validate()); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Redacted returns a copy with its secrets (http.token, sip.secret,
// sip.auth.secret) replaced by "<redacted>" where set, for printing.
// Each of them refuses the placeholder, so a printed config fed back in
// fails rather than running with a known key.
func (c Config) Redacted() Config {
	for _, s := range []*string{&c.HTTP.Token, &c.SIP.Secret, &c.SIP.Auth.Secret} {
		if *s != "" {
			*s = Redacted
		}
	}
	return c
}

// Redacted stands in for a secret in printed configuration.
const Redacted = sipconf.Redacted

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
		errs = append(errs, confload.Errorf("state_dir", "%s is empty: sipd needs a directory for its secret and what survives restarts"))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, confload.Errorf("log.level", "%s %q: want debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, confload.Errorf("log.format", "%s %q: want text or json", c.Log.Format))
	}
	if c.Runtime.GCPercent < 0 {
		errs = append(errs, confload.Errorf("runtime.gc_percent", "%s %d: want 0 (Go's default) or more", c.Runtime.GCPercent))
	}
	errs = append(errs, c.HTTP.validate()...)
	errs = append(errs, c.NG.validate(c.RelayOnly)...)
	m := &c.Media
	switch m.Mode {
	case MediaNone, MediaAll, MediaNAT:
		if m.Mode == MediaNone && c.RelayOnly {
			errs = append(errs, confload.Errorf("media.mode", "relay-only mode relays media: %s none starts no relay; set it to all"))
		}
	default:
		errs = append(errs, confload.Errorf("media.mode", "%s %q: want none, all or nat", m.Mode))
	}
	if m.Relays != "" {
		if c.RelayOnly {
			errs = append(errs, confload.Errorf("media.relays", "%s: a relay-only node relays media itself; leave relays empty"))
		} else if _, err := relayset.Parse(m.Relays); err != nil {
			errs = append(errs, confload.Errorf("media.relays", "%s: %v", err))
		}
	}
	if m.RelayPing < Duration(100*time.Millisecond) || m.RelayPing > Duration(time.Minute) {
		errs = append(errs, confload.Errorf("media.relay_ping", "%s %v: want 100ms to 1m", time.Duration(m.RelayPing)))
	}
	if !datapaths[m.Datapath] {
		errs = append(errs, confload.Errorf("media.datapath", "%s %q: want auto, xdp, xdp-generic, tc or userspace", m.Datapath))
	}
	if c.NG.Redis != "" && c.RelayOnly && m.Datapath != "userspace" && len(m.Interfaces) == 0 {
		errs = append(errs, confload.Errorf("media.interfaces", "%s is empty, but ng.redis replicates a floating relay address: "+
			"a standby does not hold that address until it moves, so the kernel hook cannot find its interface; "+
			"name the interfaces (e.g. interfaces: [eth0]) or set media.datapath to userspace"))
	}
	if m.PinPath == "" {
		errs = append(errs, confload.Errorf("media.pin_path", "%s is empty"))
	}
	if m.Timeout <= 0 {
		errs = append(errs, confload.Errorf("media.timeout", "%s %v: must be positive", time.Duration(m.Timeout)))
	}
	if m.Learning < Duration(MinLearning) || m.Learning > Duration(MaxLearning) {
		errs = append(errs, confload.Errorf("media.learning", "%s %v: want %v to %v", time.Duration(m.Learning), MinLearning, MaxLearning))
	}
	if m.DTLSTimeout < Duration(time.Second) || m.DTLSTimeout > Duration(2*time.Minute) {
		errs = append(errs, confload.Errorf("media.dtls_timeout", "%s %v: want 1s to 2m", time.Duration(m.DTLSTimeout)))
	}
	if len(m.Addresses) == 0 {
		errs = append(errs, confload.Errorf("media.addresses", "%s: at least one relay address is needed"))
	}
	errs = append(errs, validateAddresses(m.Addresses)...)
	_, ruleErrs := parseInterfaceFor(m.InterfaceFor, m.Addresses)
	errs = append(errs, ruleErrs...)
	if err := c.SIP.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func familyName(a netip.Addr) string {
	if a.Is6() {
		return "IPv6"
	}
	return "IPv4"
}

// validateAddresses checks media.addresses as rtpengine's logical
// interfaces: a name holds at most one address per family, and a local
// address may serve several names (each with its own advertised
// address) when they give it the same port range, which they then share.
func validateAddresses(addrs []AddressConfig) []error {
	var errs []error
	type nameFam struct {
		name string
		v6   bool
	}
	names := map[nameFam]int{}
	type local struct {
		i        int
		name     string
		min, max int
	}
	locals := map[netip.Addr][]local{}
	for i, a := range addrs {
		where := fmt.Sprintf("media.addresses[%d]", i)
		if a.Name == "" {
			errs = append(errs, confload.Errorf(where+".name", "%s is empty"))
		}
		l, err := netip.ParseAddr(a.Local)
		if err != nil {
			errs = append(errs, confload.Errorf(where+".local", "%s %q: %w", a.Local, err))
		} else {
			l = l.Unmap()
			nf := nameFam{a.Name, l.Is6()}
			if j, dup := names[nf]; dup && a.Name != "" {
				errs = append(errs, confload.Errorf(where+".name", "%s %q already has an %s address (media.addresses[%d]): a name takes one address per family", a.Name, familyName(l), j))
			} else {
				names[nf] = i
			}
			for _, o := range locals[l] {
				switch {
				case o.name == a.Name:
					errs = append(errs, confload.Errorf(where+".local", "%s %s is already in %q (media.addresses[%d])", l, o.name, o.i))
				case o.min != a.PortMin || o.max != a.PortMax:
					errs = append(errs, confload.Errorf(where, "%s: local address %s is also in %q (media.addresses[%d]) with ports %d-%d: interfaces on one local address share its ports, give them the same port_min and port_max",
						l, o.name, o.i, o.min, o.max))
				}
			}
			locals[l] = append(locals[l], local{i, a.Name, a.PortMin, a.PortMax})
		}
		if a.Advertised != "" {
			if _, err := netip.ParseAddr(a.Advertised); err != nil {
				errs = append(errs, confload.Errorf(where+".advertised", "%s %q: %w", a.Advertised, err))
			}
		}
		if a.PortMin < 1024 || a.PortMax > 65535 || a.PortMin > a.PortMax || a.PortMax-a.PortMin < 3 {
			errs = append(errs, confload.Errorf(where, "%s: port range %d-%d: want 1024 <= port_min < port_max <= 65535 with room for at least two RTP/RTCP pairs", a.PortMin, a.PortMax))
		}
	}
	return errs
}

// validate checks the http section. An API that other hosts can reach
// must have a token or an allow list: without either, anyone who reaches
// the port could read every call and registration and drain the relay.
func (h *HTTPConfig) validate() []error {
	var errs []error
	ap, err := netip.ParseAddrPort(h.Listen)
	if err != nil {
		errs = append(errs, confload.Errorf("http.listen", "%s %q: %w", h.Listen, err))
	}
	if h.Token != "" && !validToken(h.Token) {
		errs = append(errs, confload.Errorf("http.token", "%s: want at least %d characters of A-Z a-z 0-9 - . _ ~ + / (such as the output of openssl rand -hex 24), or empty for none", minTokenLen))
	}
	allow, err := guard.ParsePrefixes(h.Allow)
	if err != nil {
		errs = append(errs, confload.Errorf("http.allow", "%s: %w", err))
	}
	if h.MaxConnections < 1 {
		errs = append(errs, confload.Errorf("http.max_connections", "%s %d: want 1 or more", h.MaxConnections))
	}
	if err != nil || !ap.IsValid() || ap.Addr().IsLoopback() {
		return errs
	}
	switch {
	case h.Token == "" && len(allow) == 0:
		errs = append(errs, confload.Errorf("http.listen", "%s %s is reachable from other hosts and the API would have no protection: "+
			"set http.token (a secret bearer token, e.g. from openssl rand -hex 24), http.allow (the CIDRs of the hosts that may use the API), "+
			"or both; or listen on 127.0.0.1", h.Listen))
	case guard.LoopbackOnly(allow):
		errs = append(errs, confload.Errorf("http.allow", "%s admits only loopback, but http.listen %s is not a loopback address: "+
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
		errs = append(errs, confload.Errorf("ng.listen", "%s %q: %w", n.Listen, err))
	}
	allow, err := guard.ParsePrefixes(n.Allow)
	if err != nil {
		errs = append(errs, confload.Errorf("ng.allow", "%s: %w", err))
	}
	if n.MaxConnections < 1 {
		errs = append(errs, confload.Errorf("ng.max_connections", "%s %d: want 1 or more", n.MaxConnections))
	}
	if n.IdleTimeout <= 0 {
		errs = append(errs, confload.Errorf("ng.idle_timeout", "%s %v: must be positive", time.Duration(n.IdleTimeout)))
	}
	errs = append(errs, n.validateRedis()...)
	if !served || err != nil || !ap.IsValid() || ap.Addr().IsLoopback() {
		return errs
	}
	switch {
	case len(allow) == 0:
		errs = append(errs, confload.Errorf("ng.listen", "%s %s is reachable from other hosts and NG has no authentication: "+
			"set ng.allow to the addresses (CIDRs) of the SIP proxies that drive the relay, or listen on 127.0.0.1", n.Listen))
	case guard.LoopbackOnly(allow):
		errs = append(errs, confload.Errorf("ng.allow", "%s admits only loopback (the default), but ng.listen %s is not a loopback address: "+
			"no proxy could ever use it; add the proxies' addresses to ng.allow (e.g. allow: [192.0.2.10/32]), or listen on 127.0.0.1", n.Listen))
	}
	return errs
}

// validateRedis checks ng.redis and its group and node names. Only
// relay-only nodes replicate; others ignore it (the file is read before
// the -relay-only flag is known).
func (n *NGConfig) validateRedis() []error {
	if n.Redis == "" {
		if n.RedisGroup != "" || n.RedisNode != "" {
			return []error{confload.Errorf("ng.redis", "%s is empty, but ng.redis_group or ng.redis_node is set: set ng.redis to redis://host:port/db to replicate calls")}
		}
		return nil
	}
	var errs []error
	if _, err := redisconn.ParseURL(n.Redis); err != nil {
		errs = append(errs, confload.Errorf("ng.redis", "%s %q: not a Redis URL (want redis://host:port/db, rediss:// for TLS): %v", n.Redis, err))
	}
	if !relayrepl.ValidName(n.RedisGroup) {
		errs = append(errs, confload.Errorf("ng.redis_group", "%s %q: want the name of the floating relay address the nodes share (letters, digits, '-', '_' and '.')", n.RedisGroup))
	}
	if n.RedisNode != "" && !relayrepl.ValidName(n.RedisNode) {
		errs = append(errs, confload.Errorf("ng.redis_node", "%s %q: want letters, digits, '-', '_' and '.'", n.RedisNode))
	}
	return errs
}
