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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sipxdp/internal/guard"
	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/relayrepl"
	"sipxdp/sipd/relayset"
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
	Engine *relay.Engine     // nil with media.mode none
	SIP    *sipserver.Server // nil when only the relay runs
	NG     NGStats           // the NG server in relay-only mode, else nil
	// Relays reports the NG relays of media.relays; nil when calls use
	// the embedded relay.
	// RelaySticky counts failed operations on the Call-ID to relay map in
	// Redis; nil when it is not shared.
	RelaySticky func() uint64
	Relays      func() []wire.RelayMember
	// Replication reports the relay's call replication (ng.redis); nil
	// without it.
	Replication func() relayrepl.Status
	// CallsEnded counts the calls ended since start (relay-only mode),
	// for rtpengine's series of ended sessions; nil otherwise.
	CallsEnded func() ng.EndedStats
	Started    time.Time
	Version    string
	Pprof      bool // serve /debug/pprof/
	// Token is http.token: empty for none.
	Token string
	// Conns is the listener the API is served on, for its counters; nil
	// when it is served some other way (tests).
	Conns *guard.Listener

	refusedToken, refusedCrossOrigin, refusedHost atomic.Uint64

	metricsOnce sync.Once
	m           *metrics // see registry
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
// (ng.Server): its counters by name, its commands by outcome, its
// commands by source (rtpengine's per-proxy series) and the offers it
// refused for lack of capacity.
type NGStats interface {
	Stats() map[string]uint64
	Commands() []ng.CommandStats
	ProxyStats() []ng.ProxyStats
	Rejected() uint64
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
	// Relays are media.relays' members, when calls go to NG relays.
	Relays []wire.RelayMember `json:"relays,omitempty"`
	// Replication of a relay-only node's calls (ng.redis).
	Replication *relayrepl.Status `json:"replication,omitempty"`
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
	if a.Replication != nil {
		st := a.Replication()
		h.Replication = &st
		if st.Redis != "up" {
			h.Problems = append(h.Problems, "relay replication: redis unreachable; calls are served but not replicated")
		}
	}
	if a.Relays != nil {
		h.Relays = a.Relays()
		up := 0
		for _, r := range h.Relays {
			if r.State != relayset.StateDown && r.State != relayset.StateOverloaded {
				up++
			}
		}
		if up == 0 {
			h.Problems = append(h.Problems, "no relay of media.relays takes new calls")
		}
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
	regs, err := a.SIP.Registrations()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, regs)
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
		PierceNAT: t.PierceNAT, PierceNATErrors: t.PierceNATErrors,
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
		fj := FlowJSON{
			CallID: f.CallID, Stream: f.Stream, Leg: f.Side.String(), Component: f.Component,
			Local: f.Local.String(), Peer: addrString(f.Peer), Out: f.Out.String(), Dst: addrString(f.Dst),
			Path: f.Path, State: f.State, Latch: f.Latch, Rank: rankString(f.Rank), KernelError: f.KernelError,
			Packets: f.Packets, Bytes: f.Bytes, LastSeen: f.LastSeen,
			UserspaceOnly: f.UserspaceOnly, In: f.In, OutLeg: f.OutLeg, RTCPDst: addrString(f.RTCPDst),
			DropTraffic: f.Drop,
		}
		if f.TOS.Set {
			fj.TOS = f.TOS.String()
		}
		out = append(out, fj)
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
