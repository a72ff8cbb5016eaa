package bpf

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"sipxdp/relay"
)

// Flow flags, mirrored from maps.h (FLOW_*). The C header is the source of
// truth; BTF does not carry #defines, so this is a copy, which
// TestFlagsMatchMapsH keeps equal to it.
const (
	flagLearning  = 1 << 0
	flagPinnedMAC = 1 << 1
	flagLocal     = 1 << 2
	flagTOS       = 1 << 3
	flagXlate     = 1 << 4
	flagDrop      = 1 << 5
	// Bits 6-7 are free; bits 8-15 hold the TOS byte for flagTOS.
	tosShift = 8
)

// Pinned object names under the pin directory.
const (
	pinFlows    = "flows"
	pinCounters = "counters"
	pinTxPorts  = "tx_ports"
)

// Maps is the kernel datapath's state: the flow table, the per-CPU
// counters and the XDP devmap. It works the same on maps the loader just
// created and on maps opened from pins while no daemon runs.
type Maps struct {
	flows    *ebpf.Map
	counters *ebpf.Map
	txPorts  *ebpf.Map

	// Upsert reads the old entry to carry its counters over; serialising
	// writers keeps two Upserts of one key from losing each other's counts.
	mu sync.Mutex
	// crossFamily: every program using these maps was loaded with the
	// IPv4<->IPv6 translation (caps.go), so flows between families may be
	// installed. False for maps opened without a program (relayctl).
	crossFamily bool
}

// FlowEntry is one kernel flow with its counters.
type FlowEntry struct {
	Flow  relay.Flow
	Stats relay.FlowStats
}

// OpenPinnedMaps opens the maps a loader pinned under pinPath without
// loading or attaching any program: relayctl uses it to list flows and
// counters (and delete flows) while the daemon is down.
func OpenPinnedMaps(pinPath string) (*Maps, error) {
	if pinPath == "" {
		pinPath = DefaultPinPath
	}
	m := &Maps{}
	var err error
	for _, p := range []struct {
		name string
		dst  **ebpf.Map
	}{{pinFlows, &m.flows}, {pinCounters, &m.counters}, {pinTxPorts, &m.txPorts}} {
		*p.dst, err = ebpf.LoadPinnedMap(pinPath+"/"+p.name, nil)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("open pinned map %s: %w", p.name, err)
		}
	}
	return m, nil
}

// FlowMap returns the flow hash map (for memory accounting and tests).
func (m *Maps) FlowMap() *ebpf.Map { return m.flows }

// Close releases the file descriptors; pinned maps stay in the kernel.
// Closing twice is harmless.
func (m *Maps) Close() error {
	var errs []error
	for _, mp := range []**ebpf.Map{&m.flows, &m.counters, &m.txPorts} {
		if *mp != nil {
			errs = append(errs, (*mp).Close())
			*mp = nil
		}
	}
	return errors.Join(errs...)
}

func htons(v uint16) uint16 { return bits.ReverseBytes16(v) }

// family reports 4 or 6 for a valid address, after unmapping, so an
// IPv4-mapped IPv6 address counts as IPv4 like it does in the map.
func family(ap netip.AddrPort) int {
	if ap.Addr().Unmap().Is4() {
		return 4
	}
	return 6
}

func keyOf(k relay.FlowKey) (xdpFlowKey, error) {
	if !k.Local.IsValid() {
		return xdpFlowKey{}, fmt.Errorf("flow key %v: %w", k, relay.ErrUnsupportedFlow)
	}
	return xdpFlowKey{Addr: k.Local.Addr().Unmap().As16(), Port: htons(k.Local.Port())}, nil
}

func addrPort(a [16]byte, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), htons(port))
}

// valueOf encodes f. crossFamily allows Out and Dst of the other family
// than Key (the program translates the IP header, FLOW_XLATE); Out and Dst
// are always of one family, and so are Key and a locked Peer.
func valueOf(f relay.Flow, crossFamily bool) (xdpFlowValue, error) {
	var v xdpFlowValue
	if !f.Key.Local.IsValid() || !f.Out.IsValid() || !f.Dst.IsValid() {
		return v, fmt.Errorf("flow %v: key, out and dst must be set: %w", f.Key, relay.ErrUnsupportedFlow)
	}
	fam := family(f.Key.Local)
	if family(f.Out) != family(f.Dst) {
		return v, fmt.Errorf("flow %v: out %v and dst %v of different families: %w", f.Key, f.Out, f.Dst, relay.ErrUnsupportedFlow)
	}
	if family(f.Out) != fam {
		if !crossFamily {
			return v, fmt.Errorf("flow %v: out %v of another family, which the loaded programs do not translate: %w",
				f.Key, f.Out, relay.ErrUnsupportedFlow)
		}
		v.Flags |= flagXlate
	}
	if f.Peer.IsValid() && family(f.Peer) != fam {
		if !f.Learning {
			return v, fmt.Errorf("flow %v: peer %v of another family: %w", f.Key, f.Peer, relay.ErrUnsupportedFlow)
		}
		// A learning flow's announced peer may be anything; the kernel
		// never compares it, so store nothing.
	} else if f.Peer.IsValid() {
		v.PeerAddr = f.Peer.Addr().Unmap().As16()
		v.PeerPort = htons(f.Peer.Port())
	}
	if !f.Peer.IsValid() && !f.Learning {
		return v, fmt.Errorf("flow %v: no peer and not learning: %w", f.Key, relay.ErrUnsupportedFlow)
	}
	v.OutAddr = f.Out.Addr().Unmap().As16()
	v.OutPort = htons(f.Out.Port())
	v.DstAddr = f.Dst.Addr().Unmap().As16()
	v.DstPort = htons(f.Dst.Port())
	if f.Learning {
		v.Flags |= flagLearning
	}
	if f.TOS.Set {
		v.Flags |= flagTOS | uint16(f.TOS.Value)<<tosShift
	}
	if f.Drop {
		v.Flags |= flagDrop
	}
	if len(f.SrcMAC) == 6 && len(f.DstMAC) == 6 && f.OutIfindex > 0 {
		v.Flags |= flagPinnedMAC
		v.OutIfindex = uint32(f.OutIfindex)
		copy(v.SrcMac[:], f.SrcMAC)
		copy(v.DstMac[:], f.DstMAC)
	}
	return v, nil
}

func flowOf(k xdpFlowKey, v *xdpFlowValue) relay.Flow {
	f := relay.Flow{
		Key:      relay.FlowKey{Local: addrPort(k.Addr, k.Port)},
		Out:      addrPort(v.OutAddr, v.OutPort),
		Dst:      addrPort(v.DstAddr, v.DstPort),
		Learning: v.Flags&flagLearning != 0,
		Drop:     v.Flags&flagDrop != 0,
	}
	if v.Flags&flagTOS != 0 {
		f.TOS = relay.TOS{Set: true, Value: uint8(v.Flags >> tosShift)}
	}
	if v.PeerAddr != ([16]byte{}) || v.PeerPort != 0 {
		f.Peer = addrPort(v.PeerAddr, v.PeerPort)
	}
	if v.Flags&flagPinnedMAC != 0 {
		f.OutIfindex = int(v.OutIfindex)
		f.SrcMAC = net.HardwareAddr(append([]byte(nil), v.SrcMac[:]...))
		f.DstMAC = net.HardwareAddr(append([]byte(nil), v.DstMac[:]...))
	}
	return f
}

// monoToTime converts a bpf_ktime_get_ns stamp (CLOCK_MONOTONIC) to wall
// time by measuring its distance from now on the same clock.
func monoToTime(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Time{}
	}
	return now.Add(-time.Duration(uint64(ts.Nano()) - ns))
}

func statsOf(v *xdpFlowValue) relay.FlowStats {
	return relay.FlowStats{Packets: v.Packets, Bytes: v.Bytes, LastSeen: monoToTime(v.LastSeen)}
}

// Upsert installs or replaces one direction. Replacing keeps the flow's
// packet, byte and last-seen counters (packets counted between the read
// and the write of a replace are lost; replaces are rare).
func (m *Maps) Upsert(f relay.Flow) error { return m.upsert(f, 0) }

// upsert writes f with extra flag bits the loader knows and the Flow does
// not carry (flagLocal).
func (m *Maps) upsert(f relay.Flow, extra uint16) error {
	k, err := keyOf(f.Key)
	if err != nil {
		return err
	}
	v, err := valueOf(f, m.crossFamily)
	if err != nil {
		return err
	}
	v.Flags |= extra
	m.mu.Lock()
	defer m.mu.Unlock()
	var old xdpFlowValue
	switch err := m.flows.Lookup(&k, &old); {
	case err == nil:
		v.Packets, v.Bytes, v.LastSeen = old.Packets, old.Bytes, old.LastSeen
	case !errors.Is(err, ebpf.ErrKeyNotExist):
		return fmt.Errorf("read flow %v: %w", f.Key, err)
	}
	if err := m.flows.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write flow %v: %w", f.Key, err)
	}
	return nil
}

// Delete removes one direction; relay.ErrFlowNotFound if absent.
func (m *Maps) Delete(key relay.FlowKey) error {
	k, err := keyOf(key)
	if err != nil {
		return err
	}
	if err := m.flows.Delete(&k); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete flow %v: %w", key, relay.ErrFlowNotFound)
		}
		return fmt.Errorf("delete flow %v: %w", key, err)
	}
	return nil
}

// Stats returns one flow's kernel counters; relay.ErrFlowNotFound if absent.
func (m *Maps) Stats(key relay.FlowKey) (relay.FlowStats, error) {
	k, err := keyOf(key)
	if err != nil {
		return relay.FlowStats{}, err
	}
	var v xdpFlowValue
	if err := m.flows.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return relay.FlowStats{}, fmt.Errorf("stats of flow %v: %w", key, relay.ErrFlowNotFound)
		}
		return relay.FlowStats{}, fmt.Errorf("stats of flow %v: %w", key, err)
	}
	return statsOf(&v), nil
}

// Flows lists every kernel flow with its counters. It reads the map in
// batches: one syscall per few thousand flows instead of two per flow,
// which matters at 200,000 flows.
func (m *Maps) Flows() ([]FlowEntry, error) {
	const batch = 4096
	var (
		cursor ebpf.MapBatchCursor
		keys   = make([]xdpFlowKey, batch)
		vals   = make([]xdpFlowValue, batch)
		out    []FlowEntry
	)
	for {
		n, err := m.flows.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			out = append(out, FlowEntry{Flow: flowOf(keys[i], &vals[i]), Stats: statsOf(&vals[i])})
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return out, nil
		case errors.Is(err, ebpf.ErrNotSupported):
			return m.iterateFlows()
		case err != nil:
			return nil, fmt.Errorf("read flows: %w", err)
		}
	}
}

// iterateFlows is the one-key-at-a-time fallback for kernels without
// batch operations.
func (m *Maps) iterateFlows() ([]FlowEntry, error) {
	var (
		k   xdpFlowKey
		v   xdpFlowValue
		out []FlowEntry
	)
	it := m.flows.Iterate()
	for it.Next(&k, &v) {
		out = append(out, FlowEntry{Flow: flowOf(k, &v), Stats: statsOf(&v)})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate flows: %w", err)
	}
	return out, nil
}

// Counters sums the per-CPU counters by name: the verdicts "tx",
// "redirect", "local", "pass", "aborted", "dropped" and the pass reasons named as in
// relay/relaytest (plus "port_range" and "no_egress").
func (m *Maps) Counters() (map[string]uint64, error) {
	names, err := CounterNames()
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(names))
	var per []uint64
	for i, name := range names {
		if err := m.counters.Lookup(uint32(i), &per); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", name, err)
		}
		var sum uint64
		for _, c := range per {
			sum += c
		}
		out[name] = sum
	}
	return out, nil
}

var counterNames = sync.OnceValues(func() ([]string, error) {
	spec, err := loadXdp()
	if err != nil {
		return nil, fmt.Errorf("load xdp spec: %w", err)
	}
	var e *btf.Enum
	if err := spec.Types.TypeByName("counter", &e); err != nil {
		return nil, fmt.Errorf("find enum counter in btf: %w", err)
	}
	names := make([]string, 0, len(e.Values))
	for _, v := range e.Values {
		if v.Name == "cnt_max" {
			continue
		}
		if int(v.Value) != len(names) {
			return nil, fmt.Errorf("enum counter: %s = %d is not dense", v.Name, v.Value)
		}
		names = append(names, strings.TrimPrefix(v.Name, "cnt_"))
	}
	return names, nil
})

// CounterNames returns the counter names in map index order, read from the
// program's BTF so they always match the C enum.
func CounterNames() ([]string, error) { return counterNames() }
