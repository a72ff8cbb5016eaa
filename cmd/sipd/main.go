// Command sipd is the sipxdp SIP proxy, registrar and media relay. With
// -relay-only it is the media relay alone, controlled over rtpengine's NG
// protocol by a SIP proxy's rtpengine module (Kamailio, OpenSIPS).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"

	"sipxdp/sipd"
)

func main() {
	if err := run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		// One problem a line, so a config with several shows them all.
		for line := range strings.SplitSeq(err.Error(), "\n") {
			fmt.Fprintln(os.Stderr, "sipd:", line)
		}
		os.Exit(1)
	}
}

const usageText = `Usage: sipd [flags]

Configuration is built in layers, each overriding the one before:
  1. the embedded default (sipd -print-default-config prints it, documented);
  2. the file given with -config, holding only what differs from the
     default: sections merge key by key, a value or a list replaces the
     default's ([] or an empty value sets it empty);
  3. environment variables SIPD_<KEY>, the key path upper-cased with "."
     written "_": SIPD_MEDIA_DATAPATH=userspace, SIPD_STATE_DIR=/srv/sipd,
     SIPD_HTTP_ALLOW='[10.0.0.0/8]'. Values are YAML (a list as [a, b]).
     A SIPD_ variable that names no setting is an error;
  4. the flags -http, -datapath and -log-level.
Unknown keys and bad values are errors, all reported at once with where
they came from. sipd -check-config prints the result (secrets redacted).

Flags:
`

func run(args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sipd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	configPath := fs.String("config", "", "configuration `file`, merged onto the embedded default (default: the embedded default alone)")
	printDefault := fs.Bool("print-default-config", false, "print the embedded default configuration and exit")
	checkConfig := fs.Bool("check-config", false, "validate the configuration (default, -config file, SIPD_ environment, flags), print the effective one as YAML with secrets redacted, and exit")
	httpListen := fs.String("http", "", "override http.listen")
	datapath := fs.String("datapath", "", "override media.datapath: auto, xdp, xdp-generic, tc or userspace")
	logLevel := fs.String("log-level", "", "override log.level")
	relayOnly := fs.Bool("relay-only", false, "run only the media relay, driven over rtpengine's NG protocol (ng.listen), with no SIP listener: a drop-in for rtpengine")
	uninstall := fs.Bool("uninstall", false, "remove the pinned BPF maps and links (stops kernel forwarding) and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *printDefault {
		_, err := stdout.Write(sipd.DefaultConfigYAML())
		return err
	}
	src := sipd.Sources{File: *configPath, Env: environ, RelayOnly: *relayOnly}
	for _, o := range []sipd.Override{
		{Key: "http.listen", Value: *httpListen, From: "-http"},
		{Key: "media.datapath", Value: *datapath, From: "-datapath"},
		{Key: "log.level", Value: *logLevel, From: "-log-level"},
	} {
		if o.Value != "" {
			src.Flags = append(src.Flags, o)
		}
	}
	cfg, err := sipd.Load(src)
	if err != nil {
		return err
	}
	if *checkConfig {
		return printConfig(stdout, cfg)
	}
	logger := sipd.NewLogger(cfg.Log, stderr)
	if *uninstall {
		return sipd.Uninstall(cfg, logger)
	}
	sipd.ApplyRuntime(cfg.Runtime, logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return sipd.Run(ctx, cfg, logger)
}

// printConfig writes the effective configuration, secrets redacted,
// indented as the default file is.
func printConfig(w io.Writer, cfg *sipd.Config) error {
	mode := ""
	if cfg.RelayOnly {
		mode = " (relay-only)"
	}
	if _, err := fmt.Fprintf(w, "# sipd effective configuration%s: embedded default, -config file, SIPD_ environment, flags; secrets redacted\n", mode); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(cfg.Redacted()); err != nil {
		return fmt.Errorf("print config: %w", err)
	}
	return enc.Close()
}
