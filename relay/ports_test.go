package relay

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPortPoolPairs(t *testing.T) {
	tests := []struct {
		name     string
		min, max uint16
		want     []uint16 // RTP ports in allocation order
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
			for i, w := range tt.want {
				got, err := p.alloc()
				if err != nil {
					t.Fatalf("alloc %d: %v", i, err)
				}
				if got != w {
					t.Fatalf("alloc %d = %d, want %d", i, got, w)
				}
			}
			if _, err := p.alloc(); !errors.Is(err, ErrPortsExhausted) {
				t.Fatalf("alloc past the end: err = %v, want ErrPortsExhausted", err)
			}
		})
	}
}

func TestPortPoolFIFOReuse(t *testing.T) {
	p, err := newPortPool(10000, 10007) // 4 pairs
	if err != nil {
		t.Fatal(err)
	}
	a, _ := p.alloc() // 10000
	b, _ := p.alloc() // 10002
	if err := p.free(a); err != nil {
		t.Fatal(err)
	}
	// 10000 was just freed: 10004 and 10006 must come first.
	for _, want := range []uint16{10004, 10006, 10000} {
		got, err := p.alloc()
		if err != nil || got != want {
			t.Fatalf("alloc = %d, %v; want %d", got, err, want)
		}
	}
	if _, err := p.alloc(); !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("err = %v, want ErrPortsExhausted", err)
	}
	if err := p.free(b); err != nil {
		t.Fatal(err)
	}
	if got, err := p.alloc(); err != nil || got != b {
		t.Fatalf("alloc after exhaustion and free = %d, %v; want %d", got, err, b)
	}
	if p.available() != 0 {
		t.Fatalf("available = %d, want 0", p.available())
	}
}

func TestPortPoolBadFree(t *testing.T) {
	p, _ := newPortPool(10000, 10007)
	a, _ := p.alloc()
	for _, port := range []uint16{10001, 9998, 10008, 10002} {
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
