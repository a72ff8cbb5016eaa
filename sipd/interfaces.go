package sipd

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"sipxdp/internal/confload"
	"sipxdp/relay"
)

// interfaceRules is media.interface_for, parsed: which named interface
// (media.addresses name) faces a party, by the party's address or by its
// SIP domain, where the route alone would choose wrong (a peer reached
// through a VPN or a default route, a domain served over another
// network).
type interfaceRules struct {
	prefixes []prefixRule // longest prefix first
	domains  map[string]string
}

type prefixRule struct {
	p    netip.Prefix
	name string
}

// parseInterfaceFor checks and parses media.interface_for: each key is a
// CIDR, an address, or a domain name; each value a media.addresses name.
func parseInterfaceFor(m map[string]string, addrs []AddressConfig) (interfaceRules, []error) {
	var r interfaceRules
	var errs []error
	names := map[string]bool{}
	for _, a := range addrs {
		names[a.Name] = true
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		name := m[k]
		if !names[name] {
			errs = append(errs, confload.Errorf("media.interface_for", "%s: %q: %q is not a name in media.addresses", k, name))
			continue
		}
		if p, err := netip.ParsePrefix(k); err == nil {
			r.prefixes = append(r.prefixes, prefixRule{p.Masked(), name})
			continue
		}
		if a, err := netip.ParseAddr(k); err == nil {
			a = a.Unmap()
			r.prefixes = append(r.prefixes, prefixRule{netip.PrefixFrom(a, a.BitLen()), name})
			continue
		}
		if !isDomain(k) {
			errs = append(errs, confload.Errorf("media.interface_for", "%s: %q: want a CIDR (10.0.0.0/8), an address or a domain name", k))
			continue
		}
		if r.domains == nil {
			r.domains = map[string]string{}
		}
		r.domains[strings.ToLower(k)] = name
	}
	slices.SortStableFunc(r.prefixes, func(a, b prefixRule) int { return cmp.Compare(b.p.Bits(), a.p.Bits()) })
	return r, errs
}

// isDomain reports whether s is a host name: dot-separated labels of
// letters, digits and inner hyphens.
func isDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// forPeer is the rule's interface for an address, "" if none matches.
func (r interfaceRules) forPeer(a netip.Addr) string {
	for _, p := range r.prefixes {
		if p.p.Contains(a) {
			return p.name
		}
	}
	return ""
}

// forDomain is the rule's interface for a domain, "" if none matches
// (media.Config.Domain); nil without domain rules.
func (r interfaceRules) forDomain() func(string) string {
	if len(r.domains) == 0 {
		return nil
	}
	return func(host string) string { return r.domains[strings.TrimSuffix(strings.ToLower(host), ".")] }
}

// spec is the leg spec of interface name for a peer of family fam: the
// name's address of that family, or its other one when it has only that.
func spec(addrs []relay.AddressConfig, name string, fam relay.Family) relay.LegSpec {
	for _, a := range addrs {
		if a.Name == name && (fam == relay.IPv4) == a.Local.Unmap().Is4() {
			return relay.LegSpec{Address: name, Family: fam}
		}
	}
	return relay.LegSpec{Address: name}
}
