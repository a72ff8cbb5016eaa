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
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"sipxdp/internal/guard"
	"sipxdp/mediapath"
	"sipxdp/relay"
	"sipxdp/sipd/callstats"
	"sipxdp/sipd/media"
	"sipxdp/sipd/ngmedia"
	"sipxdp/sipd/redisconn"
	"sipxdp/sipd/relayrepl"
	"sipxdp/sipd/relayset"
	"sipxdp/sipd/sipserver"
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
		Datapath:    c.Datapath,
		Interfaces:  c.Interfaces,
		PinPath:     c.PinPath,
		Strict:      c.StrictSource,
		Learning:    time.Duration(c.Learning),
		Timeout:     time.Duration(c.Timeout),
		DTLSTimeout: time.Duration(c.DTLSTimeout),
		Logger:      log,
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

// legPicker chooses a leg's relay address on a relay with several
// interfaces: the configured address the kernel would send from to reach
// the peer, so each leg's packets leave by the interface that faces its
// side. A media.interface_for rule for the peer's address comes first.
// With a single address name there is nothing to choose (nil).
func legPicker(addrs []relay.AddressConfig, rules interfaceRules) func(netip.Addr) relay.LegSpec {
	names := map[string]bool{}
	for _, a := range addrs {
		names[a.Name] = true
	}
	if len(names) < 2 {
		return nil
	}
	return func(peer netip.Addr) relay.LegSpec {
		peer = peer.Unmap()
		if !peer.IsValid() || peer.IsUnspecified() {
			return relay.LegSpec{}
		}
		fam := relay.IPv6
		if peer.Is4() {
			fam = relay.IPv4
		}
		if name := rules.forPeer(peer); name != "" {
			return spec(addrs, name, fam)
		}
		// Connecting a UDP socket sends nothing; it asks the kernel for the
		// route and so the source address.
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(peer, 9)))
		if err != nil {
			return relay.LegSpec{Family: fam}
		}
		src := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		c.Close()
		for _, a := range addrs {
			if a.Local == src {
				return relay.LegSpec{Address: a.Name, Family: fam}
			}
		}
		return relay.LegSpec{Family: fam}
	}
}

// Run serves SIP, the media relay (unless media.mode is none) and the HTTP
// API until ctx is done. SIGHUP reloads the users file. In relay-only mode
// (cfg.RelayOnly) it serves the relay, driven over rtpengine's NG protocol,
// and the HTTP API, and no SIP.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	api := &API{Started: time.Now(), Version: Version, Pprof: cfg.HTTP.Pprof}
	var ctrl *media.Controller
	var ended *callstats.Counter // relay-only: the calls ended, for rtpengine's statistics
	relayPairs := 0              // of the smallest pool: what unauthenticated calls in setup get a share of
	if cfg.RelayOnly && cfg.Media.Mode == MediaNone {
		return errors.New("relay-only mode needs the relay: media.mode is none")
	}
	var (
		relays *relayset.Set
		ngctl  *ngmedia.Controller
	)
	if cfg.Media.Mode != MediaNone && cfg.Media.Relays != "" && !cfg.RelayOnly {
		// Calls go to other relays over NG: none starts here.
		eps, err := relayset.Parse(cfg.Media.Relays)
		if err != nil {
			return fmt.Errorf("media.relays: %w", err)
		}
		ro := relayset.Options{Interval: cfg.Media.RelayPing.D(), Log: log.With("component", "relayset")}
		if url := cfg.SIP.SharedRedis(); url != "" {
			// Proxies sharing state share which relay each call is on.
			conn, err := redisconn.Open(url, "relay stickiness", redisconn.Options{Log: ro.Log,
				Down: "calls stick to their relay in this proxy's memory only: other proxies cannot send their answers, re-offers and deletes there"})
			if err != nil {
				return fmt.Errorf("media.relays: %w", err)
			}
			defer conn.Close()
			ro.Shared = relayset.NewRedisSticky(conn)
			api.RelaySticky = conn.Errors
		}
		relays, err = relayset.New(eps, ro)
		if err != nil {
			return fmt.Errorf("media.relays: %w", err)
		}
		defer relays.Close()
		ngctl = ngmedia.New(cfg.Media.Mode, relays, log.With("component", "media"))
		api.Relays = relays.Status
	} else if cfg.Media.Mode != MediaNone {
		mo := MediaOptions(cfg.Media, log.With("component", "media"))
		// A standby binds the floating relay address before it holds it.
		mo.Freebind = cfg.RelayOnly && cfg.NG.Redis != ""
		st, err := mediapath.Open(mo)
		if err != nil {
			return fmt.Errorf("start media relay: %w", err)
		}
		defer st.Close()
		api.Engine = st.Engine
		for _, pl := range st.Engine.Stats().Pools {
			if relayPairs == 0 || pl.TotalPairs < relayPairs {
				relayPairs = pl.TotalPairs
			}
		}
		addrs := MediaOptions(cfg.Media, log).Addresses
		rules, _ := parseInterfaceFor(cfg.Media.InterfaceFor, cfg.Media.Addresses) // validated by Config.Validate
		mc := media.Config{Mode: cfg.Media.Mode, Engine: st.Engine, Log: log.With("component", "media"),
			Pick: legPicker(addrs, rules), Interfaces: addrs, Domain: rules.forDomain()}
		if cfg.RelayOnly {
			// rtpengine's statistics of ended calls, for NG statistics
			// and its Prometheus series.
			ended = new(callstats.Counter)
			mc.Ended = ended
			api.CallsEnded = ended.Ended
		}
		ctrl = media.New(mc)
	}
	var (
		sipSrv *sipserver.Server
		ngl    *ngListeners
		repl   *relayrepl.Replicator
		err    error
	)
	if cfg.RelayOnly {
		if cfg.NG.Redis != "" {
			if repl, err = openReplication(cfg, ctrl, api.Engine, log.With("component", "replication")); err != nil {
				return err
			}
			defer repl.Close()
			api.Replication = repl.Status
		}
		// No SIP to send a BYE on a media timeout: the controller has
		// deleted the call; the proxy learns of it when its own
		// rtpengine_delete or query finds no call.
		ctrl.OnTimeout(func(e media.Ended) {
			log.Info("relay-only: call deleted for no media; no SIP to end it", "call_id", e.CallID, "reason", e.Reason)
			if repl != nil {
				repl.Changed(e.CallID)
			}
		})
		ngl, err = listenNG(cfg.NG, ctrl, api.Engine, repl, ended, api.ObserveNG, log.With("component", "ng"))
		if err != nil {
			return err
		}
		api.NG = ngl.srv
	} else {
		var mc sipserver.MediaController
		switch { // a nil pointer in the interface would not be nil
		case ngctl != nil:
			mc = ngctl
		case ctrl != nil:
			mc = ctrl
		}
		sipSrv, err = sipserver.New(cfg.SIP, log.With("component", "sip"), sipserver.Options{Media: mc, RelayPairs: relayPairs, RelayPorts: relayPorts(cfg.Media),
			Observe: api.SIPObservers()})
		if err != nil {
			return fmt.Errorf("start sip: %w", err)
		}
		api.SIP = sipSrv
	}
	closeListeners := func() {
		if sipSrv != nil {
			sipSrv.Close()
		}
		if ngl != nil {
			ngl.close()
		}
	}

	ln, err := listenAPI(cfg.HTTP, log.With("component", "http"))
	if err != nil {
		closeListeners()
		return err
	}
	api.Token, api.Conns = cfg.HTTP.Token, ln
	srv := newAPIServer(api.Handler(), log.With("component", "http"))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 5)
	start := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	if api.Engine != nil {
		start("media engine", func() error { return api.Engine.Run(ctx) })
		start("media events", func() error { ctrl.Run(ctx, api.Engine.Events()); return nil })
	}
	if relays != nil {
		start("relay set", func() error { relays.Run(ctx); return nil })
		// A quarter of media.timeout: a call the relay ended for silence
		// (its own timeout, presumably media.timeout too) gets its BYEs
		// within that much of it.
		start("relay calls", func() error { ngctl.Watch(ctx, max(cfg.Media.Timeout.D()/4, 100*time.Millisecond)); return nil })
	}
	if sipSrv != nil {
		start("sip", func() error { return sipSrv.Serve(ctx) })
	}
	if ngl != nil {
		ngl.start(ctx, start)
	}
	if repl != nil {
		start("relay replication", func() error { repl.Run(ctx); return nil })
	}
	start("http", func() error { return srv.Serve(ln) })

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	path := "none"
	if api.Engine != nil {
		path = api.Engine.PathName()
	} else if relays != nil {
		path = "ng relays " + cfg.Media.Relays
	}
	// Every socket was opened above, so what is sent to them from now on
	// is queued and answered: systemd may start the units ordered after
	// sipd's.
	notify := newServiceNotifier(log)
	if ngl != nil {
		log.Info("sipd started in relay-only mode", "version", Version, "http", ln.Addr().String(),
			"ng", ngl.addr(), "media_path", path)
		notify.ready("relay-only: NG " + ngl.addr() + ", media path " + path)
	} else {
		log.Info("sipd started", "version", Version, "http", ln.Addr().String(),
			"media_mode", cfg.Media.Mode, "media_path", path)
		notify.ready("serving SIP, media mode " + cfg.Media.Mode + ", media path " + path)
	}
	watchdog, stopWatchdog := notify.ticks()
	defer stopWatchdog()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-watchdog:
			// Ping only after the reads /health makes return: a relay
			// engine or SIP server stuck on its locks stops the pings, and
			// systemd restarts sipd (Restart=on-failure).
			api.probe()
			notify.ping()
		case <-hup:
			if sipSrv == nil {
				continue
			}
			if err := sipSrv.ReloadUsers(); err != nil {
				log.Error("reload users", "err", err)
			} else {
				log.Info("users reloaded")
			}
		}
	}
	notify.stopping()
	shut, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = srv.Shutdown(shut)
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	if api.Engine != nil {
		log.Info("sipd stopped; pinned kernel flows keep forwarding until uninstalled")
	} else {
		log.Info("sipd stopped")
	}
	return errors.Join(errs...)
}

// relayPorts is how many relay sockets the media relay may open at once:
// one per port of its ranges, or none with media.mode none.
func relayPorts(m MediaConfig) int {
	if m.Mode == MediaNone {
		return 0
	}
	n := 0
	seen := map[string]bool{} // interfaces on one local address share its ports
	for _, a := range m.Addresses {
		if !seen[a.Local] {
			seen[a.Local] = true
			n += a.PortMax - a.PortMin + 1
		}
	}
	return n
}

// The API server's timeouts. A client has httpHeaderTimeout to send its
// headers and httpReadTimeout for the whole request (the API takes no
// bodies to speak of), httpWriteTimeout to take the answer (net/http/pprof
// adds a profile's duration to it), and a kept-alive connection is
// closed after httpIdleTimeout without a request. Variables so tests can
// shorten them.
var (
	httpHeaderTimeout = 5 * time.Second
	httpReadTimeout   = 10 * time.Second
	httpWriteTimeout  = 30 * time.Second
	httpIdleTimeout   = 60 * time.Second
)

// httpMaxHeaderBytes bounds a request's headers: the API's requests are
// a line and a few headers.
const httpMaxHeaderBytes = 16 << 10

// listenAPI opens the API's socket behind a guard.Listener that admits
// http.allow's sources and at most http.max_connections at once.
func listenAPI(c HTTPConfig, log *slog.Logger) (*guard.Listener, error) {
	allow, err := guard.ParsePrefixes(c.Allow) // Validate has checked it
	if err != nil {
		return nil, fmt.Errorf("http.allow: %w", err)
	}
	if len(allow) == 0 {
		allow = nil // any source
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen http %s: %w", c.Listen, guard.ExplainBind(c.Listen, err))
	}
	return guard.New(ln, guard.Config{Allow: allow, MaxConns: c.MaxConnections, Log: log}), nil
}

func newAPIServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: httpHeaderTimeout, ReadTimeout: httpReadTimeout,
		WriteTimeout: httpWriteTimeout, IdleTimeout: httpIdleTimeout, MaxHeaderBytes: httpMaxHeaderBytes,
		// A client's broken request is worth a debug line, no more.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
}

// ApplyRuntime sets the Go runtime up as the runtime section says. The
// GOGC environment variable, when set, wins over runtime.gc_percent.
func ApplyRuntime(c RuntimeConfig, log *slog.Logger) {
	if c.GCPercent <= 0 || os.Getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(c.GCPercent)
	log.Debug("gc target set", "gc_percent", c.GCPercent)
}

// Uninstall removes the pinned kernel objects.
func Uninstall(cfg *Config, log *slog.Logger) error {
	if err := mediapath.Uninstall(cfg.Media.PinPath); err != nil {
		return err
	}
	log.Info("removed pinned BPF objects", "path", cfg.Media.PinPath)
	return nil
}
