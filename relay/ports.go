package relay

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// portPool hands out RTP/RTCP port pairs (RTP even, RTCP = RTP+1) of one
// relay address, drawn at random: an attacker who knows one call's ports
// must not be able to guess the next call's and spray them before its
// phones send (RTP bleed). The generator is ChaCha8 seeded from
// crypto/rand; it need not be cryptographic itself, only unpredictable
// from outside. A pair freed by a call that just ended waits in a FIFO
// quarantine before it can be drawn again, so that late packets for the
// old call hit a port nobody uses instead of a new call.
type portPool struct {
	base uint16 // first (even) RTP port
	n    int    // pairs in the pool
	// draw holds the drawable pair indexes in any order; pos[i] is pair
	// i's index in draw, or -1.
	draw []uint16
	pos  []int32
	// quar is the quarantine ring: quar[qhead:qhead+qn] (mod len), oldest
	// first.
	quar  []uint16
	qhead int
	qn    int
	inUse []uint64 // bitmap by pair index, to refuse double frees
	rng   *rand.Rand
}

// maxQuarantine bounds the quarantine: at most a quarter of the pool (a
// freed pair waits until that many more pairs are freed after it), and
// at most half of the free pairs, so draws stay random in a busy pool.
func (p *portPool) maxQuarantine() int {
	return min(max(p.n/4, 1), (p.qn+len(p.draw))/2)
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
	pairs := int((uint32(max) - base + 1) / 2)
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("seed port generator: %w", err)
	}
	p := &portPool{
		base:  uint16(base),
		n:     pairs,
		draw:  make([]uint16, pairs),
		pos:   make([]int32, pairs),
		quar:  make([]uint16, pairs),
		inUse: make([]uint64, (pairs+63)/64),
		rng:   rand.New(rand.NewChaCha8(seed)),
	}
	for i := range p.draw {
		p.draw[i] = uint16(i)
		p.pos[i] = int32(i)
	}
	return p, nil
}

func (p *portPool) used(i uint16) bool { return p.inUse[i/64]&(1<<(i%64)) != 0 }

// take removes pair i from the drawable set.
func (p *portPool) take(i uint16) {
	k := p.pos[i]
	last := p.draw[len(p.draw)-1]
	p.draw[k] = last
	p.pos[last] = k
	p.draw = p.draw[:len(p.draw)-1]
	p.pos[i] = -1
}

func (p *portPool) put(i uint16) {
	p.pos[i] = int32(len(p.draw))
	p.draw = append(p.draw, i)
}

// release moves the oldest quarantined pairs back into the drawable set
// while the quarantine is over its bound.
func (p *portPool) release() {
	for p.qn > 0 && p.qn > p.maxQuarantine() {
		p.put(p.quar[p.qhead])
		p.qhead++
		if p.qhead == len(p.quar) {
			p.qhead = 0
		}
		p.qn--
	}
}

// alloc returns a free RTP port (even); its RTCP port is rtp+1.
func (p *portPool) alloc() (uint16, error) {
	if len(p.draw) == 0 {
		if p.qn == 0 {
			return 0, ErrPortsExhausted
		}
		// Only quarantined pairs are left: the one freed longest ago.
		p.put(p.quar[p.qhead])
		p.qhead++
		if p.qhead == len(p.quar) {
			p.qhead = 0
		}
		p.qn--
	}
	i := p.draw[p.rng.IntN(len(p.draw))]
	p.take(i)
	p.inUse[i/64] |= 1 << (i % 64)
	p.release()
	return p.base + 2*i, nil
}

// free puts a pair in quarantine.
func (p *portPool) free(rtp uint16) error {
	if rtp < p.base || (rtp-p.base)%2 != 0 {
		return fmt.Errorf("free port %d: not an RTP port of this pool", rtp)
	}
	i := (rtp - p.base) / 2
	if int(i) >= p.n {
		return fmt.Errorf("free port %d: outside this pool", rtp)
	}
	if !p.used(i) {
		return fmt.Errorf("free port %d: not allocated", rtp)
	}
	p.inUse[i/64] &^= 1 << (i % 64)
	tail := p.qhead + p.qn
	if tail >= len(p.quar) {
		tail -= len(p.quar)
	}
	p.quar[tail] = i
	p.qn++
	p.release()
	return nil
}

func (p *portPool) total() int     { return p.n }
func (p *portPool) available() int { return len(p.draw) + p.qn }

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
	return rtp >= p.base && (rtp-p.base)%2 == 0 && int((rtp-p.base)/2) < p.n
}

// reserve takes the given RTP ports out of the free pairs and returns
// those it reserved: ports outside the pool or already in use are left
// out. One pass over the quarantine whatever the number of ports.
func (p *portPool) reserve(rtps []uint16) []uint16 {
	var got []uint16
	quarantined := false
	for _, rtp := range rtps {
		if !p.holds(rtp) {
			continue
		}
		i := (rtp - p.base) / 2
		if p.used(i) {
			continue
		}
		p.inUse[i/64] |= 1 << (i % 64)
		if p.pos[i] >= 0 {
			p.take(i)
		} else {
			quarantined = true
		}
		got = append(got, rtp)
	}
	if quarantined {
		// Drop the reserved pairs from the ring, keeping the others' order.
		k := 0
		for j := 0; j < p.qn; j++ {
			i := p.quar[(p.qhead+j)%len(p.quar)]
			if !p.used(i) {
				p.quar[k] = i
				k++
			}
		}
		p.qhead, p.qn = 0, k
	}
	return got
}
