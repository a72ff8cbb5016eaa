package sipd

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"sipxdp/relay"
)

// TestAddressesAsInterfaces: media.addresses are rtpengine's logical
// interfaces (rtpengine(8), INTERFACES): a name takes one address per
// family, and one local address may serve several names when they share
// its port range.
func TestAddressesAsInterfaces(t *testing.T) {
	a := func(name, local, adv string, lo, hi int) AddressConfig {
		return AddressConfig{Name: name, Local: local, Advertised: adv, PortMin: lo, PortMax: hi}
	}
	tests := []struct {
		name  string
		addrs []AddressConfig
		want  []string // substrings of the errors, one per error; none: valid
	}{
		{"one address", []AddressConfig{a("default", "10.0.0.1", "", 20000, 29999)}, nil},
		{"internal and external on two addresses", []AddressConfig{
			a("internal", "10.0.0.1", "", 20000, 29999), a("external", "203.0.113.5", "", 20000, 29999)}, nil},
		{"one local address, advertised differently per interface", []AddressConfig{
			a("internal", "10.3.1.6", "", 20000, 29999), a("external", "10.3.1.6", "203.0.113.6", 20000, 29999)}, nil},
		{"a name with one address per family", []AddressConfig{
			a("external", "203.0.113.5", "", 20000, 29999), a("external", "2001:db8::5", "", 20000, 29999)}, nil},
		{"a name with two IPv4 addresses", []AddressConfig{
			a("external", "203.0.113.5", "", 20000, 29999), a("external", "203.0.113.6", "", 20000, 29999)},
			[]string{`media.addresses[1].name "external" already has an IPv4 address (media.addresses[0])`}},
		{"a shared local address with two ranges", []AddressConfig{
			a("internal", "10.3.1.6", "", 20000, 29999), a("external", "10.3.1.6", "203.0.113.6", 30000, 39999)},
			[]string{`media.addresses[1]: local address 10.3.1.6 is also in "internal" (media.addresses[0]) with ports 20000-29999`}},
		{"the same local address twice in one name", []AddressConfig{
			a("internal", "10.3.1.6", "", 20000, 29999), a("internal", "10.3.1.6", "", 20000, 29999)},
			[]string{`media.addresses[1].name "internal" already has an IPv4 address`, `media.addresses[1].local 10.3.1.6 is already in "internal"`}},
		{"no name", []AddressConfig{a("", "10.0.0.1", "", 20000, 29999)}, []string{"media.addresses[0].name is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := validateAddresses(tt.addrs)
			if len(errs) != len(tt.want) {
				t.Fatalf("errors %v, want %d: %q", errors.Join(errs...), len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d = %v, want it to contain %q", i, errs[i], w)
				}
			}
		})
	}
}

// TestInterfaceFor: media.interface_for keys are CIDRs, addresses or
// domains, values media.addresses names; an address rule beats the
// route, the longest prefix first, and a name with no address of the
// peer's family gives any family.
func TestInterfaceFor(t *testing.T) {
	addrs := []AddressConfig{
		{Name: "internal", Local: "10.0.0.1", PortMin: 20000, PortMax: 29999},
		{Name: "external", Local: "192.0.2.1", PortMin: 20000, PortMax: 29999},
		{Name: "external", Local: "2001:db8::1", PortMin: 20000, PortMax: 29999},
	}
	bad := []struct {
		name string
		m    map[string]string
		want string
	}{
		{"unknown name", map[string]string{"10.0.0.0/8": "dmz"}, `media.interface_for: "10.0.0.0/8": "dmz" is not a name in media.addresses`},
		{"not a CIDR, address or domain", map[string]string{"10.0.0.0/33": "internal"}, `media.interface_for: "10.0.0.0/33": want a CIDR (10.0.0.0/8), an address or a domain name`},
		{"a domain with a space", map[string]string{"itsp example": "external"}, "want a CIDR"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := parseInterfaceFor(tc.m, addrs)
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
				t.Fatalf("errors %v, want one containing %q", errs, tc.want)
			}
		})
	}
	rules, errs := parseInterfaceFor(map[string]string{
		"10.0.0.0/8": "internal", "10.9.0.0/16": "external", "198.51.100.7": "internal",
		"fd00::/8": "internal", "ITSP.example": "external",
	}, addrs)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	ras := MediaOptions(MediaConfig{Addresses: addrs}, nil).Addresses
	pick := legPicker(ras, rules)
	for _, tc := range []struct {
		peer string
		want relay.LegSpec
	}{
		{"10.1.2.3", relay.LegSpec{Address: "internal", Family: relay.IPv4}},
		{"10.9.2.3", relay.LegSpec{Address: "external", Family: relay.IPv4}}, // the longer prefix
		{"198.51.100.7", relay.LegSpec{Address: "internal", Family: relay.IPv4}},
		{"fd00::5", relay.LegSpec{Address: "internal"}}, // internal has no IPv6: its IPv4 address
	} {
		if got := pick(netip.MustParseAddr(tc.peer)); got != tc.want {
			t.Errorf("pick(%s) = %+v, want %+v", tc.peer, got, tc.want)
		}
	}
	dom := rules.forDomain()
	if dom == nil || dom("itsp.EXAMPLE") != "external" || dom("itsp.example.") != "external" || dom("other.example") != "" {
		t.Errorf("domain rules: itsp.EXAMPLE %q, other.example %q", dom("itsp.EXAMPLE"), dom("other.example"))
	}
}
