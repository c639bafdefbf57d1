# shellcheck shell=bash
# Sourced by the bench's scripts, which run from the checkout's root.

# need PATH...: stops with the way to install it unless every PATH is an executable file.
need() {
    local bin
    for bin in "$@"; do
        [[ -x "$bin" ]] || { echo "$bin not found: run scripts/deps.sh" >&2; exit 1; }
    done
}

# build: rolelb and rolelb-bench in release mode, and the folder for the results.
build() {
    cargo build --release -p rolelb --bin rolelb -p rolelb-bench --bin rolelb-bench
    mkdir -p bench/results
}

# readme_block NAME: replaces the block between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
# in bench/README.md with stdin, so the README shows the tool's own output of the last
# default run.
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
