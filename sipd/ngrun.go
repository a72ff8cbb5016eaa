package sipd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sipxdp/internal/guard"
	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/callstats"
	"sipxdp/sipd/media"
	"sipxdp/sipd/ngbackend"
	"sipxdp/sipd/relayrepl"
)

// ngListeners are the NG control protocol's sockets and server.
type ngListeners struct {
	srv *ng.Server
	udp net.PacketConn
	tcp net.Listener // nil unless ng.tcp
}

// listenNG opens the NG sockets (UDP, and TCP at the same address when
// asked) and the server that drives ctrl, through repl when calls are
// replicated (else nil); ended counts the calls ended (nil: none);
// observe is told each command's time
// (ng.Options.Observe).
func listenNG(c NGConfig, ctrl *media.Controller, eng *relay.Engine, repl *relayrepl.Replicator, ended *callstats.Counter, observe func(string, bool, time.Duration), log *slog.Logger) (*ngListeners, error) {
	allow, err := guard.ParsePrefixes(c.Allow) // Validate has checked it
	if err != nil {
		return nil, fmt.Errorf("ng.allow: %w", err)
	}
	if len(allow) == 0 {
		allow = nil // every source: Validate allowed it on loopback only
	}
	nb := ngbackend.New(ctrl, eng, log).Strict(c.Strict)
	var be ng.Backend = nb
	if repl != nil {
		be = repl.Backend(be)
		nb.OnScheduledDelete(repl.Changed)
	}
	var so ngbackend.StatsOptions
	if ended != nil {
		so.Ended = ended.Ended
	}
	if repl != nil {
		so.Foreign = func() int { return repl.Status().Followed }
	}
	l := &ngListeners{srv: ng.NewServer(be, ng.Options{
		Log: log, Allow: allow, MaxConns: c.MaxConnections, IdleTimeout: time.Duration(c.IdleTimeout),
		Observe: observe, Statistics: ngbackend.Statistics(eng, so),
	})}
	lc := net.ListenConfig{}
	if c.Redis != "" {
		// A relay pair's proxies send NG to the floating address: both
		// nodes listen on it, and the standby's socket receives once the
		// address moves to it.
		lc.Control = freebind
	}
	if l.udp, err = lc.ListenPacket(context.Background(), "udp", c.Listen); err != nil {
		return nil, fmt.Errorf("listen ng udp %s: %w", c.Listen, guard.ExplainBind(c.Listen, err))
	}
	if c.TCP {
		if l.tcp, err = lc.Listen(context.Background(), "tcp", c.Listen); err != nil {
			l.udp.Close()
			return nil, fmt.Errorf("listen ng tcp %s: %w", c.Listen, guard.ExplainBind(c.Listen, err))
		}
	}
	return l, nil
}

// freebind lets a socket bind an address the host does not hold (yet).
func freebind(network, _ string, rc syscall.RawConn) error {
	lvl, opt := unix.IPPROTO_IP, unix.IP_FREEBIND
	if strings.HasSuffix(network, "6") {
		lvl, opt = unix.IPPROTO_IPV6, unix.IPV6_FREEBIND
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), lvl, opt, 1) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set freebind: %w", serr)
	}
	return nil
}

func (l *ngListeners) start(ctx context.Context, start func(string, func() error)) {
	start("ng udp", func() error {
		defer l.udp.Close() // ServeUDP leaves it open
		return l.srv.ServeUDP(ctx, l.udp)
	})
	if l.tcp != nil {
		start("ng tcp", func() error { return l.srv.ServeTCP(ctx, l.tcp) })
	}
}

func (l *ngListeners) addr() string {
	a := "udp:" + l.udp.LocalAddr().String()
	if l.tcp != nil {
		a += " tcp:" + l.tcp.Addr().String()
	}
	return a
}

// close closes the sockets of listeners that were never served.
func (l *ngListeners) close() {
	l.udp.Close()
	if l.tcp != nil {
		l.tcp.Close()
	}
}

// openReplication starts replicating the relay's calls through ng.redis
// (see package relayrepl): the node is active while it holds one of the
// relay addresses, else a standby that follows the active's calls.
func openReplication(cfg *Config, ctrl *media.Controller, eng *relay.Engine, log *slog.Logger) (*relayrepl.Replicator, error) {
	var addrs []netip.Addr
	for _, a := range cfg.Media.Addresses {
		addrs = append(addrs, netip.MustParseAddr(a.Local)) // validated by Config.Validate
	}
	r, err := relayrepl.New(relayrepl.Options{URL: cfg.NG.Redis, Group: cfg.NG.RedisGroup, Node: cfg.NG.RedisNode,
		Addresses: addrs, Ctrl: ctrl, Engine: eng, Log: log})
	if err != nil {
		return nil, fmt.Errorf("ng.redis: %w", err)
	}
	return r, nil
}
