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
// What this relay cannot know is reported as 0:
//   - sessionsforeign (no foreign sessions without rtpengine's Redis
//     replication of others' calls) and transcodedmedia (no transcoding);
//   - packetrate, byterate and errorrate (the engine keeps totals, not
//     per-second rates);
//   - every totalstatistics count of ended sessions (managedsessions,
//     rejectedsessions, the *timeoutsessions, the *terminatedsessions,
//     zerowaystreams, onewaystreams) and avgcallduration, which the relay
//     engine does not keep;
//   - relayedpacketerrors unless the EngineStats source fills Errors;
//   - the counts of commands this relay does not implement (recording,
//     forwarding, DTMF and media control).

// EngineStats is what the statistics command reports about the media
// engine.
type EngineStats struct {
	Sessions int    // calls now relayed
	Packets  uint64 // relayed since start, kernel and userspace
	Bytes    uint64
	Errors   uint64
}

// maxProxies bounds the per-source counters the statistics command
// lists; sources past it still count in the totals.
const maxProxies = 1024

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

// proxyCounts are one source's commands by name, and its error replies.
type proxyCounts struct {
	commands map[string]uint64
	errors   uint64
}

// proxyStats counts commands per source address, as rtpengine's
// controlstatistics lists them.
type proxyStats struct {
	mu sync.Mutex
	m  map[netip.Addr]*proxyCounts
}

func (p *proxyStats) record(src netip.Addr, command string, failed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[netip.Addr]*proxyCounts{}
	}
	c, ok := p.m[src]
	if !ok {
		if len(p.m) >= maxProxies {
			return
		}
		c = &proxyCounts{commands: map[string]uint64{}}
		p.m[src] = c
	}
	c.commands[command]++
	if failed {
		c.errors++
	}
}

// list returns the proxies in address order, shaped as the doc's
// "proxies" entries.
func (p *proxyStats) list() []any {
	p.mu.Lock()
	defer p.mu.Unlock()
	addrs := make([]netip.Addr, 0, len(p.m))
	for a := range p.m {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	out := make([]any, 0, len(addrs))
	for _, a := range addrs {
		c := p.m[a]
		e := map[string]any{"proxy": a.String(), "errorcount": c.errors}
		for _, cc := range controlCounters {
			e[cc.key] = c.commands[cc.command]
		}
		out = append(out, e)
	}
	return out
}

// statisticsReply builds the reply to the statistics command.
func (s *Server) statisticsReply() map[string]any {
	var es EngineStats
	if s.opt.Statistics != nil {
		es = s.opt.Statistics()
	}
	sessions := uint64(max(es.Sessions, 0))
	current := map[string]any{
		"sessionsown":     sessions,
		"sessionsforeign": 0,
		"sessionstotal":   sessions,
		"transcodedmedia": 0,
		"packetrate":      0,
		"byterate":        0,
		"errorrate":       0,
	}
	total := map[string]any{
		// rtpengine prints these two as strings.
		"uptime":                    fmt.Sprintf("%d", int64(time.Since(s.started)/time.Second)),
		"avgcallduration":           "0.000000",
		"managedsessions":           0,
		"rejectedsessions":          0,
		"timeoutsessions":           0,
		"silenttimeoutsessions":     0,
		"finaltimeoutsessions":      0,
		"offertimeoutsessions":      0,
		"regularterminatedsessions": 0,
		"forcedterminatedsessions":  0,
		"relayedpackets":            es.Packets,
		"relayedpacketerrors":       es.Errors,
		"relayedbytes":              es.Bytes,
		"zerowaystreams":            0,
		"onewaystreams":             0,
	}
	control := map[string]any{"proxies": s.proxies.list(), "totalerrorcount": s.errors.Load()}
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
