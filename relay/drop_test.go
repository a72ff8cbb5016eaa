package relay

import (
	"errors"
	"testing"
)

// drop-traffic (rtpengine's NG control protocol documentation,
// "drop-traffic"): start marks every flow of the call, in both datapaths,
// streams added later too, and no other call's; stop clears them.
func TestDropMarksEveryFlowOfTheCall(t *testing.T) {
	h := newHarness(t, true, nil)
	aRTP, aRTCP, bRTP, other := callBesideAnother(t, h)
	h.e.lock(aRTP, annA) // in the kernel before the flag: it must follow

	if err := h.e.SetDrop("c", true); err != nil {
		t.Fatal(err)
	}
	p2 := addSecondStream(t, h)
	check := func(when string, want bool) {
		t.Helper()
		for _, tc := range []struct {
			dp    *fakePath
			local string
			want  bool
		}{
			{h.k, aRTP.String(), want},
			{h.s, aRTCP.String(), want},
			{h.s, bRTP.String(), want},
			{h.s, ap(p2.A.Local, p2.A.RTP).String(), want},
			{h.s, ap(other.A.Local, other.A.RTP).String(), false}, // another call
		} {
			f, ok := tc.dp.byLocal(tc.local)
			if !ok || f.Drop != tc.want {
				t.Errorf("%s: %s flow %s: Drop %v (installed %v), want %v", when, tc.dp.name, tc.local, f.Drop, ok, tc.want)
			}
		}
		if fi := flowInfo(t, h, aRTP); fi.Drop != want {
			t.Errorf("%s: listing of A→B: Drop %v, want %v", when, fi.Drop, want)
		}
	}
	check("start", true)
	if err := h.e.SetDrop("c", false); err != nil {
		t.Fatal(err)
	}
	check("stop", false)
	if err := h.e.SetDrop("nope", true); !errors.Is(err, ErrSessionNotFound) {
		t.Fatalf("unknown call: %v", err)
	}
}
