package ice

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/pion/stun/v4"
)

var (
	creds = Creds{LocalUfrag: "RlyU", LocalPwd: "relaypasswordrelaypassword", RemoteUfrag: "BrWs"}
	src   = netip.MustParseAddrPort("192.0.2.7:50123")
)

// request builds a Binding request the way pion/ice's controlling agent does (USERNAME, ICE-CONTROLLING,
// PRIORITY, USE-CANDIDATE, MESSAGE-INTEGRITY, FINGERPRINT), with knobs to break each part.
type reqOpts struct {
	user          string
	pwd           string
	noIntegrity   bool
	noFingerprint bool
	class         stun.MessageClass
	method        stun.Method
	noUse         bool
}

func request(t testing.TB, o reqOpts) *stun.Message {
	t.Helper()
	if o.user == "" {
		o.user = creds.LocalUfrag + ":" + creds.RemoteUfrag
	}
	if o.pwd == "" {
		o.pwd = creds.LocalPwd
	}
	if o.method == 0 {
		o.method = stun.MethodBinding
	}
	setters := []stun.Setter{
		stun.TransactionID,
		stun.NewType(o.method, o.class),
		stun.NewUsername(o.user),
		stun.RawAttribute{Type: stun.AttrICEControlling, Value: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		stun.RawAttribute{Type: stun.AttrPriority, Value: []byte{0x6e, 0, 0x1e, 0xff}},
	}
	if !o.noUse {
		setters = append(setters, stun.RawAttribute{Type: stun.AttrUseCandidate})
	}
	if !o.noIntegrity {
		setters = append(setters, stun.NewShortTermIntegrity(o.pwd))
	}
	if !o.noFingerprint {
		setters = append(setters, stun.Fingerprint)
	}
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestHandle(t *testing.T) {
	r, err := NewResponder(creds)
	if err != nil {
		t.Fatal(err)
	}
	badFP := func(t testing.TB) []byte {
		b := append([]byte(nil), request(t, reqOpts{}).Raw...)
		b[len(b)-1] ^= 0xff
		return b
	}
	// Flip a byte inside USERNAME's value after the fingerprint is recomputed: the fingerprint passes and the
	// username no longer matches; flipping the HMAC instead must fail integrity.
	badHMAC := func(t testing.TB) []byte {
		m := request(t, reqOpts{noFingerprint: true})
		v, _ := m.Get(stun.AttrMessageIntegrity)
		v[0] ^= 1
		if err := stun.Fingerprint.AddTo(m); err != nil {
			t.Fatal(err)
		}
		return m.Raw
	}
	tests := []struct {
		name string
		pkt  func(testing.TB) []byte
		want Reason
		use  bool
	}{
		{"right credentials", func(t testing.TB) []byte { return request(t, reqOpts{}).Raw }, Answered, true},
		{"no use-candidate", func(t testing.TB) []byte { return request(t, reqOpts{noUse: true}).Raw }, Answered, false},
		{"wrong username", func(t testing.TB) []byte { return request(t, reqOpts{user: "RlyU:Evil"}).Raw }, WrongUsername, false},
		{"swapped username", func(t testing.TB) []byte { return request(t, reqOpts{user: "BrWs:RlyU"}).Raw }, WrongUsername, false},
		{"wrong pwd", func(t testing.TB) []byte { return request(t, reqOpts{pwd: "notthepasswordnotthepassword"}).Raw }, BadIntegrity, false},
		{"tampered hmac", badHMAC, BadIntegrity, false},
		{"no integrity", func(t testing.TB) []byte { return request(t, reqOpts{noIntegrity: true}).Raw }, NoIntegrity, false},
		{"bad fingerprint", badFP, BadFingerprint, false},
		{"no fingerprint", func(t testing.TB) []byte { return request(t, reqOpts{noFingerprint: true}).Raw }, NoFingerprint, false},
		{"success response", func(t testing.TB) []byte { return request(t, reqOpts{class: stun.ClassSuccessResponse}).Raw }, NotRequest, false},
		{"indication", func(t testing.TB) []byte { return request(t, reqOpts{class: stun.ClassIndication}).Raw }, NotRequest, false},
		{"allocate request", func(t testing.TB) []byte { return request(t, reqOpts{method: stun.MethodAllocate}).Raw }, NotBinding, false},
		{"no username", func(t testing.TB) []byte {
			m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewShortTermIntegrity(creds.LocalPwd), stun.Fingerprint)
			if err != nil {
				t.Fatal(err)
			}
			return m.Raw
		}, NoUsername, false},
		{"rtp", func(testing.TB) []byte { return []byte{0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1} }, NotSTUN, false},
		{"empty", func(testing.TB) []byte { return nil }, NotSTUN, false},
		{"truncated", func(t testing.TB) []byte { return request(t, reqOpts{}).Raw[:30] }, NotSTUN, false},
		{"trailing bytes", func(t testing.TB) []byte { return append(request(t, reqOpts{}).Raw, 0, 0, 0, 0) }, NotSTUN, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := tt.pkt(t)
			orig := append([]byte(nil), pkt...)
			got := r.Handle(pkt, src)
			if got.Reason != tt.want {
				t.Fatalf("reason %v, want %v", got.Reason, tt.want)
			}
			if !bytes.Equal(pkt, orig) {
				t.Fatal("Handle modified the caller's datagram")
			}
			if tt.want != Answered {
				if got.Response != nil {
					t.Fatal("a response for a refused request")
				}
				return
			}
			if got.UseCandidate != tt.use {
				t.Fatalf("UseCandidate %v, want %v", got.UseCandidate, tt.use)
			}
			checkResponse(t, got.Response, pkt, src)
		})
	}
}

// checkResponse verifies a response as the browser's agent (pion/ice does the same) would: success class,
// same transaction, MESSAGE-INTEGRITY with the relay's pwd, FINGERPRINT, and the mapped address.
func checkResponse(t *testing.T, resp, req []byte, from netip.AddrPort) {
	t.Helper()
	var m, q stun.Message
	m.Raw = append([]byte(nil), resp...)
	if err := m.Decode(); err != nil {
		t.Fatalf("decode response: %v", err)
	}
	q.Raw = append([]byte(nil), req...)
	if err := q.Decode(); err != nil {
		t.Fatal(err)
	}
	if m.Type != stun.BindingSuccess {
		t.Fatalf("type %v, want binding success", m.Type)
	}
	if m.TransactionID != q.TransactionID {
		t.Fatal("transaction ID differs from the request's")
	}
	if err := m.Check(stun.Fingerprint, stun.NewShortTermIntegrity(creds.LocalPwd)); err != nil {
		t.Fatalf("response does not verify: %v", err)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(&m); err != nil {
		t.Fatal(err)
	}
	a, _ := netip.AddrFromSlice(xor.IP)
	if got := netip.AddrPortFrom(a.Unmap(), uint16(xor.Port)); got != from {
		t.Fatalf("XOR-MAPPED-ADDRESS %v, want %v", got, from)
	}
	if err := m.Check(stun.NewShortTermIntegrity("someoneelsespasswordxyz")); err == nil {
		t.Fatal("response verifies with a wrong pwd too")
	}
}

func TestHandleIPv6AndMapped(t *testing.T) {
	r, err := NewResponder(creds)
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []netip.AddrPort{
		netip.MustParseAddrPort("[2001:db8::5]:40000"),
		netip.MustParseAddrPort("[::ffff:192.0.2.9]:40001"),
	} {
		req := request(t, reqOpts{}).Raw
		got := r.Handle(req, from)
		if got.Reason != Answered {
			t.Fatalf("%v: %v", from, got.Reason)
		}
		want := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		checkResponse(t, got.Response, req, want)
	}
	if got := r.Handle(request(t, reqOpts{}).Raw, netip.AddrPort{}); got.Reason != NoAddress {
		t.Fatalf("invalid source: %v", got.Reason)
	}
}

func TestDemux(t *testing.T) {
	tests := []struct {
		b    byte
		want Kind
	}{
		{0, KindSTUN}, {3, KindSTUN}, {4, KindOther}, {19, KindOther}, {20, KindDTLS}, {22, KindDTLS},
		{63, KindDTLS}, {64, KindOther}, {127, KindOther}, {128, KindRTP}, {191, KindRTP}, {192, KindOther},
		{255, KindOther},
	}
	for _, tt := range tests {
		if got := Demux([]byte{tt.b, 0}); got != tt.want {
			t.Errorf("Demux(%d) = %v, want %v", tt.b, got, tt.want)
		}
	}
	if Demux(nil) != KindOther {
		t.Error("empty datagram is not KindOther")
	}
	if Demux(request(t, reqOpts{}).Raw) != KindSTUN {
		t.Error("a Binding request is not KindSTUN")
	}
}

func TestNewCreds(t *testing.T) {
	a, err := NewCreds()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewCreds()
	if err != nil {
		t.Fatal(err)
	}
	if !ValidUfrag(a.LocalUfrag) || !ValidPwd(a.LocalPwd) {
		t.Fatalf("generated credentials break ICE's rules: %+v", a)
	}
	if a.LocalUfrag == b.LocalUfrag || a.LocalPwd == b.LocalPwd {
		t.Fatal("two legs got the same credentials")
	}
	for _, bad := range []Creds{
		{LocalUfrag: "abc", LocalPwd: creds.LocalPwd, RemoteUfrag: "BrWs"},
		{LocalUfrag: "RlyU", LocalPwd: "short", RemoteUfrag: "BrWs"},
		{LocalUfrag: "RlyU", LocalPwd: creds.LocalPwd, RemoteUfrag: ""},
		{LocalUfrag: "Rl:U", LocalPwd: creds.LocalPwd, RemoteUfrag: "BrWs"},
	} {
		if _, err := NewResponder(bad); err == nil {
			t.Errorf("NewResponder(%+v) accepted", bad)
		}
	}
}

func TestReasonString(t *testing.T) {
	for r := Reason(0); int(r) < NumReasons; r++ {
		if s := r.String(); s == "" || strings.HasPrefix(s, "reason(") {
			t.Errorf("reason %d has no name", r)
		}
	}
}
