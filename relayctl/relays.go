package relayctl

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"sipxdp/sipd/wire"
)

// Relay is one row of relayctl relays. Today sipd drives one relay, its
// own ("local"); the list has room for the relay sets of issue 14, each
// member a row of its own.
type Relay struct {
	Name          string  `json:"name"`
	API           string  `json:"api"`
	Status        string  `json:"status"` // sipd's /health status: ok or degraded
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	wire.MediaHealth
	Pools []wire.PoolJSON `json:"pools"`
}

// health is the part of sipd's /health that relayctl reads.
type health struct {
	Status        string  `json:"status"`
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
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
	return a.write(w, "(no relay addresses)")
}
