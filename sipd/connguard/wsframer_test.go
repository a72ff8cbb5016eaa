package connguard

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
)

func wsFrame(t testing.TB, fin bool, op ws.OpCode, payload []byte, masked bool) []byte {
	t.Helper()
	f := ws.NewFrame(op, fin, payload)
	if masked {
		f = ws.MaskFrameInPlace(f)
	}
	var b bytes.Buffer
	if err := ws.WriteFrame(&b, f); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

const upgradeReq = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"

func TestWSFramer(t *testing.T) {
	msg := []byte("REGISTER sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n")
	big := bytes.Repeat([]byte("a"), 70000)
	cases := []struct {
		name    string
		in      [][]byte // fed in order, each split at every byte too
		done    int
		partial bool
	}{
		{"upgrade only", [][]byte{[]byte(upgradeReq)}, 1, false},
		{"upgrade half", [][]byte{[]byte(upgradeReq[:20])}, 0, true},
		{"leading CRLF then upgrade", [][]byte{[]byte("\r\n" + upgradeReq)}, 1, false},
		{"one masked text frame", [][]byte{[]byte(upgradeReq), wsFrame(t, true, ws.OpText, msg, true)}, 2, false},
		{"16-bit length", [][]byte{[]byte(upgradeReq), wsFrame(t, true, ws.OpBinary, big[:300], true)}, 2, false},
		{"64-bit length", [][]byte{[]byte(upgradeReq), wsFrame(t, true, ws.OpText, big, false)}, 2, false},
		{"frame cut short", [][]byte{[]byte(upgradeReq), wsFrame(t, true, ws.OpText, msg, true)[:10]}, 1, true},
		{"fragment without FIN", [][]byte{[]byte(upgradeReq), wsFrame(t, false, ws.OpText, msg, true)}, 1, true},
		{"fragments with ping between", [][]byte{[]byte(upgradeReq), wsFrame(t, false, ws.OpText, msg, true),
			wsFrame(t, true, ws.OpPing, nil, true), wsFrame(t, true, ws.OpContinuation, msg, true)}, 2, false},
		{"ping is no message", [][]byte{[]byte(upgradeReq), wsFrame(t, true, ws.OpPing, []byte("hi"), true)}, 1, false},
		{"empty text frame", [][]byte{[]byte(upgradeReq), wsFrame(t, true, ws.OpText, nil, true)}, 2, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, split := range []bool{false, true} {
				f := NewWSFramer()
				done, partial := 0, false
				for _, p := range tc.in {
					if !split {
						d, pt := f.Feed(p)
						done, partial = done+d, pt
						continue
					}
					for i := range p {
						d, pt := f.Feed(p[i : i+1])
						done, partial = done+d, pt
					}
				}
				if done != tc.done || partial != tc.partial {
					t.Fatalf("split %v: done %d partial %v, want %d %v", split, done, partial, tc.done, tc.partial)
				}
			}
		})
	}
}

func FuzzWSFramer(f *testing.F) {
	f.Add([]byte(upgradeReq), 7)
	f.Add(append([]byte(upgradeReq), wsFrame(f, true, ws.OpText, []byte("x"), true)...), 3)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		// Any split of the input frames the same.
		if cut < 0 || cut > len(data) {
			cut = len(data) / 2
		}
		a := NewWSFramer()
		d1, p1 := a.Feed(data)
		b := NewWSFramer()
		d2, _ := b.Feed(data[:cut])
		d3, p3 := b.Feed(data[cut:])
		if d1 != d2+d3 || p1 != p3 {
			t.Fatalf("whole: %d %v, split at %d: %d %v", d1, p1, cut, d2+d3, p3)
		}
	})
}
