#!/usr/bin/env bash
# Counts the system calls HAProxy and rolelb make for 10,000 short connections
# (strace -c -f on each proxy, nbthread 1, the benchmark's shared config) and prints the two
# tables side by side, per connection. CONNS=N changes the count; extra arguments go to
# rolelb-bench (e.g. --nbthread 2). Saved to bench/results/strace.txt; a run with no
# arguments and the default count also puts the table into bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# Replaces the block between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in bench/README.md
# with stdin, so the README shows the tool's own output of the last default run.
readme_block() {
    local name="$1" block
    block="$(mktemp)"
    cat > "$block"
    awk -v name="$name" -v block="$block" '
        index($0, "<!-- " name ":begin") == 1 { print; while ((getline l < block) > 0) print l; skip = 1; next }
        index($0, "<!-- " name ":end") == 1 { skip = 0 }
        !skip { print }' bench/README.md > bench/README.md.partial
    mv bench/README.md.partial bench/README.md
    rm -f "$block"
}

HAPROXY="${HAPROXY:-/usr/sbin/haproxy}"
STRACE="$(command -v strace || true)"
[[ -n "$STRACE" ]] || { echo "strace not found: run scripts/deps.sh" >&2; exit 1; }
[[ -x "$HAPROXY" ]] || { echo "$HAPROXY not found: run scripts/deps.sh" >&2; exit 1; }
cargo build --release -p rolelb --bin rolelb -p rolelb-bench --bin rolelb-bench
mkdir -p bench/results
target/release/rolelb-bench --rolelb target/release/rolelb --haproxy "$HAPROXY" \
    --strace "$STRACE" --syscalls "${CONNS:-10000}" "$@" | tee bench/results/strace.txt.partial
mv bench/results/strace.txt.partial bench/results/strace.txt
echo "saved bench/results/strace.txt"
if [[ $# -eq 0 && -z "${CONNS:-}" ]]; then
    { echo; sed -n '/^system calls for/,$p' bench/results/strace.txt | sed 's/^\(.\)/    \1/'; echo; } \
        | readme_block strace-table
    echo "updated the strace table in bench/README.md"
fi
