// Package relayctl is the command-line view of the relay: flows, calls,
// relays, totals, a live watch, and drain, as tables or JSON (-j). It
// talks to sipd's HTTP API and, when sipd is not running, reads the pinned
// kernel maps directly.
package relayctl

import (
	"sipxdp/relay/cryptoleg"

	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"sipxdp/bpf"
	"sipxdp/sipd/wire"
)

const usage = `usage: relayctl [-api URL] [-token T | -token-file F] [-pin DIR] [-j|--json] COMMAND [flags]

The API token (sipd's http.token) is read from -token, -token-file or
$SIPXDP_API_TOKEN; prefer the file or the variable: a flag shows in ps.
-j (or --json), before or after the command, prints JSON instead of a table.

commands:
  flows   [-call ID] [-j] [-interval D]      list flows (pps over -interval; 0 skips it)
  calls   [-j]                               calls in progress: parties, state, media path, relay legs
  relays  [-j]                               the relays sipd uses: media path, addresses, port pools
  stats   [-j]                               totals and per-reason slow-path counters
  watch   [-call ID] [-interval D] [-count N] refreshing view of flows and totals
  drain   [-off]                             stop (or resume) accepting new relayed calls
`

// Sentinel errors a user can act on.
var (
	ErrNotRunning   = errors.New("sipd is not running")
	ErrNoPins       = errors.New("no pinned maps")
	ErrUnauthorized = errors.New("unauthorized")
)

type client struct {
	api   string
	token string // sent as a bearer token when set
	pin   string
	json  bool // -j before the command: the default of each command's -j
	http  *http.Client
	out   io.Writer
}

// now is the clock for ages and durations; tests fix it.
var now = time.Now

// Main runs relayctl with args (without the program name).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if err := run(ctx, args, stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "relayctl:", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("relayctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	api := fs.String("api", envOr("SIPXDP_API", "http://127.0.0.1:8080"), "sipd HTTP API base URL")
	token := fs.String("token", "", "sipd's http.token (default $SIPXDP_API_TOKEN)")
	tokenFile := fs.String("token-file", "", "read sipd's http.token from this file")
	pin := fs.String("pin", bpf.DefaultPinPath, "pinned BPF maps, read when sipd is down")
	var asJSON bool
	jsonFlag(fs, &asJSON, false)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no command")
	}
	tok, err := apiToken(*token, *tokenFile)
	if err != nil {
		return err
	}
	c := &client{api: strings.TrimRight(*api, "/"), token: tok, pin: *pin, json: asJSON, out: stdout,
		http: &http.Client{Timeout: 5 * time.Second}}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "flows":
		return c.flows(ctx, rest)
	case "calls":
		return c.calls(ctx, rest)
	case "relays":
		return c.relays(ctx, rest)
	case "stats":
		return c.stats(ctx, rest)
	case "watch":
		return c.watch(ctx, rest)
	case "drain":
		return c.drain(ctx, rest)
	case "help":
		fs.Usage()
		return nil
	}
	fs.Usage()
	return fmt.Errorf("unknown command %q", cmd)
}

// apiToken picks the token: the flag, else the file, else the
// environment.
func apiToken(flagValue, file string) (string, error) {
	switch {
	case flagValue != "":
		return flagValue, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read token: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return os.Getenv("SIPXDP_API_TOKEN"), nil
}

// jsonFlag registers -j and -json (so also --j and --json, as package flag
// reads them) on one variable, as bpftool spells them.
func jsonFlag(fs *flag.FlagSet, v *bool, def bool) {
	fs.BoolVar(v, "json", def, "print JSON")
	fs.BoolVar(v, "j", def, "print JSON (same as -json)")
}

// jsonOnly parses the flags of a command whose only flag is -j.
func (c *client) jsonOnly(name string, args []string) (bool, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var asJSON bool
	jsonFlag(fs, &asJSON, c.json)
	return asJSON, fs.Parse(args)
}

// printJSON writes v indented, for -j.
func (c *client) printJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (c *client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.api+path, nil)
	if err != nil {
		return err
	}
	return c.do(req, v)
}

func (c *client) do(req *http.Request, v any) error {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (nothing listens at %s)", ErrNotRunning, c.api)
		}
		return fmt.Errorf("query sipd at %s: %w", c.api, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		what := "needs sipd's http.token: pass -token-file or set SIPXDP_API_TOKEN"
		if c.token != "" {
			what = "refused the token given: it must equal sipd's http.token"
		}
		return fmt.Errorf("sipd %s %s: %w: the API %s", req.Method, req.URL.Path, ErrUnauthorized, what)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("sipd %s %s: %s: %s", req.Method, req.URL.Path, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", req.URL.Path, err)
	}
	return nil
}

// Flow is one row: the API's flow plus the rate relayctl measured.
type Flow struct {
	wire.FlowJSON
	PPS float64 `json:"pps"`
}

// fetchFlows reads flows from sipd, or from the pinned maps when sipd is
// down. source says which.
func (c *client) fetchFlows(ctx context.Context, call string) (flows []wire.FlowJSON, source string, err error) {
	q := "/flows"
	if call != "" {
		q += "?call_id=" + call
	}
	err = c.get(ctx, q, &flows)
	if err == nil {
		return flows, "sipd", nil
	}
	if !errors.Is(err, ErrNotRunning) {
		return nil, "", err
	}
	pinned, perr := c.pinnedFlows(call)
	if perr != nil {
		return nil, "", fmt.Errorf("%w; reading pinned maps instead: %w", err, perr)
	}
	return pinned, "pinned maps at " + c.pin + " (sipd is not running; call ids and userspace flows are unknown)", nil
}

func (c *client) pinnedFlows(call string) ([]wire.FlowJSON, error) {
	if call != "" {
		return nil, errors.New("-call needs sipd: the pinned maps do not know call ids")
	}
	m, err := bpf.OpenPinnedMaps(c.pin)
	if err != nil {
		return nil, pinError(c.pin, err)
	}
	defer m.Close()
	entries, err := m.Flows()
	if err != nil {
		return nil, fmt.Errorf("read pinned flows: %w", err)
	}
	out := make([]wire.FlowJSON, 0, len(entries))
	for _, e := range entries {
		state := "active"
		if e.Flow.Learning {
			state = "learning"
		}
		peer := ""
		if e.Flow.Peer.IsValid() {
			peer = e.Flow.Peer.String()
		}
		out = append(out, wire.FlowJSON{
			Local: e.Flow.Key.Local.String(), Peer: peer, Out: e.Flow.Out.String(), Dst: e.Flow.Dst.String(),
			Path: "kernel", State: state, Packets: e.Stats.Packets, Bytes: e.Stats.Bytes, LastSeen: e.Stats.LastSeen,
		})
	}
	return out, nil
}

func pinError(pin string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w under %s: has sipd ever run with a kernel datapath here? (%v)", ErrNoPins, pin, err)
	case errors.Is(err, syscall.EPERM):
		// Before Linux 6.5, kernel.unprivileged_bpf_disabled refused every
		// bpf() call without CAP_BPF, opening a pin included.
		return fmt.Errorf("the kernel refused to open the pins under %s: this kernel needs CAP_BPF for it "+
			"(kernel.unprivileged_bpf_disabled, before Linux 6.5): run relayctl as the user sipd runs as, with CAP_BPF, or as root (%v)", pin, err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("permission denied reading %s%s: the pins belong to the user sipd runs as (mode 0600): run relayctl as that user or as root (%v)",
			pin, owner(pin), err)
	}
	return err
}

// owner names who owns path, when this process may look.
func owner(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf(" (owned by uid %d gid %d)", st.Uid, st.Gid)
	}
	return ""
}

func (c *client) flows(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("flows", flag.ContinueOnError)
	call := fs.String("call", "", "only this call id")
	var asJSON bool
	jsonFlag(fs, &asJSON, c.json)
	interval := fs.Duration("interval", time.Second, "sample twice this far apart to show packets per second; 0 skips")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rows, source, err := c.sample(ctx, *call, *interval)
	if err != nil {
		return err
	}
	if asJSON {
		return c.printJSON(rows)
	}
	if source != "sipd" {
		fmt.Fprintf(c.out, "source: %s\n", source)
	}
	return printFlows(c.out, rows, now())
}

// sample fetches flows, and if interval > 0 again after it, to compute
// packets per second per flow.
func (c *client) sample(ctx context.Context, call string, interval time.Duration) ([]Flow, string, error) {
	first, source, err := c.fetchFlows(ctx, call)
	if err != nil {
		return nil, "", err
	}
	if interval <= 0 {
		return withRates(nil, first, 0), source, nil
	}
	select {
	case <-ctx.Done():
		return nil, "", ctx.Err()
	case <-time.After(interval):
	}
	second, source, err := c.fetchFlows(ctx, call)
	if err != nil {
		return nil, "", err
	}
	return withRates(first, second, interval), source, nil
}

func withRates(before, after []wire.FlowJSON, d time.Duration) []Flow {
	prev := make(map[string]uint64, len(before))
	for _, f := range before {
		prev[f.Local] = f.Packets
	}
	out := make([]Flow, 0, len(after))
	for _, f := range after {
		r := Flow{FlowJSON: f}
		if p, ok := prev[f.Local]; ok && d > 0 && f.Packets >= p {
			r.PPS = float64(f.Packets-p) / d.Seconds()
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CallID != out[j].CallID {
			return out[i].CallID < out[j].CallID
		}
		return out[i].Local < out[j].Local
	})
	return out
}

func printFlows(w io.Writer, rows []Flow, now time.Time) error {
	t := newTable(left("CALL"), left("LEG"), left("LOCAL"), left("PEER"), left("PATH"), left("STATE"), left("MEDIA"),
		right("PACKETS"), right("BYTES"), right("PPS"), right("LAST SEEN"))
	var notes []string
	for _, f := range rows {
		leg := f.Leg
		if f.Component != "" {
			leg += "/" + f.Component
		}
		t.add(dash(f.CallID), dash(leg), f.Local, dash(f.Peer), f.Path, f.State, mediaOf(f.FlowJSON),
			strconv.FormatUint(f.Packets, 10), strconv.FormatUint(f.Bytes, 10), strconv.FormatFloat(f.PPS, 'f', 0, 64), ago(f.LastSeen, now))
		for _, l := range []*cryptoleg.Info{f.In, f.OutLeg} {
			if l != nil && l.Error != "" {
				notes = append(notes, fmt.Sprintf("%s %s: %s leg failed: %s", f.CallID, leg, l.Kind, l.Error))
			}
		}
		if f.UserspaceOnly != "" && f.Path == "userspace" && f.State != "learning" {
			notes = append(notes, fmt.Sprintf("%s %s: not on the kernel path: %s", f.CallID, leg, f.UserspaceOnly))
		}
	}
	if err := t.write(w, "(no flows)"); err != nil {
		return err
	}
	for _, n := range notes {
		if _, err := fmt.Fprintln(w, n); err != nil {
			return err
		}
	}
	return nil
}

// mediaOf is what a flow carries in and out: rtp, or the crypto of each
// leg with its keying state, e.g. "dtls-srtp(ready)>rtp".
func mediaOf(f wire.FlowJSON) string {
	if f.In == nil && f.OutLeg == nil {
		return "rtp"
	}
	side := func(l *cryptoleg.Info) string {
		if l == nil {
			return "rtp"
		}
		return l.Kind + "(" + l.State + ")"
	}
	return side(f.In) + ">" + side(f.OutLeg)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	return d.Truncate(time.Millisecond).String() + " ago"
}

func (c *client) stats(ctx context.Context, args []string) error {
	asJSON, err := c.jsonOnly("stats", args)
	if err != nil {
		return err
	}
	var st wire.StatsJSON
	err = c.get(ctx, "/stats", &st)
	if errors.Is(err, ErrNotRunning) {
		m, perr := bpf.OpenPinnedMaps(c.pin)
		if perr != nil {
			return fmt.Errorf("%w; reading pinned maps instead: %w", err, pinError(c.pin, perr))
		}
		defer m.Close()
		counters, cerr := m.Counters()
		if cerr != nil {
			return fmt.Errorf("read pinned counters: %w", cerr)
		}
		st = wire.StatsJSON{KernelCounters: counters}
		st.Path = "kernel (pinned maps; sipd is not running)"
		err = nil
	}
	if err != nil {
		return err
	}
	if asJSON {
		return c.printJSON(st)
	}
	printStats(c.out, st)
	return nil
}

func printStats(w io.Writer, st wire.StatsJSON) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "path\t%s\n", st.Path)
	if st.Reason != "" {
		fmt.Fprintf(tw, "reason\t%s\n", st.Reason)
	}
	fmt.Fprintf(tw, "draining\t%v\n", st.Draining)
	fmt.Fprintf(tw, "sessions\t%d\n", st.Sessions)
	fmt.Fprintf(tw, "flows\t%d (kernel %d, userspace %d)\n", st.Flows, st.KernelFlows, st.UserspaceFlows)
	fmt.Fprintf(tw, "packets\t%d (kernel %d, userspace %d)\n", st.Packets, st.KernelPackets, st.UserspacePackets)
	fmt.Fprintf(tw, "bytes\t%d (kernel %d, userspace %d)\n", st.Bytes, st.KernelBytes, st.UserspaceBytes)
	fmt.Fprintf(tw, "userspace sockets\t%d\n", st.UserspaceSockets)
	printCounters(tw, "kernel", st.KernelCounters)
	if st.KernelCountersError != "" {
		fmt.Fprintf(tw, "kernel counters error\t%s\n", st.KernelCountersError)
	}
	printCounters(tw, "userspace", st.UserspaceCounters)
	tw.Flush()
}

func printCounters(w io.Writer, prefix string, m map[string]uint64) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s.%s\t%d\n", prefix, k, m[k])
	}
}

func (c *client) watch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	call := fs.String("call", "", "only this call id")
	interval := fs.Duration("interval", time.Second, "refresh interval")
	count := fs.Int("count", 0, "stop after this many refreshes (0: until interrupted)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *interval <= 0 {
		return errors.New("watch: -interval must be positive")
	}
	for i := 0; *count == 0 || i < *count; i++ {
		rows, source, err := c.sample(ctx, *call, *interval)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		var pps float64
		for _, r := range rows {
			pps += r.PPS
		}
		// Clear the screen and home the cursor, as watch(1) does.
		fmt.Fprint(c.out, "\x1b[H\x1b[2J")
		fmt.Fprintf(c.out, "%s  source: %s  flows: %d  pps: %.0f\n\n", now().Format(time.TimeOnly), source, len(rows), pps)
		if err := printFlows(c.out, rows, now()); err != nil {
			return err
		}
	}
	return nil
}

func (c *client) drain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("drain", flag.ContinueOnError)
	off := fs.Bool("off", false, "resume accepting new calls")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u := c.api + "/drain"
	if *off {
		u += "?off=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	var res map[string]bool
	if err := c.do(req, &res); err != nil {
		return err
	}
	if res["draining"] {
		fmt.Fprintln(c.out, "draining: new relayed calls are refused; existing calls continue")
	} else {
		fmt.Fprintln(c.out, "not draining: new calls are accepted")
	}
	return nil
}
