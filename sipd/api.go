package sipd

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"sipxdp/internal/guard"
	"sipxdp/relay"
	"sipxdp/sipd/journal"
	"sipxdp/sipd/sipserver"
	"sipxdp/sipd/wire"
)

// API serves sipd's HTTP control and monitoring endpoints.
//
// Every endpoint but /health and /metrics (the open ones, for monitoring)
// needs the bearer Token when one is set; without a token those endpoints
// answer only requests addressed to an IP literal or localhost, which a
// web page cannot make a browser send by DNS rebinding. Requests other
// than GET, HEAD and OPTIONS that a browser marks as cross-site (Origin,
// Sec-Fetch-Site) are refused whatever they carry. Sources and
// connection counts are checked before that, by the guard.Listener the
// API is served on (Conns).
type API struct {
	Engine  *relay.Engine     // nil with media.mode none
	SIP     *sipserver.Server // nil when only the relay runs
	NG      NGStats           // the NG server in relay-only mode, else nil
	Started time.Time
	Version string
	Pprof   bool // serve /debug/pprof/
	// Token is http.token: empty for none.
	Token string
	// Conns is the listener the API is served on, for its counters; nil
	// when it is served some other way (tests).
	Conns *guard.Listener

	refusedToken, refusedCrossOrigin, refusedHost atomic.Uint64
}

// openPaths need no token: monitoring reads them, and they reveal
// counts, not calls or users.
var openPaths = map[string]bool{"/health": true, "/metrics": true}

// The API's JSON shapes live in package wire so relayctl can read them
// without importing the daemon.
type (
	MediaHealth = wire.MediaHealth
	FlowJSON    = wire.FlowJSON
	StatsJSON   = wire.StatsJSON
)

// NGStats is what the API reads of the NG control protocol server
// (ng.Server): its counters by name.
type NGStats interface {
	Stats() map[string]uint64
}

// Health is the /health document.
type Health struct {
	// Status is "ok", or "degraded" when something listed in Problems
	// keeps sipd from doing all of its job (a store that cannot write).
	Status        string           `json:"status"`
	Problems      []string         `json:"problems,omitempty"`
	Version       string           `json:"version"`
	UptimeSeconds float64          `json:"uptime_seconds"`
	SIP           *sipserver.Stats `json:"sip,omitempty"`
	Media         MediaHealth      `json:"media"`
	// NG counters, in relay-only mode.
	NG map[string]uint64 `json:"ng,omitempty"`
}

// Handler routes the API, behind the cross-origin and token checks.
func (a *API) Handler() http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.refusedCrossOrigin.Add(1)
		http.Error(w, "cross-origin request refused: the API changes state only for same-origin or non-browser clients", http.StatusForbidden)
	}))
	return cop.Handler(a.authorize(a.routes()))
}

// authorize lets a request through to next when it may use the endpoint.
func (a *API) authorize(next http.Handler) http.Handler {
	var want [sha256.Size]byte
	if a.Token != "" {
		want = sha256.Sum256([]byte(a.Token))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case openPaths[r.URL.Path]:
		case a.Token != "":
			scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
			// Hashes of equal length compare in constant time whatever
			// the presented token's length.
			got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				a.refusedToken.Add(1)
				challenge := `Bearer realm="sipd"`
				if r.Header.Get("Authorization") != "" {
					challenge += `, error="invalid_token"`
				}
				w.Header().Set("WWW-Authenticate", challenge)
				http.Error(w, "unauthorized: send Authorization: Bearer <http.token>", http.StatusUnauthorized)
				return
			}
		case !literalHost(r.Host):
			a.refusedHost.Add(1)
			http.Error(w, fmt.Sprintf("Host %q is a name: without http.token the API answers only requests to an IP address or localhost (a defence against DNS rebinding); use the address, or set http.token", r.Host), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// literalHost reports whether a Host header names the server by an IP
// address or as localhost: names an attacker's DNS could point here are
// refused.
func literalHost(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Zone() == ""
}

func (a *API) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", a.health)
	mux.HandleFunc("GET /metrics", a.metrics)
	mux.HandleFunc("GET /flows", a.flows)
	mux.HandleFunc("GET /stats", a.stats)
	mux.HandleFunc("POST /drain", a.drain)
	mux.HandleFunc("GET /registrations", a.registrations)
	mux.HandleFunc("GET /calls", a.calls)
	if a.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func (a *API) mediaHealth(t relay.Totals) MediaHealth {
	return MediaHealth{
		Path: t.Path, Reason: t.PathReason, Draining: t.Draining,
		Sessions: t.Sessions, Flows: t.Flows,
		KernelFlows: t.KernelFlows, UserspaceFlows: t.UserspaceFlows,
		Packets:       t.KernelPackets + t.UserspacePackets,
		Bytes:         t.KernelBytes + t.UserspaceBytes,
		KernelPackets: t.KernelPackets, UserspacePackets: t.UserspacePackets,
		UserspaceSockets: t.UserspaceSockets,
	}
}

// totals are the engine's, or a "none" path when no relay runs.
func (a *API) totals() relay.Totals {
	if a.Engine == nil {
		return relay.Totals{Path: "none", PathReason: "media.mode is none: signaling only"}
	}
	return a.Engine.Stats()
}

// probe makes the reads /health makes, for their side effect of taking
// the relay engine's and the SIP server's locks: it returns only while
// they are not stuck. The service watchdog pings after it.
func (a *API) probe() {
	a.totals()
	if a.SIP != nil {
		a.SIP.Stats()
	}
	if a.NG != nil {
		a.NG.Stats()
	}
}

func (a *API) health(w http.ResponseWriter, r *http.Request) {
	h := Health{
		Status: "ok", Version: a.Version,
		UptimeSeconds: time.Since(a.Started).Seconds(),
		Media:         a.mediaHealth(a.totals()),
	}
	if a.SIP != nil {
		st := a.SIP.Stats()
		h.SIP = &st
		h.Problems = append(h.Problems, st.Problems()...)
	}
	if a.NG != nil {
		h.NG = a.NG.Stats()
	}
	if len(h.Problems) > 0 {
		h.Status = "degraded"
	}
	writeJSON(w, h)
}

func (a *API) registrations(w http.ResponseWriter, r *http.Request) {
	if a.SIP == nil {
		writeJSON(w, []any{})
		return
	}
	writeJSON(w, a.SIP.Registrations())
}

func (a *API) calls(w http.ResponseWriter, r *http.Request) {
	if a.SIP == nil {
		writeJSON(w, []any{})
		return
	}
	writeJSON(w, a.SIP.Calls())
}

func (a *API) stats(w http.ResponseWriter, r *http.Request) {
	t := a.totals()
	writeJSON(w, StatsJSON{
		MediaHealth: a.mediaHealth(t),
		KernelBytes: t.KernelBytes, UserspaceBytes: t.UserspaceBytes,
		KernelCounters: t.KernelCounters, KernelCountersError: t.KernelCountersError,
		UserspaceCounters: t.UserspaceCounters, LatchDrops: t.LatchDrops, WindowLocks: t.WindowLocks,
		Pools: poolsJSON(t.Pools),
	})
}

func poolsJSON(ps []relay.PoolInfo) []wire.PoolJSON {
	out := make([]wire.PoolJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, wire.PoolJSON{Name: p.Name, Local: p.Local.String(), Advertised: addrString(p.Advertised),
			UsedPairs: p.TotalPairs - p.FreePairs, TotalPairs: p.TotalPairs})
	}
	return out
}

func (a *API) flows(w http.ResponseWriter, r *http.Request) {
	call := r.URL.Query().Get("call_id")
	out := []FlowJSON{}
	var flows []relay.FlowInfo
	switch {
	case a.Engine == nil:
	case call != "":
		// One call's flows without reading every other call's counters;
		// an unknown call lists none.
		flows, _ = a.Engine.CallFlows(call)
	default:
		flows = a.Engine.Flows()
	}
	for _, f := range flows {
		if call != "" && f.CallID != call {
			continue
		}
		out = append(out, FlowJSON{
			CallID: f.CallID, Stream: f.Stream, Leg: f.Side.String(), Component: f.Component,
			Local: f.Local.String(), Peer: addrString(f.Peer), Out: f.Out.String(), Dst: addrString(f.Dst),
			Path: f.Path, State: f.State, Latch: f.Latch, Rank: rankString(f.Rank), KernelError: f.KernelError,
			Packets: f.Packets, Bytes: f.Bytes, LastSeen: f.LastSeen,
		})
	}
	writeJSON(w, out)
}

func (a *API) drain(w http.ResponseWriter, r *http.Request) {
	if a.Engine == nil {
		http.Error(w, "media.mode is none: no relay to drain", http.StatusConflict)
		return
	}
	on := r.URL.Query().Get("off") == ""
	a.Engine.Drain(on)
	writeJSON(w, map[string]bool{"draining": on})
}

func rankString(r relay.Rank) string {
	if r == relay.RankNone {
		return ""
	}
	return r.String()
}

func addrString(ap interface {
	IsValid() bool
	String() string
}) string {
	if !ap.IsValid() {
		return ""
	}
	return ap.String()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// metrics writes Prometheus text exposition by hand: a handful of gauges
// and counters do not justify a client library.
func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	t := a.totals()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	var b strings.Builder
	metric := func(name, typ, help string, v any, labels string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s%s %v\n", name, help, name, typ, name, labels, v)
	}
	metric("sipxdp_up", "gauge", "1 while sipd runs, labelled with the media path in use.", 1,
		fmt.Sprintf("{version=%q,media_path=%q}", a.Version, t.Path))
	metric("sipxdp_media_path_info", "gauge", "The media path in use and why it was chosen.", 1,
		fmt.Sprintf("{path=%q,reason=%q}", t.Path, t.PathReason))
	metric("sipxdp_uptime_seconds", "gauge", "Seconds since sipd started.", time.Since(a.Started).Seconds(), "")
	if a.SIP != nil {
		st := a.SIP.Stats()
		metric("sipxdp_sip_registrations", "gauge", "Registered contacts.", st.Registrations, "")
		metric("sipxdp_sip_aors", "gauge", "Addresses of record with a contact.", st.AoRs, "")
		metric("sipxdp_sip_active_calls", "gauge", "Confirmed calls.", st.ActiveCalls, "")
		metric("sipxdp_sip_calls_in_setup", "gauge", "Calls not answered yet.", st.CallsInSetup, "")
		metric("sipxdp_sip_calls_completed_total", "counter", "Calls that ended after an answer.", st.CallsCompleted, "")
		metric("sipxdp_sip_calls_failed_total", "counter", "Calls that ended without an answer.", st.CallsFailed, "")
		metric("sipxdp_sip_transactions", "gauge", "Requests in progress.", st.Transactions, "")
		metric("sipxdp_sip_banned_sources", "gauge", "Sources banned for flooding.", st.BannedSources, "")
		metric("sipxdp_sip_malformed_total", "counter", "Unparsable messages dropped.", st.Malformed, "")
		fmt.Fprintf(&b, "# HELP sipxdp_sip_register_refused_total REGISTERs refused, by reason (store_unavailable: the binding could not be made durable; answered 500 with Retry-After).\n# TYPE sipxdp_sip_register_refused_total counter\n")
		fmt.Fprintf(&b, "sipxdp_sip_register_refused_total{reason=\"store_unavailable\"} %d\n", st.RegisterUnavailable)
		metric("sipxdp_sip_cdrs_total", "counter", "CDRs written (durable).", st.CDRs, "")
		metric("sipxdp_sip_cdr_errors_total", "counter", "CDRs that could not be written when their call ended (kept, and written when the disk recovers unless the backlog was full).", st.CDRErrors, "")
		journalMetrics(&b, st.Journals)
		protectMetrics(&b, st)
		c := st.Connections
		metric("sipxdp_sip_connections", "gauge", "TCP and TLS connections open.", c.Open, "")
		metric("sipxdp_sip_connections_max", "gauge", "The cap on TCP and TLS connections open at once (sip.connections.max, or derived from RLIMIT_NOFILE).", c.Max, "")
		metric("sipxdp_sip_connections_per_source_max", "gauge", "The cap on TCP and TLS connections from one source.", c.PerSource, "")
		labelledFamily(&b, "sipxdp_sip_connections_refused_total", "counter",
			"TCP and TLS connections refused (total_cap, per_source_cap), closed for a timeout (message_timeout, idle_timeout, handshake_timeout) or a failed TLS handshake, and accept errors retried.",
			"reason", c.Refused)
		labelledFamily(&b, "sipxdp_sip_refused_total", "counter", "Requests refused or absorbed, by reason: route_token_missing and route_token_invalid (in-dialog request without a valid route token, 403), dialog_mismatch (481), foreign_route (unauthenticated request routed elsewhere, 403), digest_uri_mismatch (400), stray_ack (dropped).",
			"reason", st.Core.Refused)
	}
	metric("sipxdp_media_sessions", "gauge", "Relayed calls.", t.Sessions, "")
	metric("sipxdp_media_flows", "gauge", "Installed flow directions.", t.Flows, "")
	metric("sipxdp_media_draining", "gauge", "1 while the relay refuses new calls.", boolInt(t.Draining), "")
	fmt.Fprintf(&b, "# HELP sipxdp_media_packets_total Packets relayed, by path.\n# TYPE sipxdp_media_packets_total counter\n")
	fmt.Fprintf(&b, "sipxdp_media_packets_total{path=\"kernel\"} %d\nsipxdp_media_packets_total{path=\"userspace\"} %d\n", t.KernelPackets, t.UserspacePackets)
	fmt.Fprintf(&b, "# HELP sipxdp_media_bytes_total UDP payload bytes relayed, by path.\n# TYPE sipxdp_media_bytes_total counter\n")
	fmt.Fprintf(&b, "sipxdp_media_bytes_total{path=\"kernel\"} %d\nsipxdp_media_bytes_total{path=\"userspace\"} %d\n", t.KernelBytes, t.UserspaceBytes)
	counterFamily(&b, "sipxdp_kernel_packets_total", "Kernel program verdicts and slow-path reasons.", t.KernelCounters)
	counterFamily(&b, "sipxdp_userspace_packets_total", "Userspace relay counters.", t.UserspaceCounters)
	if u := t.UserspaceCounters; u != nil {
		// Latching (relay.Latch), out of the userspace counters: the
		// kernel passes every packet it does not forward up to them, and
		// counts those of a locked flow as wrong_source itself.
		labelledFamily(&b, "sipxdp_media_foreign_dropped_total", "counter",
			"Packets from a source a relay flow did not take, dropped: while it learns, once it is locked, or refused by strict_source.",
			"reason", map[string]uint64{"learning": u["foreign_learning"], "locked": u["wrong_source"], "strict": u["strict"]})
		labelledFamily(&b, "sipxdp_media_latch_total", "counter",
			"Relay flows taking a source: latched (forwarded, first or better), relatched (replacing one in the learning window), locked, candidate (held until the window ends).",
			"event", map[string]uint64{"latched": u["latched"], "relatched": u["relatched"],
				"locked": u["locked"] + t.WindowLocks, "candidate": u["candidates"]})
	}
	var conns guard.Stats
	if a.Conns != nil {
		conns = a.Conns.Stats()
	}
	labelledFamily(&b, "sipxdp_http_refused_total", "counter", "API requests and connections refused, by reason.", "reason", map[string]uint64{
		"source": conns.RefusedSource, "connections": conns.RefusedConns, "token": a.refusedToken.Load(),
		"cross_origin": a.refusedCrossOrigin.Load(), "host": a.refusedHost.Load(),
	})
	metric("sipxdp_http_accept_errors_total", "counter", "API accept errors, retried after a backoff.", conns.AcceptErrors, "")
	metric("sipxdp_http_connections", "gauge", "API connections open.", conns.Active, "")
	if a.NG != nil {
		st := a.NG.Stats()
		counterFamily(&b, "sipxdp_ng_total", "NG control protocol counters (relay-only mode).", st)
		labelledFamily(&b, "sipxdp_ng_refused_total", "counter", "NG messages and TCP connections refused, by reason.", "reason", map[string]uint64{
			"source": st["refused.source"], "connections": st["refused.connections"],
		})
	}
	_, _ = w.Write([]byte(b.String()))
}

// journalMetrics writes the state of the durable files (package journal),
// labelled by journal: location, cdr.
func journalMetrics(b *strings.Builder, js []journal.Stats) {
	if len(js) == 0 {
		return
	}
	for _, f := range []struct {
		name, typ, help string
		v               func(journal.Stats) any
	}{
		{"sipxdp_journal_degraded", "gauge", "1 while the journal cannot write (commits refused, retried every second).", func(s journal.Stats) any { return boolInt(s.Degraded) }},
		{"sipxdp_journal_errors_total", "counter", "Failed attempts to write or sync the journal (each retry counts).", func(s journal.Stats) any { return s.Errors }},
		{"sipxdp_journal_records_total", "counter", "Records made durable.", func(s journal.Stats) any { return s.Records }},
		{"sipxdp_journal_syncs_total", "counter", "fdatasyncs: records_total over syncs_total is the group commit's batch size.", func(s journal.Stats) any { return s.Syncs }},
		{"sipxdp_journal_dropped_total", "counter", "Records dropped while degraded because the backlog was full.", func(s journal.Stats) any { return s.Dropped }},
		{"sipxdp_journal_pending_bytes", "gauge", "Bytes queued and not yet durable.", func(s journal.Stats) any { return s.PendingBytes }},
	} {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.typ)
		for _, j := range js {
			fmt.Fprintf(b, "%s{journal=%q} %v\n", f.name, j.Name, f.v(j))
		}
	}
}

func counterFamily(b *strings.Builder, name, help string, m map[string]uint64) {
	labelledFamily(b, name, "counter", help, "counter", m)
}

// labelledFamily writes one sample per key of m, labelled label="key", in
// key order; nothing when m is empty.
func labelledFamily(b *strings.Builder, name, typ, help, label string, m map[string]uint64) {
	if len(m) == 0 {
		return
	}
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "%s{%s=%q} %d\n", name, label, k, m[k])
	}
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}
