// Command bench measures the relay's media paths; see package bench.
package main

import (
	"os"

	"sipxdp/bench"
)

func main() {
	os.Exit(bench.Main(os.Args[1:]))
}
