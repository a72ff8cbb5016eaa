#!/bin/sh
# Runs every Go fuzz target in the module for a short time each.
set -eu
t="${1:-10s}"
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "fuzz $pkg $f ($t)"
		# Each new interesting input is minimized first, for up to 60 s by
		# default: with inputs as large as a whole config file, a few of
		# those took most of FuzzParseConfig's seven minutes in CI. A
		# shorter minimization keeps corpus entries bigger, nothing else.
		go test -run='^$' -fuzz="^$f\$" -fuzztime="$t" -fuzzminimizetime=5s "$pkg"
	done
done
