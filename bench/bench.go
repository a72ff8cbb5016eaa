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
)

const usage = `usage: bench <command> [flags]

commands:
  datapath   relay CPU per packet for each media path (needs root)
             bench datapath --path all --rate 100000 --flows 200 --duration 10s --out out/bench

run "bench datapath -h" for its flags.
`

// Main runs the bench command line and returns the exit code.
func Main(args []string) int {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if len(args) == 0 {
		io.WriteString(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "datapath":
		return runDatapathCmd(args[1:])
	// Internal commands, run by the bench itself inside a namespace.
	case "_sender":
		return runSenderChild(args[1:])
	case "_receiver":
		return runReceiverChild(args[1:])
	case "_relay":
		return runRelayChild(args[1:])
	case "_xdp-pass":
		return runXDPPassChild(args[1:])
	case "-h", "--help", "help":
		io.WriteString(os.Stdout, usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "bench: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
