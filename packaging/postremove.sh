#!/bin/sh
# sipxdp's postrm. Purge removes what the package made beyond its files:
# the units' state directories (registrations, calls, CDRs: copy the CDRs
# first if you bill from them) and pin directories, and the user sipd,
# which then owns nothing. Only what is the user sipd's: a sipd run by
# hand as root on the default paths (/var/lib/sipd, /sys/fs/bpf/sipxdp)
# keeps its state and its flows.
set -e
case "$1" in
remove | purge)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
	fi
	;;
esac
if [ "$1" = purge ]; then
	for d in /var/lib/sipd /var/lib/sipd-relay; do
		if [ "$(stat -c %U "$d" 2>/dev/null)" = sipd ]; then
			rm -rf "$d"
		fi
	done
	for d in /sys/fs/bpf/sipxdp /sys/fs/bpf/sipxdp-relay; do
		if [ "$(stat -c %U "$d" 2>/dev/null)" = sipd ]; then
			rmdir "$d" 2>/dev/null || echo "sipxdp: $d still holds pinned objects: sipd -uninstall removes them" >&2
		fi
	done
	if getent passwd sipd >/dev/null; then
		userdel sipd
	fi
	if getent group sipd >/dev/null; then
		groupdel sipd
	fi
fi
