#!/bin/sh
# Installs what sipxdp's tests and tools need on a fresh Debian machine.
#   --generate  also the pinned clang and libbpf headers for `make generate`
set -eu
want_generate=0
for arg in "$@"; do
	case "$arg" in
	--generate) want_generate=1 ;;
	*) echo "usage: $0 [--generate]" >&2; exit 2 ;;
	esac
done
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: run as root (apt-get install)" >&2
	exit 1
fi
# kamailio: the interop test's proxy (its rtpengine module drives sipd's
# NG listener); Debian's package ships modules/rtpengine.so, and the
# nathelper, usrloc and registrar modules the stock kamailio.cfg loads
# (no kamailio-extra-modules needed).
# systemd: systemd-analyze verifies the units and systemd-sysusers makes
# the package's user (make check-package); neither needs systemd running.
# prometheus: its promtool checks /metrics in sipd's metrics lint test
# (which falls back to client_golang's promlint alone without it).
# chromium: the headless browser of the WebRTC tests (interop/webrtc),
# which call through sipd with JsSIP over ws/wss; Kamailio's websocket
# module carries the same browser in the Kamailio WebRTC test.
# redis-server: the shared location table's store in the tests
# (internal/redistest starts one per test on a free loopback port).
# nftables: the masquerading NAT router of the namespace tests
# (internal/netns AddBehindNAT, ForwardUDP), Kamailio's NAT test among them.
pkgs="iproute2 ethtool nftables util-linux sip-tester tcpdump ca-certificates kamailio kamailio-websocket-modules systemd prometheus chromium redis-server"
# npm installs the tests' pinned JsSIP (below). A machine with NodeSource's
# nodejs has npm in it, and Debian's npm package would conflict with it.
if ! command -v npm >/dev/null 2>&1; then
	pkgs="$pkgs nodejs npm"
fi
if [ "$want_generate" = 1 ]; then
	# clang-19 is the pinned BPF compiler: `make generate` uses it by name.
	pkgs="$pkgs clang-19 llvm-19 libbpf-dev"
fi
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# Debian's kamailio package enables and starts a system service with
	# its sample config, which takes port 5060 (prometheus's takes 9090,
	# redis-server's 6379).
	# Tests start their own Kamailio; keep the packages from starting one
	# while they install
	# (policy-rc.d, unless the machine already has its own), and disable
	# the service below.
	own_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		own_policy=1
	fi
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing || {
		[ "$own_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
		exit 1
	}
	[ "$own_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
fi
# Whether just installed or not: no Kamailio, Prometheus or Redis system
# service, enabled or running (a no-op where it is already off).
for svc in kamailio prometheus redis-server; do
	dpkg-query -W -f='${Status}' "$svc" 2>/dev/null | grep -q "ok installed" || continue
	if command -v systemctl >/dev/null 2>&1; then
		if [ -d /run/systemd/system ]; then
			systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
		else
			systemctl disable "$svc.service" >/dev/null 2>&1 || true
		fi
	fi
	if command -v update-rc.d >/dev/null 2>&1 && [ -e "/etc/init.d/$svc" ]; then
		update-rc.d "$svc" disable >/dev/null 2>&1 || true
	fi
	if [ -e "/etc/init.d/$svc" ] && "/etc/init.d/$svc" status >/dev/null 2>&1; then
		"/etc/init.d/$svc" stop >/dev/null 2>&1 || true
	fi
done
# JsSIP for the WebRTC tests, exactly as package-lock.json pins it;
# postinstall bundles it for the browser (into build/ there).
webrtc="$(dirname "$0")/../interop/webrtc"
(cd "$webrtc" && npm ci --no-audit --no-fund --loglevel=error) || {
	echo "install-deps: npm ci in interop/webrtc failed" >&2
	exit 1
}
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	echo "install-deps: Go is not installed (expected /usr/local/go)" >&2
	exit 1
fi
# golangci-lint runs `make lint`'s depguard layering rules. A tool binary in
# GOBIN, not a go.mod tool: as one it would add hundreds of requirements.
gcl_version=v2.15.0
go=$(command -v go || echo /usr/local/go/bin/go)
gobin=$("$go" env GOBIN)
[ -n "$gobin" ] || gobin=$("$go" env GOPATH)/bin
if ! "$gobin/golangci-lint" version 2>/dev/null | grep -q "version ${gcl_version#v} "; then
	"$go" install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$gcl_version"
fi
echo "install-deps: ok"
