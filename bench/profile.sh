#!/usr/bin/env bash
# Samples where HAProxy's and rolelb's CPU goes for 200,000 short connections (perf record
# on each proxy, the benchmark's shared config), at nbthread 1 and then 2, and prints per
# connection the CPU in the kernel and in user space and each proxy's busiest user-space
# functions. CONNS=N changes the count; extra arguments go to rolelb-bench (e.g.
# --nbthread 2 for one run at nbthread 2 only). Saved to bench/results/profile.txt; a run
# with no arguments and the default count also puts the tables into bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

HAPROXY="${HAPROXY:-/usr/sbin/haproxy}"
PERF="$(command -v perf || echo /usr/bin/perf)"
need "$HAPROXY" "$PERF"
build
profile() {
    target/release/rolelb-bench --rolelb target/release/rolelb --haproxy "$HAPROXY" \
        --perf "$PERF" --profile "${CONNS:-200000}" "$@"
}
if [[ $# -eq 0 ]]; then
    { profile --nbthread 1; echo; profile --nbthread 2; } | tee bench/results/profile.txt.partial
else
    profile "$@" | tee bench/results/profile.txt.partial
fi
mv bench/results/profile.txt.partial bench/results/profile.txt
echo "saved bench/results/profile.txt"
if [[ $# -eq 0 && -z "${CONNS:-}" ]]; then
    { echo; grep -v '^started \|^  [0-9]* connections done' bench/results/profile.txt | cat -s \
        | sed '/./,$!d; s/^\(.\)/    \1/'; echo; } \
        | readme_block profile-table
    echo "updated the profile tables in bench/README.md"
fi
