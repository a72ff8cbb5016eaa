package bench

import (
	"errors"
	"fmt"
	"log/slog"

	"sipxdp/bpf"
	"sipxdp/relay"
)

func init() {
	for _, mode := range []string{bpf.ModeXDP, bpf.ModeXDPGeneric, bpf.ModeTC} {
		openDatapath[mode] = func(c relayChildConfig) (relay.Datapath, func() map[string]uint64, error) {
			k, err := bpf.Open(bpf.Config{
				Interfaces: c.Interfaces, Mode: mode, PinPath: c.PinPath,
				PortMin: c.PortMin, PortMax: c.PortMax, Logger: slog.Default(),
			})
			if err != nil {
				return nil, nil, err
			}
			if k.Name() != mode {
				err := fmt.Errorf("asked for hook %s, got %s (%s)", mode, k.Name(), k.Reason())
				return nil, nil, errors.Join(err, k.Close(), bpf.Uninstall(c.PinPath))
			}
			counters := func() map[string]uint64 {
				m, err := k.Counters()
				if err != nil {
					slog.Warn("read kernel counters", "err", err)
				}
				return m
			}
			return uninstalling{k, c.PinPath}, counters, nil
		}
	}
}

// uninstalling removes the pinned links and maps on Close. The daemon
// keeps them so media survives restarts; a bench run must leave nothing
// attached behind it.
type uninstalling struct {
	*bpf.Kernel
	pinPath string
}

func (u uninstalling) Close() error {
	return errors.Join(u.Kernel.Close(), bpf.Uninstall(u.pinPath))
}
