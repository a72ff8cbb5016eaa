package registrar

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Memory of the location service at scale. These benchmarks print figures
// rather than assert them; run each once:
//
//	go test -run '^$' -bench 'Contacts|Journal' -benchtime 1x ./sipd/registrar/
//
// bytes/contact is the Go heap the table holds per registered contact
// (HeapAlloc after a GC, less what was there before, over N), and
// inuse/contact the same from HeapInuse (whole spans, what RSS follows).

// registerText is a REGISTER as a phone sends it: half carry the outbound
// parameters (RFC 5626) a modern UA adds.
func registerText(i int) []byte {
	user := fmt.Sprintf("user%07d", i)
	port := 10000 + i%50000
	callID := fmt.Sprintf("%08x%08x%08x@192.168.%d.%d", i*2654435761, i*40503, i, i/256%256, i%256)
	contact := fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=udp>", user, port)
	if i%2 == 1 {
		contact = fmt.Sprintf(`<sip:%s@127.0.0.1:%d;transport=udp;ob>;+sip.instance="<urn:uuid:%08x-4c3a-4a2b-9d1e-%012x>";reg-id=1`, user, port, i, i)
	}
	return []byte("REGISTER sip:example.org SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(port) + ";rport;branch=z9hG4bK" + strconv.Itoa(i) + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:" + user + "@example.org>;tag=" + strconv.Itoa(i) + "\r\n" +
		"To: <sip:" + user + "@example.org>\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 2 REGISTER\r\n" +
		"Contact: " + contact + "\r\n" +
		"Expires: 3600\r\n" +
		"User-Agent: Linphone/5.2.0 (belle-sip/5.2.0)\r\n" +
		"Authorization: Digest username=\"" + user + "\", realm=\"example.org\", nonce=\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\", uri=\"sip:example.org\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5, cnonce=\"abc\", qop=auth, nc=00000001\r\n" +
		"Content-Length: 0\r\n\r\n")
}

// heap is a settled reading of the Go heap.
func heap() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// fill registers n contacts through Registrar.Register, as the proxy does:
// the AoR is the To user of the parsed request, the flow its real source.
// Like the proxy it runs many REGISTERs at once: with a journal each one
// waits for its commit, and concurrent ones share it.
func fill(b *testing.B, r *Registrar, n int) time.Duration {
	b.Helper()
	const workers = 64
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				m, err := sip.ParseMessage(registerText(i))
				if err != nil {
					b.Error(err)
					return
				}
				req := m.(*sip.Request)
				flow := Flow{Received: "127.0.0.1:" + strconv.Itoa(10000+i%50000), Transport: "UDP"}
				if res := r.Register(req, req.To().Address.User, flow); res.StatusCode != 200 {
					b.Errorf("contact %d: %d %s", i, res.StatusCode, res.Reason)
					return
				}
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return time.Since(start)
}

func newBenchRegistrar(b *testing.B, path string) *Registrar {
	b.Helper()
	st, err := NewStore(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	return New(st, Options{MinExpires: 60 * time.Second, MaxExpires: 2 * time.Hour, DefaultExpires: time.Hour, MaxContacts: 10})
}

// BenchmarkContacts: memory per registered contact, in-memory store (the
// default, registrar.store empty).
func BenchmarkContacts(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				before := heap()
				r := newBenchRegistrar(b, "")
				took := fill(b, r, n)
				after := heap()
				if _, c := r.Store().Count(); c != n {
					b.Fatalf("%d contacts held, want %d", c, n)
				}
				t := time.Now()
				r.Store().(*Store).Sweep()
				sweep := time.Since(t)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "bytes/contact")
				b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(n), "inuse/contact")
				b.ReportMetric(float64(took.Nanoseconds())/float64(n), "ns/register")
				b.ReportMetric(float64(sweep.Milliseconds()), "ms/sweep")
				runtime.KeepAlive(r)
			}
		})
	}
}

// BenchmarkJournal: the same with registrar.store set: journal bytes per
// registration, and the cost of Compact (time, garbage it makes) and of
// loading the snapshot back at start.
func BenchmarkJournal(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				path := filepath.Join(b.TempDir(), "location.json")
				before := heap()
				r := newBenchRegistrar(b, path)
				took := fill(b, r, n)
				if err := r.Store().(*Store).Flush(); err != nil {
					b.Fatal(err)
				}
				after := heap()
				jbytes := r.Store().(*Store).JournalSize()
				t := time.Now()
				if err := r.Store().(*Store).Compact(); err != nil {
					b.Fatal(err)
				}
				compact := time.Since(t)
				done := heap()
				r.Store().Close()
				fi, err := os.Stat(path)
				if err != nil {
					b.Fatal(err)
				}
				r = nil
				t = time.Now()
				st, err := NewStore(path, nil)
				if err != nil {
					b.Fatal(err)
				}
				load := time.Since(t)
				if _, c := st.Count(); c != n {
					b.Fatalf("%d contacts loaded, want %d", c, n)
				}
				st.Close()
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "bytes/contact")
				b.ReportMetric(float64(took.Nanoseconds())/float64(n), "ns/register")
				b.ReportMetric(float64(jbytes)/float64(n), "journal-B/register")
				b.ReportMetric(float64(fi.Size())/float64(n), "snapshot-B/contact")
				b.ReportMetric(float64(compact.Milliseconds()), "ms/compact")
				b.ReportMetric(float64(done.TotalAlloc-after.TotalAlloc)/float64(n), "compact-alloc-B/contact")
				b.ReportMetric(float64(load.Milliseconds()), "ms/load")
			}
		})
	}
}
