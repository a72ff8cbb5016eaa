// Command sipd is the sipxdp SIP proxy, registrar and media relay. With
// -relay-only it is the media relay alone, controlled over rtpengine's NG
// protocol by a SIP proxy's rtpengine module (Kamailio, OpenSIPS).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"sipxdp/sipd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sipd:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("sipd", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file (default: the embedded default)")
	printDefault := fs.Bool("print-default-config", false, "print the embedded default configuration and exit")
	httpListen := fs.String("http", "", "override http.listen")
	datapath := fs.String("datapath", "", "override media.datapath: auto, xdp, xdp-generic, tc or userspace")
	logLevel := fs.String("log-level", "", "override log.level")
	relayOnly := fs.Bool("relay-only", false, "run only the media relay, driven over rtpengine's NG protocol (ng.listen), with no SIP listener: a drop-in for rtpengine")
	uninstall := fs.Bool("uninstall", false, "remove the pinned BPF maps and links (stops kernel forwarding) and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *printDefault {
		_, err := os.Stdout.Write(sipd.DefaultConfigYAML())
		return err
	}
	cfg, err := sipd.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	if *httpListen != "" {
		cfg.HTTP.Listen = *httpListen
	}
	if *datapath != "" {
		cfg.Media.Datapath = *datapath
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	cfg.RelayOnly = *relayOnly
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	logger := sipd.NewLogger(cfg.Log, os.Stderr)
	if *uninstall {
		return sipd.Uninstall(cfg, logger)
	}
	sipd.ApplyRuntime(cfg.Runtime, logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return sipd.Run(ctx, cfg, logger)
}
