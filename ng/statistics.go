package ng

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// The statistics command answers with the dictionary rtpengine's
// ng_control_protocol.md shows under "statistics Message" (the
// content of its "list jsonstats"): currentstatistics, totalstatistics
// and controlstatistics, with the doc's keys. intervalstatistics is left
// out, as rtpengine leaves it out when Graphite is not configured: this
// relay has no Graphite reporting.
//
// Every count is since the process started, as rtpengine's are. What is
// 0 because it cannot happen here:
//   - transcodedmedia (the relay never transcodes);
//   - silenttimeoutsessions and finaltimeoutsessions (the relay has one
//     media timeout, counted as rtpengine's TIMEOUT, or OFFER_TIMEOUT
//     for a call never answered; no silent-timeout for held media, no
//     final-timeout);
//   - the counts of commands this relay does not implement (recording,
//     forwarding, DTMF and media control).

// EngineStats is what the statistics command reports about the media
// engine and the calls it ended.
type EngineStats struct {
	Sessions int    // calls now relayed, foreign ones included
	Foreign  int    // of Sessions, those a standby follows for another node
	Packets  uint64 // relayed since start, kernel and userspace
	Bytes    uint64
	Errors   uint64
	// Per-second rates over the last sampling interval.
	PacketRate, ByteRate, ErrorRate uint64
	Ended                           EndedStats
}

// EndedStats count the own calls that ended since start, by rtpengine's
// termination reasons (statistics.c, statistics_update_oneway).
type EndedStats struct {
	Managed                    uint64 // every own call that ended
	Timeout, SilentTimeout     uint64
	FinalTimeout, OfferTimeout uint64
	Regular, Forced            uint64
	ZeroWay, OneWay            uint64
	Duration                   time.Duration // of the Managed calls together
	DurationSquaredSeconds     float64       // sum of each duration², in s²
}

// AvgDuration is the mean duration of the ended calls (0 without any).
func (e EndedStats) AvgDuration() time.Duration {
	if e.Managed == 0 {
		return 0
	}
	return e.Duration / time.Duration(e.Managed)
}

// MaxProxies bounds the sources counted one by one, for the statistics
// command's controlstatistics and rtpengine's per-proxy Prometheus
// series; commands from further sources count under OtherProxy, so a
// flood from spoofed addresses cannot grow memory or label sets.
const MaxProxies = 256

// OtherProxy is the proxy entry of the sources past MaxProxies.
const OtherProxy = "other"

// controlCounters are the doc's per-proxy count keys, each with the
// command counted under it ("" for the commands this relay does not
// implement, always 0), in the doc's order.
var controlCounters = []struct{ key, command string }{
	{"pingcount", "ping"}, {"offercount", "offer"}, {"answercount", "answer"},
	{"deletecount", "delete"}, {"querycount", "query"}, {"listcount", "list"},
	{"startreccount", ""}, {"stopreccount", ""}, {"startfwdcount", ""}, {"stopfwdcount", ""},
	{"blkdtmfcount", ""}, {"unblkdtmfcount", ""}, {"blkmedia", ""}, {"unblkmedia", ""},
	{"playmedia", ""}, {"stopmedia", ""}, {"playdtmf", ""}, {"statistics", "statistics"},
}

// ProxyRequests are one source's requests of one command.
type ProxyRequests struct {
	Count uint64
	Time  time.Duration // spent answering them
}

// ProxyStats are one source's commands by name, and its error replies.
type ProxyStats struct {
	Proxy    string // the source address, or OtherProxy
	Commands map[string]ProxyRequests
	Errors   uint64
}

// proxyStats counts commands per source address, as rtpengine's
// controlstatistics lists them.
type proxyStats struct {
	mu    sync.Mutex
	m     map[netip.Addr]*ProxyStats
	other *ProxyStats
}

func (p *proxyStats) record(src netip.Addr, command string, failed bool, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[netip.Addr]*ProxyStats{}
	}
	c, ok := p.m[src]
	if !ok {
		switch {
		case len(p.m) < MaxProxies:
			c = &ProxyStats{Proxy: src.String(), Commands: map[string]ProxyRequests{}}
			p.m[src] = c
		case p.other == nil:
			p.other = &ProxyStats{Proxy: OtherProxy, Commands: map[string]ProxyRequests{}}
			c = p.other
		default:
			c = p.other
		}
	}
	r := c.Commands[command]
	r.Count++
	r.Time += d
	c.Commands[command] = r
	if failed {
		c.Errors++
	}
}

// snapshot returns copies of the proxies in address order, OtherProxy
// last.
func (p *proxyStats) snapshot() []ProxyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	addrs := make([]netip.Addr, 0, len(p.m))
	for a := range p.m {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	out := make([]ProxyStats, 0, len(addrs)+1)
	cp := func(c *ProxyStats) ProxyStats {
		d := *c
		d.Commands = make(map[string]ProxyRequests, len(c.Commands))
		for k, v := range c.Commands {
			d.Commands[k] = v
		}
		return d
	}
	for _, a := range addrs {
		out = append(out, cp(p.m[a]))
	}
	if p.other != nil {
		out = append(out, cp(p.other))
	}
	return out
}

// ProxyStats returns the commands counted per source (at most
// MaxProxies addresses, then OtherProxy), for rtpengine's per-proxy
// series.
func (s *Server) ProxyStats() []ProxyStats { return s.proxies.snapshot() }

// Rejected counts the offers refused for lack of capacity (load limit,
// out of ports): rtpengine's rejectedsessions.
func (s *Server) Rejected() uint64 { return s.rejected.Load() }

// EngineStats returns what Options.Statistics reports (zero without it).
func (s *Server) EngineStats() EngineStats {
	if s.opt.Statistics == nil {
		return EngineStats{}
	}
	return s.opt.Statistics()
}

// rejects reports whether reply refuses an offer for lack of capacity,
// as rtpengine's rejected_sess counts (call_offer_session_limit).
func rejects(command string, reply map[string]any) bool {
	if command != "offer" {
		return false
	}
	switch reply["result"] {
	case "load limit":
		return true
	case "error":
		r := reply["error-reason"]
		return r == ReasonSessionLimit || r == ReasonOutOfPorts
	}
	return false
}

// statisticsReply builds the reply to the statistics command.
func (s *Server) statisticsReply() map[string]any {
	es := s.EngineStats()
	sessions := uint64(max(es.Sessions, 0))
	foreign := min(uint64(max(es.Foreign, 0)), sessions)
	current := map[string]any{
		"sessionsown":     sessions - foreign,
		"sessionsforeign": foreign,
		"sessionstotal":   sessions,
		"transcodedmedia": 0,
		"packetrate":      es.PacketRate,
		"byterate":        es.ByteRate,
		"errorrate":       es.ErrorRate,
	}
	e := es.Ended
	total := map[string]any{
		// rtpengine prints these two as strings.
		"uptime":                    fmt.Sprintf("%d", int64(time.Since(s.started)/time.Second)),
		"avgcallduration":           fmt.Sprintf("%.6f", e.AvgDuration().Seconds()),
		"managedsessions":           e.Managed,
		"rejectedsessions":          s.rejected.Load(),
		"timeoutsessions":           e.Timeout,
		"silenttimeoutsessions":     e.SilentTimeout,
		"finaltimeoutsessions":      e.FinalTimeout,
		"offertimeoutsessions":      e.OfferTimeout,
		"regularterminatedsessions": e.Regular,
		"forcedterminatedsessions":  e.Forced,
		"relayedpackets":            es.Packets,
		"relayedpacketerrors":       es.Errors,
		"relayedbytes":              es.Bytes,
		"zerowaystreams":            e.ZeroWay,
		"onewaystreams":             e.OneWay,
	}
	proxies := s.proxies.snapshot()
	list := make([]any, 0, len(proxies))
	for _, p := range proxies {
		m := map[string]any{"proxy": p.Proxy, "errorcount": p.Errors}
		for _, cc := range controlCounters {
			m[cc.key] = p.Commands[cc.command].Count
		}
		list = append(list, m)
	}
	control := map[string]any{"proxies": list, "totalerrorcount": s.errors.Load()}
	for _, cc := range controlCounters {
		var n uint64
		if c, ok := s.commands[cc.command]; ok {
			n = c.ok.Load() + c.failed.Load()
		}
		control["total"+cc.key] = n
	}
	rep := okReply()
	rep["statistics"] = map[string]any{
		"currentstatistics": current,
		"totalstatistics":   total,
		"controlstatistics": control,
	}
	return rep
}
