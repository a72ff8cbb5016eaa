// Package relayset spreads calls over a set of NG relays (rtpengine, or
// sipd -relay-only) the way Kamailio's rtpengine module does: weighted
// choice for a new call, the call's later commands to the same relay,
// relays health-checked by ping, and an offer that a relay refuses for
// load (or does not answer) retried on the next relay.
package relayset

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// DefaultPort is the NG port an entry without one gets, as in Kamailio's
// rtpengine module (CPORT in
// https://github.com/kamailio/kamailio/blob/master/src/modules/rtpengine/rtpengine.c).
const DefaultPort = "22222"

// Endpoint is one relay of the set.
type Endpoint struct {
	URL    string // as written, without the weight: "udp:10.0.0.2:2223"
	Addr   string // host:port to send to
	Weight int    // share of new calls; 0: never chosen for new calls
}

// Parse reads relays the way Kamailio's rtpengine_sock takes one set
// (add_rtpengine_socks in
// https://github.com/kamailio/kamailio/blob/master/src/modules/rtpengine/rtpengine.c): entries
// separated by white space, each "udp:host:port" or "udp6:[addr]:port",
// optionally followed by "=weight" (default 1). A missing port is 22222.
// Kamailio's "setid ==" prefixes and ws:// URLs are not taken: sipd
// drives one set over UDP. Unlike Kamailio, which warns and skips a bad
// entry, Parse refuses the whole list so a typo does not silently shrink
// the set.
func Parse(s string) ([]Endpoint, error) {
	var eps []Endpoint
	seen := map[string]bool{}
	total := 0
	for _, f := range strings.Fields(s) {
		ep, err := parseEntry(f)
		if err != nil {
			return nil, err
		}
		if seen[ep.Addr] {
			return nil, fmt.Errorf("relay %q: %s listed twice", f, ep.Addr)
		}
		seen[ep.Addr] = true
		total += ep.Weight
		eps = append(eps, ep)
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("no relays listed")
	}
	if total == 0 {
		return nil, fmt.Errorf("every relay has weight 0: none would take a call")
	}
	return eps, nil
}

func parseEntry(f string) (Endpoint, error) {
	url, weight, hasWeight := strings.Cut(f, "=")
	ep := Endpoint{URL: url, Weight: 1}
	if hasWeight {
		w, err := strconv.Atoi(weight)
		if err != nil || w < 0 || w > 1<<16 {
			return ep, fmt.Errorf("relay %q: weight %q is not a number from 0 to 65536", f, weight)
		}
		ep.Weight = w
	}
	scheme, rest, ok := strings.Cut(url, ":")
	scheme = strings.ToLower(scheme)
	if !ok || (scheme != "udp" && scheme != "udp6") {
		return ep, fmt.Errorf("relay %q: want udp:host:port or udp6:[addr]:port", f)
	}
	host, port := rest, DefaultPort
	if scheme == "udp6" {
		if !strings.HasPrefix(rest, "[") {
			return ep, fmt.Errorf("relay %q: udp6 wants the address in brackets", f)
		}
		end := strings.Index(rest, "]")
		if end < 0 {
			return ep, fmt.Errorf("relay %q: unterminated [", f)
		}
		host = rest[1:end]
		switch tail := rest[end+1:]; {
		case tail == "":
		case strings.HasPrefix(tail, ":"):
			port = tail[1:]
		default:
			return ep, fmt.Errorf("relay %q: unexpected %q after the address", f, tail)
		}
	} else if h, p, ok := strings.Cut(rest, ":"); ok {
		host, port = h, p
	}
	if host == "" || strings.ContainsAny(host, "[]") || (scheme == "udp" && strings.Contains(host, ":")) {
		return ep, fmt.Errorf("relay %q: bad host %q", f, host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return ep, fmt.Errorf("relay %q: bad port %q", f, port)
	}
	ep.Addr = net.JoinHostPort(host, port)
	return ep, nil
}
