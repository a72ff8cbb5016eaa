package sipserver_test

import (
	"context"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"sipxdp/sipd"
	"sipxdp/sipd/digest"
	"sipxdp/sipd/sipconf"
	"sipxdp/sipd/sipserver"
)

// The shipped default configuration must start a server that answers.
func TestDefaultConfigServes(t *testing.T) {
	cfg, err := sipd.LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	sc := cfg.SIP
	if sc.StateDir != sipd.DefaultStateDir {
		t.Fatalf("default state_dir %q, want %q", sc.StateDir, sipd.DefaultStateDir)
	}
	sc.StateDir = t.TempDir() // never the machine's own
	// Same sockets as shipped, on free ports: 5060 may be taken here.
	for i := range sc.Listen {
		sc.Listen[i].Addr = strings.Replace(sc.Listen[i].Addr, ":5060", ":0", 1)
	}
	s, err := sipserver.New(sc, nil, sipserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	addr, ok := s.Addr("udp")
	if !ok {
		t.Fatal("default config has no UDP socket")
	}
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("OPTIONS sip:" + addr.String() + " SIP/2.0\r\nVia: SIP/2.0/UDP " + c.LocalAddr().String() + ";branch=z9hG4bKdef\r\n" +
		"From: <sip:a@localhost>;tag=1\r\nTo: <sip:localhost>\r\nCall-ID: def\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
		t.Fatalf("answer %q %v", buf[:n], err)
	}
	if got := sipconf.Default(); !reflect.DeepEqual(got.Protect, sc.Protect) || len(got.Listen) != len(sc.Listen) {
		t.Fatalf("default.yaml and sipconf.Default disagree: %+v vs %+v", sc.Protect, got.Protect)
	}
	if got := sipconf.Default(); got.Registrar != sc.Registrar {
		t.Fatalf("default.yaml and sipconf.Default disagree on registrar: %+v vs %+v", sc.Registrar, got.Registrar)
	}
	if got := sipconf.Default(); got.Connections != sc.Connections {
		t.Fatalf("default.yaml and sipconf.Default disagree on connections: %+v vs %+v", sc.Connections, got.Connections)
	}
}

// The example users file parses, and its HA1 entry matches its comment.
func TestUsersExample(t *testing.T) {
	u, err := digest.LoadUsers("../users.example")
	if err != nil {
		t.Fatal(err)
	}
	c, ok := u.Lookup("carol")
	if !ok || c.HA1[digest.MD5] != digest.HA1(digest.MD5, "carol", "localhost", "carolpw") {
		t.Fatalf("carol %+v", c)
	}
	if u.Len() != 3 {
		t.Fatalf("%d users", u.Len())
	}
}
