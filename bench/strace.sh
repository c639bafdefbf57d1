#!/usr/bin/env bash
# Counts the system calls HAProxy and rolelb make for 10,000 short connections
# (strace -c -f on each proxy, nbthread 1, the benchmark's shared config) and prints the two
# tables side by side, per connection. CONNS=N changes the count; extra arguments go to
# rolelb-bench (e.g. --nbthread 2). Saved to bench/results/strace.txt; a run with no
# arguments and the default count also puts the table into bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

HAPROXY="${HAPROXY:-/usr/sbin/haproxy}"
STRACE="$(command -v strace || echo /usr/bin/strace)"
need "$HAPROXY" "$STRACE"
build
target/release/rolelb-bench --rolelb target/release/rolelb --haproxy "$HAPROXY" \
    --strace "$STRACE" --syscalls "${CONNS:-10000}" "$@" | tee bench/results/strace.txt.partial
mv bench/results/strace.txt.partial bench/results/strace.txt
echo "saved bench/results/strace.txt"
if [[ $# -eq 0 && -z "${CONNS:-}" ]]; then
    { echo; sed -n '/^system calls for/,$p' bench/results/strace.txt | sed 's/^\(.\)/    \1/'; echo; } \
        | readme_block strace-table
    echo "updated the strace table in bench/README.md"
fi
