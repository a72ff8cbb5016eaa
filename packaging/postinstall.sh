#!/bin/sh
# sipxdp's postinst: the system user sipd, then systemd learns of the
# units. They are not enabled here: /etc/sipd/*.yaml serve loopback only
# until the host's addresses are put in (README, "Install as a service").
set -e
case "$1" in
configure)
	if command -v systemd-sysusers >/dev/null 2>&1; then
		systemd-sysusers /usr/lib/sysusers.d/sipxdp.conf
	elif ! getent passwd sipd >/dev/null; then
		# No systemd (a container): the same user, by hand.
		useradd --system --user-group --no-create-home --home-dir /var/lib/sipd \
			--shell /usr/sbin/nologin --comment "sipxdp SIP proxy and media relay" sipd
	fi
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload
		# An upgrade ($2: the version replaced) restarts the roles that
		# run on the new binary; their pinned kernel flows carry the calls
		# over the restart.
		if [ -n "$2" ]; then
			systemctl try-restart sipd.service sipd-relay.service
		fi
	fi
	;;
esac
