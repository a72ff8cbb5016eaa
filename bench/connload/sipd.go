package connload

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"sipxdp/internal/sipdrun"
	"sipxdp/internal/testcert"
	"sipxdp/sipd/sipconf"
)

// sipd is one sipd run with the address of its TCP or TLS listener.
type sipd struct {
	d   *sipdrun.Sipd
	sip string // host:port
}

// goMem is the part of sipd's runtime.MemStats that the heap profile's
// debug text carries, plus its goroutine count.
type goMem = sipdrun.GoMem

// startSipd starts sipd on sipdrun.Loopback's config with one listener
// of the given transport, users prefix0..prefixN-1, and media off; lets it settle and returns its memory then, the run's baseline.
func startSipd(ctx context.Context, bin, dir, transport string, users map[string]int) (*sipd, memPoint, error) {
	var ub strings.Builder
	for prefix, n := range users {
		for i := range n {
			fmt.Fprintf(&ub, "%s%d password=%s\n", prefix, i, password)
		}
	}
	listen := sipconf.Listen{Transport: "tcp", Addr: "127.0.0.1:0"}
	if transport == "TLS" {
		cert, key, err := testcert.Generate(dir, netip.MustParseAddr("127.0.0.1"))
		if err != nil {
			return nil, memPoint{}, fmt.Errorf("certificate: %w", err)
		}
		listen = sipconf.Listen{Transport: "tls", Addr: "127.0.0.1:0", Cert: cert, Key: key}
	}
	cfg, err := sipdrun.Loopback(listen, "none")
	if err != nil {
		return nil, memPoint{}, err
	}
	d, err := sipdrun.Start(ctx, cfg, sipdrun.Options{Binary: bin, Dir: dir, Users: ub.String()})
	if err != nil {
		return nil, memPoint{}, err
	}
	s := &sipd{d: d, sip: d.SIP.String()}
	settle(ctx, 2*time.Second)
	before, err := measure(s)
	if err != nil {
		_ = d.Stop()
		return nil, memPoint{}, err
	}
	return s, before, nil
}

func (s *sipd) goMem() (goMem, error) { return s.d.GoMem(context.Background(), false) }

// saveHeap writes sipd's heap profile (for go tool pprof) to path.
func (s *sipd) saveHeap(path string) error {
	b, err := s.d.Get(context.Background(), "/debug/pprof/heap")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
