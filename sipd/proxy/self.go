package proxy

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Listener is one local SIP socket as the proxy advertises it.
type Listener struct {
	Transport string         // UDP, TCP, TLS, WS or WSS
	Addr      netip.AddrPort // bound address
	Host      string         // what goes into Via and Record-Route; empty: Addr's IP
}

func (l Listener) host() string {
	if l.Host != "" {
		return l.Host
	}
	a := l.Addr.Addr().Unmap()
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

// Self answers "is this URI me?" (Kamailio's `myself`): a local domain, or
// one of our sockets' address and port.
type Self struct {
	domains   map[string]bool
	listeners []Listener
	hostPorts map[string]bool
}

// NewSelf builds the matcher from the local domains and the bound sockets.
func NewSelf(domains []string, listeners []Listener) *Self {
	s := &Self{domains: map[string]bool{}, listeners: listeners, hostPorts: map[string]bool{}}
	for _, d := range domains {
		s.domains[strings.ToLower(d)] = true
	}
	for _, l := range listeners {
		port := strconv.Itoa(int(l.Addr.Port()))
		s.hostPorts[strings.ToLower(l.host())+":"+port] = true
		s.hostPorts[normHost(l.Addr.Addr().Unmap().String())+":"+port] = true
		if !l.Addr.Addr().IsUnspecified() {
			s.domains[normHost(l.Addr.Addr().Unmap().String())] = true
		}
		if l.Host != "" {
			s.domains[normHost(l.Host)] = true
		}
	}
	return s
}

func normHost(h string) string {
	h = strings.ToLower(h)
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	return h
}

// LocalDomain reports whether host is a domain we are responsible for.
func (s *Self) LocalDomain(host string) bool { return s.domains[normHost(host)] }

// IsSelf reports whether uri addresses this proxy: its host is local and
// its port, if any, is one we listen on. A bare local domain counts too.
func (s *Self) IsSelf(uri *sip.Uri) bool {
	h := normHost(uri.Host)
	if uri.Port == 0 {
		if s.domains[h] {
			return true
		}
		for _, p := range []int{5060, 5061} {
			if s.hostPorts[h+":"+strconv.Itoa(p)] {
				return true
			}
		}
		return false
	}
	if s.hostPorts[h+":"+strconv.Itoa(uri.Port)] {
		return true
	}
	// A domain with an explicit port is ours only on a port we listen on.
	if s.domains[h] {
		for _, l := range s.listeners {
			if int(l.Addr.Port()) == uri.Port {
				return true
			}
		}
	}
	return false
}

// Listener picks the socket for sending over transport to an address of
// dst's family; ok is false when there is none.
func (s *Self) Listener(transport string, dst netip.Addr) (Listener, bool) {
	var fallback *Listener
	for i, l := range s.listeners {
		if !strings.EqualFold(l.Transport, transport) {
			continue
		}
		if !dst.IsValid() || l.Addr.Addr().Unmap().Is4() == dst.Unmap().Is4() {
			return l, true
		}
		if fallback == nil {
			fallback = &s.listeners[i]
		}
	}
	if fallback != nil {
		return *fallback, true
	}
	return Listener{}, false
}

// Listeners returns the sockets.
func (s *Self) Listeners() []Listener { return s.listeners }

// UserKey is the user part of a SIP URI as sipd compares it: escapes of
// characters the user part may carry literally are decoded (%63arol is
// carol, RFC 3261 §19.1.4), and the remaining escapes have upper-case hex.
// sipgo keeps the user part as sent, so without this one user could
// register under several spellings and be unreachable under the others.
func UserKey(u string) string {
	if !strings.Contains(u, "%") {
		return u
	}
	var b strings.Builder
	for i := 0; i < len(u); i++ {
		c := u[i]
		if c != '%' || i+2 >= len(u) {
			b.WriteByte(c)
			continue
		}
		hi, ok1 := unhex(u[i+1])
		lo, ok2 := unhex(u[i+2])
		if !ok1 || !ok2 {
			b.WriteByte(c)
			continue
		}
		d := hi<<4 | lo
		if userLiteral(d) {
			b.WriteByte(d)
		} else {
			b.WriteString(strings.ToUpper(u[i : i+3]))
		}
		i += 2
	}
	return b.String()
}

// userLiteral reports whether c may appear unescaped in a SIP URI's user
// part: unreserved or user-unreserved (RFC 3261 §25.1).
func userLiteral(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_.!~*'()&=+$,;?/", c) >= 0
}
