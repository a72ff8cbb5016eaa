package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Hook names, as returned by Kernel.Name.
const (
	ModeAuto       = "auto"
	ModeXDP        = "xdp"
	ModeXDPGeneric = "xdp-generic"
	ModeTC         = "tc"
)

// newMaps creates fresh, unpinned maps from the object's map specs.
func newMaps() (*Maps, error) {
	spec, err := loadXdp()
	if err != nil {
		return nil, fmt.Errorf("load xdp spec: %w", err)
	}
	m := &Maps{}
	for _, p := range []struct {
		name string
		dst  **ebpf.Map
	}{{pinFlows, &m.flows}, {pinCounters, &m.counters}, {pinTxPorts, &m.txPorts}} {
		*p.dst, err = ebpf.NewMap(spec.Maps[p.name])
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("create map %s: %w", p.name, err)
		}
	}
	return m, nil
}

// loadProgram loads the XDP or tc program (kind "xdp" or "tc") bound to the
// given maps, with the relay port range baked in as constants, and with
// every program capability this kernel's verifier accepts (caps.go).
func loadProgram(kind string, m *Maps, portMin, portMax uint16) (*ebpf.Program, progCaps, error) {
	caps := allProgCaps
	for {
		prog, err := loadProgramCaps(kind, m, portMin, portMax, caps)
		var ve *ebpf.VerifierError
		if err == nil || !errors.As(err, &ve) {
			return prog, caps, err
		}
		less, ok := caps.without()
		if !ok {
			return nil, caps, err
		}
		less.refused = fmt.Sprintf("%s refused with %s: %v", kind, caps, ve)
		caps = less
	}
}

func loadProgramCaps(kind string, m *Maps, portMin, portMax uint16, caps progCaps) (*ebpf.Program, error) {
	var (
		spec *ebpf.CollectionSpec
		name string
		err  error
	)
	switch kind {
	case "xdp":
		spec, err = loadXdp()
		name = "relay_xdp"
	case "tc":
		spec, err = loadTc()
		name = "relay_tc"
	default:
		return nil, fmt.Errorf("unknown program kind %q", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s spec: %w", kind, err)
	}
	if portMin == 0 && portMax == 0 {
		portMax = 65535
	}
	if portMin > portMax {
		return nil, fmt.Errorf("port range %d-%d is empty", portMin, portMax)
	}
	if err := spec.Variables["port_min"].Set(portMin); err != nil {
		return nil, fmt.Errorf("set port_min: %w", err)
	}
	if err := spec.Variables["port_max"].Set(portMax); err != nil {
		return nil, fmt.Errorf("set port_max: %w", err)
	}
	if err := caps.set(spec); err != nil {
		return nil, err
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{
			pinFlows: m.flows, pinCounters: m.counters, pinTxPorts: m.txPorts,
		},
	})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			// %+v: the whole verifier log; the error still wraps ve.
			return nil, fmt.Errorf("load %s program (%s): %w: %+v", kind, caps, ve, ve)
		}
		return nil, fmt.Errorf("load %s program: %w", kind, err)
	}
	defer coll.Close()
	prog := coll.DetachProgram(name)
	if prog == nil {
		return nil, fmt.Errorf("load %s program: %s missing from object", kind, name)
	}
	return prog, nil
}

// Programs is both programs loaded into fresh, unpinned maps and attached
// nowhere: for BPF_PROG_TEST_RUN (fixture tests, benchmarks).
type Programs struct {
	*Maps
	XDP *ebpf.Program
	TC  *ebpf.Program
}

// LoadPrograms loads the XDP and tc programs sharing one set of new maps.
// A zero port range means every port is a relay port.
func LoadPrograms(portMin, portMax uint16) (*Programs, error) {
	m, err := newMaps()
	if err != nil {
		return nil, err
	}
	p := &Programs{Maps: m}
	var xc, tc progCaps
	if p.XDP, xc, err = loadProgram("xdp", m, portMin, portMax); err != nil {
		p.Close()
		return nil, err
	}
	if p.TC, tc, err = loadProgram("tc", m, portMin, portMax); err != nil {
		p.Close()
		return nil, err
	}
	m.crossFamily = xc.crossFamily && tc.crossFamily
	return p, nil
}

// AddTxPort puts a device into the XDP devmap so the program may redirect
// to it.
func (m *Maps) AddTxPort(ifindex int) error {
	if err := m.txPorts.Update(uint32(ifindex), uint32(ifindex), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("add ifindex %d to devmap: %w", ifindex, err)
	}
	return nil
}

// Close releases programs and maps.
func (p *Programs) Close() error {
	var errs []error
	for _, prog := range []*ebpf.Program{p.XDP, p.TC} {
		if prog != nil {
			errs = append(errs, prog.Close())
		}
	}
	errs = append(errs, p.Maps.Close())
	return errors.Join(errs...)
}
