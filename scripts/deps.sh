#!/usr/bin/env bash
# Installs every Debian package that rolelb's demo and test suite use, and checks for cargo.
#
# Idempotent: when everything is already installed it changes nothing and touches no network.
# Package installs never leave a system service (PostgreSQL on 5432, MariaDB on 3306, PgBouncer
# on 6432, HAProxy, etcd, Prometheus) running: the tests start their own servers on ephemeral ports.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# What the demo and the tests run, one Debian package per line.
PACKAGES=(
    postgresql-15          # initdb, postgres, pg_basebackup (tests and demo)
    postgresql-client-15   # psql, pg_isready, pgbench
    pgbouncer
    etcd-server
    etcd-client
    patroni                # Patroni 3.0 (etcd3 DCS) for tests/patroni_switchover.rs
    mariadb-server
    mariadb-client
    haproxy                # the reference the tests and benchmarks compare against
    protobuf-compiler      # protoc, for the etcd client crate
    libprotobuf-dev        # protoc's well-known types (google/protobuf/*.proto) the etcd crate imports
    prometheus
    socat                  # the stats socket (runtime API)
    dnsmasq-base           # the DNS server of tests/dns.rs (resolvers sections)
    # The VIP in front of two rolelb nodes (tests/keepalived.rs, conf/keepalived/); not in SERVICES:
    # its unit starts only once /etc/keepalived/keepalived.conf exists, and a host's own VRRP is left alone.
    keepalived
    iproute2               # ip: the network namespaces and bridge of tests/keepalived.rs
    curl                   # the vrrp_script of conf/keepalived/ asks rolelb's /healthz with it
    shellcheck             # lints scripts/ in scripts/test.sh
    util-linux             # runuser (demo.sh)
    procps                 # pgrep/ps for diagnostics
    strace                 # the syscall table of bench/strace.sh (and its smoke test)
    linux-perf             # perf: the CPU profile of bench/profile.sh (and its smoke test)
    systemd                # systemd-analyze verify of the units in systemd/ (tests/service.rs)
    ca-certificates
)

# Services whose Debian packages start them on install; stopped if apt left them running.
SERVICES=(postgresql mariadb pgbouncer haproxy etcd patroni prometheus prometheus-node-exporter)

log() { printf 'deps.sh: %s\n' "$*"; }
die() { printf 'deps.sh: error: %s\n' "$*" >&2; exit 1; }

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} > 0)); then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian (bookworm) only"
    log "installing: ${missing[*]}"
    # Keep postinst scripts from starting services; remove our policy file afterwards.
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        added_policy=1
    fi
    cleanup_policy() {
        if ((added_policy)); then as_root rm -f "$policy"; fi
    }
    trap cleanup_policy EXIT
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
    cleanup_policy
    trap - EXIT
else
    log "all ${#PACKAGES[@]} packages already installed"
fi

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# If a package's service got started anyway (no policy-rc.d honoured, systemd machine), stop it:
# the tests and the demo need these ports free and start their own servers.
for svc in "${SERVICES[@]}"; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        log "stopping system service $svc started by its package"
        as_root systemctl stop "$svc" || true
    elif command -v service >/dev/null 2>&1 && [[ -x "/etc/init.d/$svc" ]] \
        && service "$svc" status >/dev/null 2>&1; then
        log "stopping system service $svc started by its package"
        as_root service "$svc" stop || true
    fi
done
if command -v pg_lsclusters >/dev/null 2>&1; then
    while read -r ver name _port status _rest; do
        if [[ "$status" == online* ]]; then
            log "stopping PostgreSQL cluster $ver/$name started by its package"
            as_root pg_ctlcluster "$ver" "$name" stop || true
        fi
    done < <(pg_lsclusters --no-header 2>/dev/null || true)
fi
for port in 5432 3306 6432; do
    if port_open "$port"; then
        log "warning: something still listens on 127.0.0.1:$port (not started by this script; left alone)"
    fi
done

# Checks that the files the build reads are there: a half-installed machine fails here, with the fix,
# not minutes later inside a crate's build script.
for file in /usr/include/google/protobuf/descriptor.proto /usr/include/google/protobuf/timestamp.proto; do
    [[ -r "$file" ]] || die "$file missing: the etcd client's build needs it (apt-get install libprotobuf-dev)"
done

# Checks that the binaries the harness calls are where it looks for them.
for bin in /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/postgres \
    /usr/lib/postgresql/15/bin/pg_basebackup /usr/sbin/pgbouncer /usr/sbin/haproxy \
    /usr/bin/psql /usr/bin/pgbench /usr/bin/pg_isready /usr/bin/protoc /usr/bin/socat \
    /usr/bin/etcd /usr/bin/etcdctl /usr/bin/patroni /usr/bin/patronictl \
    /usr/sbin/mariadbd /usr/bin/mariadb /usr/bin/prometheus /usr/bin/promtool /usr/bin/shellcheck /usr/sbin/runuser \
    /usr/bin/systemd-analyze /usr/sbin/dnsmasq /usr/sbin/keepalived /usr/sbin/ip /usr/bin/curl \
    /usr/bin/strace /usr/bin/perf /usr/bin/setpriv /usr/lib/postgresql/15/bin/pg_rewind; do
    [[ -x "$bin" ]] || die "$bin missing after install"
done
id postgres >/dev/null 2>&1 || die "the postgres user does not exist (postgresql-common should create it)"

# cargo comes from rustup, not apt: say so clearly rather than failing later.
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 \
    || die "cargo not found: install the Rust toolchain with rustup (https://rustup.rs) and put ~/.cargo/bin on PATH"
# cargo-deb builds the Debian package (scripts/package.sh); it comes from crates.io, built once.
# When crates.io cannot be reached, the crates cargo has already fetched are enough (--offline).
if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb 3.8.0 with cargo (a few minutes, once)"
    if ! cargo install --locked cargo-deb --version 3.8.0; then
        log "crates.io unreachable? trying again from cargo's local crate cache (--offline)"
        cargo install --locked --offline cargo-deb --version 3.8.0 \
            || die "cannot install cargo-deb: run 'cargo install --locked cargo-deb' with network access"
    fi
fi
cargo deb --version >/dev/null 2>&1 || die "cargo-deb did not install (cargo install --locked cargo-deb)"
log "ok ($(cargo --version))"
