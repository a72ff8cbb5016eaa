package sipserver

import (
	"bytes"
	"net/netip"
	"strconv"

	"github.com/emiago/sipgo/sip"

	"sipxdp/sipd/proxy"
)

// The keep-alive fast path answers NOTIFY and OPTIONS addressed to the
// proxy itself without the general parser: the ITSP model sends one per
// user every 15 s, tens of thousands a second, and a full parse with its
// allocations cost more than everything else for them together. The
// scanner below handles the plain form UAs send; anything unusual (folded
// or combined headers, a To tag, a Route, a body) returns nil and takes the
// normal path, which gives the same answer more slowly.

var crlfBytes = []byte("\r\n")

var headerParsers = sip.HeadersParser(sip.DefaultHeadersParser())

// headerName maps the lower-case full and compact names the scanner cares
// about to one canonical name.
func headerName(b []byte) string {
	switch string(bytes.ToLower(b)) {
	case "via", "v":
		return "Via"
	case "from", "f":
		return "From"
	case "to", "t":
		return "To"
	case "call-id", "i":
		return "Call-ID"
	case "cseq":
		return "CSeq"
	case "content-length", "l":
		return "Content-Length"
	case "route":
		return "Route"
	case "max-forwards":
		return "Max-Forwards"
	case "proxy-require":
		return "Proxy-Require"
	}
	return ""
}

// keepaliveAnswer returns the 200 OK for a keep-alive datagram from src,
// or nil when data is not one this scanner is sure about.
func keepaliveAnswer(data []byte, src netip.AddrPort, self *proxy.Self, toTag string) []byte {
	var method string
	switch {
	case bytes.HasPrefix(data, []byte("OPTIONS ")):
		method = "OPTIONS"
	case bytes.HasPrefix(data, []byte("NOTIFY ")):
		method = "NOTIFY"
	default:
		return nil
	}
	end := bytes.Index(data, crlfBytes)
	if end < 0 {
		return nil
	}
	line := data[len(method)+1 : end]
	if bytes.IndexByte(line, '\n') >= 0 {
		return nil
	}
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 || string(line[sp+1:]) != "SIP/2.0" {
		return nil
	}
	var ruri sip.Uri
	if err := sip.ParseUri(string(line[:sp]), &ruri); err != nil || ruri.User != "" || !self.IsSelf(&ruri) {
		return nil
	}
	var vias [][]byte
	var from, to, callID, cseq []byte
	rest := data[end+2:]
	for {
		end = bytes.Index(rest, crlfBytes)
		if end < 0 {
			return nil
		}
		h := rest[:end]
		rest = rest[end+2:]
		if len(h) == 0 {
			break
		}
		if h[0] == ' ' || h[0] == '\t' || bytes.ContainsAny(h, "\r\n") {
			return nil // folded header, or a bare CR or LF
		}
		colon := bytes.IndexByte(h, ':')
		if colon <= 0 {
			return nil
		}
		name := bytes.TrimSpace(h[:colon])
		// Headers the general parser validates are validated the same way,
		// so this path never answers what the slow path would reject.
		if _, ok := headerParsers[string(bytes.ToLower(name))]; ok {
			if _, err := headerParsers.ParseHeader(nil, h); err != nil {
				return nil
			}
		}
		value := bytes.TrimSpace(h[colon+1:])
		switch headerName(name) {
		case "Via":
			if bytes.IndexByte(value, ',') >= 0 {
				return nil
			}
			vias = append(vias, value)
		case "From":
			if from != nil || !bytes.Contains(bytes.ToLower(value), []byte(";tag=")) {
				return nil
			}
			from = value
		case "To":
			if to != nil || bytes.Contains(bytes.ToLower(value), []byte("tag=")) {
				return nil
			}
			to = value
		case "Call-ID":
			if callID != nil || len(value) == 0 {
				return nil
			}
			callID = value
		case "CSeq":
			if cseq != nil {
				return nil
			}
			cseq = value
		case "Content-Length":
			if string(value) != "0" {
				return nil
			}
		case "Max-Forwards":
			if n, err := strconv.Atoi(string(value)); err != nil || n < 0 || n > 255 {
				return nil
			}
		case "Route", "Proxy-Require":
			return nil
		}
	}
	if len(rest) != 0 || len(vias) == 0 || from == nil || to == nil || callID == nil || cseq == nil {
		return nil
	}
	num, m, ok := bytes.Cut(cseq, []byte(" "))
	if !ok || string(bytes.TrimSpace(m)) != method {
		return nil
	}
	if n, err := strconv.ParseUint(string(num), 10, 32); err != nil || n > 1<<31-1 {
		return nil
	}
	top, ok := markVia(vias[0], src)
	if !ok {
		return nil
	}
	out := make([]byte, 0, len(data)+64)
	out = append(out, "SIP/2.0 200 OK\r\nVia: "...)
	out = append(out, top...)
	for _, v := range vias[1:] {
		out = append(out, "\r\nVia: "...)
		out = append(out, v...)
	}
	out = append(out, "\r\nFrom: "...)
	out = append(out, from...)
	out = append(out, "\r\nTo: "...)
	out = append(out, to...)
	out = append(out, ";tag="...)
	out = append(out, toTag...)
	out = append(out, "\r\nCall-ID: "...)
	out = append(out, callID...)
	out = append(out, "\r\nCSeq: "...)
	out = append(out, cseq...)
	out = append(out, "\r\nContent-Length: 0\r\n\r\n"...)
	return out
}

// markVia adds received and rport (forced, as the core does) to a raw top
// Via value, dropping any the sender put there.
func markVia(v []byte, src netip.AddrPort) ([]byte, bool) {
	if !bytes.HasPrefix(v, []byte("SIP/2.0/UDP ")) {
		return nil, false
	}
	parts := bytes.Split(v, []byte(";"))
	sentBy := bytes.TrimSpace(parts[0][len("SIP/2.0/UDP "):])
	if len(sentBy) == 0 || bytes.ContainsAny(sentBy, " \t") {
		return nil, false
	}
	out := make([]byte, 0, len(v)+48)
	out = append(out, "SIP/2.0/UDP "...)
	out = append(out, sentBy...)
	branch := false
	for _, p := range parts[1:] {
		p = bytes.TrimSpace(p)
		k, val, _ := bytes.Cut(p, []byte("="))
		switch string(bytes.ToLower(bytes.TrimSpace(k))) {
		case "rport", "received":
			continue
		case "branch":
			branch = len(bytes.TrimSpace(val)) > 0
		}
		out = append(out, ';')
		out = append(out, p...)
	}
	if !branch {
		return nil, false
	}
	out = append(out, ";received="...)
	out = append(out, src.Addr().Unmap().String()...)
	out = append(out, ";rport="...)
	out = strconv.AppendUint(out, uint64(src.Port()), 10)
	return out, true
}
