#!/bin/sh
# Installs the sipxdp .deb with dpkg as an operator would, checks what it
# put on the machine (files, conffiles, the user sipd), verifies the
# systemd units (systemd-analyze verify and an offline security score),
# starts sipd.service where systemd is PID 1, and purges the package,
# checking the machine is left as it was. Any failure stops it loudly and
# still purges. Run as root: make check-package (CI does).
#   usage: scripts/check-package.sh dist/sipxdp_VERSION_ARCH.deb
set -eu

fail() {
	echo "check-package: FAIL: $*" >&2
	exit 1
}
step() { echo "check-package: $*"; }

[ $# -eq 1 ] || { echo "usage: $0 PACKAGE.deb" >&2; exit 2; }
deb=$1
[ -f "$deb" ] || fail "$deb: no such package (make deb builds it)"
[ "$(id -u)" -eq 0 ] || fail "run as root: it installs and purges the package with dpkg"
command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing: scripts/install-deps.sh installs the systemd package"

units="/lib/systemd/system/sipd.service /lib/systemd/system/sipd-relay.service"
files="/usr/bin/sipd /usr/bin/relayctl $units /usr/lib/sysusers.d/sipxdp.conf
/etc/sipd/sipd.yaml /etc/sipd/sipd-relay.yaml /usr/share/doc/sipxdp/README.md /usr/share/doc/sipxdp/users.example"

# What this check adds, it removes: so none of it may be there before.
if dpkg-query -W -f='${Status}' sipxdp 2>/dev/null | grep -q installed; then
	fail "sipxdp is installed on this machine; this check installs and purges it: dpkg --purge sipxdp first"
fi
getent passwd sipd >/dev/null && fail "a user sipd exists already; purging the package would remove it"
getent group sipd >/dev/null && fail "a group sipd exists already; purging the package would remove it"
[ -e /etc/sipd ] && fail "/etc/sipd exists already (make install?); the package's conffiles go there"
# The default state and pin directories may be there, from a sipd run by
# hand as root (README's first command): the package must leave them be.
# (/sys/fs/bpf itself: its owner and mode; what else is in it is not ours.)
shared="/var/lib/sipd /var/lib/sipd-relay /sys/fs/bpf/sipxdp /sys/fs/bpf/sipxdp-relay"
snapshot() {
	for d in $shared; do
		# shellcheck disable=SC2012 # names as a plain list, to compare
		echo "$d $(stat -c '%U:%G %a' "$d" 2>/dev/null || echo absent) $(ls -A "$d" 2>/dev/null | tr '\n' ' ')"
	done
	echo "/sys/fs/bpf $(stat -c '%U:%G %a' /sys/fs/bpf 2>/dev/null || echo absent)"
}
before=$(snapshot)

purged=0
cleanup() {
	if [ "$purged" = 0 ] && dpkg-query -W -f='${Status}' sipxdp 2>/dev/null | grep -q installed; then
		echo "check-package: purging sipxdp after the failure" >&2
		dpkg --purge sipxdp >&2 || echo "check-package: dpkg --purge sipxdp failed too" >&2
	fi
}
trap cleanup EXIT

step "dpkg -i $deb"
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" || fail "dpkg -i $deb"
dpkg-query -W -f='${Status}' sipxdp | grep -q "install ok installed" || fail "sipxdp is not 'install ok installed' after dpkg -i"

step "files"
for f in $files; do
	[ -f "$f" ] || fail "$f is missing after dpkg -i"
done
for f in /usr/bin/sipd /usr/bin/relayctl; do
	[ -x "$f" ] || fail "$f is not executable"
done
conffiles=$(dpkg-query -W -f='${Conffiles}' sipxdp)
for c in /etc/sipd/sipd.yaml /etc/sipd/sipd-relay.yaml; do
	echo "$conffiles" | grep -q " $c " || fail "$c is not a conffile: $conffiles"
done
/usr/bin/sipd -print-default-config | grep -q '^state_dir:' ||
	fail "the installed sipd does not print its default configuration"
/usr/bin/relayctl -h 2>&1 | grep -q -- '-api' || fail "the installed relayctl does not run"

step "user and group sipd"
entry=$(getent passwd sipd) || fail "no user sipd after dpkg -i"
uid=$(echo "$entry" | cut -d: -f3)
home=$(echo "$entry" | cut -d: -f6)
shell=$(echo "$entry" | cut -d: -f7)
getent group sipd >/dev/null || fail "no group sipd after dpkg -i"
[ "$(id -gn sipd)" = sipd ] || fail "user sipd's primary group is $(id -gn sipd), want sipd"
[ "$uid" -lt 1000 ] || fail "user sipd has uid $uid: want a system user (below 1000)"
[ "$home" = /var/lib/sipd ] || fail "user sipd's home is $home, want /var/lib/sipd"
case "$shell" in
*/nologin | */false) ;;
*) fail "user sipd has shell $shell, want nologin" ;;
esac

step "systemd-analyze verify"
# verify reads the units as systemd would load them (directives, the
# executables, the user) and needs no running systemd. Every line it
# prints about our units is a failure; lines about other units (the
# machine's own) are shown, not judged.
# shellcheck disable=SC2086 # $units is a list
out=$(systemd-analyze verify $units 2>&1) || fail "systemd-analyze verify $units:
$out"
if [ -n "$out" ]; then
	echo "$out" | sed 's/^/  systemd-analyze: /'
	echo "$out" | grep -E 'sipd(-relay)?\.service|/etc/sipd|/usr/bin/(sipd|relayctl)' &&
		fail "systemd-analyze verify warns about sipxdp's units (above)"
fi
# The hardening rtpengine's unit has; 3.0 is systemd's "OK" band, which
# the units reach at 2.4 with the capabilities the kernel path needs.
for u in $units; do
	systemd-analyze security --offline=true --threshold=30 "$u" >/tmp/sipxdp-security.$$ 2>&1 ||
		{ tail -3 /tmp/sipxdp-security.$$ >&2; rm -f /tmp/sipxdp-security.$$; fail "$u: exposure above 3.0 (systemd-analyze security --offline=true $u)"; }
	step "  $(grep 'Overall exposure level' /tmp/sipxdp-security.$$)"
	rm -f /tmp/sipxdp-security.$$
done

if [ -d /run/systemd/system ]; then
	step "systemd is PID 1: start sipd.service on the example configuration"
	systemctl start sipd.service || fail "systemctl start sipd.service: $(journalctl -u sipd -n 20 --no-pager 2>&1)"
	# Type=notify: start returns once READY=1 arrived, and the unit is
	# active only after it.
	[ "$(systemctl is-active sipd.service)" = active ] || fail "sipd.service is $(systemctl is-active sipd.service) after start"
	status=$(systemctl show -p StatusText --value sipd.service)
	echo "$status" | grep -q "serving SIP" || fail "sipd.service status '$status', want sipd's READY status (serving SIP, ...)"
	systemctl stop sipd.service || fail "systemctl stop sipd.service"
	# ExecStartPre let the user sipd search /sys/fs/bpf: as it was.
	chmod "$(echo "$before" | awk '$1 == "/sys/fs/bpf" { print $3 }')" /sys/fs/bpf || true
else
	step "systemd is not PID 1 here: the units are verified, not started"
fi

step "dpkg --purge sipxdp"
DEBIAN_FRONTEND=noninteractive dpkg --purge sipxdp || fail "dpkg --purge sipxdp"
purged=1
dpkg-query -W -f='${Status}' sipxdp 2>/dev/null | grep -q installed && fail "sipxdp still installed after dpkg --purge"
for f in $files /etc/sipd; do
	[ ! -e "$f" ] || fail "$f is left after dpkg --purge"
done
getent passwd sipd >/dev/null && fail "user sipd is left after dpkg --purge"
getent group sipd >/dev/null && fail "group sipd is left after dpkg --purge"
after=$(snapshot)
[ "$after" = "$before" ] || fail "state and pin directories differ after dpkg --purge:
before:
$before
after:
$after"
echo "check-package: ok: installed, checked and purged $deb"
