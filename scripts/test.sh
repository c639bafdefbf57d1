#!/usr/bin/env bash
# The whole test suite: the one command CI runs (.ci/run execs it).
#
# deps.sh, then formatting, clippy, build, the Debian package (built, checked, installed into an
# empty dpkg root), and every test (unit, doc, and the integration tests in tests/ against real
# PostgreSQL, PgBouncer and HAProxy). Exits non-zero on the first failure;
# the test runner's summary line is the last thing printed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
step() { printf '\n==> [%4ds] %s\n' "$((SECONDS - start))" "$*"; }

step "scripts/deps.sh"
bash scripts/deps.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

step "shellcheck"
shellcheck scripts/*.sh bench/*.sh .ci/run

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build"
cargo build --workspace

step "cargo test --doc"
cargo test --workspace --doc

step "scripts/package.sh --verify (the .deb: contents, conffiles, installs, -c passes)"
bash scripts/package.sh --verify

if cargo nextest --version >/dev/null 2>&1; then
    step "cargo nextest run (unit and integration tests)"
    cargo nextest run --workspace --profile ci
else
    step "cargo test (unit and integration tests; cargo-nextest not installed)"
    cargo test --workspace
fi
