package media

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/relay"
)

// TestLegInterfaceByDomain: sipd's media.interface_for domain rules
// (Config.Domain) put the caller's leg on the interface of its From
// domain and the callee's on that of its To domain, over the route
// (Config.Pick); a side whose domain has no rule keeps the route's.
func TestLegInterfaceByDomain(t *testing.T) {
	ifaces := []relay.AddressConfig{
		{Name: "internal", Local: netip.MustParseAddr("10.0.0.1")},
		{Name: "external", Local: netip.MustParseAddr("192.0.2.1")},
	}
	rules := map[string]string{"corp.example": "internal", "itsp.example": "external"}
	for _, tc := range []struct {
		name, from, to string
		want           [2]string
	}{
		{"both domains have rules", "corp.example", "itsp.example", [2]string{"internal", "external"}},
		{"domains are case-insensitive", "CORP.example", "ITSP.Example", [2]string{"internal", "external"}},
		{"the callee's domain has none: the route", "corp.example", "other.example", [2]string{"internal", "route"}},
		{"reversed", "itsp.example", "corp.example", [2]string{"external", "internal"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			c := New(Config{Mode: ModeAll, Engine: f, Interfaces: ifaces,
				Pick:   func(p netip.Addr) relay.LegSpec { return relay.LegSpec{Address: "route", Family: familyOf(p)} },
				Domain: func(h string) string { return rules[h] }})
			body := sdp("10.0.0.10", 1, audio(10000))
			text := fmt.Sprintf("INVITE sip:bob@%[2]s SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK1\r\n"+
				"From: <sip:alice@%[1]s>;tag=%[3]s\r\nTo: <sip:bob@%[2]s>\r\nCall-ID: %[4]s\r\nCSeq: 1 INVITE\r\n"+
				"Contact: <sip:alice@10.0.0.10:5060>\r\nContent-Type: application/sdp\r\nContent-Length: %[5]d\r\n\r\n%[6]s",
				tc.from, tc.to, callerTag, cid, len(body), body)
			m, err := sip.ParseMessage([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Invite(m.(*sip.Request), netip.MustParseAddr("192.0.2.20"), ""); err != nil {
				t.Fatal(err)
			}
			if len(f.specs) != 1 {
				t.Fatalf("%d streams added, want 1", len(f.specs))
			}
			if got := [2]string{f.specs[0][0].Address, f.specs[0][1].Address}; got != tc.want {
				t.Errorf("legs on %q, want %q", got, tc.want)
			}
		})
	}
}

// TestDirectionSurvivesRestore: the interfaces an offer's direction
// chose are saved with the call (State), so after a restart or failover
// (Restore) a stream a later offer adds still goes on them.
func TestDirectionSurvivesRestore(t *testing.T) {
	ifaces := []relay.AddressConfig{
		{Name: "internal", Local: netip.MustParseAddr("10.0.0.1")},
		{Name: "external", Local: netip.MustParseAddr("192.0.2.1")},
	}
	f := newFake()
	c := New(Config{Mode: ModeAll, Engine: f, Interfaces: ifaces})
	one := sdp("10.0.0.10", 1, audio(10000))
	if _, err := c.Offer(cid, callerTag, []byte(one), netip.Addr{}, &Options{Direction: [2]string{"internal", "external"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Answer(cid, callerTag, calleeTag, []byte(sdp("192.0.2.20", 1, audio(20000))), netip.Addr{}, nil); err != nil {
		t.Fatal(err)
	}
	state, ok := c.State(cid)
	if !ok {
		t.Fatal("no state")
	}
	f2 := newFake()
	c2 := New(Config{Mode: ModeAll, Engine: f2, Interfaces: ifaces})
	if err := c2.Restore(cid, state, time.Now()); err != nil {
		t.Fatal(err)
	}
	two := sdp("10.0.0.10", 2, audio(10000), video(10002))
	if _, err := c2.Offer(cid, callerTag, []byte(two), netip.Addr{}, nil); err != nil {
		t.Fatal(err)
	}
	if len(f2.specs) != 1 {
		t.Fatalf("%d streams added after the restore, want the video one", len(f2.specs))
	}
	if got := [2]string{f2.specs[0][0].Address, f2.specs[0][1].Address}; got != [2]string{"internal", "external"} {
		t.Errorf("the new stream's legs on %q, want the saved internal and external", got)
	}
}
