package sipserver

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"sipxdp/sipd/connguard"
	"sipxdp/sipd/sipconf"
)

// newGuard builds the connection guard of the TCP, TLS, WS and WSS listeners,
// deriving the caps the config leaves at 0 from RLIMIT_NOFILE, and logs
// what it chose and from what.
func newGuard(c sipconf.Connections, relayPorts int, exempt func(netip.Addr) bool, log *slog.Logger) (*connguard.Guard, error) {
	nofile, err := connguard.NoFile()
	if err != nil {
		return nil, err
	}
	b := connguard.Derive(nofile, relayPorts)
	total, per := c.Max, c.PerSource
	if total == 0 {
		total = b.Max
	}
	if per == 0 {
		per = connguard.PerSourceFor(total)
	}
	log.Info("sip connection limits", "max", total, "max_derived", c.Max == 0, "per_source", per, "per_source_derived", c.PerSource == 0,
		"rlimit_nofile", nofile, "reserve_fixed", b.Fixed, "reserve_outbound", b.Outbound, "reserve_relay", b.Relay,
		"message_timeout", c.MessageTimeout.D(), "idle_timeout", c.IdleTimeout.D(), "tls_handshake_timeout", c.TLSHandshakeTimeout.D())
	if c.Max > b.Room() {
		log.Warn("sip.connections.max is above what RLIMIT_NOFILE leaves after its reserves: at the limit, accept fails (EMFILE) and retries until descriptors free up",
			"max", c.Max, "room", b.Room(), "rlimit_nofile", nofile)
	}
	g, err := connguard.New(connguard.Config{Max: total, PerSource: per, Exempt: exempt,
		MessageTimeout: c.MessageTimeout.D(), IdleTimeout: c.IdleTimeout.D(), HandshakeTimeout: c.TLSHandshakeTimeout.D(),
		Log: log})
	if err != nil {
		return nil, fmt.Errorf("sip.connections: %w", err)
	}
	return g, nil
}

// KeepFlow keeps a phone's TCP, TLS or WebSocket connection open while a
// registration made over it lasts (proxy.FlowKeeper).
func (s *Server) KeepFlow(transport string, src netip.AddrPort, until time.Time) {
	if transport == "UDP" {
		return
	}
	s.guard.Keep(src, until)
}
