// Package itsp is the ITSP capacity benchmark: the traffic of a
// subscriber population (keep-alives, registration refreshes with digest,
// calls) against sipd, after shared/reference/002_*.txt.
package itsp

import (
	"fmt"
	"os"
)

// Main runs "bench itsp".
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, "bench itsp: not implemented yet")
	return 2
}
