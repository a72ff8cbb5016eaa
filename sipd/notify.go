package sipd

import (
	"log/slog"
	"time"

	// The package is named daemon, which sipd's tests name a type.
	sd "github.com/coreos/go-systemd/v22/daemon"
)

// serviceNotifier tells a service manager (systemd's Type=notify units,
// sipd.service in packaging/) what sipd is doing: READY=1 once every listener
// is open, STOPPING=1 when it begins to shut down, and WATCHDOG=1 while
// its main loop runs. Without $NOTIFY_SOCKET every message is dropped
// silently, so sipd started by hand or by a test behaves as before.
type serviceNotifier struct {
	log *slog.Logger
	// watchdog is the interval systemd expects pings within
	// ($WATCHDOG_USEC, WatchdogSec= in the unit); 0 when it expects none.
	watchdog time.Duration
}

func newServiceNotifier(log *slog.Logger) *serviceNotifier {
	wd, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		// A malformed $WATCHDOG_USEC: systemd would kill sipd for lack of
		// pings it cannot know how often to send; say so loudly.
		log.Error("systemd watchdog not served", "err", err)
	}
	return &serviceNotifier{log: log, watchdog: wd}
}

func (n *serviceNotifier) send(state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify", "state", state, "err", err)
	}
}

// ready reports startup finished, with a status line for systemctl status.
func (n *serviceNotifier) ready(status string) {
	n.send(sd.SdNotifyReady + "\nSTATUS=" + status)
}

func (n *serviceNotifier) stopping() {
	n.send(sd.SdNotifyStopping + "\nSTATUS=stopping")
}

func (n *serviceNotifier) ping() { n.send(sd.SdNotifyWatchdog) }

// ticks returns the channel the main loop pings on, at half the watchdog
// interval as sd_watchdog_enabled(3) advises, and a stop function. With
// no watchdog the channel is nil, so its select case never fires.
func (n *serviceNotifier) ticks() (<-chan time.Time, func()) {
	if n.watchdog <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(n.watchdog / 2)
	return t.C, t.Stop
}
