package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"sipxdp/internal/sipdtest"
	"sipxdp/internal/testenv"
)

// TestPrivilegedPortHint: sipd run as a user without CAP_NET_BIND_SERVICE,
// asked for a port below 1024, stops with an error that names the
// capability, not Go's bare "permission denied".
func TestPrivilegedPortHint(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		testenv.Unavailable(t, "setpriv (util-linux) drops sipd to a user without capabilities")
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil && strings.TrimSpace(string(b)) == "0" {
		t.Skip("net.ipv4.ip_unprivileged_port_start is 0: every port is unprivileged here")
	}
	bin := sipdtest.Binary(t)
	cred := sipdtest.Cred{UID: 61234, GID: 61234}
	state := cred.TempDir(t)
	for _, tc := range []struct{ name, env string }{
		{"http", "SIPD_HTTP_LISTEN=127.0.0.1:1"},
		{"sip", "SIPD_SIP_LISTEN=[{transport: udp, addr: '127.0.0.1:1'}]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			argv := append(cred.Setpriv(), bin)
			cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
			cmd.Env = append(cleanEnv(), "SIPD_MEDIA_MODE=none", "SIPD_STATE_DIR="+state,
				"SIPD_HTTP_LISTEN=127.0.0.1:0", "SIPD_SIP_LISTEN=[{transport: udp, addr: '127.0.0.1:0'}]", tc.env)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if err == nil {
				t.Fatalf("sipd bound port 1 as a user without capabilities; stderr:\n%s", stderr.String())
			}
			if !strings.Contains(stderr.String(), "CAP_NET_BIND_SERVICE") {
				t.Errorf("sipd's error does not name CAP_NET_BIND_SERVICE:\n%s", stderr.String())
			}
		})
	}
}
