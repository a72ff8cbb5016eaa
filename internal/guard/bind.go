package guard

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
)

// ExplainBind adds to a failed bind of addr what an operator needs to
// know when the cause is a privileged port: the packaged unit runs sipd
// as its own user with CAP_NET_BIND_SERVICE (see packaging/), and Go's
// "permission denied" alone does not say which capability is missing.
func ExplainBind(addr string, err error) error {
	if err == nil || !errors.Is(err, syscall.EACCES) {
		return err
	}
	_, port, splitErr := net.SplitHostPort(addr)
	if splitErr != nil {
		return err
	}
	if p, convErr := strconv.Atoi(port); convErr != nil || p <= 0 || p >= 1024 {
		return err
	}
	return fmt.Errorf("%w (port %s is below 1024: run sipd with CAP_NET_BIND_SERVICE, as sipd.service does, or as root)", err, port)
}
