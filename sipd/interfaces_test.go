package sipd

import (
	"errors"
	"strings"
	"testing"
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
