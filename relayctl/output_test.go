package relayctl

import (
	"sipxdp/relay/cryptoleg"

	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"sipxdp/sipd/dialog"
	"sipxdp/sipd/wire"
)

var testNow = time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)

// fakeAPI serves fixed answers for sipd's endpoints, so each command's
// output can be compared whole.
func fakeAPI(t *testing.T) string {
	t.Helper()
	flows := []wire.FlowJSON{
		{CallID: "call-1", Leg: "A", Component: "rtp", Local: "203.0.113.5:30000", Peer: "192.0.2.10:4000", Out: "203.0.113.5:30002", Dst: "192.0.2.20:5000",
			Path: "kernel", State: "active", Packets: 3250, Bytes: 559000, LastSeen: testNow.Add(-20 * time.Millisecond)},
		{CallID: "call-1", Leg: "A", Component: "rtcp", Local: "203.0.113.5:30001", Peer: "192.0.2.10:4001", Out: "203.0.113.5:30003", Dst: "192.0.2.20:5001",
			Path: "kernel", State: "active", Packets: 13, Bytes: 1092, LastSeen: testNow.Add(-2 * time.Second)},
		{CallID: "call-1", Leg: "B", Component: "rtp", Local: "203.0.113.5:30002", Peer: "192.0.2.20:5000", Out: "203.0.113.5:30000", Dst: "192.0.2.10:4000",
			Path: "kernel", State: "active", Packets: 3249, Bytes: 558828, LastSeen: testNow.Add(-20 * time.Millisecond)},
		{CallID: "ng-7", Leg: "A", Component: "rtp", Local: "203.0.113.5:30100", Out: "203.0.113.5:30102", Dst: "198.51.100.7:7000",
			Path: "userspace", State: "learning"},
		{CallID: "ng-7", Leg: "B", Component: "rtp", Local: "203.0.113.5:30102", Peer: "198.51.100.7:7000", Out: "203.0.113.5:30100",
			Path: "kernel", State: "active", Packets: 9, Bytes: 1548, LastSeen: testNow.Add(-time.Second)},
		{CallID: "web-1", Leg: "A", Component: "rtp", Local: "203.0.113.5:30200", Peer: "198.51.100.9:50000", Out: "203.0.113.5:30202",
			Path: "userspace", State: "active", Packets: 50, Bytes: 9000, LastSeen: testNow.Add(-20 * time.Millisecond),
			UserspaceOnly: "SRTP bridged in userspace (dtls-srtp to rtp)", In: &cryptoleg.Info{Kind: "dtls-srtp", ICE: true, State: "ready"}},
		{CallID: "web-1", Leg: "B", Component: "rtp", Local: "203.0.113.5:30202", Peer: "192.0.2.30:6000", Out: "203.0.113.5:30200",
			Path: "userspace", State: "active", UserspaceOnly: "SRTP bridged in userspace (rtp to dtls-srtp)",
			OutLeg: &cryptoleg.Info{Kind: "dtls-srtp", ICE: true, State: "failed", Error: "dtls: peer certificate does not match a=fingerprint"}},
	}
	calls := []dialog.Call{
		{CallID: "call-1", FromTag: "f1", ToTag: "t1", From: "sip:alice@example.com", To: "sip:bob@example.com",
			Invited: testNow.Add(-67 * time.Second), Answered: testNow.Add(-65 * time.Second), SetupMs: 2000, Status: 200},
		{CallID: "call-2", FromTag: "f2", ToTag: "t2", From: "sip:carol@example.com", To: "sip:dave@example.com",
			Invited: testNow.Add(-10 * time.Second), Answered: testNow.Add(-9 * time.Second), SetupMs: 1000, Status: 200},
	}
	stats := wire.StatsJSON{
		MediaHealth: wire.MediaHealth{Path: "tc", Reason: "auto: tc on veth", Sessions: 2, Flows: 5, KernelFlows: 4, UserspaceFlows: 1,
			Packets: 6521, Bytes: 1120468, KernelPackets: 6521, UserspaceSockets: 1},
		KernelBytes: 1120468, KernelCounters: map[string]uint64{"no_flow": 4, "learning": 1},
		UserspaceCounters: map[string]uint64{"latched": 3},
		Pools: []wire.PoolJSON{
			{Name: "external", Local: "203.0.113.5", Advertised: "203.0.113.5", UsedPairs: 4, TotalPairs: 5000},
			{Name: "internal", Local: "10.0.0.1", Advertised: "10.0.0.1", UsedPairs: 0, TotalPairs: 250},
		},
	}
	health := map[string]any{"status": "ok", "version": "1.2.3", "uptime_seconds": 3725.4, "media": stats.MediaHealth,
		"relays": []wire.RelayMember{
			{URL: "udp:10.0.0.2:2223", Weight: 2, State: "up", Calls: 20, Offers: 31, RTT: "0.180ms"},
			{URL: "udp:10.0.0.3:2223", Weight: 1, State: "overloaded", Calls: 3, Offers: 10, Failovers: 1,
				LastError: `ng offer: relay answered "load limit": draining`, RTT: "0.210ms"},
		}}
	answers := map[string]any{"/flows": flows, "/calls": calls, "/stats": stats, "/health": health}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := answers[r.URL.Path]
		if !ok || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		if id := r.URL.Query().Get("call_id"); r.URL.Path == "/flows" && id != "" {
			var one []wire.FlowJSON
			for _, f := range flows {
				if f.CallID == id {
					one = append(one, f)
				}
			}
			v = one
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func fixClock(t *testing.T) {
	t.Helper()
	old := now
	now = func() time.Time { return testNow }
	t.Cleanup(func() { now = old })
}

// TestTables: each command's table, whole, against the fake API.
func TestTables(t *testing.T) {
	fixClock(t)
	api := fakeAPI(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"flows", []string{"flows", "-interval", "0"}, `
CALL    LEG     LOCAL              PEER                PATH       STATE     MEDIA                  PACKETS   BYTES  PPS  LAST SEEN
call-1  A/rtp   203.0.113.5:30000  192.0.2.10:4000     kernel     active    rtp                       3250  559000    0   20ms ago
call-1  A/rtcp  203.0.113.5:30001  192.0.2.10:4001     kernel     active    rtp                         13    1092    0     2s ago
call-1  B/rtp   203.0.113.5:30002  192.0.2.20:5000     kernel     active    rtp                       3249  558828    0   20ms ago
ng-7    A/rtp   203.0.113.5:30100  -                   userspace  learning  rtp                          0       0    0      never
ng-7    B/rtp   203.0.113.5:30102  198.51.100.7:7000   kernel     active    rtp                          9    1548    0     1s ago
web-1   A/rtp   203.0.113.5:30200  198.51.100.9:50000  userspace  active    dtls-srtp(ready)>rtp        50    9000    0   20ms ago
web-1   B/rtp   203.0.113.5:30202  192.0.2.30:6000     userspace  active    rtp>dtls-srtp(failed)        0       0    0      never
web-1 A/rtp: not on the kernel path: SRTP bridged in userspace (dtls-srtp to rtp)
web-1 B/rtp: dtls-srtp leg failed: dtls: peer certificate does not match a=fingerprint
web-1 B/rtp: not on the kernel path: SRTP bridged in userspace (rtp to dtls-srtp)
`},
		{"flows of one call", []string{"flows", "-call", "ng-7", "-interval", "0"}, `
CALL  LEG    LOCAL              PEER               PATH       STATE     MEDIA  PACKETS  BYTES  PPS  LAST SEEN
ng-7  A/rtp  203.0.113.5:30100  -                  userspace  learning  rtp          0      0    0      never
ng-7  B/rtp  203.0.113.5:30102  198.51.100.7:7000  kernel     active    rtp          9   1548    0     1s ago
`},
		{"flows of no call", []string{"flows", "-call", "nope", "-interval", "0"}, `
CALL  LEG  LOCAL  PEER  PATH  STATE  MEDIA  PACKETS  BYTES  PPS  LAST SEEN
(no flows)
`},
		{"calls", []string{"calls"}, `
CALL-ID  FROM                   TO                    STATE  MEDIA             DURATION  RELAY LEGS
call-1   sip:alice@example.com  sip:bob@example.com   up     kernel                1m5s  A=203.0.113.5:30000 B=203.0.113.5:30002
call-2   sip:carol@example.com  sip:dave@example.com  up     none                    9s  -
ng-7     -                      -                     -      kernel+userspace         -  A=203.0.113.5:30100 B=203.0.113.5:30102
web-1    -                      -                     -      userspace                -  A=203.0.113.5:30200 B=203.0.113.5:30202
`},
		{"relays", []string{"relays"}, `
RELAY  STATUS  PATH  DRAINING  SESSIONS  FLOWS  KERNEL  USERSPACE  PORTS USED  UPTIME  VERSION  REASON
local  ok      tc    no               2      5       4          1      4/5250  1h2m5s  1.2.3    auto: tc on veth

RELAY  ADDRESS   LOCAL        ADVERTISED   USED  TOTAL   USE
local  external  203.0.113.5  203.0.113.5     4   5000  0.1%
local  internal  10.0.0.1     10.0.0.1        0    250  0.0%

NG RELAY           WEIGHT  STATE       CALLS  OFFERS  FAILOVERS      RTT  LAST ERROR
udp:10.0.0.2:2223       2  up             20      31          0  0.180ms  -
udp:10.0.0.3:2223       1  overloaded      3      10          1  0.210ms  ng offer: relay answered "load limit": draining
`},
		{"stats", []string{"stats"}, `
path               tc
reason             auto: tc on veth
draining           false
sessions           2
flows              5 (kernel 4, userspace 1)
packets            6521 (kernel 6521, userspace 0)
bytes              1120468 (kernel 1120468, userspace 0)
userspace sockets  1
kernel.learning    1
kernel.no_flow     4
userspace.latched  3
`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := relayCmd(t, append([]string{"-api", api}, c.args...)...)
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			if want := strings.TrimPrefix(c.want, "\n"); out != want {
				t.Errorf("relayctl %s:\n%s\nwant:\n%s", strings.Join(c.args, " "), out, want)
			}
		})
	}
}

// TestJSON: -j, -json and --json, after the command or before it, print
// the same JSON, and it carries what the table shows.
func TestJSON(t *testing.T) {
	fixClock(t)
	api := fakeAPI(t)
	cases := []struct {
		cmd   []string
		check func(t *testing.T, out []byte)
	}{
		{[]string{"flows", "-interval", "0"}, func(t *testing.T, out []byte) {
			var rows []Flow
			mustDecode(t, out, &rows)
			if len(rows) != 7 || rows[0].CallID != "call-1" || rows[0].Packets != 3250 || rows[3].State != "learning" ||
				rows[5].In == nil || rows[5].In.State != "ready" || rows[6].OutLeg == nil || rows[6].OutLeg.Error == "" {
				t.Errorf("flows: %+v", rows)
			}
		}},
		{[]string{"calls"}, func(t *testing.T, out []byte) {
			var rows []Call
			mustDecode(t, out, &rows)
			want := []Call{
				{CallID: "call-1", From: "sip:alice@example.com", To: "sip:bob@example.com", State: "up", MediaPath: "kernel",
					Answered: testNow.Add(-65 * time.Second), Duration: 65, Legs: []Leg{
						{Leg: "A", Local: "203.0.113.5:30000", Peer: "192.0.2.10:4000", Path: "kernel", State: "active"},
						{Leg: "B", Local: "203.0.113.5:30002", Peer: "192.0.2.20:5000", Path: "kernel", State: "active"}}},
				{CallID: "call-2", From: "sip:carol@example.com", To: "sip:dave@example.com", State: "up", MediaPath: "none",
					Answered: testNow.Add(-9 * time.Second), Duration: 9, Legs: []Leg{}},
				{CallID: "ng-7", MediaPath: "kernel+userspace", Legs: []Leg{
					{Leg: "A", Local: "203.0.113.5:30100", Path: "userspace", State: "learning"},
					{Leg: "B", Local: "203.0.113.5:30102", Peer: "198.51.100.7:7000", Path: "kernel", State: "active"}}},
				{CallID: "web-1", MediaPath: "userspace", Legs: []Leg{
					{Leg: "A", Local: "203.0.113.5:30200", Peer: "198.51.100.9:50000", Path: "userspace", State: "active"},
					{Leg: "B", Local: "203.0.113.5:30202", Peer: "192.0.2.30:6000", Path: "userspace", State: "active"}}},
			}
			if !reflect.DeepEqual(rows, want) {
				t.Errorf("calls:\n got %+v\nwant %+v", rows, want)
			}
		}},
		{[]string{"relays"}, func(t *testing.T, out []byte) {
			var rows []Relay
			mustDecode(t, out, &rows)
			if len(rows) != 3 || rows[1].NG == nil || rows[2].Status != "overloaded" || rows[2].NG.Failovers != 1 {
				t.Fatalf("relays: %+v", rows)
			}
			r := rows[0]
			if r.Name != "local" || r.API != api || r.Status != "ok" || r.Version != "1.2.3" || r.Path != "tc" ||
				r.Reason != "auto: tc on veth" || r.Sessions != 2 || len(r.Pools) != 2 || r.Pools[0].UsedPairs != 4 || r.Pools[1].TotalPairs != 250 {
				t.Errorf("relays: %+v", r)
			}
		}},
		{[]string{"stats"}, func(t *testing.T, out []byte) {
			var st wire.StatsJSON
			mustDecode(t, out, &st)
			if st.Path != "tc" || st.KernelCounters["no_flow"] != 4 || len(st.Pools) != 2 {
				t.Errorf("stats: %+v", st)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.cmd[0], func(t *testing.T) {
			var first string
			for i, args := range [][]string{
				append(append([]string{"-api", api}, c.cmd...), "-j"),
				append(append([]string{"-api", api}, c.cmd...), "-json"),
				append(append([]string{"-api", api}, c.cmd...), "--json"),
				append([]string{"-api", api, "-j"}, c.cmd...),
				append([]string{"-api", api, "--json"}, c.cmd...),
			} {
				out, code := relayCmd(t, args...)
				if code != 0 {
					t.Fatalf("relayctl %v: exit %d:\n%s", args, code, out)
				}
				if i == 0 {
					first = out
					c.check(t, []byte(out))
				} else if out != first {
					t.Errorf("relayctl %v printed\n%s\nbut with -j after the command\n%s", args, out, first)
				}
			}
		})
	}
}

func mustDecode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
}
