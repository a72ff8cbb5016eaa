package ice

import (
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// FuzzHandle feeds arbitrary datagrams to the parse/verify path: it must never panic, must answer only
// datagrams that pion's own checks accept as a Binding request with the leg's credentials, and every answer
// must verify as the browser would check it.
func FuzzHandle(f *testing.F) {
	f.Add(request(f, reqOpts{}).Raw)
	f.Add(request(f, reqOpts{noIntegrity: true}).Raw)
	f.Add(request(f, reqOpts{class: stun.ClassSuccessResponse}).Raw)
	f.Add([]byte{0x80, 0, 0, 1})
	f.Add([]byte{22, 0xfe, 0xfd, 0, 0})
	r, err := NewResponder(creds)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		_ = Demux(pkt)
		got := r.Handle(pkt, src)
		if got.Reason >= numReasons {
			t.Fatalf("reason %d out of range", got.Reason)
		}
		if got.Reason != Answered {
			if got.Response != nil {
				t.Fatal("response without Answered")
			}
			return
		}
		var m stun.Message
		m.Raw = append([]byte(nil), pkt...)
		if err := m.Decode(); err != nil {
			t.Fatalf("answered a datagram pion cannot decode: %v", err)
		}
		if m.Type != stun.BindingRequest {
			t.Fatalf("answered a %v", m.Type)
		}
		if err := m.Check(stun.Fingerprint, stun.NewShortTermIntegrity(creds.LocalPwd)); err != nil {
			t.Fatalf("answered a request that fails pion's checks: %v", err)
		}
		checkResponse(t, got.Response, pkt, netip.AddrPortFrom(src.Addr(), src.Port()))
	})
}
