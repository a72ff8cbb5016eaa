package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/registrar"
)

// Path (RFC 3327) for a shared location table. A phone behind NAT, or on
// a TCP, TLS or WebSocket connection, is reachable only through the sipd
// it registered with: its pinhole or its connection is there. That node
// stores the binding with a Path naming itself, whose user part is a flow
// token: the phone's address and transport, signed with a key derived
// from the route key that every node shares. Another node finding the
// binding sends the request to the Path with it as a Route; the first
// node pops its Route, checks the token and forwards the request over
// the phone's flow, as it would its own call.

// flowPrefix starts a flow token, telling it from any user name.
const flowPrefix = "sxf-"

func (s routeSigner) flowMAC(transport, received string) []byte {
	// A key of its own: a flow token and a route token are never each
	// other, whatever Call-ID and tag a caller picks.
	k := hmac.New(sha256.New, s.key)
	k.Write([]byte("sipxdp path flow token"))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write([]byte(transport))
	m.Write([]byte{0})
	m.Write([]byte(received))
	return m.Sum(nil)[:tokenBytes]
}

// signFlow returns the flow token of received over transport.
func (s routeSigner) signFlow(transport, received string) string {
	return flowPrefix + base64.RawURLEncoding.EncodeToString([]byte(transport+"/"+received)) + "." +
		base64.RawURLEncoding.EncodeToString(s.flowMAC(transport, received))
}

// verifyFlow reads a flow token: the transport and address it names, if
// one of the nodes signed it.
func (s routeSigner) verifyFlow(user string) (transport, received string, ok bool) {
	rest, ok := strings.CutPrefix(user, flowPrefix)
	if !ok {
		return "", "", false
	}
	data, mac, ok := strings.Cut(rest, ".")
	if !ok {
		return "", "", false
	}
	// Strict: one token per flow, as the fuzz target checks.
	d, err1 := base64.RawURLEncoding.Strict().DecodeString(data)
	m, err2 := base64.RawURLEncoding.Strict().DecodeString(mac)
	if err1 != nil || err2 != nil {
		return "", "", false
	}
	transport, received, ok = strings.Cut(string(d), "/")
	if !ok || !hmac.Equal(m, s.flowMAC(transport, received)) {
		return "", "", false
	}
	if _, err := netip.ParseAddrPort(received); err != nil {
		return "", "", false
	}
	return transport, received, true
}

// pathFor is the Path this node stores with a binding over flow, which
// came in from src; empty when the binding needs none (UDP without NAT:
// any node reaches it) or no Path is kept.
func (p *Proxy) pathFor(flow registrar.Flow, src netip.AddrPort) string {
	if !p.cfg.Path || (!flow.NATed && !sip.IsReliable(flow.Transport)) {
		return ""
	}
	l, ok := p.self.Listener(flow.Transport, src.Addr())
	if !ok {
		return ""
	}
	// Other nodes reach this one over the listener's transport when it
	// is UDP, TCP or TLS; a WebSocket listener is for browsers, so they
	// come over UDP, or TCP if that is all there is.
	lt := l.Transport
	if isWebSocket(lt) {
		lt = "UDP"
		if u, ok := p.self.Listener("UDP", src.Addr()); ok {
			l = u
		} else if u, ok := p.self.Listener("TCP", src.Addr()); ok {
			l, lt = u, "TCP"
		} else {
			return ""
		}
	}
	u := sip.Uri{Scheme: "sip", User: p.routes.signFlow(flow.Transport, flow.Received), Host: l.host(),
		Port: int(l.Addr.Port()), UriParams: sip.NewParams()}
	u.UriParams.Add("transport", strings.ToLower(lt))
	u.UriParams.Add("lr", "")
	return "<" + u.String() + ">"
}

// pathTarget is the target for a binding stored by another node with a
// Path: the contact, reached through that node. ok is false when the
// binding has no Path, or names this node (then its flow is ours).
func (p *Proxy) pathTarget(b registrar.Binding, contact sip.Uri) (target, bool) {
	if b.Path == "" {
		return target{}, false
	}
	var h sip.RouteHeader
	params := sip.NewParams()
	if _, err := sip.ParseAddressValue(b.Path, &h.Address, &params); err != nil || h.Address.Host == "" {
		return target{}, false
	}
	if p.self.IsSelf(&h.Address) {
		return target{}, false
	}
	transport := uriTransport(&h.Address)
	port := h.Address.Port
	if port == 0 {
		port = sip.DefaultPort(transport)
	}
	dest := net.JoinHostPort(normHost(h.Address.Host), strconv.Itoa(port))
	return target{uri: contact, dest: dest, transport: transport, nated: b.NATed, route: &h}, true
}
