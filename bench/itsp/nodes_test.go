package itsp

import (
	"strings"
	"testing"
)

// infoSample is the shape of redis-server's INFO answer: sections of
// "field:value" lines, CRLF-terminated, with "#" headings.
const infoSample = "# Memory\r\nused_memory:1034384\r\nused_memory_human:1010.14K\r\n\r\n# Keyspace\r\ndb0:keys=4000,expires=2000,avg_ttl=3599000\r\n"

func TestInfoField(t *testing.T) {
	for _, tt := range []struct {
		field, want string
		ok          bool
	}{
		{"used_memory", "1034384", true},
		{"used_memory_human", "1010.14K", true},
		{"db0", "keys=4000,expires=2000,avg_ttl=3599000", true},
		{"db1", "", false},
		{"used", "", false},
	} {
		got, ok := infoField(infoSample, tt.field)
		if got != tt.want || ok != tt.ok {
			t.Errorf("infoField(%q) = %q, %v; want %q, %v", tt.field, got, ok, tt.want, tt.ok)
		}
	}
}

func TestKeyspaceKeys(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"keys=4000,expires=2000,avg_ttl=3599000", 4000, true},
		{"expires=1,keys=7", 7, true},
		{"keys=-1", -1, false},
		{"keys=x", 0, false},
		{"expires=3", 0, false},
		{"", 0, false},
	} {
		got, ok := keyspaceKeys(tt.in)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("keyspaceKeys(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzInfoField: INFO's text comes from the wire; nothing in it may
// panic the bench, and a field found is on a line of the text.
func FuzzInfoField(f *testing.F) {
	f.Add(infoSample, "used_memory")
	f.Add("db0:keys=1", "db0")
	f.Fuzz(func(t *testing.T, text, field string) {
		v, ok := infoField(text, field)
		if ok && !strings.Contains(text, field+":"+v) {
			t.Errorf("infoField(%q, %q) = %q, which the text does not hold", text, field, v)
		}
		if ok {
			keyspaceKeys(v)
		}
	})
}

// The Redis section has one row per run on Redis, none for a run on the
// file store, and projects 1 M contacts on the run's line.
func TestWriteShared(t *testing.T) {
	onRedis := Result{Subscribers: 100000, Proxies: 2, Store: "redis", CrossNodeCalls: 200,
		Ramp: Ramp{Seconds: 20, Rate: 5000, CPUAvg: 1.2},
		Classes: []ClassResult{{Name: "register-ramp", Offered: 100000, Completed: 100000, P50ms: 1.5, P99ms: 12},
			{Name: "call", Offered: 400, Completed: 400}},
		Redis: &RedisResult{UsedMemoryIdle: 1 << 20, UsedMemoryRegistered: 1<<20 + 100000*1000, BytesPerContact: 1000, Keys: 200000,
			RSSRegistered: 200 << 20, CPURampAvg: 0.25, CPUUsPerRegistration: 50, CPUHoldAvg: 0.05}}
	var b strings.Builder
	writeShared(&b, []Result{onRedis, {Subscribers: 100000, Store: "file"}})
	md := b.String()
	want := "| 100000 | 2 | 5000.0 | 0 | 1.50 / 12.00 | 400 (200) | 0 | 1.20 | 240.0 | 0.25 | 50.0 | 0.05 | 1.0 / 96.4 | 200 | 1000.0 | 200000 | 955 |"
	if !strings.Contains(md, "## Location table in Redis") || !strings.Contains(md, want) || strings.Count(md, "| 100000 |") != 1 {
		t.Errorf("section:\n%s\nwant the row %s and no other", md, want)
	}
	var none strings.Builder
	writeShared(&none, []Result{{Subscribers: 100000, Store: "file"}})
	if none.Len() != 0 {
		t.Errorf("runs on the file store only: %q", none.String())
	}
}
