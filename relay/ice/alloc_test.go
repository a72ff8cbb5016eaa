package ice

import "testing"

// TestHandleAllocs bounds the garbage per STUN datagram. Answers are rare (a few per leg, then a consent check
// every few seconds), but refusals are what a flood of forged requests costs, so they must stay cheap. The
// bounds leave room for pion/stun's own HMAC and builder allocations, which this package does not control.
func TestHandleAllocs(t *testing.T) {
	r, err := NewResponder(creds)
	if err != nil {
		t.Fatal(err)
	}
	req := request(t, reqOpts{}).Raw
	bad := request(t, reqOpts{pwd: "notthepasswordnotthepassword"}).Raw
	wrongUser := request(t, reqOpts{user: "RlyU:Evil"}).Raw
	for _, tt := range []struct {
		name string
		pkt  []byte
		max  float64
	}{
		{"answered", req, 10},
		{"bad integrity", bad, 2},
		{"wrong username", wrongUser, 0},
		{"rtp", []byte{0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1}, 0},
	} {
		if n := testing.AllocsPerRun(100, func() { r.Handle(tt.pkt, src) }); n > tt.max {
			t.Errorf("%s: %.0f allocations per datagram, want at most %.0f", tt.name, n, tt.max)
		}
	}
}
