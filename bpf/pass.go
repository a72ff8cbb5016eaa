package bpf

import (
	"fmt"
	"io"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// NewPassXDP loads an XDP program that passes every frame. Native XDP can
// redirect into a veth, or XDP_TX out of one, only when the peer end runs
// an XDP program of its own; this is the one to put there.
func NewPassXDP() (*ebpf.Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "sipxdp_pass",
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load XDP_PASS program: %w", err)
	}
	return prog, nil
}

// Namespace runs fn on a thread inside a network namespace, as
// internal/netns's NS does. An alias of an unnamed interface, so that
// AttachPassXDP fits function types written out where bpf is not
// imported (netns.Pass).
type Namespace = interface{ Do(fn func() error) error }

// AttachPassXDP attaches the program of NewPassXDP in native mode to dev
// inside ns (nil: the caller's namespace) and returns the link, whose
// Close detaches it. Deleting the device or its namespace detaches it too.
func AttachPassXDP(ns Namespace, dev string) (io.Closer, error) {
	prog, err := NewPassXDP()
	if err != nil {
		return nil, err
	}
	defer prog.Close() // the link holds its own reference
	var l link.Link
	attach := func() error {
		// The interface index and the attachment are both resolved in
		// the namespace of the calling thread.
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: link.XDPDriverMode})
		return err
	}
	if ns == nil {
		err = attach()
	} else {
		err = ns.Do(attach)
	}
	if err != nil {
		return nil, fmt.Errorf("attach XDP_PASS to %s: %w", dev, err)
	}
	return l, nil
}
