package sipd

import (
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"sipxdp/internal/guard"
	"sipxdp/relay"
	"sipxdp/sipd/connguard"
	"sipxdp/sipd/relayrepl"
	"sipxdp/sipd/sipserver"
)

// metrics is what /metrics serves: a registry of the API's own (not the
// process-global default one, so tests and two APIs in one process do not
// share series), holding the process and Go collectors, the histograms
// the SIP and NG hooks feed, and a collector that reads every other
// number at scrape time from where it is kept (the relay engine, the
// SIP server's Stats, the NG server, the API's listener). The hot paths
// keep their own atomic counters; nothing is counted twice.
type metrics struct {
	reg     *prometheus.Registry
	handler http.Handler

	callSetup *prometheus.HistogramVec // {outcome}
	sipTx     *prometheus.HistogramVec // {method}
	ngCommand *prometheus.HistogramVec // {command}
}

// registry returns the API's metrics, built on first use: by the hooks
// Run hands the SIP and NG servers, or by the first scrape.
func (a *API) registry() *metrics {
	a.metricsOnce.Do(func() { a.m = newMetrics(a) })
	return a.m
}

// Registry is the registry /metrics serves, for tests and linting.
func (a *API) Registry() *prometheus.Registry { return a.registry().reg }

func newMetrics(a *API) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		callSetup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sipxdp_sip_call_setup_seconds",
			Help: "Time from an initial INVITE forwarded to its final response relayed (ringing included), by outcome: answered (2xx) or failed.",
			// Up to Timer C (sip.timers.invite, 3 minutes by default).
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180},
		}, []string{"outcome"}),
		sipTx: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sipxdp_sip_transaction_duration_seconds",
			Help:    "Time from a request to its first final response sent (locally or relayed), by method (other: a method sipd does not name).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 180},
		}, []string{"method"}),
		ngCommand: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sipxdp_ng_command_duration_seconds",
			Help:    "Time to execute an NG command (replies the cache sends again excluded), by command.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"command"}),
	}
	m.reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		m.callSetup, m.sipTx, m.ngCommand,
		statsCollector{a},
	)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A collector that fails (it cannot: they report what they read)
		// must not hide the rest of the page.
		ErrorHandling: promhttp.ContinueOnError,
	})
	return m
}

func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	a.registry().handler.ServeHTTP(w, r)
}

// SIPObservers are the hooks sipserver.New takes, feeding the call setup
// and transaction histograms.
func (a *API) SIPObservers() sipserver.Observers {
	m := a.registry()
	return sipserver.Observers{
		CallSetup: func(status int, d time.Duration) {
			outcome := "failed"
			if status >= 200 && status < 300 {
				outcome = "answered"
			}
			m.callSetup.WithLabelValues(outcome).Observe(d.Seconds())
		},
		Transaction: func(method string, d time.Duration) {
			m.sipTx.WithLabelValues(methodLabel(method)).Observe(d.Seconds())
		},
	}
}

// ObserveNG is the hook ng.Options.Observe takes, feeding the NG
// latency histogram.
func (a *API) ObserveNG(command string, _ bool, d time.Duration) {
	a.registry().ngCommand.WithLabelValues(command).Observe(d.Seconds())
}

// sipMethods are the methods labelled by name: any other is "other", so
// a peer inventing methods cannot grow the label set.
var sipMethods = map[string]bool{
	"INVITE": true, "ACK": true, "BYE": true, "CANCEL": true, "REGISTER": true, "OPTIONS": true,
	"SUBSCRIBE": true, "NOTIFY": true, "PUBLISH": true, "INFO": true, "REFER": true, "MESSAGE": true,
	"UPDATE": true, "PRACK": true,
}

func methodLabel(m string) string {
	if sipMethods[m] {
		return m
	}
	return "other"
}

// buildInfo is the version, Go version and VCS revision for
// sipxdp_build_info.
func buildInfo(version string) (string, string, string) {
	rev := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				rev = s.Value
			}
		}
	}
	return version, runtime.Version(), rev
}

// The families the stats collector exports. One meaning per family: a
// label splits a count into parts whose sum() means something, and no
// part is the sum of others (the drop total the userspace relay keeps is
// left out; sum() gives it).
var (
	dBuildInfo = desc("sipxdp_build_info", "1, labelled with the version of sipd, the Go version it was built with and its VCS revision.", "version", "goversion", "revision")
	dPathInfo  = desc("sipxdp_media_path_info", "1, labelled with the media path in use (kernel, userspace or none) and why it was chosen.", "path", "reason")

	dSIPRegistrations = desc("sipxdp_sip_registrations", "Registered contacts.")
	dSIPAoRs          = desc("sipxdp_sip_aors", "Addresses of record with a contact.")
	dSIPActiveCalls   = desc("sipxdp_sip_active_calls", "Confirmed calls.")
	dSIPCallsInSetup  = desc("sipxdp_sip_calls_in_setup", "Calls not answered yet.")
	dSIPCallsEnded    = desc("sipxdp_sip_calls_ended_total", "Calls that ended, by outcome: completed (after an answer) or failed (without one).", "outcome")
	dSIPTransactions  = desc("sipxdp_sip_transactions", "Requests in progress.")
	dSIPBannedSources = desc("sipxdp_sip_banned_sources", "Sources banned for flooding now.")
	dSIPMalformed     = desc("sipxdp_sip_malformed_total", "Unparsable messages dropped.")
	dSIPRegRefused    = desc("sipxdp_sip_register_refused_total", "REGISTERs refused, by reason (store_unavailable: the binding could not be made durable, or the shared location store could not be reached; answered 500 with Retry-After).", "reason")
	dLocationErrors   = desc("sipxdp_location_store_errors_total", "Operations on the shared location store (sip.registrar.store: redis://...) that failed for want of Redis; exported only with that store.")
	dReplErrors       = desc("sipxdp_relay_replication_errors_total", "Redis operations of a relay-only node's call replication (ng.redis) that failed; exported only with ng.redis.")
	dReplDown         = desc("sipxdp_relay_replication_down", "1 while the Redis of the call replication (ng.redis) cannot be reached: calls are served but not replicated; exported only with ng.redis.")
	dReplActive       = desc("sipxdp_relay_replication_active", "1 while this relay-only node holds the relay address and writes its calls, 0 while it is a standby following them; exported only with ng.redis.")
	dReplFollowed     = desc("sipxdp_relay_replication_followed_calls", "Calls a standby holds, ports reserved and flows installed, for the active node; exported only with ng.redis.")
	dReplWrites       = desc("sipxdp_relay_replication_writes_total", "Call records written or deleted in Redis; exported only with ng.redis.")
	dLocationDown     = desc("sipxdp_location_store_down", "1 while the shared location store (Redis) cannot be reached; exported only with that store.")
	dDialogErrors     = desc("sipxdp_dialog_store_errors_total", "Operations on the shared dialog store (sip.dialog.store: redis://...) that failed for want of Redis (calls answered then are known to their node only); exported only with that store.")
	dDialogDown       = desc("sipxdp_dialog_store_down", "1 while the shared dialog store (Redis) cannot be reached; exported only with that store.")
	dDialogAdopted    = desc("sipxdp_dialogs_adopted_total", "Calls another node set up, taken over from the shared dialog store for an in-dialog request; exported only with that store.")
	dCDRStream        = desc("sipxdp_cdr_stream_total", "CDRs copied to the Redis stream (sip.dialog.cdr_stream), by outcome: written, or dropped (queue full, or Redis still down at stop); exported only with the stream.", "outcome")
	dCDRStreamErrors  = desc("sipxdp_cdr_stream_errors_total", "Writes to the CDR stream that failed for want of Redis (their CDRs wait and are tried again); exported only with the stream.")
	dRelaySticky      = desc("sipxdp_relay_sticky_errors_total", "Reads and writes of the shared Call-ID to relay map (media.relays with state in Redis) that failed for want of Redis; exported only with that map.")
	dSIPCDRs          = desc("sipxdp_sip_cdrs_total", "CDRs written (durable).")
	dSIPCDRErrors     = desc("sipxdp_sip_cdr_errors_total", "CDRs that could not be written when their call ended (kept, and written when the disk recovers unless the backlog was full).")
	dSIPRefused       = desc("sipxdp_sip_refused_total", "Requests refused or absorbed, by reason: route_token_missing and route_token_invalid (in-dialog request without a valid route token, 403), dialog_mismatch (481), foreign_route (unauthenticated request routed elsewhere, 403), digest_uri_mismatch (400), stray_ack (dropped), location_unavailable (500, the shared location store unreachable).", "reason")

	dSIPConns        = desc("sipxdp_sip_connections", "TCP, TLS, WS and WSS connections open.")
	dSIPConnsMax     = desc("sipxdp_sip_connections_max", "The cap on TCP, TLS, WS and WSS connections open at once (sip.connections.max, or derived from RLIMIT_NOFILE).")
	dSIPConnsPerSrc  = desc("sipxdp_sip_connections_per_source_max", "The cap on TCP, TLS, WS and WSS connections from one source.")
	dSIPConnsRefused = desc("sipxdp_sip_connections_refused_total", "TCP, TLS, WS and WSS connections refused at accept: total_cap, per_source_cap.", "reason")
	dSIPConnsClosed  = desc("sipxdp_sip_connections_closed_total", "TCP, TLS, WS and WSS connections sipd closed: for a timeout (message_timeout, idle_timeout, handshake_timeout) or a failed TLS handshake (handshake_failed).", "reason")
	dSIPAcceptErrors = desc("sipxdp_sip_accept_errors_total", "Accept errors on the SIP TCP, TLS, WS and WSS listeners, retried after a backoff.")

	dSIPBans           = desc("sipxdp_sip_bans_total", "Sources banned for flooding.")
	dSIPBannedRequests = desc("sipxdp_sip_banned_requests_total", "Messages from banned sources, by outcome: dropped unread by the flood filter; dropped_unproven by the core, the proof they carried not holding; "+
		"served for credentials that verified or for a live dialog; challenged; passed_response, an answer to a request of ours.", "outcome")
	dSIPSetupRefused  = desc("sipxdp_sip_setup_refused_total", "Relayed calls from unauthenticated callers refused with 503 in setup: over sip.protect.setup_per_source, or over sip.protect.setup_unauthenticated_share of the relay's ports.", "reason")
	dSIPSetupCalls    = desc("sipxdp_sip_setup_unauthenticated_calls", "Relayed calls in setup from unauthenticated callers.")
	dSIPSetupPairs    = desc("sipxdp_sip_setup_unauthenticated_pairs", "Relay port pairs held by relayed calls in setup from unauthenticated callers.")
	dSIPSetupPairsMax = desc("sipxdp_sip_setup_unauthenticated_pairs_max", "The most relay port pairs those calls may hold (0: no bound).")

	dJournalDegraded = desc("sipxdp_journal_degraded", "1 while the journal cannot write (commits refused, retried every second).", "journal")
	dJournalErrors   = desc("sipxdp_journal_errors_total", "Failed attempts to write or sync the journal (each retry counts).", "journal")
	dJournalRecords  = desc("sipxdp_journal_records_total", "Records made durable.", "journal")
	dJournalSyncs    = desc("sipxdp_journal_syncs_total", "fdatasyncs: records_total over syncs_total is the group commit's batch size.", "journal")
	dJournalDropped  = desc("sipxdp_journal_dropped_total", "Records dropped while degraded because the backlog was full.", "journal")
	dJournalPending  = desc("sipxdp_journal_pending_bytes", "Bytes queued and not yet durable.", "journal")
	dJournalSize     = desc("sipxdp_journal_size_bytes", "Durable bytes in the journal's current file.", "journal")

	dMediaSessions = desc("sipxdp_media_sessions", "Relayed calls.")
	dMediaFlows    = desc("sipxdp_media_flows", "Installed flow directions, by the path that forwards them (a flow still learning its source is on userspace).", "path")
	dMediaPairs    = desc("sipxdp_media_port_pairs", "Relay RTP/RTCP port pairs in use, by address pool.", "pool")
	dMediaPairsMax = desc("sipxdp_media_port_pairs_max", "Relay RTP/RTCP port pairs an address pool has.", "pool")
	dMediaDraining = desc("sipxdp_media_draining", "1 while the relay refuses new calls.")
	dMediaPackets  = desc("sipxdp_media_packets_total", "Packets relayed, by path.", "path")
	dMediaBytes    = desc("sipxdp_media_bytes_total", "UDP payload bytes relayed, by path.", "path")
	dMediaForeign  = desc("sipxdp_media_foreign_dropped_total", "Packets from a source a relay flow did not take, dropped: while it learns, once it is locked, or refused by strict_source.", "reason")
	dMediaDTLS     = desc("sipxdp_media_dtls_handshakes_total", "DTLS-SRTP handshakes on WebRTC legs, by result: ok (keyed), failed (handshake error, fingerprint mismatch, or not keyed within media.dtls_timeout: the call is ended).", "result")
	dMediaLatch    = desc("sipxdp_media_latch_total", "Relay flows taking a source: latched (forwarded, first or better), relatched (replacing one in the learning window), locked, candidate (held until the window ends).", "event")

	dKernelPackets = desc("sipxdp_kernel_packets_total", "Packets the kernel program saw, by verdict: tx and redirect (relayed out), local (relayed to this host), pass (left to the stack, see sipxdp_kernel_passed_packets_total), aborted (a redirect that failed), dropped (a call's media dropped by drop-traffic).", "verdict")
	dKernelPassed  = desc("sipxdp_kernel_passed_packets_total", "Packets the kernel program left to the stack (verdict pass), by reason: not relay media (not_ip, not_udp, port_range, no_flow), not handled in the kernel (truncated, fragment, ip_options, ipv6_ext, fib, no_egress), or for the userspace relay to judge (learning, wrong_source).", "reason")

	dUserReceived  = desc("sipxdp_userspace_received_packets_total", "Datagrams the userspace relay received.")
	dUserForwarded = desc("sipxdp_userspace_forwarded_packets_total", "Datagrams the userspace relay forwarded.")
	dUserDropped   = desc("sipxdp_userspace_dropped_packets_total", "Datagrams the userspace relay dropped, by reason.", "reason")
	dUserWakeups   = desc("sipxdp_userspace_wakeups_total", "Userspace relay worker wakeups (epoll): received_packets_total over wakeups_total is the batch per wakeup.")
	dUserSyscalls  = desc("sipxdp_userspace_syscalls_total", "recvmmsg and sendmmsg calls of the userspace relay.", "syscall")
	dUserSockets   = desc("sipxdp_userspace_sockets", "Relay sockets open.")
	dUserControl   = desc("sipxdp_userspace_control_packets_total", "Datagrams a WebRTC leg's relay port consumed instead of forwarding, by kind: stun (ICE connectivity checks, answered or not), dtls (handed to the leg's DTLS handshake).", "kind")

	dHTTPRefused      = desc("sipxdp_http_refused_total", "API requests and connections refused, by reason.", "reason")
	dHTTPAcceptErrors = desc("sipxdp_http_accept_errors_total", "API accept errors, retried after a backoff.")
	dHTTPConns        = desc("sipxdp_http_connections", "API connections open.")

	dNGCommands     = desc("sipxdp_ng_commands_total", "NG commands executed (replies the cache sends again excluded), by command (unknown: any other, or a malformed body) and result (ok, error).", "command", "result")
	dNGMalformed    = desc("sipxdp_ng_malformed_total", "NG bodies that were not a bencoded dictionary (answered with an error, counted as command unknown).")
	dNGDropped      = desc("sipxdp_ng_dropped_total", "NG messages without a cookie or too long, dropped without a reply.")
	dNGCacheHits    = desc("sipxdp_ng_reply_cache_hits_total", "NG retransmissions answered from the reply cache.")
	dNGCacheEntries = desc("sipxdp_ng_reply_cache_entries", "Replies in the NG reply cache.")
	dNGRefused      = desc("sipxdp_ng_refused_total", "NG messages and TCP connections refused, by reason.", "reason")
	dNGAcceptErrors = desc("sipxdp_ng_accept_errors_total", "NG TCP accept errors, retried after a backoff.")
	dNGTCPConns     = desc("sipxdp_ng_tcp_connections", "NG TCP connections open.")
	dNGTCPClosed    = desc("sipxdp_ng_tcp_closed_total", "NG TCP connections closed by sipd, by reason: idle_timeout (silent between messages), message_timeout (a message not completed in time).", "reason")
)

// statsDescs are every family the stats collector may export (desc adds
// each), for Describe.
var statsDescs []*prometheus.Desc

func desc(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc(name, help, labels, nil)
	statsDescs = append(statsDescs, d)
	return d
}

// kernelVerdicts are the kernel counters that are verdicts; every other
// kernel counter is a reason for the pass verdict (bpf/maps.h, enum
// counter).
var kernelVerdicts = map[string]bool{"tx": true, "redirect": true, "local": true, "pass": true, "aborted": true, "dropped": true}

// userspaceCounter says where each of the userspace relay's counters
// (usrelay) goes: its family and label value. Those absent are left out:
// "dropped" is the sum of the drop reasons, "sockets" is exported from
// relay.Totals, and the latching events are in sipxdp_media_latch_total.
var userspaceCounter = map[string]struct {
	d     *prometheus.Desc
	label string
}{
	"received":         {dUserReceived, ""},
	"forwarded":        {dUserForwarded, ""},
	"no_flow":          {dUserDropped, "no_flow"},
	"wrong_source":     {dUserDropped, "wrong_source"},
	"foreign_learning": {dUserDropped, "foreign_learning"},
	"strict":           {dUserDropped, "strict"},
	"drop_traffic":     {dUserDropped, "drop_traffic"},
	"send_error":       {dUserDropped, "send_error"},
	"oversize":         {dUserDropped, "oversize"},
	"recv_error":       {dUserDropped, "recv_error"},
	"srtp":             {dUserDropped, "srtp"},
	"not_media":        {dUserDropped, "not_media"},
	"nat_wait":         {dUserDropped, "nat_wait"},
	"stun":             {dUserControl, "stun"},
	"dtls":             {dUserControl, "dtls"},
	"epoll_wakeups":    {dUserWakeups, ""},
	"recvmmsg_calls":   {dUserSyscalls, "recvmmsg"},
	"sendmmsg_calls":   {dUserSyscalls, "sendmmsg"},
}

// userspaceLeftOut are the userspace counters exported elsewhere or not
// at all (see userspaceCounter).
var userspaceLeftOut = map[string]bool{"dropped": true, "sockets": true, "latched": true, "relatched": true, "locked": true, "candidates": true}

// statsCollector reads the API's sources at scrape time.
type statsCollector struct{ a *API }

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range statsDescs {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	e := emit(ch)
	a := c.a
	t := a.totals()
	e.gauge(dBuildInfo, 1)(buildInfo(a.Version))
	e.gauge(dPathInfo, 1)(t.Path, t.PathReason)
	if a.SIP != nil {
		e.sip(a.SIP.Stats())
	}
	e.media(t)
	var conns guard.Stats
	if a.Conns != nil {
		conns = a.Conns.Stats()
	}
	e.counters(dHTTPRefused, map[string]uint64{
		"source": conns.RefusedSource, "connections": conns.RefusedConns, "token": a.refusedToken.Load(),
		"cross_origin": a.refusedCrossOrigin.Load(), "host": a.refusedHost.Load(),
	})
	e.counter(dHTTPAcceptErrors, conns.AcceptErrors)()
	e.gauge(dHTTPConns, float64(conns.Active))()
	var repl *relayrepl.Status
	if a.Replication != nil {
		st := a.Replication()
		repl = &st
	}
	if a.NG != nil {
		e.ng(a.NG)
	}
	if a.NG != nil && a.Engine != nil {
		// Relay-only: sipd stands in for rtpengine, whose series the
		// dashboards built for it read.
		followed := 0
		if repl != nil {
			followed = repl.Followed
		}
		e.rtpengine(t, a.Started, followed)
		e.rtpengineControl(a.NG, a.CallsEnded)
	}
	if a.RelaySticky != nil {
		e.counter(dRelaySticky, a.RelaySticky())()
	}
	if repl != nil {
		e.counter(dReplErrors, repl.Errors)()
		e.gauge(dReplDown, boolGauge(repl.Redis != "up"))()
		e.gauge(dReplActive, boolGauge(repl.Role == relayrepl.RoleActive))()
		e.gauge(dReplFollowed, float64(repl.Followed))()
		e.counter(dReplWrites, repl.Writes)()
	}
}

// emit sends const metrics. Label values are made valid UTF-8 first (a
// path reason is an error's text): an invalid one would fail the scrape.
type emit chan<- prometheus.Metric

func (e emit) send(d *prometheus.Desc, typ prometheus.ValueType, v float64, labels []string) {
	for i, l := range labels {
		labels[i] = strings.ToValidUTF8(l, "\uFFFD")
	}
	m, err := prometheus.NewConstMetric(d, typ, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	e <- m
}

// counter and gauge return a func taking the label values, so a call
// reads e.counter(d, v)("label").
func (e emit) counter(d *prometheus.Desc, v uint64) func(...string) {
	return func(labels ...string) { e.send(d, prometheus.CounterValue, float64(v), labels) }
}

func (e emit) gauge(d *prometheus.Desc, v float64) func(...string) {
	return func(labels ...string) { e.send(d, prometheus.GaugeValue, v, labels) }
}

// counters sends one counter per key of m, labelled with the key.
func (e emit) counters(d *prometheus.Desc, m map[string]uint64) {
	for k, v := range m {
		e.counter(d, v)(k)
	}
}

func boolGauge(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

func (e emit) sip(st sipserver.Stats) {
	e.gauge(dSIPRegistrations, float64(st.Registrations))()
	e.gauge(dSIPAoRs, float64(st.AoRs))()
	e.gauge(dSIPActiveCalls, float64(st.ActiveCalls))()
	e.gauge(dSIPCallsInSetup, float64(st.CallsInSetup))()
	e.counters(dSIPCallsEnded, map[string]uint64{"completed": st.CallsCompleted, "failed": st.CallsFailed})
	e.gauge(dSIPTransactions, float64(st.Transactions))()
	e.gauge(dSIPBannedSources, float64(st.BannedSources))()
	e.counter(dSIPMalformed, st.Malformed)()
	e.counter(dSIPRegRefused, st.RegisterUnavailable)("store_unavailable")
	if st.LocationShared {
		e.counter(dLocationErrors, st.LocationErrors)()
		e.gauge(dLocationDown, boolGauge(st.LocationDown))()
	}
	if st.DialogShared {
		e.counter(dDialogErrors, st.DialogErrors)()
		e.gauge(dDialogDown, boolGauge(st.DialogDown))()
		e.counter(dDialogAdopted, st.DialogsAdopted)()
	}
	if cs := st.CDRStream; cs != nil {
		e.counters(dCDRStream, map[string]uint64{"written": cs.Written, "dropped": cs.Dropped})
		e.counter(dCDRStreamErrors, cs.Errors)()
	}
	e.counter(dSIPCDRs, st.CDRs)()
	e.counter(dSIPCDRErrors, st.CDRErrors)()
	e.counters(dSIPRefused, st.Core.Refused)
	for _, j := range st.Journals {
		e.gauge(dJournalDegraded, boolGauge(j.Degraded))(j.Name)
		e.counter(dJournalErrors, j.Errors)(j.Name)
		e.counter(dJournalRecords, j.Records)(j.Name)
		e.counter(dJournalSyncs, j.Syncs)(j.Name)
		e.counter(dJournalDropped, j.Dropped)(j.Name)
		e.gauge(dJournalPending, float64(j.PendingBytes))(j.Name)
		e.gauge(dJournalSize, float64(j.Size))(j.Name)
	}
	c := st.Connections
	e.gauge(dSIPConns, float64(c.Open))()
	e.gauge(dSIPConnsMax, float64(c.Max))()
	e.gauge(dSIPConnsPerSrc, float64(c.PerSource))()
	for reason, n := range c.Refused {
		switch reason {
		case connguard.TotalCap.String(), connguard.PerSourceCap.String():
			e.counter(dSIPConnsRefused, n)(reason)
		case connguard.AcceptError.String():
			e.counter(dSIPAcceptErrors, n)()
		default:
			e.counter(dSIPConnsClosed, n)(reason)
		}
	}
	e.counter(dSIPBans, st.Bans)()
	e.counters(dSIPBannedRequests, map[string]uint64{
		"dropped":            st.DroppedFlood,
		"dropped_unproven":   st.Core.Banned.Dropped,
		"served_credentials": st.Core.Banned.ServedCredentials,
		"served_dialog":      st.Core.Banned.ServedDialog,
		"challenged":         st.Core.Banned.Challenged,
		"passed_response":    st.BannedPassed.Responses,
	})
	e.counters(dSIPSetupRefused, map[string]uint64{"per_source": st.Setup.RefusedPerSource, "unauthenticated_share": st.Setup.RefusedShare})
	e.gauge(dSIPSetupCalls, float64(st.Setup.Calls))()
	e.gauge(dSIPSetupPairs, float64(st.Setup.Pairs))()
	e.gauge(dSIPSetupPairsMax, float64(st.Setup.Budget))()
}

func (e emit) media(t relay.Totals) {
	e.gauge(dMediaSessions, float64(t.Sessions))()
	e.gauge(dMediaFlows, float64(t.KernelFlows))("kernel")
	e.gauge(dMediaFlows, float64(t.UserspaceFlows))("userspace")
	e.gauge(dMediaDraining, boolGauge(t.Draining))()
	// A name may hold an address per family: one series per name.
	var names []string
	used, total := map[string]int{}, map[string]int{}
	for _, p := range t.Pools {
		if _, ok := total[p.Name]; !ok {
			names = append(names, p.Name)
		}
		used[p.Name] += p.TotalPairs - p.FreePairs
		total[p.Name] += p.TotalPairs
	}
	for _, n := range names {
		e.gauge(dMediaPairs, float64(used[n]))(n)
		e.gauge(dMediaPairsMax, float64(total[n]))(n)
	}
	e.counter(dMediaPackets, t.KernelPackets)("kernel")
	e.counter(dMediaPackets, t.UserspacePackets)("userspace")
	e.counter(dMediaBytes, t.KernelBytes)("kernel")
	e.counter(dMediaBytes, t.UserspaceBytes)("userspace")
	for k, v := range t.KernelCounters {
		if kernelVerdicts[k] {
			e.counter(dKernelPackets, v)(k)
		} else {
			e.counter(dKernelPassed, v)(k)
		}
	}
	u := t.UserspaceCounters
	if u == nil {
		return // no relay
	}
	e.gauge(dUserSockets, float64(t.UserspaceSockets))()
	for k, v := range u {
		if to, ok := userspaceCounter[k]; ok {
			if to.label == "" {
				e.counter(to.d, v)()
			} else {
				e.counter(to.d, v)(to.label)
			}
		}
	}
	// Latching (relay.Latch), out of the userspace counters: the kernel
	// passes every packet it does not forward up to them, and counts
	// those of a locked flow as wrong_source itself.
	e.counters(dMediaForeign, map[string]uint64{"learning": u["foreign_learning"], "locked": u["wrong_source"], "strict": u["strict"]})
	e.counters(dMediaDTLS, map[string]uint64{"ok": t.DTLSHandshakes, "failed": t.CryptoLegFailures})
	e.counters(dMediaLatch, map[string]uint64{"latched": u["latched"], "relatched": u["relatched"],
		"locked": u["locked"] + t.WindowLocks, "candidate": u["candidates"]})
}

func (e emit) ng(n NGStats) {
	st := n.Stats()
	for _, c := range n.Commands() {
		e.counter(dNGCommands, c.OK)(c.Command, "ok")
		e.counter(dNGCommands, c.Failed)(c.Command, "error")
	}
	e.counter(dNGMalformed, st["malformed"])()
	e.counter(dNGDropped, st["dropped"])()
	e.counter(dNGCacheHits, st["cache_hits"])()
	e.gauge(dNGCacheEntries, float64(st["cache_entries"]))()
	e.counters(dNGRefused, map[string]uint64{"source": st["refused.source"], "connections": st["refused.connections"]})
	e.counter(dNGAcceptErrors, st["accept_errors"])()
	e.gauge(dNGTCPConns, float64(st["tcp.connections"]))()
	e.counters(dNGTCPClosed, map[string]uint64{"idle_timeout": st["tcp.idle_closed"], "message_timeout": st["tcp.message_timeouts"]})
}
