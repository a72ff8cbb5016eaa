package redistest

import (
	"net/netip"
	"testing"

	"sipxdp/internal/netns"
)

func TestStartStopRestart(t *testing.T) {
	for _, c := range []struct {
		name  string
		start func(t *testing.T) *Server
	}{
		{"loopback", func(t *testing.T) *Server { return Start(t) }},
		{"namespace", func(t *testing.T) *Server {
			// Port 6379 of the namespace's own loopback: taken nowhere
			// else, whatever this host runs.
			return StartIn(t, netns.Lone(t, "sxrd-"), netip.MustParseAddrPort("127.0.0.1:6379"))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.start(t)
			if err := s.Ping(); err != nil {
				t.Fatalf("started but %v", err)
			}
			s.Stop()
			if err := s.Ping(); err == nil {
				t.Fatal("answers PING after Stop")
			}
			s.Stop() // twice: a no-op
			s.Restart(t)
			if err := s.Ping(); err != nil {
				t.Fatalf("restarted but %v", err)
			}
		})
	}
}
