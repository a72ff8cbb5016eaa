package proxy

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestEqualURI: the examples of RFC 3261 §19.1.4 and the cases a digest
// uri meets after sipgo has rewritten the Request-URI.
func TestEqualURI(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		// §19.1.4, equivalent.
		{"sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp", true},
		{"sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5", true},
		{"sip:carol@chicago.com", "sip:carol@chicago.com;security=on", true},
		{"sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on", true},
		{"sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com", "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com", true},
		{"sip:alice@atlanta.com?subject=project%20x&priority=urgent", "sip:alice@atlanta.com?priority=urgent&subject=project%20x", true},
		// §19.1.4, not equivalent.
		{"SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP", false},
		{"sip:bob@biloxi.com", "sip:bob@biloxi.com:5060", false},
		{"sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp", false},
		{"sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp", false},
		{"sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting", false},
		{"sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4", false},
		{"sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off", false},
		// Others.
		{"sip:bob@example.org", "sips:bob@example.org", false},
		{"sip:bob@example.org", "sip:Bob@example.org", false},
		{"sip:bob@[2001:db8::1]:5060", "sip:bob@[2001:DB8:0::1]:5060", true},
		{"sip:bob@example.org;user=phone", "sip:bob@example.org", false},
		{"sip:bob@example.org;lr", "sip:bob@example.org", true},
		{"sip:a%3bb@example.org", "sip:a%3Bb@example.org", true},
		{"tel:+15551234567", "tel:+15551234567", true},
		{"tel:+15551234567", "tel:+15551234568", false},
	}
	for _, c := range cases {
		var a, b sip.Uri
		if err := sip.ParseUri(c.a, &a); err != nil {
			t.Fatalf("%s: %v", c.a, err)
		}
		if err := sip.ParseUri(c.b, &b); err != nil {
			t.Fatalf("%s: %v", c.b, err)
		}
		if got := equalURI(&a, &b); got != c.want {
			t.Errorf("%s vs %s: %v, want %v", c.a, c.b, got, c.want)
		}
		if got := equalURI(&b, &a); got != c.want {
			t.Errorf("%s vs %s: %v, want %v", c.b, c.a, got, c.want)
		}
		// The digest uri against the Request-URI as sipgo writes it back.
		var re sip.Uri
		if err := sip.ParseUri(b.String(), &re); err != nil {
			t.Fatalf("reparse %s: %v", b.String(), err)
		}
		if got := sameRequestURI(c.a, &re); got != c.want {
			t.Errorf("digest uri %s vs Request-URI %s: %v, want %v", c.a, re.String(), got, c.want)
		}
	}
	var r sip.Uri
	sip.ParseUri("sip:bob@example.org", &r)
	for _, bad := range []string{"", "bob@example.org", "sip:"} {
		if sameRequestURI(bad, &r) {
			t.Errorf("digest uri %q matched", bad)
		}
	}
}
