// Command bench measures the relay's media paths; see package bench.
package main

import (
	"os"

	"sipxdp/bench"
)

func main() {
	// "calls" is dispatched here rather than in bench.Main so the call
	// benchmark can grow without touching the datapath command's code.
	if len(os.Args) > 1 && os.Args[1] == "calls" {
		os.Exit(bench.CallsMain(os.Args[2:]))
	}
	os.Exit(bench.Main(os.Args[1:]))
}
