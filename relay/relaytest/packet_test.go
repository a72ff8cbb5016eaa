package relaytest_test

import (
	"errors"
	"net/netip"
	"testing"

	"sipxdp/relay/relaytest"
)

func TestBuildParseRoundTrip(t *testing.T) {
	for _, c := range relaytest.Cases() {
		if c.Out == nil {
			continue
		}
		f, err := relaytest.Parse(c.Out)
		if err != nil {
			t.Fatalf("%s: parse output: %v", c.Name, err)
		}
		if !relaytest.ValidChecksums(c.Out) {
			t.Errorf("%s: output checksums do not verify", c.Name)
		}
		if f.Src.Port() == 0 || f.Dst.Port() == 0 {
			t.Errorf("%s: ports lost: %v -> %v", c.Name, f.Src, f.Dst)
		}
	}
}

func TestParseRejects(t *testing.T) {
	want := map[string]error{
		relaytest.ReasonFragment:  relaytest.ErrFragment,
		relaytest.ReasonIPOptions: relaytest.ErrIPOptions,
		relaytest.ReasonTruncated: relaytest.ErrTruncated,
		relaytest.ReasonNotUDP:    relaytest.ErrNotUDP,
		relaytest.ReasonNotIP:     relaytest.ErrNotIP,
	}
	for _, c := range relaytest.Cases() {
		if c.User != relaytest.Pass {
			continue
		}
		_, err := relaytest.Parse(c.In)
		if !errors.Is(err, want[c.KernelReason]) {
			t.Errorf("%s: Parse err = %v, want %v", c.Name, err, want[c.KernelReason])
		}
	}
}

func TestChecksumKnownValue(t *testing.T) {
	// A datagram whose checksum was computed by hand with the RFC 1071
	// algorithm: pseudo-header 10.0.0.1 -> 10.0.0.2, ports 1 -> 2, payload "ab".
	seg := []byte{0, 1, 0, 2, 0, 10, 0, 0, 'a', 'b'}
	got := relaytest.UDPChecksum(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), seg)
	// pseudo 0a00+0001+0a00+0002+0011+000a, header 0001+0002+000a, data 6162: 0x758d
	if want := ^uint16(0x758d); got != want {
		t.Fatalf("checksum = %#04x, want %#04x", got, want)
	}
}

func FuzzParse(f *testing.F) {
	for _, c := range relaytest.Cases() {
		f.Add(c.In)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := relaytest.Parse(b)
		if err != nil {
			return
		}
		// Whatever parses must rebuild into a frame that parses to the
		// same addresses and payload.
		again, err := relaytest.Parse(relaytest.Build(fr))
		if err != nil {
			t.Fatalf("rebuilt frame does not parse: %v", err)
		}
		if again.Src != fr.Src || again.Dst != fr.Dst || string(again.Payload) != string(fr.Payload) {
			t.Fatalf("round trip changed frame: %+v vs %+v", again, fr)
		}
	})
}
