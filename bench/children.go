package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"sipxdp/bench/rtpload"
	"sipxdp/internal/childproc"
	"sipxdp/internal/netns"
	"sipxdp/relay"
)

// The bench runs its load and relay as children entered into namespaces
// (see package childproc), so each has its own line in /proc. Each role
// takes its parameters as JSON and answers with an event "ready" once set
// up, then "result" when done.

func init() {
	childproc.Register("_sender", childproc.Serve(runSenderChild))
	childproc.Register("_receiver", childproc.Serve(runReceiverChild))
	childproc.Register("_relay", childproc.Serve(runRelayChild))
	childproc.Register("_uac", childproc.Serve(runUACChild))
	childproc.Register("_uas", childproc.Serve(runUASChild))
}

// startChild starts a bench child of role sub in ns, named role in logs.
func startChild(ns *netns.NS, role, sub string, cfg any) (*childproc.Proc, error) {
	return childproc.Start(childproc.Spec{Role: sub, Name: role, Params: cfg, NetNS: ns.Path})
}

type senderChildConfig struct {
	Src         netip.Addr       `json:"src"`
	SrcPortBase int              `json:"src_port_base"`
	Dsts        []netip.AddrPort `json:"dsts"`
	Rate        int              `json:"rate"`
	Duration    time.Duration    `json:"duration"`
	Batch       int              `json:"batch"`
	Size        int              `json:"size"`
}

func runSenderChild(ctx context.Context, c senderChildConfig) (any, error) {
	childproc.Emit("ready", nil, nil)
	return rtpload.Send(ctx, rtpload.SenderConfig{
		Src: c.Src, SrcPortBase: c.SrcPortBase, Dsts: c.Dsts, Rate: c.Rate,
		Duration: c.Duration, Batch: c.Batch, Size: c.Size,
	})
}

type receiverChildConfig struct {
	Sink rtpload.SinkConfig `json:"sink"`
}

type receiverResult struct {
	rtpload.SinkResult
	UDP map[string]int64 `json:"udp"` // deltas of /proc/net/snmp Udp counters
}

func runReceiverChild(ctx context.Context, c receiverChildConfig) (any, error) {
	before, err := readUDPSNMP("/proc/net/snmp")
	if err != nil {
		return nil, err
	}
	sink, err := rtpload.NewSink(c.Sink)
	if err != nil {
		return nil, err
	}
	childproc.Emit("ready", nil, nil)
	sr, err := sink.Run(ctx)
	res := receiverResult{SinkResult: sr, UDP: map[string]int64{}}
	// /proc/net follows the reader's namespace, so these are the
	// receiver's own counters: checksum failures show up here instead of
	// vanishing as unexplained loss.
	if after, aerr := readUDPSNMP("/proc/net/snmp"); aerr == nil {
		for k, v := range after {
			res.UDP[k] = v - before[k]
		}
	} else {
		err = errors.Join(err, aerr)
	}
	return res, err
}

// readUDPSNMP returns the "Udp:" counters of /proc/net/snmp by name.
func readUDPSNMP(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	return parseUDPSNMP(f)
}

func parseUDPSNMP(r io.Reader) (map[string]int64, error) {
	sc := bufio.NewScanner(r)
	var names []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = fields[1:]
			continue
		}
		if len(fields)-1 != len(names) {
			return nil, fmt.Errorf("snmp Udp: %d values for %d names", len(fields)-1, len(names))
		}
		out := make(map[string]int64, len(names))
		for i, n := range names {
			v, err := strconv.ParseInt(fields[i+1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("snmp Udp %s: %w", n, err)
			}
			out[n] = v
		}
		return out, nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read snmp: %w", err)
	}
	return nil, fmt.Errorf("snmp: no Udp lines")
}

// relayChildConfig tells the relay child which datapath to open and which
// flows to install, all pre-latched.
type relayChildConfig struct {
	Path       string       `json:"path"`
	Interfaces []string     `json:"interfaces"`
	PinPath    string       `json:"pin_path"`
	PortMin    uint16       `json:"port_min"`
	PortMax    uint16       `json:"port_max"`
	Flows      []relay.Flow `json:"flows"`
}

type relayResult struct {
	Datapath  string            `json:"datapath"`
	Forwarded uint64            `json:"forwarded"` // sum of flow packet counters
	Counters  map[string]uint64 `json:"counters,omitempty"`
}

// openDatapath is filled per datapath by files that import the datapath
// packages, so the bench builds and runs direct even without them.
var openDatapath = map[string]func(c relayChildConfig) (relay.Datapath, func() map[string]uint64, error){}

func runRelayChild(ctx context.Context, c relayChildConfig) (any, error) {
	open, ok := openDatapath[c.Path]
	if !ok {
		return nil, fmt.Errorf("datapath %q is not built into this bench", c.Path)
	}
	dp, counters, err := open(c)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", c.Path, err)
	}
	for _, f := range c.Flows {
		if err := dp.Upsert(f); err != nil {
			err = fmt.Errorf("upsert %s: %w", f.Key, err)
			return nil, errors.Join(err, dp.Close())
		}
	}
	childproc.Emit("ready", nil, nil)
	<-ctx.Done()
	res := relayResult{Datapath: dp.Name()}
	var errs []error
	for _, f := range c.Flows {
		st, err := dp.Stats(f.Key)
		if err != nil {
			errs = append(errs, fmt.Errorf("stats %s: %w", f.Key, err))
			continue
		}
		res.Forwarded += st.Packets
	}
	if counters != nil {
		res.Counters = counters()
	}
	if err := dp.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close %s: %w", c.Path, err))
	}
	err = errors.Join(errs...)
	return res, err
}
