// Package nat detects user agents behind NAT and fixes the addresses they
// advertise, in the manner of RFC 3581 and Kamailio's nathelper tests
// 1, 2 and 16 (together "19").
package nat

import (
	"net/netip"
	"strconv"

	"github.com/emiago/sipgo/sip"
)

// Reason says which test found NAT; zero means none did.
type Reason uint8

// Tests, numbered as nathelper's nat_uac_test flags.
const (
	ContactPrivate Reason = 1  // Contact host is a private address
	ViaAddress     Reason = 2  // source IP differs from the top Via host
	ViaPort        Reason = 16 // source port differs from the top Via port
)

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Private reports addresses that cannot be reached from the public side:
// RFC 1918, RFC 6598 shared space, IPv6 unique-local and link-local.
func Private(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsPrivate() || a.IsLinkLocalUnicast() || (a.Is4() && cgnat.Contains(a))
}

// Detect runs the tests for a message that arrived from src.
func Detect(src netip.AddrPort, via *sip.ViaHeader, contact *sip.ContactHeader, transport string) Reason {
	var r Reason
	if via != nil {
		if h, err := netip.ParseAddr(trimBrackets(via.Host)); err != nil || h.Unmap() != src.Addr().Unmap() {
			r |= ViaAddress
		}
		port := via.Port
		if port == 0 {
			port = sip.DefaultPort(transport)
		}
		if port != int(src.Port()) {
			r |= ViaPort
		}
	}
	if contact != nil && !contact.Address.Wildcard {
		if h, err := netip.ParseAddr(trimBrackets(contact.Address.Host)); err == nil && Private(h) {
			r |= ContactPrivate
		}
	}
	return r
}

func trimBrackets(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}

// FixContact points the Contact at the address the message really came
// from, so in-dialog requests can find the UA again (fix_nated_contact).
func FixContact(contact *sip.ContactHeader, src netip.AddrPort) bool {
	if contact == nil || contact.Address.Wildcard {
		return false
	}
	host := src.Addr().Unmap().String()
	if src.Addr().Unmap().Is6() {
		host = "[" + host + "]"
	}
	port := int(src.Port())
	if contact.Address.Host == host && contact.Address.Port == port {
		return false
	}
	contact.Address.Host = host
	contact.Address.Port = port
	return true
}

// MarkVia adds received and rport to a request's top Via (RFC 3261
// §18.2.1, RFC 3581 §4) so responses return along the flow.
func MarkVia(via *sip.ViaHeader, src netip.AddrPort) {
	if via == nil {
		return
	}
	ip := src.Addr().Unmap().String()
	if via.Host != ip && trimBrackets(via.Host) != ip {
		via.Params.Add("received", ip)
	}
	if v, ok := via.Params.Get("rport"); ok && v == "" {
		via.Params.Add("rport", strconv.Itoa(int(src.Port())))
		via.Params.Add("received", ip)
	}
}
