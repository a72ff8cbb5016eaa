package sipd

import (
	"time"

	"sipxdp/relay"
)

// rtpengine's own series, exported in relay-only mode so that Grafana
// dashboards built for rtpengine keep working when sipd -relay-only takes
// its place behind Kamailio or OpenSIPS. Names, types and labels are
// rtpengine's: its /metrics (websocket_http_metrics in
// https://github.com/sipwise/rtpengine/blob/master/daemon/websocket.c)
// prefixes "rtpengine_" to the names statistics_gather_metrics gives with
// PROM and PROMLAB (statistics.c, beside it). Only the series
// sipxdp knows the value of are exported; README's Metrics section lists
// the others and why they are left out.
var (
	dRTPESessions     = desc("rtpengine_sessions", "Current sessions, by type: own (this node's calls), foreign (calls a standby follows for the active node, ng.redis).", "type")
	dRTPEMediaStreams = desc("rtpengine_mediastreams", "RTP streams with a packet in the last 2 s, by the path that forwarded them then: kernel, userspace, or mixed (both).", "type")
	dRTPEUptime       = desc("rtpengine_uptime_seconds", "Uptime of rtpengine (here: of sipd).")
	dRTPEPackets      = desc("rtpengine_packets_total", "Total relayed packets, by type (kernel, userspace).", "type")
	dRTPEBytes        = desc("rtpengine_bytes_total", "Total relayed bytes (UDP payload), by type (kernel, userspace).", "type")
	dRTPEErrors       = desc("rtpengine_packet_errors_total", "Total relayed packet errors, by type: userspace (send errors, SRTP that fails authentication, oversized datagrams), kernel (redirects that failed).", "type")
	dRTPEPorts        = desc("rtpengine_ports", "Ports of an interface's address.", "name", "address")
	dRTPEPortsUsed    = desc("rtpengine_ports_used", "Ports of an interface's address in use.", "name", "address")
	dRTPEPortsFree    = desc("rtpengine_ports_free", "Ports of an interface's address free.", "name", "address")
)

// userspaceErrors are the userspace relay's counters that rtpengine would
// count in errors_user: a packet of a known stream that could not be
// relayed (media_socket.c: a send that failed, a handler error
// such as SRTP that does not authenticate; an unknown payload type,
// which sipxdp does not look at). Packets from a source the
// stream did not take are dropped, not errors, in both.
var userspaceErrors = []string{"send_error", "srtp", "oversize"}

// rtpengine emits the rtpengine-named series from the relay's totals t
// and, with replication, the calls this node follows for another.
func (e emit) rtpengine(t relay.Totals, started time.Time, followed int) {
	own := max(t.Sessions-followed, 0)
	e.gauge(dRTPESessions, float64(own))("own")
	e.gauge(dRTPESessions, float64(followed))("foreign")
	e.gauge(dRTPEMediaStreams, float64(t.ActiveRTP.Kernel))("kernel")
	e.gauge(dRTPEMediaStreams, float64(t.ActiveRTP.Userspace))("userspace")
	e.gauge(dRTPEMediaStreams, float64(t.ActiveRTP.Mixed))("mixed")
	if !started.IsZero() {
		e.gauge(dRTPEUptime, time.Since(started).Seconds())()
	}
	e.counter(dRTPEPackets, t.UserspacePackets)("userspace")
	e.counter(dRTPEPackets, t.KernelPackets)("kernel")
	e.counter(dRTPEBytes, t.UserspaceBytes)("userspace")
	e.counter(dRTPEBytes, t.KernelBytes)("kernel")
	var userErrs uint64
	for _, k := range userspaceErrors {
		userErrs += t.UserspaceCounters[k]
	}
	e.counter(dRTPEErrors, userErrs)("userspace")
	// Unreadable kernel counters are unknown, not zero; without a kernel
	// path there are none, and zero is the truth.
	if t.KernelCountersError == "" {
		e.counter(dRTPEErrors, t.KernelCounters["aborted"])("kernel")
	}
	for _, p := range t.Pools {
		// rtpengine counts ports; a relay pair is two (RTP and RTCP).
		name := p.Name
		if name == "" {
			name = "default" // rtpengine's name for an unnamed interface
		}
		addr := p.Local.String()
		e.gauge(dRTPEPorts, float64(2*p.TotalPairs))(name, addr)
		e.gauge(dRTPEPortsUsed, float64(2*(p.TotalPairs-p.FreePairs)))(name, addr)
		e.gauge(dRTPEPortsFree, float64(2*p.FreePairs))(name, addr)
	}
}
