#!/usr/bin/env bash
# rolelb in five seconds of reading: a real etcd, a PostgreSQL 15 primary and two streaming
# replicas, each behind its own PgBouncer, published in etcd (rolelb's native schema) the way a
# DBaaS backend API would; rolelb in front on 127.0.0.1:5001 (writes) and :5002 (reads) running
# conf/etcd-native.cfg, which has no server lines: it finds the nodes in etcd. Then a
# switchover (etcd updated, a replica promoted) and writes following the new primary.
#
#   bash scripts/demo.sh          run the demo and clean up
#   bash scripts/demo.sh --keep   leave everything running until Ctrl-C, to try things by hand
#
# Environment: ROLELB_DEMO_WRITE_PORT / ROLELB_DEMO_READ_PORT (default 5001 / 5002),
# ROLELB_BIN (default: target/release/rolelb, built here).
# Everything it starts runs from one temporary directory and is stopped on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

KEEP=0
case "${1:-}" in
    --keep) KEEP=1 ;;
    "") ;;
    *) echo "usage: bash scripts/demo.sh [--keep]" >&2; exit 2 ;;
esac

WRITE_PORT=${ROLELB_DEMO_WRITE_PORT:-5001}
READ_PORT=${ROLELB_DEMO_READ_PORT:-5002}
PGBIN=/usr/lib/postgresql/15/bin

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo.sh: error: %s\n' "$*" >&2; exit 1; }

# True when something listens on TCP port $1 (read from /proc, so nothing gets a connection).
listening() {
    local hex
    hex=$(printf ':%04X ' "$1")
    grep -q "${hex}[0-9A-F]*:0000 0A" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# True when any socket (listening, connected or in TIME_WAIT) uses local TCP port $1.
port_used() {
    local hex
    hex=$(printf '%04X' "$1")
    grep -qE "^ *[0-9]+: [0-9A-F]+:${hex} " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# A port from $1 up that no socket uses.
pick_port() {
    local port=$1
    while port_used "$port"; do port=$((port + 1)); done
    echo "$port"
}

# Waits up to 30 s for something to listen on port $1 (named $2).
wait_listening() {
    local i
    for ((i = 0; i < 300; i++)); do
        listening "$1" && return 0
        sleep 0.1
    done
    die "$2 did not start listening on port $1 (logs in $WORK)"
}

# Runs `etcdctl ARGS` against the demo's etcd.
ctl() { ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:$ETCD_PORT" "$@"; }

say "Installing what the demo needs (scripts/deps.sh)"
bash scripts/deps.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi

if [[ -z "${ROLELB_BIN:-}" ]]; then
    say "Building rolelb (cargo build --release)"
    cargo build --release
    ROLELB_BIN=$ROOT/target/release/rolelb
fi
[[ -x "$ROLELB_BIN" ]] || die "$ROLELB_BIN not found or not executable"

for port in "$WRITE_PORT" "$READ_PORT"; do
    listening "$port" && die "port $port is already in use; set ROLELB_DEMO_WRITE_PORT/ROLELB_DEMO_READ_PORT"
done
# Private ports for the servers behind rolelb, from a random start so parallel runs rarely meet.
base=$((41000 + RANDOM % 4000 * 2))
PG1=$(pick_port "$base")
PG2=$(pick_port $((PG1 + 1)))
PG3=$(pick_port $((PG2 + 1)))
BOUNCER1=$(pick_port $((PG3 + 1)))
BOUNCER2=$(pick_port $((BOUNCER1 + 1)))
BOUNCER3=$(pick_port $((BOUNCER2 + 1)))
ETCD_PORT=$(pick_port $((BOUNCER3 + 1)))
ETCD_PEER=$(pick_port $((ETCD_PORT + 1)))

WORK=$(mktemp -d /tmp/rolelb-demo.XXXXXX)
chmod 755 "$WORK"
ROLELB_PID=""
ETCD_PID=""
STARTED_PG=()
STARTED_BOUNCERS=()

# PostgreSQL and PgBouncer refuse to run as root: run them as the postgres user.
if [[ "$(id -u)" -eq 0 ]]; then
    chown postgres:postgres "$WORK"
    as_db() { runuser -u postgres -- "$@"; }
else
    as_db() { "$@"; }
fi

# Stops what this script started (by the PIDs it recorded) and removes the temporary directory.
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    say "Cleaning up"
    if ((status != 0)); then
        local log
        for log in "$WORK"/*.log "$WORK"/*/*.log; do
            [[ -f "$log" ]] || continue
            echo "--- last lines of $log"
            tail -n 15 "$log"
        done
    fi
    if [[ -n "$ROLELB_PID" ]]; then
        kill -TERM "$ROLELB_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$ROLELB_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$ROLELB_PID" 2>/dev/null || true
        wait "$ROLELB_PID" 2>/dev/null || true
    fi
    if [[ -n "$ETCD_PID" ]]; then
        kill -TERM "$ETCD_PID" 2>/dev/null || true
        wait "$ETCD_PID" 2>/dev/null || true
    fi
    local pidfile pid data
    for pidfile in "${STARTED_BOUNCERS[@]}"; do
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for data in "${STARTED_PG[@]}"; do
        as_db "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
    echo "stopped rolelb, etcd, PgBouncer and PostgreSQL; removed $WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts PostgreSQL on data directory $1, port $2.
start_pg() {
    cat >>"$1/postgresql.conf" <<CONF
port = $2
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
CONF
    STARTED_PG+=("$1")
    as_db "$PGBIN/pg_ctl" -D "$1" -l "$1.log" -w -t 60 start >/dev/null \
        || die "PostgreSQL on port $2 did not start: see $1.log"
}

# Starts a PgBouncer named $1 on port $2 in front of PostgreSQL on port $3.
start_bouncer() {
    local dir=$WORK/$1
    as_db mkdir -p "$dir"
    echo '"postgres" ""' | as_db tee "$dir/userlist.txt" >/dev/null
    as_db tee "$dir/pgbouncer.ini" >/dev/null <<INI
[databases]
* = host=127.0.0.1 port=$3
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = session
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    STARTED_BOUNCERS+=("$dir/pgbouncer.pid")
    as_db /usr/sbin/pgbouncer -d -q "$dir/pgbouncer.ini"
    wait_listening "$2" "PgBouncer $1"
}

psql_at() { psql -X -A -t -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -v ON_ERROR_STOP=1 -c "$2"; }

# Retries `psql_at PORT SQL` for up to 30 s (role checks answer within a second or two).
psql_retry() {
    local i out
    for ((i = 0; i < 60; i++)); do
        if out=$(psql_at "$1" "$2" 2>&1); then
            echo "$out"
            return 0
        fi
        sleep 0.5
    done
    die "psql on port $1 kept failing: $out"
}

# Publishes node $1 (PgBouncer port $2, PostgreSQL port $3) in etcd with role $4 and extra JSON $5.
publish() {
    ctl put "/rolelb/demo/members/$1" \
        "{\"host\": \"127.0.0.1\", \"port\": $2, \"check_port\": $3, \"role\": \"$4\"$5}" >/dev/null
}

say "Starting etcd on 127.0.0.1:$ETCD_PORT"
/usr/bin/etcd --name demo --data-dir "$WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "demo=http://127.0.0.1:$ETCD_PEER" --log-level warn --logger zap >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
for _ in $(seq 100); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
ctl endpoint health >/dev/null 2>&1 || die "etcd did not start (see $WORK/etcd.log)"

say "Starting a PostgreSQL 15 primary (pg1) on 127.0.0.1:$PG1"
as_db "$PGBIN/initdb" -D "$WORK/pg1" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
start_pg "$WORK/pg1" "$PG1"
psql_at "$PG1" "CREATE ROLE rolelb_monitor LOGIN; GRANT pg_monitor TO rolelb_monitor"

say "Starting two streaming replicas, pg2 on :$PG2 and pg3 on :$PG3 (pg_basebackup -R)"
for node in pg2:$PG2 pg3:$PG3; do
    as_db "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PG1" -U postgres -D "$WORK/${node%%:*}" -R -X stream -c fast
    start_pg "$WORK/${node%%:*}" "${node##*:}"
done

say "Starting a PgBouncer in front of each: :$BOUNCER1, :$BOUNCER2, :$BOUNCER3"
start_bouncer bouncer1 "$BOUNCER1" "$PG1"
start_bouncer bouncer2 "$BOUNCER2" "$PG2"
start_bouncer bouncer3 "$BOUNCER3" "$PG3"

say "Publishing the cluster in etcd, as a DBaaS backend API would (native schema)"
publish pg1 "$BOUNCER1" "$PG1" primary ""
publish pg2 "$BOUNCER2" "$PG2" replica ""
publish pg3 "$BOUNCER3" "$PG3" replica ""
ctl put /rolelb/demo/leader pg1 >/dev/null
ctl get --prefix /rolelb/demo | paste - - | sed 's/^/    /'

say "Starting rolelb with conf/etcd-native.cfg (etcd endpoint and ports of this machine)"
CFG=$WORK/rolelb.cfg
sed -e "s#http://127\.0\.0\.1:2379#http://127.0.0.1:$ETCD_PORT#" \
    -e "s/127\.0\.0\.1:5001\b/127.0.0.1:$WRITE_PORT/" \
    -e "s/127\.0\.0\.1:5002\b/127.0.0.1:$READ_PORT/" \
    conf/etcd-native.cfg >"$CFG"
grep -E '^\s*(etcd|endpoints|bind|discover)\b' "$CFG" | sed 's/^ */    /'
"$ROLELB_BIN" -c -f "$CFG"
"$ROLELB_BIN" -f "$CFG" 2>"$WORK/rolelb.log" &
ROLELB_PID=$!
wait_listening "$WRITE_PORT" rolelb
wait_listening "$READ_PORT" rolelb

WHO="CASE WHEN pg_is_in_recovery() THEN 'replica' ELSE 'primary' END || ' (PostgreSQL port ' || inet_server_port() || ')'"

say "A write through 127.0.0.1:$WRITE_PORT (rolelb found the primary in etcd; its role check agrees)"
psql_retry "$WRITE_PORT" "CREATE TABLE IF NOT EXISTS demo (id serial PRIMARY KEY, at timestamptz DEFAULT now())" >/dev/null
psql_at "$WRITE_PORT" "INSERT INTO demo DEFAULT VALUES RETURNING 'inserted row ' || id || ' on the ' || $WHO"

# Wait until both replicas have replayed the write, so the reads below see it.
lsn=$(psql_at "$PG1" "SELECT pg_current_wal_lsn()")
for port in "$PG2" "$PG3"; do
    for _ in $(seq 100); do
        [[ "$(psql_at "$port" "SELECT pg_last_wal_replay_lsn() >= '$lsn'")" == t ]] && break
        sleep 0.1
    done
done

say "Reads through 127.0.0.1:$READ_PORT (roundrobin over the two replicas)"
psql_retry "$READ_PORT" "SELECT 1" >/dev/null
for _ in 1 2 3 4; do
    psql_at "$READ_PORT" "SELECT 'read ' || count(*) || ' row(s) from the ' || $WHO FROM demo"
done

say "Switchover: pg1 stops; etcd names pg2 the leader (pg1 in maintenance)"
as_db "$PGBIN/pg_ctl" -D "$WORK/pg1" -m fast -w stop >/dev/null
publish pg1 "$BOUNCER1" "$PG1" replica ', "state": "maint"'
publish pg2 "$BOUNCER2" "$PG2" primary ""
ctl put /rolelb/demo/leader pg2 >/dev/null
echo "    etcd says pg2 but pg2 still answers pg_is_in_recovery() = true: rolelb refuses writes"
psql_at "$WRITE_PORT" "INSERT INTO demo DEFAULT VALUES" 2>&1 | sed 's/^/    /' || true

say "Promoting pg2; pg3 follows it"
as_db "$PGBIN/pg_ctl" -D "$WORK/pg2" -w promote >/dev/null
psql_at "$PG3" "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=$PG2 user=postgres'"
psql_at "$PG3" "SELECT pg_reload_conf()" >/dev/null

say "Writes follow the new primary through 127.0.0.1:$WRITE_PORT"
echo "    (the ids skip ahead: PostgreSQL logs sequences 32 values at a time, so a promoted node starts past them)"
psql_retry "$WRITE_PORT" "INSERT INTO demo DEFAULT VALUES RETURNING 'inserted row ' || id || ' on the ' || $WHO"
psql_at "$WRITE_PORT" "INSERT INTO demo DEFAULT VALUES RETURNING 'inserted row ' || id || ' on the ' || $WHO"
psql_retry "$READ_PORT" "SELECT 'read ' || count(*) || ' row(s) from the ' || $WHO FROM demo"

say "What rolelb logged about etcd and roles"
grep -E 'etcd|role|primary' "$WORK/rolelb.log" | sed 's/^/    /' | tail -n 12

cat <<NEXT

What to try next:
  - keep the demo running:        bash scripts/demo.sh --keep
  - then, in another shell:       psql -h 127.0.0.1 -p $WRITE_PORT -U postgres   (writes: the primary)
                                  psql -h 127.0.0.1 -p $READ_PORT -U postgres   (reads: the replicas)
  - drain a node from etcd:       ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:$ETCD_PORT \\
                                    put /rolelb/demo/members/pg3 '{"host": "127.0.0.1", "port": $BOUNCER3, "check_port": $PG3, "role": "replica", "state": "drain"}'
  - stop etcd (kill $ETCD_PID): rolelb keeps the last known nodes and logs the outage once
  - the Patroni variant:          discover etcd NAME path /service/SCOPE schema patroni (docs/config.md)
  - measure an etcd change:       cargo build --release -p rolelb-bench-etcd-swap && target/release/etcd-swap
  - run the whole test suite:     bash scripts/test.sh
NEXT

if ((KEEP)); then
    say "Running until Ctrl-C (logs in $WORK)"
    wait "$ROLELB_PID" || true
fi
