#!/usr/bin/env bash
# Builds rolelb and rolelb-bench in release mode and runs the benchmark: rolelb against
# HAProxy 2.6 (plain and with option splice-auto) at nbthread 1 and 2, plus an A/A HAProxy
# pair, all on 127.0.0.1 in one interleaved run (≈ 8-10 min; --quick ≈ 1 min smoke).
# Extra arguments go to rolelb-bench (e.g. --quick, --rounds 3, --nbthread 1).
# The report is printed and saved to bench/results/latest.txt (--quick: quick.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
HAPROXY="${HAPROXY:-/usr/sbin/haproxy}"
ETCD="${ETCD:-/usr/bin/etcd}"
for bin in "$HAPROXY" "$ETCD"; do
    [[ -x "$bin" ]] || { echo "$bin not found: run scripts/deps.sh" >&2; exit 1; }
done
cargo build --release -p rolelb --bin rolelb -p rolelb-bench --bin rolelb-bench
mkdir -p bench/results
out=bench/results/latest.txt
for a in "$@"; do [[ "$a" == --quick ]] && out=bench/results/quick.txt; done
target/release/rolelb-bench --rolelb target/release/rolelb --haproxy "$HAPROXY" --etcd "$ETCD" "$@" \
    | tee "$out.partial"
mv "$out.partial" "$out"
echo "saved $out"
