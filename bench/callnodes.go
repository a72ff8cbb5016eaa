package bench

import (
	"context"
	"errors"
	"fmt"
	"os"

	"sipxdp/internal/netns"
	"sipxdp/internal/sipdrun"
	"sipxdp/sipd"
)

// The scenarios with more than one sipd (relays, proxies) run each node
// in a namespace hung off the line's middle one, which routes between
// the nodes and the endpoints as the network between hosts would.

// startNode starts one node's sipd in h and checks it runs the
// scenario's media path. On a failed check the node is returned, to be
// stopped with the others.
func (r *callRun) startNode(ctx context.Context, h *netns.Host, name string, cfg *sipd.Config, o sipdrun.Options) (*sipdrun.Sipd, error) {
	o.Binary, o.Dir, o.NetNS, o.Dial = r.o.Sipd, r.o.Out, h.Path, h.DialContext
	d, err := sipdrun.Start(ctx, cfg, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	hl, err := d.Health(ctx)
	if err != nil {
		return d, fmt.Errorf("%s: %w", name, err)
	}
	if hl.Media.Path != r.sc.Path {
		return d, fmt.Errorf("%s runs media path %q, not %q: the scenario cannot be measured here (see %s)",
			name, hl.Media.Path, r.sc.Path, d.LogPath)
	}
	return d, nil
}

// stopNode stops a node's sipd, if it started, and removes what a failed
// one left pinned.
func stopNode(name string, d *sipdrun.Sipd, pin string) error {
	var errs []error
	if d != nil {
		if err := d.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if err := os.RemoveAll(pin); err != nil {
		errs = append(errs, fmt.Errorf("remove %s pins: %w", name, err))
	}
	return errors.Join(errs...)
}

// joinStop runs stop and adds its error to *err: for deferred clean-ups
// that must not hide the run's own error.
func joinStop(err *error, stop func() error) {
	if serr := stop(); serr != nil {
		*err = errors.Join(*err, serr)
	}
}
