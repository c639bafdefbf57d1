#!/usr/bin/env bash
# rolelb in five seconds of reading: a PostgreSQL 15 primary and a streaming replica, each behind
# its own PgBouncer, and rolelb in front of them on 127.0.0.1:5001 (writes) and :5002 (reads),
# running conf/pgbouncer-5001-5002.cfg with the PgBouncer ports of this machine.
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
PRIMARY_PG=$(pick_port "$base")
REPLICA_PG=$(pick_port $((PRIMARY_PG + 1)))
PRIMARY_BOUNCER=$(pick_port $((REPLICA_PG + 1)))
REPLICA_BOUNCER=$(pick_port $((PRIMARY_BOUNCER + 1)))

WORK=$(mktemp -d /tmp/rolelb-demo.XXXXXX)
chmod 755 "$WORK"
ROLELB_PID=""
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
    local pidfile pid data
    for pidfile in "${STARTED_BOUNCERS[@]}"; do
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for data in "${STARTED_PG[@]}"; do
        as_db "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
    echo "stopped rolelb, PgBouncer and PostgreSQL; removed $WORK"
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

say "Starting a PostgreSQL 15 primary on 127.0.0.1:$PRIMARY_PG"
as_db "$PGBIN/initdb" -D "$WORK/primary" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
start_pg "$WORK/primary" "$PRIMARY_PG"

say "Starting a streaming replica on 127.0.0.1:$REPLICA_PG (pg_basebackup -R)"
as_db "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PG" -U postgres -D "$WORK/replica" -R -X stream -c fast
start_pg "$WORK/replica" "$REPLICA_PG"

say "Starting PgBouncer for each: primary on :$PRIMARY_BOUNCER, replica on :$REPLICA_BOUNCER"
start_bouncer bouncer-primary "$PRIMARY_BOUNCER" "$PRIMARY_PG"
start_bouncer bouncer-replica "$REPLICA_BOUNCER" "$REPLICA_PG"

say "Starting rolelb with conf/pgbouncer-5001-5002.cfg, rewritten for this machine"
# The example lists PgBouncers on 6432 (primary), 6433 and 6434 (replicas); this demo has one replica.
CFG=$WORK/rolelb.cfg
sed -e "s/127\.0\.0\.1:6432\b/127.0.0.1:$PRIMARY_BOUNCER/" \
    -e "s/127\.0\.0\.1:6433\b/127.0.0.1:$REPLICA_BOUNCER/" \
    -e "/127\.0\.0\.1:6434\b/d" \
    -e "s/127\.0\.0\.1:5001\b/127.0.0.1:$WRITE_PORT/" \
    -e "s/127\.0\.0\.1:5002\b/127.0.0.1:$READ_PORT/" \
    conf/pgbouncer-5001-5002.cfg >"$CFG"
grep -E '^\s*(bind|server)\b' "$CFG" | sed 's/^ */    /'
"$ROLELB_BIN" -c -f "$CFG"
"$ROLELB_BIN" -f "$CFG" 2>"$WORK/rolelb.log" &
ROLELB_PID=$!
wait_listening "$WRITE_PORT" rolelb
wait_listening "$READ_PORT" rolelb

WHO="CASE WHEN pg_is_in_recovery() THEN 'replica' ELSE 'primary' END || ' (PostgreSQL port ' || inet_server_port() || ')'"

say "A write through 127.0.0.1:$WRITE_PORT"
psql_at "$WRITE_PORT" "CREATE TABLE IF NOT EXISTS demo (id serial PRIMARY KEY, at timestamptz DEFAULT now())"
psql_at "$WRITE_PORT" "INSERT INTO demo DEFAULT VALUES RETURNING 'inserted row ' || id || ' on the ' || $WHO"

# Wait until the replica has replayed the write, so the reads below see it.
lsn=$(psql_at "$PRIMARY_PG" "SELECT pg_current_wal_lsn()")
for _ in $(seq 100); do
    [[ "$(psql_at "$REPLICA_PG" "SELECT pg_last_wal_replay_lsn() >= '$lsn'")" == t ]] && break
    sleep 0.1
done

say "Reads through 127.0.0.1:$READ_PORT (roundrobin over the replicas)"
for _ in 1 2 3; do
    psql_at "$READ_PORT" "SELECT 'read ' || count(*) || ' row(s) from the ' || $WHO FROM demo"
done

say "A write through the read port is refused by the replica"
psql_at "$READ_PORT" "INSERT INTO demo DEFAULT VALUES" 2>&1 | sed 's/^/    /' || true

say "rolelb's log (one line per connection with option tcplog)"
sed 's/^/    /' "$WORK/rolelb.log" | tail -n 8

cat <<NEXT

What to try next:
  - keep the demo running:        bash scripts/demo.sh --keep
  - then, in another shell:       psql -h 127.0.0.1 -p $WRITE_PORT -U postgres   (writes: the primary)
                                  psql -h 127.0.0.1 -p $READ_PORT -U postgres   (reads: the replica)
                                  pgbench -h 127.0.0.1 -p $WRITE_PORT -U postgres -i postgres
  - check a config:               $ROLELB_BIN -c -f conf/patroni-template.cfg
  - run the whole test suite:     bash scripts/test.sh
NEXT

if ((KEEP)); then
    say "Running until Ctrl-C (logs in $WORK)"
    wait "$ROLELB_PID" || true
fi
