package sipserver

import (
	"testing"
)

// BenchmarkKeepaliveAnswer: one keep-alive NOTIFY datagram to the bytes of
// its 200 OK.
func BenchmarkKeepaliveAnswer(b *testing.B) {
	data := []byte(kaBase)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if keepaliveAnswer(data, kaSrc, kaSelf, "0123456789abcdef") == nil {
			b.Fatal("not answered")
		}
	}
}

// BenchmarkKeepaliveAppend: the same into a reused buffer with the
// request-URI cache, as the read loop calls it.
func BenchmarkKeepaliveAppend(b *testing.B) {
	data := []byte(kaBase)
	var uris selfURIs
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		out, ok := appendKeepaliveAnswer(buf[:0], data, kaSrc, kaSelf, "0123456789abcdef", &uris)
		if !ok || len(out) == 0 {
			b.Fatal("not answered")
		}
	}
}
