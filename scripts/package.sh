#!/usr/bin/env bash
# Builds the Debian package: target/debian/rolelb_VERSION_ARCH.deb (rolelb, rolelb-agent, the
# systemd units, /etc/rolelb/rolelb.cfg and agent.yaml as conffiles, man pages, examples, docs).
#
#   bash scripts/package.sh           build the package
#   bash scripts/package.sh --verify  build it, then check its contents and install it into an
#                                     empty dpkg root (dpkg --root) where `rolelb -c` must pass
#                                     on the installed /etc/rolelb/rolelb.cfg
#
# Needs cargo-deb (scripts/deps.sh installs it with cargo).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'package.sh: %s\n' "$*"; }
die() { printf 'package.sh: error: %s\n' "$*" >&2; exit 1; }

verify=0
case "${1:-}" in
    "") ;;
    --verify) verify=1 ;;
    *) die "unknown argument '$1' (use --verify or nothing)" ;;
esac

if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
cargo deb --version >/dev/null 2>&1 || die "cargo-deb is missing: run scripts/deps.sh"

cargo build --release --locked -p rolelb -p rolelb-agent
for bin in rolelb rolelb-agent; do
    [[ -x "target/release/$bin" ]] || die "target/release/$bin was not built"
done
cargo run --release --locked -q -p rolelb-manpages -- target/man >/dev/null
deb=$(cargo deb --no-build --locked -p rolelb --strip 2>&1 | tail -n 1)
[[ -f "$deb" ]] || die "cargo deb did not report a package file (last line: $deb)"
log "built $deb"
((verify)) || exit 0

# What the package must carry.
listing=$(dpkg-deb -c "$deb")
for path in ./usr/bin/rolelb ./usr/bin/rolelb-agent \
    ./lib/systemd/system/rolelb.service ./lib/systemd/system/rolelb-agent.service \
    ./etc/rolelb/rolelb.cfg ./etc/rolelb/agent.yaml \
    ./usr/share/man/man1/rolelb.1 ./usr/share/man/man1/rolelb-agent.1 \
    ./usr/share/doc/rolelb/examples/pgbouncer-roles.cfg ./usr/share/doc/rolelb/config.md; do
    grep -qE " ${path}(\.gz)?\$" <<<"$listing" || die "$deb lacks $path"
done
conffiles=$(dpkg-deb -I "$deb" conffiles)
for conf in /etc/rolelb/rolelb.cfg /etc/rolelb/agent.yaml; do
    grep -qx "$conf" <<<"$conffiles" || die "$conf is not a conffile of $deb"
done
if dpkg-deb -I "$deb" | grep -qE '^ +[0-9]+ bytes, +[0-9]+ lines +\*? *(pre|post)(inst|rm)'; then
    die "$deb has maintainer scripts: installing it must start nothing"
fi

# Installed into an empty dpkg root: dpkg unpacks, registers the conffiles and runs nothing
# (there are no maintainer scripts); the package's dependencies are this machine's libraries.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
dpkg --root="$root" --force-depends --force-not-root -i "$deb" >/dev/null
dpkg --root="$root" -s rolelb | grep -qx 'Status: install ok installed' \
    || die "dpkg does not list rolelb as installed in $root"
"$root/usr/bin/rolelb" -c -f "$root/etc/rolelb/rolelb.cfg" \
    || die "rolelb -c fails on the installed /etc/rolelb/rolelb.cfg"
"$root/usr/bin/rolelb-agent" -c -f "$root/etc/rolelb/agent.yaml" \
    || die "rolelb-agent -c fails on the installed /etc/rolelb/agent.yaml"
log "verified: contents, conffiles, no maintainer scripts, installs with dpkg, -c passes"
