package digest

import (
	"reflect"
	"sort"
	"strings"
	"testing"
)

// FuzzParseUsers: any users file is parsed or refused without a panic;
// what is accepted gives every user a secret, names and values free of
// the separators, the table and the map agree, and writing the set out
// again reads back the same.
func FuzzParseUsers(f *testing.F) {
	for _, s := range []string{
		"alice password=secret\nbob ha1-md5=" + HA1(MD5, "bob", "r", "b") + " ha1-sha256=" + HA1(SHA256, "bob", "r", "b") + "\n",
		"# comment only\n\n   \n",
		"carol c # bare password\r\n",
		"dave ha1=" + strings.Repeat("A", 32),
		"x password=a=b\ty\tz\n",
		"x ha1-md5=zz", "x y\nx z", "x foo=1", "dave", "eve password=",
		"\x00 password=\x01",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseUsers(data)
		if err != nil {
			return
		}
		tbl, err := parseTable(data)
		if err != nil {
			t.Fatalf("ParseUsers accepted, parseTable refused: %v", err)
		}
		names := make([]string, 0, len(m))
		for name, c := range m {
			names = append(names, name)
			if name == "" || strings.ContainsAny(name, " \t\r\v\f\n#") {
				t.Fatalf("name %q holds a separator", name)
			}
			if c.Password == "" && len(c.HA1) == 0 {
				t.Fatalf("user %q has no secret", name)
			}
			if strings.ContainsAny(c.Password, " \t\r\v\f\n#") {
				t.Fatalf("password %q of %q holds a separator", c.Password, name)
			}
			if got, ok := tbl.lookup(name); !ok || !reflect.DeepEqual(got, c) {
				t.Fatalf("table has %q as %+v, map as %+v", name, got, c)
			}
		}
		if len(tbl.users) != len(m) {
			t.Fatalf("table holds %d users, map %d", len(tbl.users), len(m))
		}
		sort.Strings(names)
		var b strings.Builder
		for _, name := range names {
			c := m[name]
			b.WriteString(name)
			if c.Password != "" {
				b.WriteString(" password=" + c.Password)
			}
			if h, ok := c.HA1[MD5]; ok {
				b.WriteString(" ha1-md5=" + h)
			}
			if h, ok := c.HA1[SHA256]; ok {
				b.WriteString(" ha1-sha256=" + h)
			}
			b.WriteString("\n")
		}
		again, err := ParseUsers([]byte(b.String()))
		if err != nil {
			t.Fatalf("written out again, refused: %v\n%s", err, b.String())
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip changed the set:\n%s\n%v\n%v", b.String(), m, again)
		}
	})
}
