package sipd

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sipxdp/ng"

	"sipxdp/relay"
	"sipxdp/sipd/ngbackend"
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

	// Ended calls (sipd/callstats), counted since sipd started.
	dRTPESessionsTotal = desc("rtpengine_sessions_total", "Total managed sessions: own calls that ended.")
	dRTPEClosed        = desc("rtpengine_closed_sessions_total", "Total closed sessions, by reason: rejected (offers refused for lack of capacity), timeout, silent_timeout, final_timeout, offer_timeout, terminated (NG delete), force_terminated.", "reason")
	dRTPEZeroWay       = desc("rtpengine_zero_packet_streams_total", "Total ended calls whose first stream relayed no packet either way.")
	dRTPEOneWay        = desc("rtpengine_one_way_sessions_total", "Total ended calls whose first stream relayed packets one way only.")
	dRTPEDurationAvg   = desc("rtpengine_call_duration_avg", "Average duration of the ended calls, in seconds.")
	dRTPEDuration      = desc("rtpengine_call_duration_total", "Total duration of the ended calls, in seconds.")
	dRTPEDuration2     = desc("rtpengine_call_duration2_total", "Total of the ended calls' squared durations, in seconds squared.")

	// NG requests by the proxy that sent them (at most ng.MaxProxies
	// addresses, the rest under proxy="other").
	dRTPERequests       = desc("rtpengine_requests_total", "Total NG requests, by proxy and command.", "proxy", "request")
	dRTPERequestSeconds = desc("rtpengine_request_seconds_total", "Total time spent answering NG requests, in seconds, by proxy and command.", "proxy", "request")
	dRTPEProxyErrors    = desc("rtpengine_errors_total", "Total NG error replies, by proxy.", "proxy")
)

// rtpengineRequests are the NG commands sipxdp implements, by the name
// rtpengine labels its request series with (ng_command_strings in its
// control_ng.c); rtpengine's other commands are counted by sipxdp as
// unknown, and have no series here.
var rtpengineRequests = []string{"ping", "offer", "answer", "delete", "query", "list", "statistics"}

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
	userErrs, kernErrs, kernKnown := ngbackend.RelayErrors(t)
	e.counter(dRTPEErrors, userErrs)("userspace")
	// Unreadable kernel counters are unknown, not zero; without a kernel
	// path there are none, and zero is the truth.
	if kernKnown {
		e.counter(dRTPEErrors, kernErrs)("kernel")
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

// rtpengineControl emits rtpengine's series of ended sessions (ended,
// nil without a counter) and of NG requests by proxy, from the NG server
// n.
func (e emit) rtpengineControl(n NGStats, ended func() ng.EndedStats) {
	var es ng.EndedStats
	if ended != nil {
		es = ended()
	}
	e.counter(dRTPESessionsTotal, es.Managed)()
	e.counters(dRTPEClosed, map[string]uint64{
		"rejected": n.Rejected(), "timeout": es.Timeout, "silent_timeout": es.SilentTimeout,
		"final_timeout": es.FinalTimeout, "offer_timeout": es.OfferTimeout,
		"terminated": es.Regular, "force_terminated": es.Forced,
	})
	e.counter(dRTPEZeroWay, es.ZeroWay)()
	e.counter(dRTPEOneWay, es.OneWay)()
	e.gauge(dRTPEDurationAvg, es.AvgDuration().Seconds())()
	e.send(dRTPEDuration, prometheus.CounterValue, es.Duration.Seconds(), nil)
	e.send(dRTPEDuration2, prometheus.CounterValue, es.DurationSquaredSeconds, nil)
	for _, p := range n.ProxyStats() {
		for _, r := range rtpengineRequests {
			c := p.Commands[r]
			e.counter(dRTPERequests, c.Count)(p.Proxy, r)
			e.send(dRTPERequestSeconds, prometheus.CounterValue, c.Time.Seconds(), []string{p.Proxy, r})
		}
		e.counter(dRTPEProxyErrors, p.Errors)(p.Proxy)
	}
}
