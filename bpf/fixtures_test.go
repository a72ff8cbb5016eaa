package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

// Return codes from the uapi headers.
const (
	xdpAborted = 0
	xdpPass    = 2
	xdpTX      = 3
	xdpRedir   = 4

	xdpDrop       = 1
	tcActOK       = 0
	tcActShot     = 2
	tcActRedirect = 7
)

// xdpMD mirrors struct xdp_md for BPF_PROG_TEST_RUN's context: data and
// data_end are offsets into the input, ingress_ifindex names the device.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

func runXDP(prog *ebpf.Program, in []byte, ifindex int) (uint32, []byte, error) {
	out := make([]byte, len(in)+512)
	ctx := xdpMD{DataEnd: uint32(len(in)), IngressIfindex: uint32(ifindex)}
	opts := &ebpf.RunOptions{Data: in, DataOut: out, Context: ctx}
	ret, err := prog.Run(opts)
	if err != nil {
		return 0, nil, err
	}
	return ret, opts.DataOut, nil
}

func runTC(prog *ebpf.Program, in []byte) (uint32, []byte, error) {
	out := make([]byte, len(in)+512)
	opts := &ebpf.RunOptions{Data: in, DataOut: out}
	ret, err := prog.Run(opts)
	if err != nil {
		return 0, nil, err
	}
	return ret, opts.DataOut, nil
}

func clearFlows(t *testing.T, m *Maps) {
	t.Helper()
	fs, err := m.Flows()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if err := m.Delete(f.Flow.Key); err != nil {
			t.Fatal(err)
		}
	}
}

func counterDelta(before, after map[string]uint64) map[string]uint64 {
	d := map[string]uint64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

func payloadLen(t *testing.T, frame []byte) uint64 {
	t.Helper()
	f, err := relaytest.Parse(frame)
	if err != nil {
		t.Fatalf("parse fixture input: %v", err)
	}
	return uint64(len(f.Payload))
}

// TestFixtures runs the shared fixture table through both programs with
// BPF_PROG_TEST_RUN and checks verdict, bytes, counters and flow stats.
func TestFixtures(t *testing.T) {
	requireRoot(t)
	names, err := CounterNames()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	for _, r := range []string{relaytest.ReasonNotIP, relaytest.ReasonNotUDP, relaytest.ReasonTruncated,
		relaytest.ReasonFragment, relaytest.ReasonIPOptions, relaytest.ReasonIPv6Ext, relaytest.ReasonNoFlow,
		relaytest.ReasonLearning, relaytest.ReasonWrongSource, relaytest.ReasonFIB, relaytest.CounterDropped} {
		if !have[r] {
			t.Errorf("no kernel counter named %q (have %v)", r, names)
		}
	}

	inFreshNetns(t, func() {
		progs, err := LoadPrograms(1024, 65535)
		if err != nil {
			t.Fatal(err)
		}
		defer progs.Close()
		if err := progs.AddTxPort(relaytest.IfOther); err != nil {
			t.Fatal(err)
		}

		for _, c := range relaytest.Cases() {
			clearFlows(t, progs.Maps)
			for _, f := range c.Flows {
				if err := progs.Upsert(f); err != nil {
					t.Fatalf("%s: upsert: %v", c.Name, err)
				}
			}
			for _, hook := range []string{"xdp", "tc"} {
				name := c.Name + "/" + hook
				before, err := progs.Counters()
				if err != nil {
					t.Fatal(err)
				}
				var (
					ret  uint32
					out  []byte
					want uint32
				)
				if hook == "xdp" {
					ret, out, err = runXDP(progs.XDP, c.In, c.Ifindex)
					switch {
					case c.Kernel == relaytest.Pass:
						want = xdpPass
					case c.Kernel == relaytest.Drop:
						want = xdpDrop
					case c.OutIfindex == c.Ifindex:
						want = xdpTX
					default:
						want = xdpRedir
					}
				} else {
					ret, out, err = runTC(progs.TC, c.In)
					want = tcActOK
					switch c.Kernel {
					case relaytest.Forward:
						want = tcActRedirect
					case relaytest.Drop:
						want = tcActShot
					}
				}
				if err != nil && hook == "tc" && errors.Is(err, unix.EINVAL) && len(c.In) < relaytest.EthLen+relaytest.IPv4Len {
					// BPF_PROG_TEST_RUN cannot build an skb from an IPv4
					// frame shorter than an IP header; the XDP run covers it.
					t.Logf("%s: kernel refuses to build this skb (%v); covered by the xdp run", name, err)
					continue
				}
				if err != nil {
					t.Errorf("%s: run: %v", name, err)
					continue
				}
				after, err := progs.Counters()
				if err != nil {
					t.Fatal(err)
				}
				delta := counterDelta(before, after)
				if ret != want {
					t.Errorf("%s: verdict %d, want %d (counters moved: %v)", name, ret, want, delta)
				}
				var wantDelta map[string]uint64
				if c.Kernel == relaytest.Forward {
					if !bytes.Equal(out, c.Out) {
						t.Errorf("%s: output differs\n got %x\nwant %x", name, out, c.Out)
					}
					if err := verifyChecksums(out); err != nil {
						t.Errorf("%s: output: %v", name, err)
					}
					v := "redirect"
					if hook == "xdp" && c.OutIfindex == c.Ifindex {
						v = "tx"
					}
					wantDelta = map[string]uint64{v: 1}
				} else {
					if !bytes.Equal(out, c.In) {
						t.Errorf("%s: passed or dropped frame was modified\n got %x\nwant %x", name, out, c.In)
					}
					wantDelta = map[string]uint64{"pass": 1, c.KernelReason: 1}
					if c.Kernel == relaytest.Drop {
						wantDelta = map[string]uint64{relaytest.CounterDropped: 1}
					}
				}
				if fmt.Sprint(delta) != fmt.Sprint(wantDelta) {
					t.Errorf("%s: counters moved %v, want %v", name, delta, wantDelta)
				}
			}
			// Per-flow counters: a forward case was hit once by each hook.
			if c.Kernel == relaytest.Forward {
				st, err := progs.Stats(c.Flows[0].Key)
				if err != nil {
					t.Fatalf("%s: stats: %v", c.Name, err)
				}
				pl := payloadLen(t, c.In)
				if st.Packets != 2 || st.Bytes != 2*pl {
					t.Errorf("%s: flow stats %d packets %d bytes, want 2 and %d", c.Name, st.Packets, st.Bytes, 2*pl)
				}
				if age := time.Since(st.LastSeen); age < -time.Second || age > 10*time.Second {
					t.Errorf("%s: last seen %v is %v ago", c.Name, st.LastSeen, age)
				}
			} else {
				for _, f := range c.Flows {
					st, err := progs.Stats(f.Key)
					if err != nil {
						t.Fatalf("%s: stats: %v", c.Name, err)
					}
					if st.Packets != 0 || !st.LastSeen.IsZero() {
						t.Errorf("%s: passed or dropped frame counted on flow: %+v", c.Name, st)
					}
				}
			}
		}
	})
}

// rfc1071 is the Internet checksum's one's-complement sum of the
// concatenated chunks, written here apart from relaytest's and the
// programs' arithmetic so that the checksums of the expected and the
// produced frames are checked by code neither uses.
func rfc1071(chunks ...[]byte) uint16 {
	var b []byte
	for _, c := range chunks {
		b = append(b, c...)
	}
	var s uint64
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// verifyChecksums checks the IPv4 header checksum and the UDP checksum of
// an Ethernet frame as a receiver would: each sums to 0xffff with its
// pseudo-header. IPv6 must carry a UDP checksum; IPv4 may have none (0).
func verifyChecksums(frame []byte) error {
	be := binary.BigEndian
	if len(frame) < 14 {
		return fmt.Errorf("frame of %d bytes", len(frame))
	}
	var pseudo, udp []byte
	switch be.Uint16(frame[12:14]) {
	case 0x0800:
		if len(frame) < 14+20+8 || frame[14] != 0x45 {
			return fmt.Errorf("not an IPv4 header without options")
		}
		ip := frame[14:34]
		if c := rfc1071(ip); c != 0xffff {
			return fmt.Errorf("IPv4 header checksum sums to %#04x", c)
		}
		udp = frame[34 : 14+int(be.Uint16(ip[2:4]))]
		if be.Uint16(udp[6:8]) == 0 {
			return nil
		}
		pseudo = append(append([]byte{}, ip[12:20]...), 0, 17, udp[4], udp[5])
	case 0x86dd:
		if len(frame) < 14+40+8 || frame[14]>>4 != 6 {
			return fmt.Errorf("not an IPv6 header")
		}
		ip := frame[14:54]
		udp = frame[54 : 54+int(be.Uint16(ip[4:6]))]
		if be.Uint16(udp[6:8]) == 0 {
			return fmt.Errorf("IPv6 UDP checksum is zero (none), which IPv6 forbids")
		}
		pseudo = append(append([]byte{}, ip[8:40]...), 0, 0, udp[4], udp[5], 0, 0, 0, 17)
	default:
		return fmt.Errorf("EtherType %#04x", be.Uint16(frame[12:14]))
	}
	udp = udp[:be.Uint16(udp[4:6])]
	if c := rfc1071(pseudo, udp); c != 0xffff {
		return fmt.Errorf("UDP checksum %#04x sums to %#04x with its pseudo-header", be.Uint16(udp[6:8]), c)
	}
	return nil
}

// The fixture table's expected frames carry checksums a receiver accepts,
// and verifyChecksums can fail.
func TestFixtureChecksums(t *testing.T) {
	for _, c := range relaytest.Cases() {
		if c.Out != nil {
			if err := verifyChecksums(c.Out); err != nil {
				t.Errorf("%s: expected frame: %v", c.Name, err)
			}
		}
	}
	for _, c := range relaytest.Cases() {
		if c.Out == nil {
			continue
		}
		bad := bytes.Clone(c.Out)
		payload := 14 + 20 + 8
		v6 := binary.BigEndian.Uint16(bad[12:14]) == 0x86dd
		if v6 {
			payload = 14 + 40 + 8
		}
		if !v6 && binary.BigEndian.Uint16(bad[payload-2:]) == 0 {
			// IPv4 without a UDP checksum: nothing covers the payload. Only
			// IPv4: every IPv6 frame, those translated from IPv4 without
			// one included, must fail here.
			continue
		}
		bad[payload] ^= 0x01 // the UDP checksum no longer matches
		if verifyChecksums(bad) == nil {
			t.Errorf("%s: a corrupted payload verified", c.Name)
		}
	}
}

// A relay port outside the configured range is never looked up.
func TestPortRangeSkipsLookup(t *testing.T) {
	requireRoot(t)
	inFreshNetns(t, func() {
		progs, err := LoadPrograms(40000, 40010)
		if err != nil {
			t.Fatal(err)
		}
		defer progs.Close()
		c := relaytest.Cases()[0] // ipv4 hit on port 30000, outside the range
		if err := progs.Upsert(c.Flows[0]); err != nil {
			t.Fatal(err)
		}
		before, _ := progs.Counters()
		ret, _, err := runXDP(progs.XDP, c.In, c.Ifindex)
		if err != nil {
			t.Fatal(err)
		}
		after, _ := progs.Counters()
		if ret != xdpPass {
			t.Errorf("verdict %d, want pass", ret)
		}
		if d := counterDelta(before, after); d["port_range"] != 1 || d["no_flow"] != 0 {
			t.Errorf("counters moved %v, want port_range", d)
		}
	})
}

func TestUpsertValidation(t *testing.T) {
	requireRoot(t)
	progs, err := LoadPrograms(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer progs.Close()
	good := relaytest.Cases()[0].Flows[0]
	mixed := good
	mixed.Dst = relaytest.Callee6B
	if err := progs.Upsert(mixed); !errors.Is(err, relay.ErrUnsupportedFlow) {
		t.Errorf("mixed families: err %v, want ErrUnsupportedFlow", err)
	}
	mixedOut := good
	mixedOut.Out = relaytest.Relay6B
	if err := progs.Upsert(mixedOut); !errors.Is(err, relay.ErrUnsupportedFlow) {
		t.Errorf("mixed out family: err %v, want ErrUnsupportedFlow", err)
	}
	if err := progs.Delete(good.Key); !errors.Is(err, relay.ErrFlowNotFound) {
		t.Errorf("delete absent: err %v, want ErrFlowNotFound", err)
	}
	if _, err := progs.Stats(good.Key); !errors.Is(err, relay.ErrFlowNotFound) {
		t.Errorf("stats absent: err %v, want ErrFlowNotFound", err)
	}

	// Replacing a flow keeps its counters; the round trip keeps its fields.
	if err := progs.Upsert(good); err != nil {
		t.Fatal(err)
	}
	k, _ := keyOf(good.Key)
	var v xdpFlowValue
	if err := progs.flows.Lookup(&k, &v); err != nil {
		t.Fatal(err)
	}
	v.Packets, v.Bytes = 7, 700
	if err := progs.flows.Update(&k, &v, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	moved := good
	moved.Dst = relaytest.CallerA
	if err := progs.Upsert(moved); err != nil {
		t.Fatal(err)
	}
	st, err := progs.Stats(good.Key)
	if err != nil || st.Packets != 7 || st.Bytes != 700 {
		t.Errorf("after replace: %+v, %v; want 7 packets 700 bytes", st, err)
	}
	fs, err := progs.Flows()
	if err != nil || len(fs) != 1 {
		t.Fatalf("flows: %v %v", fs, err)
	}
	if got := fs[0].Flow; fmt.Sprint(got) != fmt.Sprint(moved) {
		t.Errorf("round trip\n got %+v\nwant %+v", got, moved)
	}
}

// TestTranslationSweep runs frames of many payload lengths and header
// values between families through both programs: the output must be the
// frame a translator writes (relaytest.Build with the new addresses, the
// flow label, ID and DF of bpf/relay.h's relay_xlate_header), with
// checksums that verify.
func TestTranslationSweep(t *testing.T) {
	requireRoot(t)
	inFreshNetns(t, func() {
		progs, err := LoadPrograms(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer progs.Close()
		if err := progs.AddTxPort(relaytest.IfOther); err != nil {
			t.Fatal(err)
		}
		to6 := relay.Flow{Key: relay.FlowKey{Local: relaytest.RelayA}, Peer: relaytest.CallerA,
			Out: relaytest.Relay6B, Dst: relaytest.Callee6B,
			SrcMAC: relaytest.MACRelayB, DstMAC: relaytest.MACPeerB, OutIfindex: relaytest.IfOther}
		to4 := relay.Flow{Key: relay.FlowKey{Local: relaytest.Relay6B}, Peer: relaytest.Callee6B,
			Out: relaytest.RelayA, Dst: relaytest.CallerA,
			SrcMAC: relaytest.MACRelayA, DstMAC: relaytest.MACPeerA, OutIfindex: relaytest.IfOther}
		for _, f := range []relay.Flow{to6, to4} {
			if err := progs.Upsert(f); err != nil {
				t.Fatal(err)
			}
		}
		// Payload sizes: each UDP length mod 4 and each number of the
		// 64-byte pieces the kernel sums an IPv4 datagram without a
		// checksum in (bpf/csum.h), up to the most it sums (1492 + 8).
		sizes := []int{0, 1, 2, 3, 4, 5, 17, 56, 57, 58, 59, 60, 160, 161, 999, 1400, 1472, 1492}
		n, tried := 0, 0
		for _, f := range []relay.Flow{to6, to4} {
			for _, size := range sizes {
				for _, hdr := range []struct{ tos, ttl uint8 }{{0, 1}, {0xb8, 64}, {0xff, 255}} {
					in := relaytest.Frame{DstMAC: relaytest.MACRelayA, SrcMAC: relaytest.MACPeerA,
						Src: f.Peer, Dst: f.Key.Local, TOS: hdr.tos, TTL: hdr.ttl, ID: uint16(size), DF: size%2 == 0,
						FlowLabel: uint32(size) * 977 & 0xfffff, Payload: relaytest.RTPPayload(uint16(size), size)[12:]}
					want := in
					want.Src, want.Dst, want.SrcMAC, want.DstMAC = f.Out, f.Dst, f.SrcMAC, f.DstMAC
					want.FlowLabel, want.ID, want.DF = 0, 0, true
					wantB := relaytest.Build(want)
					inputs := [][]byte{relaytest.Build(in)}
					if f.Dst.Addr().Is6() {
						// The same without a UDP checksum, which IPv4 allows:
						// the same frame must come out.
						nocs := relaytest.Build(in)
						binary.BigEndian.PutUint16(nocs[relaytest.EthLen+relaytest.IPv4Len+6:], 0)
						inputs = append(inputs, nocs)
					}
					for i, inB := range inputs {
						for _, hook := range []string{"xdp", "tc"} {
							var (
								ret, verdict uint32
								out          []byte
								err          error
							)
							tried++
							if hook == "xdp" {
								ret, out, err = runXDP(progs.XDP, inB, relaytest.IfIn)
								verdict = xdpRedir
							} else {
								ret, out, err = runTC(progs.TC, inB)
								verdict = tcActRedirect
							}
							name := fmt.Sprintf("%v to %v, %d bytes, tos %#x ttl %d, %s", f.Key.Local, f.Dst, size, hdr.tos, hdr.ttl, hook)
							if i == 1 {
								name += ", no udp checksum"
							}
							if err != nil || ret != verdict {
								t.Errorf("%s: verdict %d, err %v; want %d", name, ret, err, verdict)
								continue
							}
							if !bytes.Equal(out, wantB) {
								t.Errorf("%s: output differs\n got %x\nwant %x", name, out, wantB)
							}
							if err := verifyChecksums(out); err != nil {
								t.Errorf("%s: %v", name, err)
							}
							n++
						}
					}
				}
			}
		}
		if n != tried || tried != 3*len(sizes)*3*2 {
			t.Errorf("%d frames checked of %d, want %d", n, tried, 3*len(sizes)*3*2)
		}
	})
}
