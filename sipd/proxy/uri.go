package proxy

import (
	"net/netip"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// sameRequestURI reports whether the digest uri (as the client wrote it)
// names the Request-URI req (as sipgo parsed it), by the rules of RFC 3261
// §19.1.4 rather than byte for byte: sipgo writes a URI back in its own
// form.
func sameRequestURI(uri string, req *sip.Uri) bool {
	var u sip.Uri
	if err := sip.ParseUri(strings.TrimSpace(uri), &u); err != nil {
		return false
	}
	return equalURI(&u, req)
}

// equalURI compares two URIs as RFC 3261 §19.1.4 compares SIP and SIPS
// URIs: scheme, user and password exactly, host ignoring case, the port
// as written (an absent port is not 5060), the parameters user, ttl,
// method, maddr and transport present in both or neither, any parameter
// present in both equal ignoring case, headers all equal; escapes of
// unreserved characters count as the characters. Other schemes compare
// as strings.
func equalURI(a, b *sip.Uri) bool {
	if !strings.EqualFold(scheme(a), scheme(b)) {
		return false
	}
	if a.Raw() != "" || b.Raw() != "" {
		return a.Raw() == b.Raw()
	}
	if unescapeURI(a.User) != unescapeURI(b.User) || unescapeURI(a.Password) != unescapeURI(b.Password) {
		return false
	}
	if !sameHost(a.Host, b.Host) || a.Port != b.Port {
		return false
	}
	return sameParams(a.UriParams, b.UriParams) && sameHeaders(a.Headers, b.Headers)
}

func scheme(u *sip.Uri) string {
	if u.Scheme == "" {
		return "sip"
	}
	return u.Scheme
}

func sameHost(a, b string) bool {
	a, b = normHost(unescapeURI(a)), normHost(unescapeURI(b))
	if a == b {
		return true
	}
	x, errA := netip.ParseAddr(a)
	y, errB := netip.ParseAddr(b)
	return errA == nil && errB == nil && x == y
}

// mustMatch are the parameters that make URIs differ when only one has
// them.
var mustMatch = map[string]bool{"user": true, "ttl": true, "method": true, "maddr": true, "transport": true}

func lowerParams(ps sip.HeaderParams) map[string]string {
	m := make(map[string]string, len(ps))
	for _, kv := range ps {
		m[strings.ToLower(unescapeURI(kv.K))] = strings.ToLower(unescapeURI(kv.V))
	}
	return m
}

func sameParams(a, b sip.HeaderParams) bool {
	x, y := lowerParams(a), lowerParams(b)
	for k, v := range x {
		w, ok := y[k]
		if !ok {
			if mustMatch[k] {
				return false
			}
			continue
		}
		if v != w {
			return false
		}
	}
	for k := range y {
		if _, ok := x[k]; !ok && mustMatch[k] {
			return false
		}
	}
	return true
}

func sameHeaders(a, b sip.HeaderParams) bool {
	if len(a) != len(b) {
		return false
	}
	x := make(map[string]string, len(a))
	for _, kv := range a {
		x[strings.ToLower(unescapeURI(kv.K))] = unescapeURI(kv.V)
	}
	for _, kv := range b {
		if v, ok := x[strings.ToLower(unescapeURI(kv.K))]; !ok || v != unescapeURI(kv.V) {
			return false
		}
	}
	return true
}

// unescapeURI decodes %XX escapes of characters outside RFC 2396's
// reserved set, which are equivalent to the characters; escapes of
// reserved characters, and broken escapes, stay as written (upper-cased,
// so %3b and %3B agree).
func unescapeURI(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+2 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			b.WriteByte(s[i])
			continue
		}
		c := hi<<4 | lo
		if strings.IndexByte(";/?:@&=+$,", c) >= 0 {
			b.WriteString(strings.ToUpper(s[i : i+3]))
		} else {
			b.WriteByte(c)
		}
		i += 2
	}
	return b.String()
}
