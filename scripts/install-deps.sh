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
pkgs="iproute2 ethtool util-linux sip-tester tcpdump ca-certificates"
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
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing
fi
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	echo "install-deps: Go is not installed (expected /usr/local/go)" >&2
	exit 1
fi
echo "install-deps: ok"
