package sipserver

import (
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/conntest"
	"sipxdp/sipd/sipconf"
)

// A connection over which a REGISTER succeeded outlives the idle timeout
// until the registration expires; one without is closed as idle; both
// are counted in Stats.
func TestRegisteredConnectionKept(t *testing.T) {
	const idle = 300 * time.Millisecond
	s := testServer(t, func(c *sipconf.Config) {
		noAuth(c)
		c.Connections.IdleTimeout = sipconf.Duration(idle)
		c.Registrar.MinExpires = sipconf.Duration(time.Second)
	})
	addr := serverAddr(t, s, "tcp")
	idleConn := newTCPUA(t, addr)
	phone := newTCPUA(t, addr)
	local := phone.conn.LocalAddr().String()
	phone.send(fmt.Sprintf("REGISTER sip:example.org SIP/2.0\nVia: SIP/2.0/TCP %s;branch=%s\nFrom: <sip:bob@example.org>;tag=1\nTo: <sip:bob@example.org>\nCall-ID: kept1\nCSeq: 1 REGISTER\nContact: <sip:bob@%s;transport=tcp>\nExpires: 1\nContent-Length: 0\n\n", local, branch(), local))
	if r, ok := phone.recv(3 * time.Second).(*sip.Response); !ok || r.StatusCode != 200 {
		t.Fatalf("register: %v", r)
	}
	registered := time.Now()
	if !conntest.ClosedWithin(idleConn.conn, 3*idle) {
		t.Fatal("an unregistered idle connection was not closed")
	}
	if conntest.ClosedWithin(phone.conn, 2*idle) {
		t.Fatalf("the registered connection was closed %v after the REGISTER", time.Since(registered))
	}
	if !conntest.ClosedWithin(phone.conn, time.Second+idle) {
		t.Fatal("the registered connection outlived its registration")
	}
	if took := time.Since(registered); took < 900*time.Millisecond {
		t.Fatalf("the registered connection closed %v after the REGISTER, before it expired", took)
	}
	st := s.Stats().Connections
	if st.Refused["idle_timeout"] != 2 || st.Max <= 0 || st.PerSource <= 0 {
		t.Fatalf("stats %+v", st)
	}
}
