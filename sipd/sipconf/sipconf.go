// Package sipconf holds the SIP part of sipd's configuration. It lives apart
// from package sipd so the SIP server can take it without importing sipd
// (which imports the SIP server to run it).
package sipconf

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"sipxdp/internal/confload"
	"sipxdp/sipd/redisconn"
)

// Duration reads Go duration syntax from YAML.
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("want a duration such as 500ms, 15s or 1h: %w", err)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Config is the `sip:` section.
type Config struct {
	// Domains this proxy is responsible for; requests for other domains are
	// relayed only when AllowRelay is set.
	Domains    []string  `yaml:"domains"`
	Listen     []Listen  `yaml:"listen"`
	Advertise  string    `yaml:"advertise"`
	AllowRelay bool      `yaml:"allow_relay"`
	MaxSize    int       `yaml:"max_message_size"`
	UsersFile  string    `yaml:"users_file"`
	Auth       Auth      `yaml:"auth"`
	Registrar  Registrar `yaml:"registrar"`
	NAT        NAT       `yaml:"nat"`
	Protect    Protect   `yaml:"protect"`
	Dialog     Dialog    `yaml:"dialog"`
	Timers     Timers    `yaml:"timers"`
	// Connections limits the TCP and TLS connections peers open to sipd.
	Connections Connections `yaml:"connections"`
	// Secret keys the HMACs of what sipd hands out and must verify later
	// (Record-Route tokens, nonces). Empty: the one kept in StateDir,
	// generated there on first start. Instances that share it accept each
	// other's tokens and nonces.
	Secret string `yaml:"secret"`
	// StateDir is the top-level state_dir (not part of this section):
	// where the secret and relative store paths live. Empty: nothing is
	// kept, and a random secret is made for each start.
	StateDir string `yaml:"-"`
}

// StorePath resolves a file setting (registrar.store, dialog.cdr_file):
// absolute paths stand, relative ones are taken from StateDir. "" when
// the path is relative and there is no state directory.
func (c *Config) StorePath(p string) string {
	switch {
	case filepath.IsAbs(p):
		return p
	case c.StateDir == "":
		return ""
	}
	return filepath.Join(c.StateDir, p)
}

// Listen is one SIP socket.
type Listen struct {
	Transport string `yaml:"transport"` // udp | tcp | tls | ws | wss
	Addr      string `yaml:"addr"`      // ip:port; port 0 picks a free one
	Cert      string `yaml:"cert"`      // tls and wss only
	Key       string `yaml:"key"`       // tls and wss only
}

// Redacted stands in for a secret in a printed configuration
// (sipd -check-config); no secret may be set to it.
const Redacted = "<redacted>"

// Auth configures digest authentication.
type Auth struct {
	Realm      string   `yaml:"realm"`
	Algorithms []string `yaml:"algorithms"`
	NonceTTL   Duration `yaml:"nonce_ttl"`
	Secret     string   `yaml:"secret"`
	Register   bool     `yaml:"register"`
	Invite     bool     `yaml:"invite"`
}

// Registrar configures the location service.
type Registrar struct {
	MinExpires     Duration `yaml:"min_expires"`
	MaxExpires     Duration `yaml:"max_expires"`
	DefaultExpires Duration `yaml:"default_expires"`
	MaxContacts    int      `yaml:"max_contacts"`
	// Store is the location snapshot's file (its journal beside it),
	// relative to StateDir unless absolute; StoreMemory keeps
	// registrations in memory only; a redis://host:port/db URL keeps
	// them in Redis, shared with the other sipd that name it.
	Store string `yaml:"store"`
	// CountEvery is how often, with a Redis store, the
	// sipxdp_sip_registrations and sipxdp_sip_aors gauges are renewed:
	// one of the sipd sharing the store scans the whole keyspace this
	// often, the others read its count.
	CountEvery Duration `yaml:"count_every"`
}

// StoreMemory as registrar.store or dialog.store keeps registrations or
// calls in memory only.
const StoreMemory = "memory"

// CDRNone as dialog.cdr_file writes no CDRs.
const CDRNone = "none"

// NAT configures NAT traversal.
type NAT struct {
	FixContact bool `yaml:"fix_contact"`
}

// Protect configures flood protection and the caps on calls in setup.
type Protect struct {
	Window  Duration `yaml:"window"`
	Limit   int      `yaml:"limit"`
	BanTime Duration `yaml:"ban_time"`
	Exempt  []string `yaml:"exempt"` // CIDR prefixes never banned nor capped
	// BannedChallengeInterval: a banned source may be challenged once per
	// interval (so a phone whose nonce expired gets back in); 0: never.
	BannedChallengeInterval Duration `yaml:"banned_challenge_interval"`
	// SetupPerSource caps relayed calls in setup per source address from
	// callers who did not authenticate; 0: no cap.
	SetupPerSource int `yaml:"setup_per_source"`
	// SetupUnauthenticatedShare is the percentage of the relay's port
	// pairs that such calls may hold together, 1..100 (100: no bound).
	SetupUnauthenticatedShare int `yaml:"setup_unauthenticated_share"`
}

// ExemptPrefixes parses Exempt; Validate has checked it.
func (p Protect) ExemptPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range p.Exempt {
		if pf, err := netip.ParsePrefix(s); err == nil {
			out = append(out, pf)
		}
	}
	return out
}

// Dialog configures call tracking.
type Dialog struct {
	// CDRFile gets a JSON line per finished call, relative to StateDir
	// unless absolute; CDRNone writes none.
	CDRFile string `yaml:"cdr_file"`
	// Store keeps the calls that are up (snapshot; journal at
	// Store+".journal"), relative to StateDir unless absolute, so a
	// restarted sipd resumes them; StoreMemory keeps them in memory only;
	// a redis://host:port/db URL keeps them in Redis, where the other
	// sipd naming it take them over when this one fails.
	Store string `yaml:"store"`
	// CDRStream, a redis://host:port/db URL, also adds each CDR to the
	// Redis stream CDRStreamKey, trimmed to about CDRStreamMaxLen
	// entries; empty: CDRs go to the file only.
	CDRStream       string `yaml:"cdr_stream"`
	CDRStreamKey    string `yaml:"cdr_stream_key"`
	CDRStreamMaxLen int64  `yaml:"cdr_stream_maxlen"`
}

// SharedRedis is the Redis URL the proxies share state in: the dialog
// store's, else the location store's; "" when neither is in Redis.
func (c *Config) SharedRedis() string {
	for _, s := range []string{c.Dialog.Store, c.Registrar.Store} {
		if redisconn.IsURL(s) {
			return s
		}
	}
	return ""
}

// Timers configures transaction timeouts.
type Timers struct {
	Invite Duration `yaml:"invite"` // how long to wait for a final answer to a forwarded INVITE
}

// Connections limits stream connections (TCP, TLS, WS and WSS): how many, how many per source, and how long each may take.
type Connections struct {
	// Max is the most connections open at once, all listeners together.
	// 0: derived from RLIMIT_NOFILE at start, less a reserve for the
	// process's other descriptors.
	Max int `yaml:"max"`
	// PerSource is the most connections from one source (one IPv4
	// address, one IPv6 /64); sources in protect.exempt have no such cap.
	// 0: derived from Max.
	PerSource int `yaml:"per_source"`
	// MessageTimeout is how long a message may take to arrive in full once
	// its first byte has.
	MessageTimeout Duration `yaml:"message_timeout"`
	// IdleTimeout closes a connection that has carried no message either
	// way for this long, unless a registration made over it lasts longer.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// TLSHandshakeTimeout is how long a TLS handshake may take from accept.
	TLSHandshakeTimeout Duration `yaml:"tls_handshake_timeout"`
}

// Default returns the settings used when the section or a field is absent.
func Default() Config {
	return Config{
		Domains: []string{"localhost", "127.0.0.1"},
		Listen: []Listen{
			{Transport: "udp", Addr: "127.0.0.1:5060"},
			{Transport: "tcp", Addr: "127.0.0.1:5060"},
		},
		MaxSize: 16384,
		Auth: Auth{
			Algorithms: []string{"MD5", "SHA-256"},
			NonceTTL:   Duration(5 * time.Minute),
			Register:   true,
			Invite:     true,
		},
		Registrar: Registrar{
			MinExpires:     Duration(60 * time.Second),
			MaxExpires:     Duration(time.Hour),
			DefaultExpires: Duration(time.Hour),
			MaxContacts:    10,
			Store:          "location.json",
			CountEvery:     Duration(10 * time.Second),
		},
		Dialog: Dialog{CDRFile: "cdr.jsonl", Store: "dialogs.json", CDRStreamKey: "sipxdp:cdr", CDRStreamMaxLen: 1000000},
		NAT:    NAT{FixContact: true},
		Protect: Protect{Window: Duration(2 * time.Second), Limit: 200, BanTime: Duration(5 * time.Minute),
			Exempt: []string{"127.0.0.0/8", "::1/128"}, BannedChallengeInterval: Duration(5 * time.Second),
			SetupPerSource: 10, SetupUnauthenticatedShare: 50},
		Timers: Timers{Invite: Duration(3 * time.Minute)},
		Connections: Connections{MessageTimeout: Duration(10 * time.Second), IdleTimeout: Duration(2 * time.Minute),
			TLSHandshakeTimeout: Duration(10 * time.Second)},
	}
}

// Realm is the digest realm: the configured one or the first domain.
func (c *Config) Realm() string {
	if c.Auth.Realm != "" {
		return c.Auth.Realm
	}
	if len(c.Domains) > 0 {
		return c.Domains[0]
	}
	return "sipd"
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Domains) == 0 {
		errs = append(errs, confload.Errorf("sip.domains", "%s: at least one domain is needed"))
	}
	if len(c.Listen) == 0 {
		errs = append(errs, confload.Errorf("sip.listen", "%s: at least one socket is needed"))
	}
	for i, l := range c.Listen {
		where := fmt.Sprintf("sip.listen[%d]", i)
		switch strings.ToLower(l.Transport) {
		case "udp", "tcp", "ws":
		case "tls", "wss":
			if l.Cert == "" || l.Key == "" {
				errs = append(errs, confload.Errorf(where, "%s: %s needs cert and key (PEM files)", strings.ToLower(l.Transport)))
			}
		default:
			errs = append(errs, confload.Errorf(where+".transport", "%s %q: want udp, tcp, tls, ws or wss", l.Transport))
		}
		if ap, err := netip.ParseAddrPort(l.Addr); err != nil {
			errs = append(errs, confload.Errorf(where+".addr", "%s %q: %w", l.Addr, err))
		} else if ap.Addr().IsUnspecified() && c.Advertise == "" {
			// Via and Record-Route need an address peers can reach.
			errs = append(errs, confload.Errorf(where+".addr", "%s %q: a wildcard address needs sip.advertise", l.Addr))
		}
	}
	if c.MaxSize < 1024 || c.MaxSize > 65535 {
		errs = append(errs, confload.Errorf("sip.max_message_size", "%s %d: want 1024..65535", c.MaxSize))
	}
	for _, a := range c.Auth.Algorithms {
		if a != "MD5" && a != "SHA-256" {
			errs = append(errs, confload.Errorf("sip.auth.algorithms", "%s: %q: want MD5 or SHA-256", a))
		}
	}
	if (c.Auth.Register || c.Auth.Invite) && len(c.Auth.Algorithms) == 0 {
		errs = append(errs, confload.Errorf("sip.auth.algorithms", "%s: empty while authentication is on"))
	}
	if c.Auth.Secret == Redacted {
		errs = append(errs, confload.Errorf("sip.auth.secret", "%s: the placeholder of a printed config; put the real secret back, or leave it empty for a random one"))
	}
	if c.Auth.NonceTTL <= 0 {
		errs = append(errs, confload.Errorf("sip.auth.nonce_ttl", "%s: must be positive"))
	}
	r := c.Registrar
	if r.MinExpires <= 0 || r.MaxExpires < r.MinExpires || r.DefaultExpires < r.MinExpires || r.DefaultExpires > r.MaxExpires {
		errs = append(errs, confload.Errorf("sip.registrar", "%s: want 0 < min_expires <= default_expires <= max_expires, have %v, %v, %v",
			r.MinExpires.D(), r.DefaultExpires.D(), r.MaxExpires.D()))
	}
	if r.MaxContacts < 1 {
		errs = append(errs, confload.Errorf("sip.registrar.max_contacts", "%s: must be at least 1"))
	}
	// Shorter would have Redis scanning the keyspace without pause.
	if r.CountEvery < Duration(time.Second) {
		errs = append(errs, confload.Errorf("sip.registrar.count_every", "%s %v: must be at least 1s", r.CountEvery.D()))
	}
	switch {
	case strings.TrimSpace(r.Store) == "":
		errs = append(errs, confload.Errorf("sip.registrar.store", "%s is empty: name a file (relative paths are in state_dir), %q to keep registrations in memory only, or redis://host:port/db to share them", StoreMemory))
	case strings.Contains(r.Store, "://"):
		if _, err := redisconn.ParseURL(r.Store); err != nil {
			errs = append(errs, confload.Errorf("sip.registrar.store", "%s %q: not a Redis URL (want redis://host:port/db, rediss:// for TLS): %v", r.Store, err))
		}
	}
	switch d := c.Dialog; {
	case strings.TrimSpace(d.Store) == "":
		errs = append(errs, confload.Errorf("sip.dialog.store", "%s is empty: name a file (relative paths are in state_dir), %q to keep calls in memory only, or redis://host:port/db to share them", StoreMemory))
	case strings.Contains(d.Store, "://"):
		if _, err := redisconn.ParseURL(d.Store); err != nil {
			errs = append(errs, confload.Errorf("sip.dialog.store", "%s %q: not a Redis URL (want redis://host:port/db, rediss:// for TLS): %v", d.Store, err))
		}
	}
	if d := c.Dialog; d.CDRStream != "" {
		if _, err := redisconn.ParseURL(d.CDRStream); err != nil {
			errs = append(errs, confload.Errorf("sip.dialog.cdr_stream", "%s %q: not a Redis URL (want redis://host:port/db, rediss:// for TLS): %v", d.CDRStream, err))
		}
	}
	if c.Dialog.CDRStreamMaxLen < 0 {
		errs = append(errs, confload.Errorf("sip.dialog.cdr_stream_maxlen", "%s %d: must not be negative", c.Dialog.CDRStreamMaxLen))
	}
	if strings.TrimSpace(c.Dialog.CDRFile) == "" {
		errs = append(errs, confload.Errorf("sip.dialog.cdr_file", "%s is empty: name a file (relative paths are in state_dir), or %q to write no CDRs", CDRNone))
	}
	if c.Protect.Limit < 0 || (c.Protect.Limit > 0 && (c.Protect.Window <= 0 || c.Protect.BanTime <= 0)) {
		errs = append(errs, confload.Errorf("sip.protect", "%s: limit must be >= 0, and window and ban_time positive when it is set"))
	}
	if c.Protect.BannedChallengeInterval < 0 {
		errs = append(errs, confload.Errorf("sip.protect.banned_challenge_interval", "%s: must be >= 0 (0: never challenge a banned source)"))
	}
	if c.Protect.SetupPerSource < 0 {
		errs = append(errs, confload.Errorf("sip.protect.setup_per_source", "%s %d: must be >= 0 (0: no cap)", c.Protect.SetupPerSource))
	}
	if s := c.Protect.SetupUnauthenticatedShare; s < 1 || s > 100 {
		errs = append(errs, confload.Errorf("sip.protect.setup_unauthenticated_share", "%s %d: want a percentage 1..100 (100: no bound)", s))
	}
	for _, e := range c.Protect.Exempt {
		if _, err := netip.ParsePrefix(e); err != nil {
			errs = append(errs, confload.Errorf("sip.protect.exempt", "%s %q: %w", e, err))
		}
	}
	if c.Secret != "" && len(c.Secret) < 16 {
		errs = append(errs, confload.Errorf("sip.secret", "%s: want at least 16 characters, or empty to keep one in state_dir"))
	}
	if c.Timers.Invite <= 0 {
		errs = append(errs, confload.Errorf("sip.timers.invite", "%s: must be positive"))
	}
	errs = append(errs, c.Connections.validate()...)
	return errors.Join(errs...)
}

func (c Connections) validate() []error {
	var errs []error
	if c.Max < 0 {
		errs = append(errs, confload.Errorf("sip.connections.max", "%s %d: want 0 (derived from the open-file limit) or more", c.Max))
	}
	if c.PerSource < 0 {
		errs = append(errs, confload.Errorf("sip.connections.per_source", "%s %d: want 0 (derived from max) or more", c.PerSource))
	}
	if c.Max > 0 && c.PerSource > c.Max {
		errs = append(errs, confload.Errorf("sip.connections.per_source", "%s %d is above max %d", c.PerSource, c.Max))
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"message_timeout", c.MessageTimeout}, {"idle_timeout", c.IdleTimeout}, {"tls_handshake_timeout", c.TLSHandshakeTimeout}} {
		if d.v <= 0 {
			errs = append(errs, confload.Errorf("sip.connections."+d.name, "%s %v: must be positive", d.v.D()))
		}
	}
	return errs
}
