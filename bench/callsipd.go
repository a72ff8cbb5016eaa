package bench

import (
	"context"
	"path/filepath"

	"sipxdp/bench/sipload"
	"sipxdp/internal/netns"
	"sipxdp/internal/sipdrun"
	"sipxdp/sipd"
	"sipxdp/sipd/sipconf"
)

// benchDomain is the users' domain in the calls bench: a name, so callers
// and callees reach sipd on different addresses yet share one location
// table.
const benchDomain = "bench.sipxdp.test"

// sipdSetup is what one scenario's sipd runs with.
type sipdSetup struct {
	Binary   string
	Dir      string // config, users file and log go here
	Name     string // scenario-level tag for file names
	Mode     string // media.mode
	Datapath string // media.datapath
	PinPath  string
	Line     *netns.Topo
	UASCount int
	Password string
	PortMin  int
	PortMax  int
	Exempt   []string // networks the flood protection must not ban: the load generators
	// Relays is media.relays: sipd hands every call's media to these NG
	// relays and starts no relay of its own.
	Relays string
}

// sipdConfig is sipd's config for the topology: the embedded default with
// the fields the topology depends on set.
func sipdConfig(s sipdSetup) (*sipd.Config, error) {
	cfg, err := sipdrun.Default()
	if err != nil {
		return nil, err
	}
	l := s.Line
	left, right := l.V4.RelayA.String(), l.V4.RelayB.String()
	cfg.StateDir = filepath.Join(s.Dir, "state")
	cfg.Media.Mode, cfg.Media.Datapath = s.Mode, s.Datapath
	cfg.Media.Interfaces = []string{netns.RelayA, netns.RelayB}
	cfg.Media.PinPath = s.PinPath
	cfg.Media.Addresses = []sipd.AddressConfig{
		{Name: "callers", Local: left, PortMin: s.PortMin, PortMax: s.PortMax},
		{Name: "callees", Local: right, PortMin: s.PortMin, PortMax: s.PortMax},
	}
	cfg.SIP.Domains = []string{benchDomain, left, right}
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: left + ":5060"}, {Transport: "udp", Addr: right + ":5060"}}
	cfg.Log.Level = "warn"
	cfg.SIP.Protect.Exempt = append(cfg.SIP.Protect.Exempt, s.Exempt...)
	cfg.Media.Relays = s.Relays
	return cfg, nil
}

func startSipdInNS(ctx context.Context, s sipdSetup) (*sipdrun.Sipd, error) {
	cfg, err := sipdConfig(s)
	if err != nil {
		return nil, err
	}
	// The API stays on the default's 127.0.0.1:8080, inside the namespace.
	return sipdrun.Start(ctx, cfg, sipdrun.Options{Binary: s.Binary, Dir: s.Dir, Name: "sipd_" + s.Name,
		NetNS: s.Line.Relay.Path, Dial: s.Line.Relay.DialContext, Users: sipload.UsersFile(s.UASCount, s.Password)})
}
