package registrar

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sipxdp/internal/redistest"
)

func reg(t *testing.T, callID string, cseq int, extra ...string) *sip.Request {
	t.Helper()
	text := "REGISTER sip:example.org SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK" + callID + "\r\n" +
		"From: <sip:alice@example.org>;tag=1\r\nTo: <sip:alice@example.org>\r\n" +
		"Call-ID: " + callID + "\r\nCSeq: " + strconv.Itoa(cseq) + " REGISTER\r\n" +
		strings.Join(extra, "\r\n") + "\r\nContent-Length: 0\r\n\r\n"
	m, err := sip.ParseMessage([]byte(text))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return m.(*sip.Request)
}

func newReg(t *testing.T, now *time.Time, path string) *Registrar {
	t.Helper()
	st, err := NewStore(path, func() time.Time { return *now })
	if err != nil {
		t.Fatal(err)
	}
	return regOn(st, now)
}

func regOn(st Locations, now *time.Time) *Registrar {
	return New(st, Options{MinExpires: 60 * time.Second, MaxExpires: time.Hour, DefaultExpires: 30 * time.Minute, MaxContacts: 3, Now: func() time.Time { return *now }})
}

// eachStore runs test on a registrar over each location store: the
// default one in memory, and one in a redis-server of its own.
func eachStore(t *testing.T, test func(t *testing.T, r *Registrar, now *time.Time)) {
	for _, name := range []string{"memory", "redis"} {
		t.Run(name, func(t *testing.T) {
			now := time.Unix(1_700_000_000, 0)
			var st Locations
			if name == "redis" {
				st = openRedis(t, redistest.Start(t).URL, &now, "a")
			} else {
				st, _ = NewStore("", func() time.Time { return now })
			}
			test(t, regOn(st, &now), &now)
		})
	}
}

var flow = Flow{Received: "203.0.113.5:4000", Transport: "UDP", NATed: true}

func TestRegisterExpiry(t *testing.T) { eachStore(t, testRegisterExpiry) }

func testRegisterExpiry(t *testing.T, r *Registrar, now *time.Time) {
	res := r.Register(reg(t, "c1", 1, "Contact: <sip:alice@10.0.0.1:5060>", "Expires: 120"), "alice", flow)
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	if c := res.GetHeader("Contact"); c == nil || !strings.Contains(c.Value(), "expires=120") {
		t.Fatalf("200 lists %v", c)
	}
	b := look(t, r, "alice")
	if len(b) != 1 || b[0].Received != "203.0.113.5:4000" || !b[0].NATed {
		t.Fatalf("bindings %+v", b)
	}
	*now = now.Add(119 * time.Second)
	if len(look(t, r, "alice")) != 1 {
		t.Fatal("binding gone before expiry")
	}
	*now = now.Add(2 * time.Second)
	if len(look(t, r, "alice")) != 0 {
		t.Fatal("binding alive after expiry")
	}
	if st, ok := r.Store().(*Store); ok {
		if n := st.Sweep(); n != 1 {
			t.Fatalf("sweep removed %d", n)
		}
	}
}

func TestRegisterPolicy(t *testing.T) { eachStore(t, testRegisterPolicy) }

func testRegisterPolicy(t *testing.T, r *Registrar, _ *time.Time) {
	// Too brief.
	res := r.Register(reg(t, "c1", 1, "Contact: <sip:alice@10.0.0.1>;expires=10"), "alice", flow)
	if res.StatusCode != 423 || res.GetHeader("Min-Expires").Value() != "60" {
		t.Fatalf("brief: %d", res.StatusCode)
	}
	// Clamped to max, default used without Expires.
	res = r.Register(reg(t, "c1", 2, "Contact: <sip:alice@10.0.0.1>;expires=99999", "Contact: <sip:alice@10.0.0.2>"), "alice", flow)
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	cs := res.GetHeaders("Contact")
	if len(cs) != 2 || !strings.Contains(cs[0].Value(), "expires=3600") || !strings.Contains(cs[1].Value(), "expires=1800") {
		t.Fatalf("contacts %v", cs)
	}
	// Out of order CSeq in the same Call-ID.
	if res := r.Register(reg(t, "c1", 2, "Contact: <sip:alice@10.0.0.1>"), "alice", flow); res.StatusCode != 500 {
		t.Fatalf("out of order: %d", res.StatusCode)
	}
	// Too many contacts.
	res = r.Register(reg(t, "c2", 1, "Contact: <sip:alice@10.0.0.3>", "Contact: <sip:alice@10.0.0.4>"), "alice", flow)
	if res.StatusCode != 403 || len(look(t, r, "alice")) != 2 {
		t.Fatalf("too many: %d, %d bindings", res.StatusCode, len(look(t, r, "alice")))
	}
	// Query lists without changing.
	if res := r.Register(reg(t, "c1", 3), "alice", flow); res.StatusCode != 200 || len(res.GetHeaders("Contact")) != 2 {
		t.Fatalf("query: %d %d", res.StatusCode, len(res.GetHeaders("Contact")))
	}
	// Expires: 0 on one.
	res = r.Register(reg(t, "c1", 4, "Contact: <sip:alice@10.0.0.2>", "Expires: 0"), "alice", flow)
	if res.StatusCode != 200 || len(res.GetHeaders("Contact")) != 1 {
		t.Fatalf("unregister one: %d %d", res.StatusCode, len(res.GetHeaders("Contact")))
	}
	// Wildcard needs Expires: 0.
	if res := r.Register(reg(t, "c1", 5, "Contact: *"), "alice", flow); res.StatusCode != 400 {
		t.Fatalf("wildcard without expires: %d", res.StatusCode)
	}
	res = r.Register(reg(t, "c1", 6, "Contact: *", "Expires: 0"), "alice", flow)
	if res.StatusCode != 200 || len(look(t, r, "alice")) != 0 || len(res.GetHeaders("Contact")) != 0 {
		t.Fatalf("wildcard: %d", res.StatusCode)
	}
	if res := r.Register(reg(t, "c1", 7, "Contact: <sip:a@b>", "Expires: soon"), "alice", flow); res.StatusCode != 400 {
		t.Fatalf("bad expires: %d", res.StatusCode)
	}
}

func TestPersistenceSurvivesRestart(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	path := filepath.Join(t.TempDir(), "location.json")
	r := newReg(t, &now, path)
	r.Register(reg(t, "c1", 1, "Contact: <sip:alice@10.0.0.1>;expires=100", "Contact: <sip:alice@10.0.0.2>;expires=3000"), "alice", flow)
	r.Register(reg(t, "c2", 1, "Contact: <sip:bob@10.0.0.3>;expires=3000"), "bob", flow)
	r.Register(reg(t, "c2", 2, "Contact: *", "Expires: 0"), "bob", flow)
	if err := r.Store().Close(); err != nil {
		t.Fatal(err)
	}
	now = now.Add(200 * time.Second)
	check := func(r *Registrar, when string) {
		t.Helper()
		b := look(t, r, "alice")
		if len(b) != 1 || b[0].Contact != "sip:alice@10.0.0.2" || b[0].Received != flow.Received {
			t.Fatalf("%s: alice %+v", when, b)
		}
		if b := look(t, r, "bob"); len(b) != 0 {
			t.Fatalf("%s: bob unregistered but back: %+v", when, b)
		}
	}
	r2 := newReg(t, &now, path)
	check(r2, "journal replay")
	r2.Register(reg(t, "c3", 1, "Contact: <sip:carol@10.0.0.4>;expires=3000"), "carol", flow)
	if err := r2.Store().(*Store).Compact(); err != nil {
		t.Fatal(err)
	}
	if r2.Store().(*Store).JournalSize() != 0 {
		t.Fatalf("journal %d bytes after compaction", r2.Store().(*Store).JournalSize())
	}
	r2.Register(reg(t, "c3", 2, "Contact: <sip:carol@10.0.0.5>;expires=3000"), "carol", flow)
	r2.Store().Close()
	r3 := newReg(t, &now, path)
	check(r3, "snapshot and journal")
	if b := look(t, r3, "carol"); len(b) != 2 {
		t.Fatalf("carol %+v", b)
	}
	r3.Store().Close()

	// A crash in the middle of a compaction leaves the journal set aside
	// and the old snapshot: nothing is lost, and the next start finishes it.
	os.Rename(path+".journal", path+".journal.old")
	os.WriteFile(path+".journal", []byte(`{"aor":"dave","b":[{"aor":"dave","contact":"sip:d@x","call_id":"d","cseq":1,"expires":"2030-01-01T00:00:00Z"}]}`+"\n"+`{"torn`), 0o600)
	r4 := newReg(t, &now, path)
	check(r4, "interrupted compaction")
	if len(look(t, r4, "carol")) != 2 || len(look(t, r4, "dave")) != 1 {
		t.Fatalf("carol %v dave %v", look(t, r4, "carol"), look(t, r4, "dave"))
	}
	if _, err := os.Stat(path + ".journal.old"); !os.IsNotExist(err) {
		t.Fatalf("set-aside journal still there: %v", err)
	}
	r4.Store().Close()
}

// look is r's store's Lookup, which must not fail.
func look(t *testing.T, r *Registrar, aor string) []Binding {
	t.Helper()
	b, err := r.Store().Lookup(aor)
	if err != nil {
		t.Fatalf("lookup %s: %v", aor, err)
	}
	return b
}
