#!/bin/sh
# Runs every Go fuzz target in the module for a short time each.
set -eu
t="${1:-10s}"
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "fuzz $pkg $f ($t)"
		# Each new interesting input is minimized first, for up to 60 s by
		# default. On a fresh machine (no cached corpus) FuzzParseConfig,
		# whose inputs are whole config files, finds a few hundred: at 5 s
		# each it took 6 of CI's 18 minutes; 10 runs per attempt take it to
		# 1.5 minutes. A shorter minimization keeps corpus entries bigger,
		# nothing else: every target still runs for the whole of $t.
		go test -run='^$' -fuzz="^$f\$" -fuzztime="$t" -fuzzminimizetime=10x "$pkg"
	done
done
