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

// newAgent is a browser-like full agent on loopback, host candidates only.
func newAgent() (*pionice.Agent, error) {
	return pionice.NewAgentWithOptions(
		pionice.WithNetworkTypes([]pionice.NetworkType{pionice.NetworkTypeUDP4}),
		pionice.WithCandidateTypes([]pionice.CandidateType{pionice.CandidateTypeHost}),
		pionice.WithIncludeLoopback(),
		pionice.WithInterfaceFilter(func(name string) bool { return name == "lo" }),
	)
}

// TestPionAgentConnects runs pion/ice's full agent as the controlling side (a browser's role) against a
// Responder behind a loopback UDP socket: the agent must reach the connected state, which it only does once
// its checks are answered and verified, and its nomination must show up as USE-CANDIDATE.
func TestPionAgentConnects(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	agent, err := newAgent()
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
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
	var answered, nominated, refused atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if Demux(buf[:n]) != KindSTUN {
				continue
			}
			res := r.Handle(buf[:n], from)
			if res.Reason != Answered {
				refused.Add(1)
				continue
			}
			answered.Add(1)
			if res.UseCandidate {
				nominated.Add(1)
			}
			if _, err := pc.WriteToUDPAddrPort(res.Response, from); err != nil {
				return
			}
		}
	}()

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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := agent.Dial(ctx, c.LocalUfrag, c.LocalPwd)
	if err != nil {
		t.Fatalf("pion agent did not connect (answered %d, refused %d): %v", answered.Load(), refused.Load(), err)
	}
	defer conn.Close()
	if answered.Load() == 0 || nominated.Load() == 0 {
		t.Fatalf("connected with %d answers, %d nominations", answered.Load(), nominated.Load())
	}
	if refused.Load() != 0 {
		t.Fatalf("%d of pion's requests were refused", refused.Load())
	}
	_ = agent.Close()
	_ = pc.Close()
	<-done
}

// TestPionAgentWrongPwd: the same agent given a wrong relay pwd never connects, because its requests fail
// MESSAGE-INTEGRITY and get no answer.
func TestPionAgentWrongPwd(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the agent to give up")
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	agent, err := newAgent()
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	browserUfrag, _, _ := agent.GetLocalUserCredentials()
	c, _ := NewCreds()
	c.RemoteUfrag = browserUfrag
	r, _ := NewResponder(c)
	var bad atomic.Int64
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			res := r.Handle(buf[:n], from)
			if res.Reason == BadIntegrity {
				bad.Add(1)
			}
			if res.Reason == Answered {
				_, _ = pc.WriteToUDPAddrPort(res.Response, from)
			}
		}
	}()
	_ = agent.OnCandidate(func(pionice.Candidate) {})
	_ = agent.GatherCandidates()
	port := netip.MustParseAddrPort(pc.LocalAddr().String()).Port()
	cand, _ := pionice.UnmarshalCandidate(fmt.Sprintf("1 1 udp 2130706431 127.0.0.1 %d typ host", port))
	_ = agent.AddRemoteCandidate(cand)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if conn, err := agent.Dial(ctx, c.LocalUfrag, "wrongpasswordwrongpassword"); err == nil {
		conn.Close()
		t.Fatal("pion agent connected with a wrong pwd")
	}
	if bad.Load() == 0 {
		t.Fatal("no request was refused for bad integrity")
	}
}
