package relay

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestPortPoolPairs(t *testing.T) {
	tests := []struct {
		name     string
		min, max uint16
		want     []uint16 // every RTP port, in order
		wantErr  bool
	}{
		{name: "even bounds", min: 10000, max: 10005, want: []uint16{10000, 10002, 10004}},
		{name: "odd min skips to even", min: 10001, max: 10006, want: []uint16{10002, 10004}},
		{name: "odd max drops the unpaired port", min: 10000, max: 10004, want: []uint16{10000, 10002}},
		{name: "port 0 is never handed out", min: 0, max: 3, want: []uint16{2}},
		{name: "top of the port space", min: 65532, max: 65535, want: []uint16{65532, 65534}},
		{name: "single port has no pair", min: 10000, max: 10000, wantErr: true},
		{name: "odd single pair", min: 10001, max: 10002, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newPortPool(tt.min, tt.max)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("newPortPool(%d, %d) = nil error, want one", tt.min, tt.max)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.total() != len(tt.want) {
				t.Fatalf("total = %d, want %d", p.total(), len(tt.want))
			}
			var got []uint16
			for i := range tt.want {
				r, err := p.alloc()
				if err != nil {
					t.Fatalf("alloc %d: %v", i, err)
				}
				got = append(got, r)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("allocated %v, want %v", got, tt.want)
			}
			if _, err := p.alloc(); !errors.Is(err, ErrPortsExhausted) {
				t.Fatalf("alloc past the end: err = %v, want ErrPortsExhausted", err)
			}
		})
	}
}

// Ports are drawn at random: an attacker who learns one call's ports
// cannot tell the next call's.
func TestPortPoolRandom(t *testing.T) {
	const pairs = 500
	draw := func() []uint16 {
		p, err := newPortPool(30000, 30000+2*pairs-1)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint16
		for i := 0; i < 100; i++ {
			r, err := p.alloc()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		return out
	}
	a, b := draw(), draw()
	seq := 0
	for i := 1; i < len(a); i++ {
		if d := int(a[i]) - int(a[i-1]); d == 2 || d == -2 {
			seq++
		}
	}
	// A uniform draw makes a neighbour about 2 times in 500.
	if seq > 5 {
		t.Errorf("%d of 99 consecutive allocations were neighbouring pairs: %v", seq, a)
	}
	if slices.Equal(a, b) {
		t.Errorf("two pools drew the same sequence %v: not seeded", a)
	}
	below := 0
	for _, r := range a {
		if r < 30000+pairs { // the lower half of the range
			below++
		}
	}
	if below < 25 || below > 75 {
		t.Errorf("%d of 100 allocations in the lower half of the range: not spread", below)
	}
}

// A pair just freed waits in quarantine: late packets of the ended call
// must not reach the next one. When nothing else is left, the pair freed
// longest ago goes first.
func TestPortPoolQuarantine(t *testing.T) {
	p, err := newPortPool(10000, 10199) // 100 pairs
	if err != nil {
		t.Fatal(err)
	}
	var held []uint16
	for i := 0; i < 10; i++ {
		r, _ := p.alloc()
		held = append(held, r)
	}
	freed := held[3]
	if err := p.free(freed); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		r, err := p.alloc()
		if err != nil {
			t.Fatal(err)
		}
		if r == freed {
			t.Fatalf("pair %d handed out again %d allocations after it was freed", freed, i)
		}
	}
	if p.available() != 100-29 {
		t.Fatalf("available = %d, want 71", p.available())
	}

	// A full pool: the quarantine is what is left, oldest first.
	small, _ := newPortPool(20000, 20007) // 4 pairs
	var all []uint16
	for i := 0; i < 4; i++ {
		r, _ := small.alloc()
		all = append(all, r)
	}
	small.free(all[2])
	small.free(all[0])
	if r, err := small.alloc(); err != nil || r != all[2] {
		t.Fatalf("alloc from quarantine = %d, %v; want %d, freed first", r, err, all[2])
	}
	if r, err := small.alloc(); err != nil || r != all[0] {
		t.Fatalf("alloc from quarantine = %d, %v; want %d", r, err, all[0])
	}
	if _, err := small.alloc(); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("err = %v, want ErrPortsExhausted", err)
	}
}

// Under churn no pair is handed out twice while in use, and every pair
// comes back.
func TestPortPoolNoDoubleAllocation(t *testing.T) {
	p, err := newPortPool(40000, 40063) // 32 pairs
	if err != nil {
		t.Fatal(err)
	}
	inUse := map[uint16]bool{}
	var held []uint16
	rnd := rand.New(rand.NewPCG(1, 2))
	for op := 0; op < 20000; op++ {
		if len(held) == 0 || (len(held) < 32 && rnd.IntN(2) == 0) {
			r, err := p.alloc()
			if err != nil {
				t.Fatalf("op %d: alloc with %d held: %v", op, len(held), err)
			}
			if inUse[r] || !p.holds(r) {
				t.Fatalf("op %d: alloc = %d, already in use or not ours", op, r)
			}
			inUse[r] = true
			held = append(held, r)
		} else {
			i := rnd.IntN(len(held))
			r := held[i]
			held = append(held[:i], held[i+1:]...)
			delete(inUse, r)
			if err := p.free(r); err != nil {
				t.Fatalf("op %d: free %d: %v", op, r, err)
			}
		}
		if p.available() != 32-len(held) {
			t.Fatalf("op %d: available = %d with %d held", op, p.available(), len(held))
		}
	}
}

func TestPortPoolBadFree(t *testing.T) {
	p, _ := newPortPool(10000, 10007)
	a, _ := p.alloc()
	other := uint16(10002) // a pair nobody holds
	if a == other {
		other = 10004
	}
	for _, port := range []uint16{a + 1, 9998, 10008, other} {
		if err := p.free(port); err == nil {
			t.Errorf("free(%d) = nil, want an error", port)
		}
	}
	if err := p.free(a); err != nil {
		t.Fatal(err)
	}
	if err := p.free(a); err == nil {
		t.Fatal("double free accepted")
	}
	if p.available() != 4 {
		t.Fatalf("available = %d after bad frees, want 4", p.available())
	}
}

func TestReserveLocalPorts(t *testing.T) {
	tests := []struct {
		name     string
		ephem    string // "" = no ip_local_port_range file
		reserved string // "-" = no reserved file
		ranges   [][2]uint16
		want     string // reserved file afterwards; "-" = absent
		wantErr  bool
	}{
		{name: "overlap appended to existing list", ephem: "32768\t60999\n", reserved: "8080,9000-9010\n",
			ranges: [][2]uint16{{40000, 49999}}, want: "8080,9000-9010,40000-49999\n"},
		{name: "overlap with empty list", ephem: "32768 60999", reserved: "\n",
			ranges: [][2]uint16{{30000, 33000}}, want: "30000-33000\n"},
		{name: "outside the ephemeral range untouched", ephem: "32768 60999", reserved: "8080\n",
			ranges: [][2]uint16{{10000, 20000}, {61000, 62000}}, want: "8080\n"},
		{name: "already reserved untouched", ephem: "32768 60999", reserved: "40000-45000,45001-50000\n",
			ranges: [][2]uint16{{41000, 49000}}, want: "40000-45000,45001-50000\n"},
		{name: "duplicate ranges added once", ephem: "32768 60999", reserved: "",
			ranges: [][2]uint16{{40000, 40099}, {40000, 40099}, {50000, 50099}}, want: "40000-40099,50000-50099\n"},
		{name: "no proc files", ephem: "", reserved: "-", ranges: [][2]uint16{{40000, 40099}}, want: "-", wantErr: true},
		{name: "garbage range", ephem: "abc", reserved: "", ranges: [][2]uint16{{40000, 40099}}, want: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proc := t.TempDir()
			dir := filepath.Join(proc, "sys", "net", "ipv4")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			res := filepath.Join(dir, "ip_local_reserved_ports")
			if tt.ephem != "" {
				write(t, filepath.Join(dir, "ip_local_port_range"), tt.ephem)
			}
			if tt.reserved != "-" {
				write(t, res, tt.reserved)
			}
			err := ReserveLocalPorts(proc, tt.ranges, discardLogger())
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			got, rerr := os.ReadFile(res)
			if tt.want == "-" {
				if rerr == nil {
					t.Fatalf("reserved file created: %q", got)
				}
				return
			}
			if string(got) != tt.want {
				t.Fatalf("reserved = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReserveLocalPortsUnwritable(t *testing.T) {
	proc := t.TempDir()
	dir := filepath.Join(proc, "sys", "net", "ipv4")
	// A directory where the sysctl should be: the write fails even as root.
	if err := os.MkdirAll(filepath.Join(dir, "ip_local_reserved_ports"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "ip_local_port_range"), "32768 60999")
	err := ReserveLocalPorts(proc, [][2]uint16{{40000, 40099}}, discardLogger())
	if err == nil || !strings.Contains(err.Error(), "ip_local_reserved_ports") {
		t.Fatalf("err = %v, want a write error naming the sysctl", err)
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
