package sipd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"sipxdp/mediapath"
	"sipxdp/relay"
)

// Version is set at build time with -ldflags "-X sipxdp/sipd.Version=...".
var Version = "dev"

// NewLogger builds the process logger from the log section.
func NewLogger(c LogConfig, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// MediaOptions turns the media section into relay stack options.
func MediaOptions(c MediaConfig, log *slog.Logger) mediapath.Options {
	o := mediapath.Options{
		Datapath:   c.Datapath,
		Interfaces: c.Interfaces,
		PinPath:    c.PinPath,
		Strict:     c.StrictSource,
		Timeout:    time.Duration(c.Timeout),
		Logger:     log,
	}
	for _, a := range c.Addresses {
		ac := relay.AddressConfig{
			Name:    a.Name,
			Local:   netip.MustParseAddr(a.Local), // validated by Config.Validate
			PortMin: uint16(a.PortMin),
			PortMax: uint16(a.PortMax),
		}
		if a.Advertised != "" {
			ac.Advertised = netip.MustParseAddr(a.Advertised)
		}
		o.Addresses = append(o.Addresses, ac)
	}
	return o
}

// Run serves until ctx is done. Today it runs the media relay and its
// control API; the SIP proxy joins it here.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	st, err := mediapath.Open(MediaOptions(cfg.Media, log))
	if err != nil {
		return fmt.Errorf("start media relay: %w", err)
	}
	defer st.Close()

	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("listen http %s: %w", cfg.HTTP.Listen, err)
	}
	api := &API{Engine: st.Engine, Started: time.Now(), Version: Version}
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- st.Engine.Run(ctx) }()
	go func() { errc <- srv.Serve(ln) }()
	log.Info("sipd started", "version", Version, "http", ln.Addr().String(),
		"media_path", st.Engine.PathName(), "reason", st.Engine.PathReason())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	if runErr != nil && !errors.Is(runErr, http.ErrServerClosed) && !errors.Is(runErr, context.Canceled) {
		return runErr
	}
	log.Info("sipd stopped; pinned kernel flows keep forwarding until uninstalled")
	return nil
}

// Uninstall removes the pinned kernel objects.
func Uninstall(cfg *Config, log *slog.Logger) error {
	if err := mediapath.Uninstall(cfg.Media.PinPath); err != nil {
		return err
	}
	log.Info("removed pinned BPF objects", "path", cfg.Media.PinPath)
	return nil
}
