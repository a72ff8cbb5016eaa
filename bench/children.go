package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sipxdp/bench/rtpload"
	"sipxdp/relay"
)

// The bench runs its load and relay as children entered into namespaces
// with nsenter, so each has its own line in /proc. They take one JSON
// config and answer with JSON lines on stdout: an event "ready" once set
// up, then "result" when done. Logs go to stderr.

type childMsg struct {
	Event  string          `json:"event"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

func emit(event string, result any, err error) {
	m := childMsg{Event: event}
	if err != nil {
		m.Error = err.Error()
	}
	if result != nil {
		b, merr := json.Marshal(result)
		if merr != nil {
			m.Error = fmt.Sprintf("marshal result: %v", merr)
		}
		m.Result = b
	}
	b, _ := json.Marshal(m)
	os.Stdout.Write(append(b, '\n'))
}

func childConfig(name string, args []string, v any) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg := fs.String("config", "", "JSON config")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(*cfg), v); err != nil {
		return fmt.Errorf("%s config: %w", name, err)
	}
	return nil
}

// childContext ends on SIGTERM, the parent's way of saying "finish and
// report"; SIGINT is ignored because the children run in their own process
// group and a terminal's Ctrl-C belongs to the parent.
func childContext() (context.Context, context.CancelFunc) {
	signal.Ignore(syscall.SIGINT)
	return signal.NotifyContext(context.Background(), syscall.SIGTERM)
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

func runSenderChild(args []string) int {
	var c senderChildConfig
	if err := childConfig("_sender", args, &c); err != nil {
		emit("result", nil, err)
		return 2
	}
	ctx, cancel := childContext()
	defer cancel()
	emit("ready", nil, nil)
	res, err := rtpload.Send(ctx, rtpload.SenderConfig{
		Src: c.Src, SrcPortBase: c.SrcPortBase, Dsts: c.Dsts, Rate: c.Rate,
		Duration: c.Duration, Batch: c.Batch, Size: c.Size,
	})
	emit("result", res, err)
	if err != nil {
		return 1
	}
	return 0
}

type receiverChildConfig struct {
	Sink rtpload.SinkConfig `json:"sink"`
}

type receiverResult struct {
	rtpload.SinkResult
	UDP map[string]int64 `json:"udp"` // deltas of /proc/net/snmp Udp counters
}

func runReceiverChild(args []string) int {
	var c receiverChildConfig
	if err := childConfig("_receiver", args, &c); err != nil {
		emit("result", nil, err)
		return 2
	}
	ctx, cancel := childContext()
	defer cancel()
	before, err := readUDPSNMP("/proc/net/snmp")
	if err != nil {
		emit("result", nil, err)
		return 1
	}
	sink, err := rtpload.NewSink(c.Sink)
	if err != nil {
		emit("result", nil, err)
		return 1
	}
	emit("ready", nil, nil)
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
	emit("result", res, err)
	if err != nil {
		return 1
	}
	return 0
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

func runRelayChild(args []string) int {
	var c relayChildConfig
	if err := childConfig("_relay", args, &c); err != nil {
		emit("result", nil, err)
		return 2
	}
	ctx, cancel := childContext()
	defer cancel()
	open, ok := openDatapath[c.Path]
	if !ok {
		emit("result", nil, fmt.Errorf("datapath %q is not built into this bench", c.Path))
		return 1
	}
	dp, counters, err := open(c)
	if err != nil {
		emit("result", nil, fmt.Errorf("open %s: %w", c.Path, err))
		return 1
	}
	for _, f := range c.Flows {
		if err := dp.Upsert(f); err != nil {
			err = fmt.Errorf("upsert %s: %w", f.Key, err)
			emit("result", nil, errors.Join(err, dp.Close()))
			return 1
		}
	}
	emit("ready", nil, nil)
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
	emit("result", res, err)
	if err != nil {
		return 1
	}
	return 0
}
