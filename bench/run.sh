#!/usr/bin/env bash
# Builds the workspace in release mode and runs rolelb-bench: rolelb against HAProxy on
# 127.0.0.1 with one shared config. Extra arguments go to rolelb-bench (e.g. --quick).
# The report is printed and saved to bench/results/latest.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
HAPROXY="${HAPROXY:-/usr/sbin/haproxy}"
cargo build --release --workspace
mkdir -p bench/results
target/release/rolelb-bench --rolelb target/release/rolelb --haproxy "$HAPROXY" "$@" \
    | tee bench/results/latest.txt.partial
mv bench/results/latest.txt.partial bench/results/latest.txt
echo "saved bench/results/latest.txt"
