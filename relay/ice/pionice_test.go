package ice

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	pionice "github.com/pion/ice/v4"
)

// counts is what the relay side saw.
type counts struct {
	answered, nominated, refused, badIntegrity atomic.Int64
}

// dialRelay runs pion/ice's full agent as the controlling side (a browser's role) against a Responder behind
// a loopback UDP socket, and dials it with pwd (the relay's, or a wrong one). It returns Dial's result and what
// the relay side counted; everything is closed when the test ends.
func dialRelay(t *testing.T, pwd func(Creds) string, timeout time.Duration) (*pionice.Conn, *counts, error) {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	agent, err := pionice.NewAgentWithOptions(
		pionice.WithNetworkTypes([]pionice.NetworkType{pionice.NetworkTypeUDP4}),
		pionice.WithCandidateTypes([]pionice.CandidateType{pionice.CandidateTypeHost}),
		pionice.WithIncludeLoopback(),
		pionice.WithInterfaceFilter(func(name string) bool { return name == "lo" }),
	)
	if err != nil {
		t.Fatal(err)
	}
	browserUfrag, _, err := agent.GetLocalUserCredentials()
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCreds()
	if err != nil {
		t.Fatal(err)
	}
	c.RemoteUfrag = browserUfrag
	r, err := NewResponder(c)
	if err != nil {
		t.Fatal(err)
	}
	var n counts
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			size, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if Demux(buf[:size]) != KindSTUN {
				continue
			}
			res := r.Handle(buf[:size], from)
			switch res.Reason {
			case Answered:
				n.answered.Add(1)
				if res.UseCandidate {
					n.nominated.Add(1)
				}
				if _, err := pc.WriteToUDPAddrPort(res.Response, from); err != nil {
					return
				}
			case BadIntegrity:
				n.badIntegrity.Add(1)
				n.refused.Add(1)
			default:
				n.refused.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		_ = agent.Close()
		_ = pc.Close()
		<-done
	})

	if err := agent.OnCandidate(func(pionice.Candidate) {}); err != nil {
		t.Fatal(err)
	}
	if err := agent.GatherCandidates(); err != nil {
		t.Fatal(err)
	}
	port := netip.MustParseAddrPort(pc.LocalAddr().String()).Port()
	cand, err := pionice.UnmarshalCandidate(fmt.Sprintf("1 1 udp 2130706431 127.0.0.1 %d typ host", port))
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.AddRemoteCandidate(cand); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := agent.Dial(ctx, c.LocalUfrag, pwd(c))
	return conn, &n, err
}

// TestPionAgentConnects: the agent reaches the connected state, which it only does once its checks are
// answered and verified, and its nomination shows up as USE-CANDIDATE.
func TestPionAgentConnects(t *testing.T) {
	conn, n, err := dialRelay(t, func(c Creds) string { return c.LocalPwd }, 10*time.Second)
	if err != nil {
		t.Fatalf("pion agent did not connect (answered %d, refused %d): %v", n.answered.Load(), n.refused.Load(), err)
	}
	defer conn.Close()
	if n.answered.Load() == 0 || n.nominated.Load() == 0 {
		t.Fatalf("connected with %d answers, %d nominations", n.answered.Load(), n.nominated.Load())
	}
	if n.refused.Load() != 0 {
		t.Fatalf("%d of pion's requests were refused", n.refused.Load())
	}
}

// TestPionAgentWrongPwd: the same agent given a wrong relay pwd never connects, because its requests fail
// MESSAGE-INTEGRITY and get no answer.
func TestPionAgentWrongPwd(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the agent to give up")
	}
	conn, n, err := dialRelay(t, func(Creds) string { return "wrongpasswordwrongpassword" }, 2*time.Second)
	if err == nil {
		conn.Close()
		t.Fatal("pion agent connected with a wrong pwd")
	}
	if n.badIntegrity.Load() == 0 || n.answered.Load() != 0 {
		t.Fatalf("answered %d, refused for bad integrity %d", n.answered.Load(), n.badIntegrity.Load())
	}
}
