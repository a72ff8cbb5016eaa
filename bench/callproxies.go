package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"sipxdp/bench/callreport"
	"sipxdp/bench/cpu"
	"sipxdp/bench/mem"
	"sipxdp/bench/procsample"
	"sipxdp/bench/sipload"
	"sipxdp/internal/netns"
	"sipxdp/internal/redistest"
	"sipxdp/internal/sipdrun"
	"sipxdp/sipd"
	"sipxdp/sipd/sipconf"
)

// proxyNode is one sipd of scenario proxies, in a namespace hung off the
// line's middle one, which routes SIP and RTP between the endpoints, the
// nodes and redis-server as a network between hosts would. Each relays
// the media of the calls placed through it, on its own kernel hook.
type proxyNode struct {
	name string
	sip  netip.AddrPort
	pin  string
	sipd *sipdrun.Sipd
}

// proxiesSecret is every node's sip.secret and sip.auth.secret: a
// challenge from one verifies on the other, and so do Record-Route
// tokens (README, "Running on several hosts").
const proxiesSecret = "bench-calls-shared-node-secret"

// startProxies starts redis-server on a host of its own (link 4) and the
// scenario's sipd nodes (links 5 and up), sharing the location table,
// the dialogs and the secrets. They are stopped by stopProxies; their
// namespaces go with the topology.
func (r *callRun) startProxies(ctx context.Context) error {
	h, err := r.line.NewHost(ctx, "rds", 4)
	if err != nil {
		return err
	}
	dir := filepath.Join(r.o.Out, "redis-"+r.tag)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("redis dir: %w", err)
	}
	if r.redis, err = redistest.LaunchIn(dir, h.NS, netip.AddrPortFrom(h.V4, 6379)); err != nil {
		return err
	}
	for i := range r.sc.Proxies {
		h, err := r.line.NewRelayHost(ctx, fmt.Sprintf("p%d", i), 5+i)
		if err != nil {
			return err
		}
		n := &proxyNode{name: fmt.Sprintf("sipd%d", i), sip: netip.AddrPortFrom(h.V4, 5060),
			pin: filepath.Join(bpffsRoot, fmt.Sprintf("%s%d-calls-%s-p%d", pinPrefix, os.Getpid(), r.sc.Name, i))}
		r.proxies = append(r.proxies, n)
		cfg, err := proxyNodeConfig(r.o, r.sc, r.line, n, r.redis.URL)
		if err != nil {
			return err
		}
		if n.sipd, err = r.startNode(ctx, h, n.name, cfg, sipdrun.Options{Name: "sipd_" + r.tag + "-" + n.name,
			Users: sipload.UsersFile(r.o.UASCount, callsPassword)}); err != nil {
			return err
		}
	}
	r.sipd = r.proxies[0].sipd
	return nil
}

// proxyNodeConfig is a node's config: the single-host one (sipdConfig)
// moved to the node's one interface and address, with the location
// table and the dialogs in the shared Redis and the shared secrets.
func proxyNodeConfig(o *CallsOptions, sc callScenario, line *netns.Topo, n *proxyNode, store string) (*sipd.Config, error) {
	cfg, err := sipdConfig(sipdSetup{Mode: sc.Mode, Datapath: sc.Datapath, PinPath: n.pin, Line: line,
		PortMin: o.PortMin, PortMax: o.PortMax, Exempt: []string{sc.network().Net4.String()}})
	if err != nil {
		return nil, err
	}
	a := n.sip.Addr().String()
	cfg.StateDir = filepath.Join(o.Out, "state-"+n.name)
	cfg.Media.Interfaces = []string{"h0"}
	cfg.Media.Addresses = []sipd.AddressConfig{{Name: "default", Local: a, PortMin: o.PortMin, PortMax: o.PortMax}}
	cfg.SIP.Domains = []string{benchDomain, a}
	cfg.SIP.Listen = []sipconf.Listen{{Transport: "udp", Addr: n.sip.String()}}
	cfg.SIP.Registrar.Store, cfg.SIP.Dialog.Store = store, store
	cfg.SIP.Secret, cfg.SIP.Auth.Secret = proxiesSecret, proxiesSecret
	return cfg, nil
}

// proxySIP lists the nodes' SIP addresses, for the callers.
func (r *callRun) proxySIP() []netip.AddrPort {
	var out []netip.AddrPort
	for _, n := range r.proxies {
		out = append(out, n.sip)
	}
	return out
}

// stopProxies stops the nodes and redis-server, and removes what a failed
// node left pinned.
func (r *callRun) stopProxies() error {
	var errs []error
	for _, n := range r.proxies {
		errs = append(errs, stopNode(n.name, n.sipd, n.pin))
	}
	if r.redis != nil {
		r.redis.Stop()
	}
	return errors.Join(errs...)
}

// addPeers adds the other nodes' CPU time and memory to node 0's
// reading, so that the sampled sipd figures are the nodes together.
func (r *callRun) addPeers(s *procsample.Reading) {
	for _, n := range r.proxies[1:] {
		p, err := cpu.ReadPID(n.sipd.PID())
		if err != nil {
			s.ProcOK = false
			continue
		}
		s.Proc.UTime += p.UTime
		s.Proc.STime += p.STime
		if v, err := mem.RSS(n.sipd.PID()); err == nil {
			s.RSS += v
		}
	}
}

// proxiesActive reads each node's confirmed calls.
func (r *callRun) proxiesActive(ctx context.Context) ([]int, bool) {
	out := make([]int, len(r.proxies))
	for i, n := range r.proxies {
		h, err := n.sipd.Health(ctx)
		if err != nil || h.SIP == nil {
			return nil, false
		}
		out[i] = h.SIP.ActiveCalls
	}
	return out, true
}

// fillProxyNodes records each node: its calls in the steady window (its
// own confirmed calls, averaged), the packets it relayed, its CPU there
// (procs, in cores, by process name) and memory; and redis-server's CPU.
func (r *callRun) fillProxyNodes(ctx context.Context, res *callreport.Result, steadyActive []float64, procs map[string]float64) {
	var sum float64
	for i, n := range r.proxies {
		node := callreport.ProxyNode{Name: n.name, SIP: "udp:" + n.sip.String(), Path: r.sc.Path}
		if h, err := n.sipd.Health(ctx); err == nil {
			node.Packets, node.Path = h.Media.Packets, h.Media.Path
			if h.SIP != nil {
				node.Completed = h.SIP.CallsCompleted
			}
		}
		if v, err := mem.RSSMB(n.sipd.PID()); err == nil {
			node.RSSMB = v
		}
		if i < len(steadyActive) {
			node.SteadyCalls = round2(steadyActive[i])
		}
		if c, ok := procs[n.name]; ok {
			node.CPUSteady = round2(100 * c)
			sum += c
		}
		if node.SteadyCalls > 0 {
			node.CPUPerCallPct = node.CPUSteady / node.SteadyCalls
		}
		res.ProxyNodes = append(res.ProxyNodes, node)
	}
	if procs != nil {
		res.SipdCPUSteady = round2(100 * sum)
		if c, ok := procs["redis"]; ok {
			v := round2(100 * c)
			res.RedisCPUSteady = &v
		}
	}
	if used, err := r.redis.UsedMemory(); err == nil {
		res.RedisUsedMB = round2(float64(used) / (1 << 20))
	}
}
