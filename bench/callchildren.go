package bench

import (
	"context"
	"net/netip"
	"time"

	"sipxdp/bench/sipload"
	"sipxdp/internal/childproc"
)

// The calls bench runs its callers and callees as children in their own
// namespaces (see package childproc): "_uas" registers the callees and answers in
// echo mode until told to stop, "_uac" places the calls and reports
// progress once a second.

type uasChildConfig struct {
	Proxy      netip.AddrPort `json:"proxy"`
	Domain     string         `json:"domain"`
	Password   string         `json:"password"`
	Count      int            `json:"count"`
	Addr       netip.Addr     `json:"addr"`
	RTPPort    int            `json:"rtp_port"`
	RTPSockets int            `json:"rtp_sockets"`
}

func runUASChild(ctx context.Context, c uasChildConfig) (any, error) {
	return sipload.RunUAS(ctx, sipload.UASConfig{Proxy: c.Proxy, Domain: c.Domain, Password: c.Password,
		Count: c.Count, SIPAddr: c.Addr, MediaAddr: c.Addr, RTPPort: c.RTPPort, RTPSockets: c.RTPSockets},
		func() { childproc.Emit("ready", nil, nil) })
}

type uacChildConfig struct {
	Proxy      netip.AddrPort `json:"proxy"`
	Domain     string         `json:"domain"`
	Password   string         `json:"password"`
	UASCount   int            `json:"uas_count"`
	Total      int            `json:"total"`
	CPS        float64        `json:"cps"`
	Duration   time.Duration  `json:"duration"`
	Addr       netip.Addr     `json:"addr"`
	RTPPort    int            `json:"rtp_port"`
	RTPSockets int            `json:"rtp_sockets"`
	SRTP       bool           `json:"srtp,omitempty"`
	// Proxies spread the calls over several sipd (scenario proxies).
	Proxies []netip.AddrPort `json:"proxies,omitempty"`
}

func runUACChild(ctx context.Context, c uacChildConfig) (any, error) {
	childproc.Emit("ready", nil, nil)
	return sipload.RunUAC(ctx, sipload.UACConfig{Proxy: c.Proxy, Domain: c.Domain, Password: c.Password,
		UASCount: c.UASCount, Total: c.Total, CPS: c.CPS, Duration: c.Duration, SIPAddr: c.Addr, MediaAddr: c.Addr,
		RTPPort: c.RTPPort, RTPSockets: c.RTPSockets, SRTP: c.SRTP, Proxies: c.Proxies,
		Progress: func(p sipload.Progress) { childproc.Emit("progress", p, nil) }})
}
