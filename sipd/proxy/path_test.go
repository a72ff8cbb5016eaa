package proxy

import (
	"strings"
	"testing"
)

func TestFlowToken(t *testing.T) {
	s, other := newRouteSigner([]byte("k1")), newRouteSigner([]byte("k2"))
	tok := s.signFlow("TCP", "192.0.2.7:40312")
	if tr, dest, ok := s.verifyFlow(tok); !ok || tr != "TCP" || dest != "192.0.2.7:40312" {
		t.Fatalf("own token: %q %q %v", tr, dest, ok)
	}
	data, mac, _ := strings.Cut(strings.TrimPrefix(tok, flowPrefix), ".")
	forged := flowPrefix + s.signFlow("TCP", "198.51.100.1:5060")[len(flowPrefix):len(flowPrefix)+len(data)] + "." + mac
	for name, user := range map[string]string{
		"other key":       other.signFlow("TCP", "192.0.2.7:40312"),
		"address swapped": forged,
		"no prefix":       strings.TrimPrefix(tok, flowPrefix),
		"a user name":     "alice",
		"route token":     flowPrefix + data + "." + s.sign("TCP/192.0.2.7:40312", ""),
		"truncated mac":   tok[:len(tok)-2],
		"not an address":  s.signFlow("TCP", "nowhere"),
		"empty":           "",
	} {
		if _, _, ok := s.verifyFlow(user); ok {
			t.Errorf("%s: %q verified", name, user)
		}
	}
}

func FuzzFlowToken(f *testing.F) {
	s := newRouteSigner([]byte("k"))
	f.Add(s.signFlow("UDP", "192.0.2.1:5060"))
	f.Add("sxf-.")
	f.Fuzz(func(t *testing.T, user string) {
		tr, dest, ok := s.verifyFlow(user)
		if ok && s.signFlow(tr, dest) != user {
			t.Fatalf("%q verified as %s %s, which signs differently", user, tr, dest)
		}
	})
}
