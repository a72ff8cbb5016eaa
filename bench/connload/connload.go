// Package connload measures sipd over connection-oriented transports:
// many permanent TCP connections, and TLS with a new connection per
// registration and call, after shared/reference/002_*.txt.
package connload

import (
	"fmt"
	"os"
)

// Main runs "bench conns".
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, "bench conns: not implemented yet")
	return 2
}
