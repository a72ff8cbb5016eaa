package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sipxdp/bench/callreport"
	"sipxdp/internal/netns"
	"sipxdp/internal/sipdrun"
)

// A calls-bench scenario: sipd's media mode and the datapath it is told to
// use. The path sipd reports must be the one asked for, or the scenario
// would measure something else.
type callScenario struct {
	Name     string
	Mode     string // media.mode
	Datapath string // media.datapath
	Path     string // the path /health must report ("" for none)
	// SRTP: the callers are WebRTC endpoints (sipload.UACConfig.SRTP),
	// whose DTLS-SRTP leg the relay bridges to plain RTP for the callees.
	SRTP bool
	// Relays is how many "sipd -relay-only" nodes sipd drives over NG
	// (media.relays), each in a namespace of its own; Datapath and Path
	// are then theirs, and sipd starts no relay of its own.
	Relays int
	// Proxies is how many sipd share the users and calls through one
	// Redis (sip.registrar.store, sip.dialog.store), each in a namespace
	// of its own and relaying its own calls; the callers spread their
	// calls over them.
	Proxies int
	Note    string
}

var callScenarios = []callScenario{
	{Name: "none", Mode: "none", Datapath: "userspace",
		Note: "none: signaling only; RTP goes straight between caller and callee over their own veth, not through the sipd host"},
	{Name: "userspace", Mode: "all", Datapath: "userspace", Path: "userspace"},
	{Name: callreport.SRTPScenario, Mode: "all", Datapath: "userspace", Path: "userspace", SRTP: true,
		Note: "srtp: the callers are WebRTC endpoints (ICE, DTLS-SRTP, rtcp-mux; one internal/webrtcpeer each), bridged by sipd's " +
			"userspace relay to plain RTP toward the callees; the whole machine's figures carry the callers' own SRTP work, " +
			"so it is compared with userspace on sipd's CPU and memory per call"},
	{Name: "xdp", Mode: "all", Datapath: "xdp-generic", Path: "xdp-generic",
		Note: "xdp: generic (skb) XDP, the XDP mode that does not copy packets on veth; native XDP is scenario xdp-native"},
	{Name: "xdp-native", Mode: "all", Datapath: "xdp", Path: "xdp",
		Note: "xdp-native: native XDP on veth needs an XDP program on the peer ends (an XDP_PASS one is attached there) and copies every locally sent packet, which a physical NIC does not"},
	{Name: "tc", Mode: "all", Datapath: "tc", Path: "tc"},
	{Name: callreport.RelaysScenario, Mode: "all", Datapath: "tc", Path: "tc", Relays: 2,
		Note: "relays: sipd drives two sipd -relay-only nodes over NG (media.relays, weights 1:1), each in its own namespace " +
			"on the tc hook, hung off sipd's namespace, which routes RTP between the endpoints and the relays; " +
			"compare with tc, where sipd relays on its own host"},
	{Name: callreport.ProxiesScenario, Mode: "all", Datapath: "tc", Path: "tc", Proxies: 2,
		Note: "proxies: two sipd, each in its own namespace with its own relay on the tc hook, share the location table and the dialogs " +
			"in one redis-server (a namespace of its own) and the secrets; the callees register through sipd1, the callers alternate " +
			"their calls between sipd0 (which finds the callees in Redis) and sipd1, and each node relays the calls placed through it; " +
			"sipd's CPU and memory figures are the two nodes' summed; compare with tc, one sipd on one host"},
}

func scenarioByName(name string) (callScenario, bool) {
	for _, s := range callScenarios {
		if s.Name == name {
			return s, true
		}
	}
	return callScenario{}, false
}

// expandScenarios reads --scenario: "all" or a comma list. none is run
// first at each level because the relay's cost is measured against it.
func expandScenarios(s string) ([]callScenario, error) {
	var out []callScenario
	seen := map[string]bool{}
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "all" {
			for _, sc := range callScenarios {
				seen[sc.Name] = true
			}
			continue
		}
		if _, ok := scenarioByName(n); !ok {
			return nil, fmt.Errorf("unknown scenario %q (want all, none, userspace, srtp, xdp, xdp-native, tc, relays or proxies)", n)
		}
		seen[n] = true
	}
	for _, sc := range callScenarios {
		if seen[sc.Name] {
			out = append(out, sc)
		}
	}
	return out, nil
}

// callLevel is one load level: --total calls at --cps.
type callLevel struct {
	Total int
	CPS   float64
}

// parseLevels pairs the --total and --cps lists; a single cps applies to
// every total.
func parseLevels(totals, cpss string) ([]callLevel, error) {
	var ts []int
	for _, f := range strings.Split(totals, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--total %q: want positive whole numbers, comma separated", totals)
		}
		ts = append(ts, n)
	}
	var cs []float64
	for _, f := range strings.Split(cpss, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("--cps %q: want positive numbers, comma separated", cpss)
		}
		cs = append(cs, v)
	}
	if len(cs) != 1 && len(cs) != len(ts) {
		return nil, fmt.Errorf("--cps has %d values for %d totals: give one, or one per total", len(cs), len(ts))
	}
	out := make([]callLevel, len(ts))
	for i, t := range ts {
		out[i] = callLevel{Total: t, CPS: cs[min(i, len(cs)-1)]}
	}
	return out, nil
}

// CallsOptions is one "bench calls" run.
type CallsOptions struct {
	Scenarios  []callScenario
	Levels     []callLevel
	Duration   time.Duration
	UASCount   int
	Out        string
	Sipd       string
	Cooldown   time.Duration
	RTPSockets int
	PortMin    int
	PortMax    int
	Command    string
}

const callsUsage = `usage: bench calls [flags]

Runs sipd in a network namespace between a caller and a callee namespace
and loads it with calls from the project's SIP+RTP load generator, for
each media scenario: none (signaling only), userspace, srtp (WebRTC
callers bridged to plain RTP by the userspace relay), xdp (generic),
xdp-native, tc, relays (sipd driving two sipd -relay-only nodes on
tc, each in a namespace of its own) and proxies (two sipd sharing users
and calls in one redis-server, each relaying its calls on tc). Needs
root. Examples:

  bench calls --quick                                   # every scenario, 20 calls, well under 2 minutes
  bench calls --scenario all --total 500,800 --cps 100,200 --duration 60s --out out/calls
  bench calls --scenario none,tc,relays --total 800 --cps 100 --duration 40s --out out/calls-relays
  bench calls --scenario none,tc,proxies --total 500 --cps 100 --duration 40s --out out/calls-proxies

flags:
`

func parseCallsFlags(args []string) (CallsOptions, error) {
	fs := flag.NewFlagSet("bench calls", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), callsUsage); fs.PrintDefaults() }
	scenario := fs.String("scenario", "all", "all, or a comma list of none, userspace, srtp, xdp, xdp-native, tc, relays, proxies")
	total := fs.String("total", "500", "calls per level, which is also the target concurrency; a comma list runs several levels")
	cps := fs.String("cps", "100", "new calls per second: one value, or one per --total")
	duration := fs.Duration("duration", 60*time.Second, "hold time of each call")
	uasCount := fs.Int("uas-count", 5, "callee instances, each registered with digest auth")
	out := fs.String("out", "", "directory for results.jsonl, results.csv, report.md, cpu-per-channel.svg and logs (default: a new temp dir)")
	quick := fs.Bool("quick", false, "a small run: 20 calls at 20/s held 8 s per scenario, no cooldown")
	sipd := fs.String("sipd", "", "sipd binary (default: go build sipxdp/cmd/sipd)")
	cooldown := fs.Duration("cooldown", 5*time.Second, "pause between scenarios")
	rtpSockets := fs.Int("rtp-sockets", 32, "RTP/RTCP socket pairs on each side of the load generator")
	portMin := fs.Int("port-min", 20000, "first relay port on each relay address")
	portMax := fs.Int("port-max", 39999, "last relay port on each relay address")
	if err := fs.Parse(args); err != nil {
		return CallsOptions{}, err
	}
	if fs.NArg() > 0 {
		return CallsOptions{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["total"] {
			*total = "20"
		}
		if !set["cps"] {
			*cps = "20"
		}
		if !set["duration"] {
			*duration = 8 * time.Second
		}
		if !set["cooldown"] {
			*cooldown = 0
		}
	}
	o := CallsOptions{Duration: *duration, UASCount: *uasCount, Out: *out, Sipd: *sipd, Cooldown: *cooldown,
		RTPSockets: *rtpSockets, PortMin: *portMin, PortMax: *portMax}
	var err error
	if o.Scenarios, err = expandScenarios(*scenario); err != nil {
		return o, err
	}
	if o.Levels, err = parseLevels(*total, *cps); err != nil {
		return o, err
	}
	switch {
	case o.UASCount < 1:
		return o, errors.New("--uas-count must be at least 1")
	case o.RTPSockets < 1 || o.RTPSockets > 1000:
		return o, errors.New("--rtp-sockets must be 1 to 1000")
	case o.PortMin < 1024 || o.PortMax > 65535 || o.PortMin >= o.PortMax:
		return o, errors.New("--port-min and --port-max must give a range within 1024-65535")
	}
	for _, l := range o.Levels {
		if _, _, err := steadyWindow(l, o.Duration); err != nil {
			return o, err
		}
		// Each call holds an RTP and an RTCP port on each relay address.
		if need := 2 * l.Total; need > o.PortMax-o.PortMin+1 {
			return o, fmt.Errorf("--total %d needs %d relay ports per address; the range has %d", l.Total, need, o.PortMax-o.PortMin+1)
		}
	}
	return o, nil
}

// steadyWindow is the part of a run, from the caller's start, when every
// call is up and none has hung up: from the end of the ramp plus a margin
// for the last answers, to just before the first call's hold time ends.
func steadyWindow(l callLevel, hold time.Duration) (from, to time.Duration, err error) {
	ramp := time.Duration(float64(l.Total) / l.CPS * float64(time.Second))
	from, to = ramp+2*time.Second, hold-time.Second
	if to-from < 2*time.Second {
		return 0, 0, fmt.Errorf("--duration %s is too short for %d calls at %g/s: every call must be up for at least 2 s "+
			"(ramp %s + 2 s margin, + 1 s before the first hangup); use at least %s",
			hold, l.Total, l.CPS, ramp.Round(time.Millisecond), (ramp + 5*time.Second).Round(time.Second))
	}
	return from, to, nil
}

// CallsMain runs "bench calls".
func CallsMain(args []string) int {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	o, err := parseCallsFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "bench calls: %v\n", err)
		return 2
	}
	o.Command = strings.TrimSpace("bench calls " + strings.Join(args, " "))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rs, err := RunCalls(ctx, &o)
	if len(rs) > 0 {
		if werr := callreport.WriteMarkdown(os.Stdout, rs); werr != nil {
			err = errors.Join(err, werr)
		}
		fmt.Printf("\nresults in %s\n", o.Out)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench calls: %v\n", err)
		return 1
	}
	return 0
}

// The calls bench's namespaces and addresses, apart from the datapath
// bench's so the two never meet.
var callsNet = netns.Config{Prefix: "sxdpc-", Net4: netip.MustParsePrefix("10.250.0.0/16"), Direct: true}

// proxiesNet is scenario proxies' network: outside the private ranges, so
// sipd takes the callees for phones every node reaches (not behind NAT:
// no Path, see README "Running on several hosts") and a call is on the
// node it was placed through only. With private addresses the node the
// callees registered with would put itself, and its relay, into every
// call placed through the other. 198.18.0.0/15 is the range set aside for
// benchmarks (RFC 2544); it stays inside the bench's namespaces.
var proxiesNet = netns.Config{Prefix: callsNet.Prefix, Net4: netip.MustParsePrefix("198.18.0.0/16"), Direct: true}

// network is the topology the scenario runs on.
func (sc callScenario) network() netns.Config {
	if sc.Proxies > 0 {
		return proxiesNet
	}
	return callsNet
}

// RunCalls runs every level and scenario, each in a fresh topology, and
// writes the outputs. It returns what it measured even when a scenario
// fails, with the error.
func RunCalls(ctx context.Context, o *CallsOptions) ([]callreport.Result, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root: it creates network namespaces and starts sipd in one")
	}
	if err := cleanStale(callsNet.Prefix); err != nil {
		return nil, err
	}
	var err error
	if o.Out, o.Sipd, err = sipdrun.Workdir(ctx, o.Out, "bench-calls-", o.Sipd); err != nil {
		return nil, err
	}
	host := hostInfo()
	var rs []callreport.Result
	var errs []error
	first := true
levels:
	for _, l := range o.Levels {
		for _, sc := range o.Scenarios {
			if ctx.Err() != nil {
				errs = append(errs, ctx.Err())
				break levels
			}
			if !first && o.Cooldown > 0 {
				select {
				case <-time.After(o.Cooldown):
				case <-ctx.Done():
					errs = append(errs, ctx.Err())
					break levels
				}
			}
			first = false
			r, err := runCallScenario(ctx, o, sc, l)
			if err != nil {
				errs = append(errs, fmt.Errorf("scenario %s at %d calls: %w", sc.Name, l.Total, err))
				if r.Scenario == "" {
					continue
				}
			}
			r.Host = host
			r.Command = o.Command
			rs = append(rs, r)
		}
	}
	if len(rs) > 0 {
		callreport.Derive(rs)
		if err := callreport.WriteAll(o.Out, rs); err != nil {
			errs = append(errs, err)
		}
	}
	return rs, errors.Join(errs...)
}
