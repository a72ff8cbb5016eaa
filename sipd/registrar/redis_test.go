package registrar

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sipxdp/internal/redistest"
)

// openRedis opens a store on url that reads the time from *now (nil: the
// clock) and stamps node; it is closed when t ends.
func openRedis(t *testing.T, url string, now *time.Time, node string) *RedisStore {
	t.Helper()
	o := RedisOptions{Node: node, Timeout: 500 * time.Millisecond, CountEvery: time.Millisecond}
	if now != nil {
		o.Now = func() time.Time { return *now }
	}
	st, err := OpenRedis(url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func rawClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

func change(contact, callID string, cseq uint32, expires time.Time) Change {
	return Change{Binding: Binding{Contact: contact, Received: "192.0.2.1:5060", Transport: "UDP",
		CallID: callID, CSeq: cseq, Expires: expires, Updated: expires.Add(-time.Hour)}}
}

// TestRedisApply: the store's semantics, case by case, in Redis.
func TestRedisApply(t *testing.T) {
	srv := redistest.Start(t)
	now := time.Unix(1_700_000_000, 0)
	later := now.Add(time.Hour)
	type step struct {
		callID    string
		cseq      uint32
		removeAll bool
		changes   []Change
		err       error
		want      []string // contacts after, in order of q
	}
	rm := func(c Change) Change { c.Remove = true; return c }
	cases := []struct {
		name  string
		steps []step
	}{
		{"add two then refresh one", []step{
			{"c1", 1, false, []Change{change("sip:a@1", "c1", 1, later), change("sip:a@2", "c1", 1, later)}, nil, []string{"sip:a@1", "sip:a@2"}},
			{"c1", 2, false, []Change{change("sip:a@1", "c1", 2, later.Add(time.Minute))}, nil, []string{"sip:a@1", "sip:a@2"}},
		}},
		{"out of order in one call-id", []step{
			{"c1", 5, false, []Change{change("sip:a@1", "c1", 5, later)}, nil, []string{"sip:a@1"}},
			{"c1", 5, false, []Change{change("sip:a@1", "c1", 5, later)}, ErrOutOfOrder, []string{"sip:a@1"}},
			{"c1", 4, true, nil, ErrOutOfOrder, []string{"sip:a@1"}},
			{"c2", 1, false, []Change{change("sip:a@1", "c2", 1, later)}, nil, []string{"sip:a@1"}},
		}},
		{"too many applies nothing", []step{
			{"c1", 1, false, []Change{change("sip:a@1", "c1", 1, later), change("sip:a@2", "c1", 1, later)}, nil, []string{"sip:a@1", "sip:a@2"}},
			{"c2", 1, false, []Change{change("sip:a@3", "c2", 1, later), change("sip:a@4", "c2", 1, later)}, ErrTooManyContacts, []string{"sip:a@1", "sip:a@2"}},
		}},
		{"remove one, then all", []step{
			{"c1", 1, false, []Change{change("sip:a@1", "c1", 1, later), change("sip:a@2", "c1", 1, later)}, nil, []string{"sip:a@1", "sip:a@2"}},
			{"c1", 2, false, []Change{rm(change("sip:a@1", "c1", 2, now))}, nil, []string{"sip:a@2"}},
			{"c1", 3, true, nil, nil, nil},
		}},
		{"too long", []step{
			{"c1", 1, false, []Change{change("sip:"+string(make([]byte, 70000)), "c1", 1, later)}, ErrTooLong, nil},
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := openRedis(t, srv.URL, &now, "a")
			aor := "aor" + strconv.Itoa(i)
			for j, s := range tc.steps {
				for k := range s.changes {
					s.changes[k].AoR = aor
				}
				_, err := st.Apply(aor, s.callID, s.cseq, s.removeAll, s.changes, 3)
				if !errors.Is(err, s.err) || (s.err == nil && err != nil) {
					t.Fatalf("step %d: error %v, want %v", j, err, s.err)
				}
				got, err := st.Lookup(aor)
				if err != nil {
					t.Fatal(err)
				}
				var contacts []string
				for _, b := range got {
					contacts = append(contacts, b.Contact)
					if b.AoR != aor || b.Node != "a" || b.Received != "192.0.2.1:5060" || b.Transport != "UDP" {
						t.Fatalf("step %d: binding %+v", j, b)
					}
				}
				if fmt.Sprint(contacts) != fmt.Sprint(s.want) {
					t.Fatalf("step %d: contacts %v, want %v", j, contacts, s.want)
				}
			}
		})
	}
}

// TestRedisTTL: a contact's keys leave Redis at its expiry by themselves,
// with nothing sweeping.
func TestRedisTTL(t *testing.T) {
	srv := redistest.Start(t)
	st := openRedis(t, srv.URL, nil, "a")
	c := rawClient(t, srv.URL)
	ctx := context.Background()
	exp := time.Now().Add(700 * time.Millisecond)
	if _, err := st.Apply("alice", "c1", 1, false, []Change{change("sip:alice@1", "c1", 1, exp),
		change("sip:alice@2", "c1", 1, exp.Add(time.Hour))}, 3); err != nil {
		t.Fatal(err)
	}
	short := contactKey("alice", contactID("sip:alice@1"))
	if ttl := c.PTTL(ctx, short).Val(); ttl <= 0 || ttl > 700*time.Millisecond {
		t.Fatalf("contact TTL %v, want up to 700ms", ttl)
	}
	if n := c.Exists(ctx, short, aorKey("alice")).Val(); n != 2 {
		t.Fatalf("%d of the contact and the set exist", n)
	}
	deadline := time.Now().Add(3 * time.Second)
	for c.Exists(ctx, short).Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("expired contact still in Redis")
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, err := st.Lookup("alice")
	if err != nil || len(b) != 1 || b[0].Contact != "sip:alice@2" {
		t.Fatalf("after expiry: %+v, %v", b, err)
	}
	// The set lives as long as its last contact.
	if ttl := c.PTTL(ctx, aorKey("alice")).Val(); ttl < 59*time.Minute {
		t.Fatalf("set TTL %v, want about an hour", ttl)
	}
	// The next change drops the gone contact's ID from the set.
	if _, err := st.Apply("alice", "c1", 2, false, []Change{change("sip:alice@2", "c1", 2, exp.Add(time.Hour))}, 3); err != nil {
		t.Fatal(err)
	}
	if ids := c.SMembers(ctx, aorKey("alice")).Val(); len(ids) != 1 {
		t.Fatalf("set %v after a change", ids)
	}
	// Unregistering the last contact removes every key.
	if _, err := st.Apply("alice", "c1", 3, true, nil, 3); err != nil {
		t.Fatal(err)
	}
	if keys := c.Keys(ctx, "location:*").Val(); len(keys) != 0 {
		t.Fatalf("keys left: %v", keys)
	}
}

// TestRedisShared: what node a stores, node b finds, and concurrent
// changes of one AoR from both are all kept.
func TestRedisShared(t *testing.T) {
	srv := redistest.Start(t)
	a, b := openRedis(t, srv.URL, nil, "a"), openRedis(t, srv.URL, nil, "b")
	exp := time.Now().Add(time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			id := "c" + strconv.Itoa(i)
			_, err := st.Apply("bob", id, 1, false, []Change{change("sip:bob@"+strconv.Itoa(i), id, 1, exp)}, 100)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.Lookup("bob")
	if err != nil || len(got) != 16 {
		t.Fatalf("b finds %d bindings (%v), want 16", len(got), err)
	}
	nodes := map[string]int{}
	for _, x := range got {
		nodes[x.Node]++
	}
	if nodes["a"] != 8 || nodes["b"] != 8 {
		t.Fatalf("owning nodes %v", nodes)
	}
	all, err := a.All()
	if err != nil || len(all) != 16 {
		t.Fatalf("All: %d, %v", len(all), err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if aors, contacts := a.Count(); aors == 1 && contacts == 16 {
			break
		}
		if time.Now().After(deadline) {
			aors, contacts := a.Count()
			t.Fatalf("count %d/%d, want 1/16", aors, contacts)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRedisDown: with Redis gone, REGISTER is refused with 500 and
// Retry-After and lookups fail, each within the timeout; both work again
// once Redis is back.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	now := time.Now()
	st := openRedis(t, srv.URL, &now, "a")
	r := regOn(st, &now)
	srv.Stop()
	start := time.Now()
	res := r.Register(reg(t, "c1", 1, "Contact: <sip:alice@10.0.0.1>"), "alice", flow)
	if res.StatusCode != 500 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("REGISTER with Redis down: %d, Retry-After %v", res.StatusCode, res.GetHeader("Retry-After"))
	}
	if _, err := st.Lookup("alice"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("lookup with Redis down: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %v, want the 500 ms timeouts", took)
	}
	if r.Unavailable() != 1 || st.Errors() < 2 {
		t.Fatalf("counted %d refused, %d errors", r.Unavailable(), st.Errors())
	}
	if down, why := st.Down(); !down || why == "" {
		t.Fatalf("Down %v %q", down, why)
	}
	srv.Restart(t)
	if res := r.Register(reg(t, "c1", 2, "Contact: <sip:alice@10.0.0.1>"), "alice", flow); res.StatusCode != 200 {
		t.Fatalf("REGISTER once Redis is back: %d", res.StatusCode)
	}
	if b := look(t, r, "alice"); len(b) != 1 {
		t.Fatalf("bindings %+v", b)
	}
	if down, _ := st.Down(); down {
		t.Fatal("still down")
	}
}

// FuzzRedisContact: a contact hash as another node (or anyone with access
// to Redis) may have written it. decode never panics, and what it accepts
// encodes back to the same fields.
func FuzzRedisContact(f *testing.F) {
	f.Add("alice", "sip:alice@10.0.0.1", "1", "1700000000000", "1700000000000000000", "UDP")
	f.Add("", "", "", "", "", "")
	f.Add("bob", "sip:b@x", "4294967296", "-1", "0", "TLS")
	f.Fuzz(func(t *testing.T, aor, contact, cseq, expires, updated, transport string) {
		h := map[string]string{"aor": aor, "contact": contact, "cseq": cseq, "expires": expires,
			"updated": updated, "transport": transport, "nated": "1", "node": "n"}
		b, ok := decode(h)
		if !ok {
			return
		}
		again, ok := decode(stringMap(encode(&b)))
		if !ok || again != b {
			t.Fatalf("decoded %+v, re-decoded %+v (%v)", b, again, ok)
		}
	})
}

func stringMap(m map[string]any) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v.(string)
	}
	return out
}

// scanPasses counts the passes over the keyspace that clients start:
// SCANs from cursor 0.
type scanPasses struct{ n atomic.Int64 }

func (h *scanPasses) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scanPasses) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); cmd.Name() == "scan" && len(a) > 1 && fmt.Sprint(a[1]) == "0" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *scanPasses) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRedisCountShared: every store on one Redis reports the count, and
// follows changes, but one scan of the keyspace per interval serves them
// all.
func TestRedisCountShared(t *testing.T) {
	srv := redistest.Start(t)
	const every = 300 * time.Millisecond
	var passes scanPasses
	stores := make([]*RedisStore, 3)
	for i := range stores {
		st, err := OpenRedis(srv.URL, RedisOptions{Node: fmt.Sprint("n", i), Timeout: 500 * time.Millisecond, CountEvery: every})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		st.c.AddHook(&passes)
		stores[i] = st
	}
	later := time.Now().Add(time.Hour)
	for i := range 3 {
		if _, err := stores[i].Apply(fmt.Sprint("u", i), "c", 1, false,
			[]Change{change("sip:a@1", "c", 1, later), change("sip:a@2", "c", 1, later)}, 10); err != nil {
			t.Fatal(err)
		}
	}
	// Another store's key, in the same keyspace, is not counted.
	if err := rawClient(t, srv.URL).Set(context.Background(), "dialog:x", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Polls every store until all report want, and at least for span.
	wait := func(wantAoRs, wantContacts int, span time.Duration) {
		t.Helper()
		begin := time.Now()
		for {
			right := 0
			for _, st := range stores {
				if a, c := st.Count(); a == wantAoRs && c == wantContacts {
					right++
				}
			}
			if right == len(stores) && time.Since(begin) >= span {
				return
			}
			if time.Since(begin) > 20*every+5*time.Second {
				for i, st := range stores {
					a, c := st.Count()
					t.Errorf("store %d counts %d/%d", i, a, c)
				}
				t.Fatalf("want %d/%d from every store", wantAoRs, wantContacts)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	wait(3, 6, 3*every)
	if _, err := stores[0].Apply("u1", "c", 2, true, nil, 10); err != nil {
		t.Fatal(err)
	}
	wait(2, 4, 3*every)
	// Each pass follows a gate set at least an interval after the last.
	elapsed := time.Since(start)
	n, most := passes.n.Load(), int64(elapsed/every)+1
	t.Logf("%d scans in %v", n, elapsed.Round(time.Millisecond))
	if n > most {
		t.Fatalf("%d scans in %v, want at most %d: one per interval", n, elapsed.Round(time.Millisecond), most)
	}
}

// TestRedisCountRead: while another node holds the gate, a store only
// reads location:count; one that is not numbers counts as none, not as
// Redis failing.
func TestRedisCountRead(t *testing.T) {
	srv := redistest.Start(t)
	raw := rawClient(t, srv.URL)
	ctx := context.Background()
	if err := raw.Set(ctx, countGate, "other", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	st := openRedis(t, srv.URL, nil, "a")
	var passes scanPasses
	st.c.AddHook(&passes)
	cases := []struct {
		aors, contacts     string
		wantA, wantC, poll int // poll: Count calls that must all give want
	}{
		{"x", "7", 0, 0, 20},
		{"5", "7", 5, 7, 0},
	}
	for _, tc := range cases {
		if err := raw.HSet(ctx, countKey, "aors", tc.aors, "contacts", tc.contacts).Err(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for right := 0; right <= tc.poll; {
			if a, c := st.Count(); a == tc.wantA && c == tc.wantC {
				right++
			} else if tc.poll > 0 || time.Now().After(deadline) {
				t.Fatalf("count %s/%s: store reports %d/%d, want %d/%d", tc.aors, tc.contacts, a, c, tc.wantA, tc.wantC)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if down, why := st.Down(); down {
			t.Fatalf("count %s/%s: store down: %s", tc.aors, tc.contacts, why)
		}
	}
	if n := passes.n.Load(); n != 0 {
		t.Fatalf("%d scans while another node held the gate", n)
	}
}
