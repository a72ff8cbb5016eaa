package netns

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// Packets checksummed by the kernel verify, in both the full and the
// partial form, and a changed byte does not.
func TestCaptureChecksums(t *testing.T) {
	tp := New(t, Config{Prefix: "sxnt-"})
	for _, f := range tp.Families() {
		for _, offload := range []bool{true, false} {
			if err := tp.Caller.SetTxChecksum(CallerIf, offload); err != nil {
				t.Fatal(err)
			}
			dst := netip.AddrPortFrom(f.RelayA, 5555)
			rx, err := tp.Relay.ListenUDP(dst)
			if err != nil {
				t.Fatal(err)
			}
			c, err := tp.Relay.CaptureUDP(RelayA, dst.Port())
			if err != nil {
				t.Fatal(err)
			}
			tx, err := tp.Caller.ListenUDP(netip.AddrPortFrom(f.Caller, 0))
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				if _, err := tx.WriteToUDPAddrPort([]byte("checksum me, odd length"), dst); err != nil {
					t.Fatal(err)
				}
			}
			rx.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 100)
			for i := 0; i < 3; i++ {
				if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
					t.Fatal(err)
				}
			}
			r := c.Stop()
			tx.Close()
			rx.Close()
			want := CaptureResult{Full: 3}
			if offload {
				want = CaptureResult{Partial: 3}
			}
			if r != want {
				t.Errorf("%s, tx offload %v: capture %+v, want %+v", f.Name, offload, r, want)
			}
		}
	}
}

func TestInspectRejectsBadChecksum(t *testing.T) {
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	payload := []byte("hello")
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 1000)
	binary.BigEndian.PutUint16(udp[2:], 2000)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	binary.BigEndian.PutUint16(udp[6:], ^fold(pseudoSum(src, dst, len(udp))+sum(udp)))
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	ip[9] = 17
	copy(ip[12:], src.AsSlice())
	copy(ip[16:], dst.AsSlice())
	frame := append(append(make([]byte, 12), 0x08, 0x00), append(ip, udp...)...)

	c := &Capture{port: 2000}
	c.inspect(frame, false)
	frame[len(frame)-1] ^= 1
	c.inspect(frame, false)
	c.inspect(frame, true) // a partial seed must be the pseudo-header sum
	if c.res.Full != 1 || c.res.Bad != 2 {
		t.Fatalf("capture %+v, want 1 full and 2 bad", c.res)
	}
}

// A frame of any shape is counted or ignored, never a panic.
func FuzzInspect(f *testing.F) {
	f.Add(make([]byte, 14), false)
	f.Add(append(append(make([]byte, 12), 0x08, 0x00), 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0,
		192, 0, 2, 1, 192, 0, 2, 2, 0x03, 0xe8, 0x07, 0xd0, 0, 8, 0, 0), true)
	f.Fuzz(func(t *testing.T, frame []byte, partial bool) {
		c := &Capture{port: 2000}
		c.inspect(frame, partial)
		if c.res.Full+c.res.Partial+c.res.Bad > 1 {
			t.Fatalf("one frame counted as %+v", c.res)
		}
	})
}
