#!/bin/sh
# sipxdp's prerm. On removal (not on an upgrade, which postinst restarts
# through): stop and disable the units, then remove what sipd pinned in
# the kernel. Pinned flows outlive sipd on purpose, so that calls keep
# their media across a restart; once the package is gone nothing would
# ever remove them.
set -e
case "$1" in
remove|deconfigure)
	if [ -d /run/systemd/system ]; then
		systemctl stop sipd.service sipd-relay.service || true
	fi
	if command -v systemctl >/dev/null 2>&1; then
		systemctl --no-reload disable sipd.service sipd-relay.service >/dev/null 2>&1 || true
	fi
	# Only what the units pinned: their pin directories (ExecStartPre)
	# belong to the user sipd. A sipd run by hand as root on the default
	# pin path keeps its flows.
	for role in sipd:sipxdp sipd-relay:sipxdp-relay; do
		cfg=/etc/sipd/${role%%:*}.yaml
		pins=/sys/fs/bpf/${role#*:}
		if [ ! -f "$cfg" ] || [ "$(stat -c %U "$pins" 2>/dev/null)" != sipd ]; then
			continue
		fi
		/usr/bin/sipd -uninstall -log-level warn -config "$cfg" ||
			echo "sipxdp: sipd -uninstall -config $cfg failed: remove its media.pin_path by hand (sipd -uninstall)" >&2
	done
	;;
esac
