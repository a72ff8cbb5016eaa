// Command relayctl inspects and manages the relay's flows.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"sipxdp/relayctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := relayctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
