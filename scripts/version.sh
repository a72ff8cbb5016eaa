#!/bin/sh
# Prints sipxdp's version as a Debian package version: from the newest
# v-tag (v1.2.0 -> 1.2.0; three commits past it -> 1.2.0+3.gabc1234),
# else 0.0.0+git<commits>.<commit>, or 0.0.0 outside a git checkout.
set -eu
cd "$(dirname "$0")/.."
if d=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
	echo "$d" | sed -e 's/^v//' -e 's/-\([0-9]*\)-g\([0-9a-f]*\)$/+\1.g\2/'
elif n=$(git rev-list --count HEAD 2>/dev/null) && h=$(git rev-parse --short HEAD 2>/dev/null); then
	echo "0.0.0+git$n.$h"
else
	echo 0.0.0
fi
