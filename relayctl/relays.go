package relayctl

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"sipxdp/sipd/wire"
)

// Relay is one row of relayctl relays: sipd itself ("local", with its
// embedded relay's figures) and, when sipd sends calls to NG relays
// (media.relays), one row per member, named by its URL, with NG set.
type Relay struct {
	Name          string  `json:"name"`
	API           string  `json:"api"`
	Status        string  `json:"status"` // sipd's /health status: ok or degraded; a member's state
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	wire.MediaHealth
	Pools []wire.PoolJSON `json:"pools"`
	// NG is a media.relays member as sipd sees it; nil for "local".
	NG *wire.RelayMember `json:"ng,omitempty"`
}

// health is the part of sipd's /health that relayctl reads.
type health struct {
	Status        string             `json:"status"`
	Version       string             `json:"version"`
	UptimeSeconds float64            `json:"uptime_seconds"`
	Relays        []wire.RelayMember `json:"relays"`
}

func (c *client) relays(ctx context.Context, args []string) error {
	asJSON, err := c.jsonOnly("relays", args)
	if err != nil {
		return err
	}
	var h health
	if err := c.get(ctx, "/health", &h); err != nil {
		return err
	}
	var st wire.StatsJSON
	if err := c.get(ctx, "/stats", &st); err != nil {
		return err
	}
	pools := st.Pools
	if pools == nil {
		pools = []wire.PoolJSON{}
	}
	rows := []Relay{{Name: "local", API: c.api, Status: h.Status, Version: h.Version,
		UptimeSeconds: h.UptimeSeconds, MediaHealth: st.MediaHealth, Pools: pools}}
	for _, m := range h.Relays {
		rows = append(rows, Relay{Name: m.URL, Status: m.State, Pools: []wire.PoolJSON{}, NG: &m})
	}
	if asJSON {
		return c.printJSON(rows)
	}
	return printRelays(c.out, rows)
}

// printRelays writes two tables: one row per relay, then one per relay
// address with its port pool.
func printRelays(w io.Writer, rows []Relay) error {
	t := newTable(left("RELAY"), left("STATUS"), left("PATH"), left("DRAINING"), right("SESSIONS"), right("FLOWS"),
		right("KERNEL"), right("USERSPACE"), right("PORTS USED"), right("UPTIME"), left("VERSION"), left("REASON"))
	for _, r := range rows {
		if r.NG != nil {
			continue // in the NG relays table
		}
		used, total := 0, 0
		for _, p := range r.Pools {
			used += p.UsedPairs
			total += p.TotalPairs
		}
		draining := "no"
		if r.Draining {
			draining = "yes"
		}
		t.add(r.Name, dash(r.Status), dash(r.Path), draining, strconv.Itoa(r.Sessions), strconv.Itoa(r.Flows),
			strconv.Itoa(r.KernelFlows), strconv.Itoa(r.UserspaceFlows), fmt.Sprintf("%d/%d", used, total),
			(time.Duration(r.UptimeSeconds) * time.Second).String(), dash(r.Version), dash(r.Reason))
	}
	if err := t.write(w, "(no relays)"); err != nil {
		return err
	}
	fmt.Fprintln(w)
	a := newTable(left("RELAY"), left("ADDRESS"), left("LOCAL"), left("ADVERTISED"), right("USED"), right("TOTAL"), right("USE"))
	for _, r := range rows {
		for _, p := range r.Pools {
			use := 0.0
			if p.TotalPairs > 0 {
				use = 100 * float64(p.UsedPairs) / float64(p.TotalPairs)
			}
			a.add(r.Name, dash(p.Name), p.Local, dash(p.Advertised), strconv.Itoa(p.UsedPairs), strconv.Itoa(p.TotalPairs),
				strconv.FormatFloat(use, 'f', 1, 64)+"%")
		}
	}
	if err := a.write(w, "(no relay addresses)"); err != nil {
		return err
	}
	var members []*wire.RelayMember
	for _, r := range rows {
		if r.NG != nil {
			members = append(members, r.NG)
		}
	}
	if len(members) == 0 {
		return nil
	}
	// media.relays: where sipd sends its calls, and how each relay fares.
	fmt.Fprintln(w)
	n := newTable(left("NG RELAY"), right("WEIGHT"), left("STATE"), right("CALLS"), right("OFFERS"), right("FAILOVERS"),
		right("RTT"), left("LAST ERROR"))
	for _, m := range members {
		n.add(m.URL, strconv.Itoa(m.Weight), m.State, strconv.Itoa(m.Calls), strconv.FormatUint(m.Offers, 10),
			strconv.FormatUint(m.Failovers, 10), dash(m.RTT), dash(m.LastError))
	}
	return n.write(w, "")
}
