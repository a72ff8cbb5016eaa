package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sipxdp/relay"
	"sipxdp/relay/relaytest"
)

// These tests need no privileges: they cover the Go side of the contract.

func TestCounterNamesCoverFixtureReasons(t *testing.T) {
	names, err := CounterNames()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	for _, c := range relaytest.Cases() {
		if c.Kernel == relaytest.Pass && !have[c.KernelReason] {
			t.Errorf("fixture %q passes with reason %q, which has no kernel counter (have %v)", c.Name, c.KernelReason, names)
		}
	}
	for _, v := range []string{"tx", "redirect", "pass", "aborted"} {
		if !have[v] {
			t.Errorf("no verdict counter %q", v)
		}
	}
}

func TestFlowConversionRoundTrip(t *testing.T) {
	learning := relay.Flow{Key: relay.FlowKey{Local: relaytest.RelayA}, Learning: true,
		Out: relaytest.RelayB, Dst: relaytest.CalleeB}
	for _, c := range relaytest.Cases() {
		for _, f := range c.Flows {
			// Userspace-only settings the kernel does not keep: it passes a
			// learning flow's packets up, and checks a locked one's peer.
			f.Strict, f.Announced, f.Hints, f.Rank, f.LearnUntil, f.NoCandidates = false, netip.AddrPort{}, [2]netip.Addr{}, relay.RankNone, time.Time{}, false
			k, err := keyOf(f.Key)
			if err != nil {
				t.Fatal(err)
			}
			v, err := valueOf(f, true)
			if err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			got := flowOf(k, &v)
			if fmt.Sprint(got) != fmt.Sprint(f) {
				t.Errorf("%s:\n got %+v\nwant %+v", c.Name, got, f)
			}
		}
	}
	k, _ := keyOf(learning.Key)
	v, err := valueOf(learning, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := flowOf(k, &v); !got.Learning || got.Peer.IsValid() {
		t.Errorf("learning flow without peer came back as %+v", got)
	}
	// Network order on the wire: port 30000 = 0x7530 is stored as 75 30.
	if k.Port != 0x3075 || k.Addr[10] != 0xff || k.Addr[12] != 192 {
		t.Errorf("key layout %+v", k)
	}
}

func TestFlowValidation(t *testing.T) {
	base := relaytest.Cases()[0].Flows[0]
	mod := func(fn func(*relay.Flow)) relay.Flow { f := base; fn(&f); return f }
	for name, f := range map[string]relay.Flow{
		"dst v6":  mod(func(f *relay.Flow) { f.Dst = relaytest.Callee6B }),
		"out v6":  mod(func(f *relay.Flow) { f.Out = relaytest.Relay6B }),
		"key v6":  mod(func(f *relay.Flow) { f.Key.Local = relaytest.Relay6A }),
		"peer v6": mod(func(f *relay.Flow) { f.Peer = relaytest.Caller6A }),
		"no out":  mod(func(f *relay.Flow) { f.Out = netip.AddrPort{} }),
		"no peer": mod(func(f *relay.Flow) { f.Peer = netip.AddrPort{} }),
	} {
		for _, cross := range []bool{false, true} {
			if _, err := valueOf(f, cross); !errors.Is(err, relay.ErrUnsupportedFlow) {
				t.Errorf("%s (cross-family programs %v): err %v, want ErrUnsupportedFlow", name, cross, err)
			}
		}
	}
	// Out and Dst of the other family than Key: only programs that
	// translate take it, and the flag tells them to.
	cross := mod(func(f *relay.Flow) { f.Out, f.Dst = relaytest.Relay6B, relaytest.Callee6B })
	if _, err := valueOf(cross, false); !errors.Is(err, relay.ErrUnsupportedFlow) {
		t.Errorf("cross-family without the capability: err %v, want ErrUnsupportedFlow", err)
	}
	if v, err := valueOf(cross, true); err != nil || v.Flags&flagXlate == 0 {
		t.Errorf("cross-family with the capability: flags %#x, err %v; want flagXlate", v.Flags, err)
	}
	if v, err := valueOf(base, true); err != nil || v.Flags&flagXlate != 0 {
		t.Errorf("same family: flags %#x, err %v; want no flagXlate", v.Flags, err)
	}
	// A v4-mapped IPv6 address is IPv4 to the kernel.
	mapped := mod(func(f *relay.Flow) { f.Dst = netip.AddrPortFrom(netip.AddrFrom16(f.Dst.Addr().As16()), 5000) })
	if _, err := valueOf(mapped, false); err != nil {
		t.Errorf("v4-mapped dst: %v", err)
	}
}

func TestHookCandidates(t *testing.T) {
	for _, c := range []struct {
		mode  string
		ifs   []iface
		want  string
		inWhy string
	}{
		{"auto", []iface{{name: "eth0"}}, "xdp,xdp-generic,tc", "native XDP first"},
		{"auto", []iface{{name: "eth0"}, {name: "veth1", isVeth: true}}, "tc,xdp-generic", "CHECKSUM_PARTIAL"},
		{"", nil, "", ""},
		{"xdp-generic", []iface{{name: "veth1", isVeth: true}}, "xdp-generic", "configured"},
		{"auto", []iface{{name: "lo", isLocal: true}}, "tc,xdp-generic", "lo is loopback"},
		{"tc", nil, "tc", "configured"},
	} {
		if c.mode == "" {
			if _, _, err := candidates("bogus", nil); err == nil {
				t.Error("unknown mode accepted")
			}
			continue
		}
		got, why, err := candidates(c.mode, c.ifs)
		if err != nil || strings.Join(got, ",") != c.want || !strings.Contains(why, c.inWhy) {
			t.Errorf("candidates(%s, %v) = %v, %q, %v; want %s with %q", c.mode, c.ifs, got, why, err, c.want, c.inWhy)
		}
	}
}
