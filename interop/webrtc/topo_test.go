package webrtc

import "net/netip"

// Namespaces and addresses of this package's topologies: a prefix of
// their own, so a run removes what a crashed run of this package left,
// and networks no other package's tests use.
const nsPrefix = "sxwr-"

var net4 = netip.MustParsePrefix("10.213.0.0/16")
