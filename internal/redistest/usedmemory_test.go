package redistest

import (
	"bufio"
	"strings"
	"testing"
)

func TestUsedMemory(t *testing.T) {
	cases := []struct {
		name, info string
		want       int64
		ok         bool
	}{
		{"info memory", "# Memory\r\nused_memory:1024\r\nused_memory_human:1.00K\r\nused_memory_rss:8192\r\n", 1024, true},
		{"prefix of another field only", "# Memory\r\nused_memory_rss:8192\r\n", 0, false},
		{"not a number", "used_memory:lots\r\n", 0, false},
		{"negative", "used_memory:-1\r\n", 0, false},
		{"empty", "", 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := usedMemory(c.info)
			if (err == nil) != c.ok || got != c.want {
				t.Fatalf("usedMemory = %d, %v; want %d, ok %v", got, err, c.want, c.ok)
			}
		})
	}
}

// TestServerUsedMemory: a server's used_memory grows with a key written.
func TestServerUsedMemory(t *testing.T) {
	s := Start(t)
	before, err := s.UsedMemory()
	if err != nil || before <= 0 {
		t.Fatalf("UsedMemory = %d, %v", before, err)
	}
	c, err := s.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A 100 kB value: too long for an inline command.
	if _, err := c.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n" + strings.Repeat("x", 100000) + "\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "+OK\r\n" {
		t.Fatalf("SET answered %q, %v", line, err)
	}
	after, err := s.UsedMemory()
	if err != nil || after < before+100000 {
		t.Fatalf("used_memory %d after a 100 kB key, %d before (%v)", after, before, err)
	}
}

func FuzzUsedMemory(f *testing.F) {
	f.Add("# Memory\r\nused_memory:1024\r\n")
	f.Fuzz(func(t *testing.T, info string) {
		if n, err := usedMemory(info); err == nil && n < 0 {
			t.Fatalf("negative used_memory %d from %q", n, info)
		}
	})
}
