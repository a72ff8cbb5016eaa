package nat

import (
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestDetect(t *testing.T) {
	via := func(host string, port int) *sip.ViaHeader {
		return &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: host, Port: port, Params: sip.NewParams()}
	}
	contact := func(host string) *sip.ContactHeader {
		return &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "a", Host: host}}
	}
	src := netip.MustParseAddrPort("203.0.113.7:5060")
	cases := []struct {
		name    string
		via     *sip.ViaHeader
		contact *sip.ContactHeader
		want    Reason
	}{
		{"public and honest", via("203.0.113.7", 5060), contact("203.0.113.7"), 0},
		{"default port", via("203.0.113.7", 0), contact("203.0.113.7"), 0},
		{"private contact", via("203.0.113.7", 5060), contact("192.168.1.2"), ContactPrivate},
		{"cgnat contact", via("203.0.113.7", 5060), contact("100.64.1.1"), ContactPrivate},
		{"ula contact", via("203.0.113.7", 5060), contact("[fd00::1]"), ContactPrivate},
		{"via address differs", via("10.0.0.2", 5060), contact("203.0.113.7"), ViaAddress},
		{"via hostname", via("pc.example.org", 5060), nil, ViaAddress},
		{"port rewritten", via("203.0.113.7", 5070), nil, ViaPort},
		{"classic nat", via("192.168.1.2", 5060), contact("192.168.1.2"), ContactPrivate | ViaAddress},
		{"domain contact", via("203.0.113.7", 5060), contact("example.org"), 0},
	}
	for _, c := range cases {
		if got := Detect(src, c.via, c.contact, "UDP"); got != c.want {
			t.Errorf("%s: got %d want %d", c.name, got, c.want)
		}
	}
}

func TestFixContactAndVia(t *testing.T) {
	c := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "a", Host: "192.168.1.2", Port: 5060}}
	if !FixContact(c, netip.MustParseAddrPort("203.0.113.7:40000")) || c.Address.String() != "sip:a@203.0.113.7:40000" {
		t.Fatalf("fixed = %s", c.Address.String())
	}
	if FixContact(c, netip.MustParseAddrPort("203.0.113.7:40000")) {
		t.Fatal("second fix reported a change")
	}
	v := &sip.ViaHeader{Host: "192.168.1.2", Port: 5060, Params: sip.NewParams()}
	v.Params.Add("rport", "")
	MarkVia(v, netip.MustParseAddrPort("203.0.113.7:40000"))
	if got := v.Params.GetOr("received", ""); got != "203.0.113.7" || v.Params.GetOr("rport", "") != "40000" {
		t.Fatalf("via = %s", v.Value())
	}
	for _, a := range []string{"10.1.2.3", "172.16.0.1", "192.168.0.1", "100.127.255.255", "fe80::1", "fc00::1", "::ffff:10.0.0.1"} {
		if !Private(netip.MustParseAddr(a)) {
			t.Errorf("%s not private", a)
		}
	}
	for _, a := range []string{"8.8.8.8", "100.128.0.1", "2001:db8::1", "127.0.0.1"} {
		if Private(netip.MustParseAddr(a)) {
			t.Errorf("%s private", a)
		}
	}
}
