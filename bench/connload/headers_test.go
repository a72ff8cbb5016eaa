package connload

import (
	"bufio"
	"reflect"
	"strings"
	"testing"
)

func TestReadHeaders(t *testing.T) {
	tests := []struct {
		name, in string
		want     [][2]string
		rest     string // what follows the message
		ok       bool
	}{
		{"compact names in full", "v: SIP/2.0/TCP a\r\nI:  x@y \r\nl: 0\r\n\r\nNEXT", [][2]string{{"via", "SIP/2.0/TCP a"}, {"call-id", "x@y"}, {"content-length", "0"}}, "NEXT", true},
		{"body skipped", "Content-Length: 4\r\n\r\nbodyNEXT", [][2]string{{"content-length", "4"}}, "NEXT", true},
		{"line without colon ignored", "junk\nCSeq: 1 INVITE\n\n", [][2]string{{"cseq", "1 INVITE"}}, "", true},
		{"cut before the blank line", "To: a\r\n", [][2]string{{"to", "a"}}, "", false},
		{"body cut short", "Content-Length: 10\r\n\r\nab", [][2]string{{"content-length", "10"}}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReader(strings.NewReader(tt.in))
			var got [][2]string
			err := readHeaders(r, func(name, val string) { got = append(got, [2]string{name, val}) })
			if (err == nil) != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("readHeaders = %q, %v; want %q, ok %v", got, err, tt.want, tt.ok)
			}
			if rest, _ := r.ReadString(0); tt.ok && rest != tt.rest {
				t.Errorf("left %q, want %q", rest, tt.rest)
			}
		})
	}
}

func FuzzReadHeaders(f *testing.F) {
	f.Add("Via: a\r\nl: 3\r\n\r\nabc")
	f.Add("t: <sip:x>;tag=1\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		r := bufio.NewReader(strings.NewReader(in))
		_ = readHeaders(r, func(name, val string) {
			if name != strings.ToLower(name) || val != strings.TrimSpace(val) {
				t.Errorf("header %q: %q not normalised", name, val)
			}
		})
	})
}
