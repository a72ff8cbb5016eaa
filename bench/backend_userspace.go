package bench

import (
	"sipxdp/relay"
	"sipxdp/usrelay"
)

func init() {
	openDatapath["userspace"] = func(c relayChildConfig) (relay.Datapath, func() map[string]uint64, error) {
		r, err := usrelay.New(usrelay.Config{})
		if err != nil {
			return nil, nil, err
		}
		return r, r.Counters, nil
	}
}
