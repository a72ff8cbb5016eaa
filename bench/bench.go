// Package bench measures what the relay's media paths cost. `bench
// datapath` runs RTP load through each path (none, userspace, the kernel
// hooks) inside network namespaces it builds, and reports relay CPU per
// packet from system idle time, per-process CPU and BPF run-time stats.
package bench

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"sipxdp/bench/connload"
	"sipxdp/bench/itsp"
	"sipxdp/bench/report"
	"sipxdp/internal/childproc"
)

const usage = `usage: bench <command> [flags]

commands:
  datapath   relay CPU per packet for each media path (needs root)
             bench datapath --path all --rate 100000 --flows 200 --duration 10s --out out/bench

  calls      CPU and memory per call for each media path: sipd between a
             caller and a callee namespace under SIP+RTP load (needs root)
             bench calls --quick
             bench calls --scenario all --total 500,800 --cps 100,200 --duration 60s --out out/calls
             bench calls --scenario none,tc,relays --total 500 --cps 100 --duration 40s   # two relay hosts

  itsp       an ITSP's subscribers over UDP on loopback; --proxies 2 --store redis
             puts two sipd on one location table in a redis-server
             bench itsp --subscribers 500000 --proxies 2 --store redis --duration 30s

  conns      sipd over many TCP and TLS connections
             bench conns --mode both

  report     the datapath summary table again from a results.jsonl
             bench report out/bench/results.jsonl

run "bench COMMAND -h" for its flags.
`

// Main runs the bench command line and returns the exit code.
func Main(args []string) int {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	// The bench re-executes itself for its load children.
	if code, ok := childproc.Run(); ok {
		return code
	}
	if len(args) == 0 {
		io.WriteString(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "datapath":
		return runDatapathCmd(args[1:])
	case "calls":
		return CallsMain(args[1:])
	case "itsp":
		return itsp.Main(args[1:])
	case "conns":
		return connload.Main(args[1:])
	case "report":
		return runReportCmd(args[1:])
	case "-h", "--help", "help":
		io.WriteString(os.Stdout, usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "bench: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func runReportCmd(args []string) int {
	if len(args) != 1 {
		fmt.Fprintf(os.Stderr, "usage: bench report results.jsonl\n")
		return 2
	}
	rs, err := report.ReadJSONL(args[0])
	if err != nil {
		slog.Error("report", "err", err)
		return 1
	}
	if len(rs) > 0 {
		fmt.Printf("command: %s\n\n", rs[0].Command)
	}
	if err := report.WriteTable(os.Stdout, report.Summarize(rs)); err != nil {
		slog.Error("report", "err", err)
		return 1
	}
	return 0
}
