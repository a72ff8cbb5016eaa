package relay

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// portPool hands out RTP/RTCP port pairs (RTP even, RTCP = RTP+1) of one
// relay address. Free pairs sit in a FIFO ring so that a pair freed by a
// call that just ended is the last to be handed out again: late packets
// for the old call then hit a port nobody uses instead of a new call.
type portPool struct {
	base  uint16   // first (even) RTP port
	ring  []uint16 // pair indexes; ring[head:head+n] (mod len) are free
	head  int
	n     int
	inUse []uint64 // bitmap by pair index, to refuse double frees
}

func newPortPool(min, max uint16) (*portPool, error) {
	base := uint32(min)
	if base%2 == 1 {
		base++
	}
	if base == 0 {
		// Port 0 means "any" to the kernel; never hand it out.
		base = 2
	}
	if uint32(max) < base+1 {
		return nil, fmt.Errorf("port range %d-%d holds no even/odd pair", min, max)
	}
	pairs := (uint32(max) - base + 1) / 2
	p := &portPool{
		base:  uint16(base),
		ring:  make([]uint16, pairs),
		n:     int(pairs),
		inUse: make([]uint64, (pairs+63)/64),
	}
	for i := range p.ring {
		p.ring[i] = uint16(i)
	}
	return p, nil
}

// alloc returns a free RTP port (even); its RTCP port is rtp+1.
func (p *portPool) alloc() (uint16, error) {
	if p.n == 0 {
		return 0, ErrPortsExhausted
	}
	i := p.ring[p.head]
	p.head++
	if p.head == len(p.ring) {
		p.head = 0
	}
	p.n--
	p.inUse[i/64] |= 1 << (i % 64)
	return p.base + 2*i, nil
}

// free returns a pair to the tail of the ring.
func (p *portPool) free(rtp uint16) error {
	if rtp < p.base || (rtp-p.base)%2 != 0 {
		return fmt.Errorf("free port %d: not an RTP port of this pool", rtp)
	}
	i := (rtp - p.base) / 2
	if int(i) >= len(p.ring) {
		return fmt.Errorf("free port %d: outside this pool", rtp)
	}
	if p.inUse[i/64]&(1<<(i%64)) == 0 {
		return fmt.Errorf("free port %d: not allocated", rtp)
	}
	p.inUse[i/64] &^= 1 << (i % 64)
	tail := p.head + p.n
	if tail >= len(p.ring) {
		tail -= len(p.ring)
	}
	p.ring[tail] = i
	p.n++
	return nil
}

func (p *portPool) total() int     { return len(p.ring) }
func (p *portPool) available() int { return p.n }

// portRange is an inclusive range of ports.
type portRange struct{ lo, hi uint16 }

func (r portRange) String() string {
	if r.lo == r.hi {
		return strconv.Itoa(int(r.lo))
	}
	return fmt.Sprintf("%d-%d", r.lo, r.hi)
}

// parsePortList parses the sysctl format "8080,9000-9010" (empty allowed).
func parsePortList(s string) ([]portRange, error) {
	var out []portRange
	for _, f := range strings.Split(strings.TrimSpace(s), ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		if err != nil {
			return nil, fmt.Errorf("parse port list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16); err != nil {
				return nil, fmt.Errorf("parse port list %q: %w", s, err)
			}
		}
		out = append(out, portRange{uint16(a), uint16(b)})
	}
	return out, nil
}

// covered reports whether every port of r is in one of the ranges.
func covered(r portRange, list []portRange) bool {
	for p := uint32(r.lo); p <= uint32(r.hi); {
		next := p
		for _, l := range list {
			if uint32(l.lo) <= p && p <= uint32(l.hi) {
				next = uint32(l.hi) + 1
				break
			}
		}
		if next == p {
			return false
		}
		p = next
	}
	return true
}

// ReserveLocalPorts keeps the kernel from handing relay ports to other
// sockets as ephemeral ports. The relay does not hold a socket on every
// port (calls on the kernel path need none, and the fd cap would stop us at
// about 5,000 calls), so a pool range inside ip_local_port_range must be
// listed in ip_local_reserved_ports. procDir is normally "/proc"; tests
// pass a fake tree. The existing reserved list is kept and extended. Ranges
// that cannot be reserved are logged as a warning and returned in the
// error; the relay still works, with a risk of port collisions.
func ReserveLocalPorts(procDir string, ranges [][2]uint16, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	dir := filepath.Join(procDir, "sys", "net", "ipv4")
	lpr, err := os.ReadFile(filepath.Join(dir, "ip_local_port_range"))
	if err != nil {
		log.Warn("cannot read ephemeral port range; relay ports not reserved", "err", err)
		return fmt.Errorf("read ip_local_port_range: %w", err)
	}
	f := strings.Fields(string(lpr))
	if len(f) != 2 {
		return fmt.Errorf("parse ip_local_port_range %q: want two numbers", lpr)
	}
	elo, err1 := strconv.ParseUint(f[0], 10, 16)
	ehi, err2 := strconv.ParseUint(f[1], 10, 16)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("parse ip_local_port_range %q: %w", lpr, err)
	}
	resPath := filepath.Join(dir, "ip_local_reserved_ports")
	var reserved []portRange
	if b, err := os.ReadFile(resPath); err == nil {
		if reserved, err = parsePortList(string(b)); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		log.Warn("cannot read reserved ports", "err", err)
	}
	var add []portRange
	for _, r := range ranges {
		pr := portRange{r[0], r[1]}
		if uint64(pr.hi) < elo || uint64(pr.lo) > ehi {
			continue // outside the ephemeral range: nothing can collide
		}
		if covered(pr, reserved) || covered(pr, add) {
			continue
		}
		add = append(add, pr)
	}
	if len(add) == 0 {
		return nil
	}
	list := make([]string, 0, len(reserved)+len(add))
	for _, r := range reserved {
		list = append(list, r.String())
	}
	for _, r := range add {
		list = append(list, r.String())
	}
	val := strings.Join(list, ",")
	// Writing the sysctl replaces the whole list, hence old + new.
	if err := os.WriteFile(resPath, []byte(val+"\n"), 0o644); err != nil {
		log.Warn("relay ports overlap the ephemeral port range and cannot be reserved; other sockets may take them",
			"ephemeral", fmt.Sprintf("%d-%d", elo, ehi), "ranges", fmt.Sprint(add), "err", err)
		return fmt.Errorf("write ip_local_reserved_ports: %w", err)
	}
	log.Info("reserved relay ports against ephemeral use",
		"ephemeral", fmt.Sprintf("%d-%d", elo, ehi), "added", fmt.Sprint(add), "reserved", val)
	return nil
}

// holds reports whether rtp is an RTP port of this pool.
func (p *portPool) holds(rtp uint16) bool {
	return rtp >= p.base && (rtp-p.base)%2 == 0 && int((rtp-p.base)/2) < len(p.ring)
}

// reserve takes the given RTP ports out of the free ring, keeping the
// order of the rest, and returns those it reserved: ports outside the pool
// or already in use are left out. One pass over the ring whatever the
// number of ports.
func (p *portPool) reserve(rtps []uint16) []uint16 {
	var got []uint16
	for _, rtp := range rtps {
		if !p.holds(rtp) {
			continue
		}
		i := (rtp - p.base) / 2
		if p.inUse[i/64]&(1<<(i%64)) != 0 {
			continue
		}
		p.inUse[i/64] |= 1 << (i % 64)
		got = append(got, rtp)
	}
	if len(got) == 0 {
		return nil
	}
	free := make([]uint16, 0, p.n)
	for k := 0; k < p.n; k++ {
		i := p.ring[(p.head+k)%len(p.ring)]
		if p.inUse[i/64]&(1<<(i%64)) == 0 {
			free = append(free, i)
		}
	}
	copy(p.ring, free)
	p.head = 0
	p.n = len(free)
	return got
}
