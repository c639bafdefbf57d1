#!/usr/bin/env bash
# Builds rolelb and rolelb-bench in release mode and runs the benchmark: rolelb against
# HAProxy 2.6, each plain and with option splice-auto, at nbthread 1 and 2, plus an A/A HAProxy
# pair, all on 127.0.0.1 (in its own network namespace) in one interleaved run (≈ 7 min;
# --quick ≈ 1 min smoke).
# Extra arguments go to rolelb-bench (e.g. --quick, --rounds 3, --nbthread 1).
# The report is printed and saved to bench/results/latest.txt (--quick: quick.txt); a run with
# no arguments also puts its tables into bench/README.md (between the bench-table markers).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
source bench/common.sh

HAPROXY="${HAPROXY:-/usr/sbin/haproxy}"
ETCD="${ETCD:-/usr/bin/etcd}"
need "$HAPROXY" "$ETCD"
build
out=bench/results/latest.txt
for a in "$@"; do [[ "$a" == --quick ]] && out=bench/results/quick.txt; done
target/release/rolelb-bench --rolelb target/release/rolelb --haproxy "$HAPROXY" --etcd "$ETCD" "$@" \
    | tee "$out.partial"
mv "$out.partial" "$out"
echo "saved $out"
if [[ $# -eq 0 ]]; then
    { echo
      awk '/^(rolelb-bench |machine:|haproxy:|rolelb: |setup:|plan:|load average \(1 min\) at start|NOTE:)/ { print }
           /^== nbthread/ { t = 1 }
           /^OS threads at the end/ { t = 0 }
           t { print }
           /^(load average \(1 min\) at end|total run time)/ { print }' "$out" \
          | sed 's/^\(.\)/    \1/'
      echo
    } | readme_block bench-table
    echo "updated the table in bench/README.md"
fi
