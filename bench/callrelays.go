package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"sipxdp/bench/callreport"
	"sipxdp/bench/mem"
	"sipxdp/internal/sipdrun"
	"sipxdp/sipd"
)

// relayNode is one "sipd -relay-only" of scenario relays, in a namespace
// hung off sipd's: sipd's namespace routes RTP between the endpoints and
// it, as a network between hosts would.
type relayNode struct {
	name string
	ng   netip.AddrPort
	pin  string
	sipd *sipdrun.Sipd
}

// relayNGPort is the relays' NG port (sipd's default ng.listen port).
const relayNGPort = 2223

// startRelays starts the scenario's relay nodes, each on its own link
// (links 4 and up; 3 is the callers' and callees' direct one). They are
// stopped by stopRelays; their namespaces go with the topology.
func (r *callRun) startRelays(ctx context.Context) error {
	for i := range r.sc.Relays {
		n := &relayNode{name: fmt.Sprintf("relay%d", i)}
		h, err := r.line.NewRelayHost(ctx, fmt.Sprintf("n%d", i), 4+i)
		if err != nil {
			return err
		}
		n.ng = netip.AddrPortFrom(h.V4, relayNGPort)
		n.pin = filepath.Join(bpffsRoot, fmt.Sprintf("%s%d-calls-%s-%s", pinPrefix, os.Getpid(), r.sc.Name, n.name))
		r.relays = append(r.relays, n)
		cfg, err := relayNodeConfig(r.o, r.sc, n)
		if err != nil {
			return err
		}
		if n.sipd, err = r.startNode(ctx, h, n.name, cfg,
			sipdrun.Options{Name: "relay_" + r.tag + "-" + n.name, Args: []string{"-relay-only"}}); err != nil {
			return err
		}
	}
	return nil
}

// relayNodeConfig is a relay node's config: the embedded default with
// the scenario's media path on the node's one interface and address, and
// NG on that address for sipd's namespace. The API stays on the
// default's 127.0.0.1:8080, inside the node's namespace.
func relayNodeConfig(o *CallsOptions, sc callScenario, n *relayNode) (*sipd.Config, error) {
	cfg, err := sipdrun.Default()
	if err != nil {
		return nil, err
	}
	cfg.StateDir = filepath.Join(o.Out, "state-"+n.name)
	cfg.Media.Mode, cfg.Media.Datapath = sc.Mode, sc.Datapath
	cfg.Media.Interfaces = []string{"h0"}
	cfg.Media.PinPath = n.pin
	cfg.Media.Addresses = []sipd.AddressConfig{{Name: "relay", Local: n.ng.Addr().String(), PortMin: o.PortMin, PortMax: o.PortMax}}
	cfg.NG.Listen = n.ng.String()
	cfg.NG.Allow = []string{callsNet.Net4.String()}
	cfg.Log.Level = "warn"
	return cfg, nil
}

// relaySet is media.relays for sipd: every node, weight 1.
func (r *callRun) relaySet() string {
	var set []string
	for _, n := range r.relays {
		set = append(set, fmt.Sprintf("udp:%s=1", n.ng))
	}
	return strings.Join(set, " ")
}

// stopRelays stops the nodes and removes what a failed one left pinned.
func (r *callRun) stopRelays() error {
	var errs []error
	for _, n := range r.relays {
		errs = append(errs, stopNode(n.name, n.sipd, n.pin))
	}
	return errors.Join(errs...)
}

// mediaNodes are the processes that relay the media when sipd alone
// does not: the relay nodes, or every proxy node.
func (r *callRun) mediaNodes() []*sipdrun.Sipd {
	var out []*sipdrun.Sipd
	for _, n := range r.relays {
		out = append(out, n.sipd)
	}
	for _, n := range r.proxies {
		out = append(out, n.sipd)
	}
	return out
}

// kernelPins are the pin directories of the kernel programs that relay
// the media: sipd's own, or each node's.
func (r *callRun) kernelPins() []string {
	var out []string
	for _, n := range r.relays {
		out = append(out, n.pin)
	}
	for _, n := range r.proxies {
		out = append(out, n.pin)
	}
	if len(out) == 0 {
		out = []string{r.pin}
	}
	return out
}

// relayPackets sums the packets the media nodes counted on /health.
func (r *callRun) relayPackets(ctx context.Context) (uint64, error) {
	var sum uint64
	for _, n := range r.mediaNodes() {
		h, err := n.Health(ctx)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", n.LogPath, err)
		}
		sum += h.Media.Packets
	}
	return sum, nil
}

// fillRelayNodes records each node: what sipd's /health says it got, the
// packets it relayed, and its CPU in the steady window (procs, in cores,
// by process name).
func (r *callRun) fillRelayNodes(ctx context.Context, res *callreport.Result, sipdEnd sipd.Health, procs map[string]float64) {
	var offers uint64
	for _, m := range sipdEnd.Relays {
		offers += m.Offers
	}
	for i, n := range r.relays {
		node := callreport.RelayNode{Name: n.name, NG: "udp:" + n.ng.String(), Path: r.sc.Path}
		if i < len(sipdEnd.Relays) {
			node.Offers = sipdEnd.Relays[i].Offers
		}
		if h, err := n.sipd.Health(ctx); err == nil {
			node.Packets, node.Path = h.Media.Packets, h.Media.Path
		}
		if v, err := mem.RSSMB(n.sipd.PID()); err == nil {
			node.RSSMB = v
		}
		if c, ok := procs[n.name]; ok {
			node.CPUSteady = round2(100 * c)
		}
		if offers > 0 {
			node.SteadyCalls = round2(res.SteadyCalls * float64(node.Offers) / float64(offers))
		}
		if node.SteadyCalls > 0 {
			node.CPUPerCallPct = node.CPUSteady / node.SteadyCalls
		}
		res.RelayNodes = append(res.RelayNodes, node)
	}
}
