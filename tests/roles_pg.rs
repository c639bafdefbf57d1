//! Acceptance for role awareness on PostgreSQL 15 (issue 4): rolelb asks each node
//! `pg_is_in_recovery()` and its replay lag, sends writes to the one primary and reads over
//! the replicas within `max-lag`, refuses writes during a split brain, and tells broken role
//! checks apart without stalling. Real PostgreSQL, PgBouncer and psql on ephemeral ports;
//! every timing the issue asks for is measured and printed (`cargo test -- --nocapture`).
//!
//! Longer than 700 lines on purpose: the scenarios share their helpers (the config preamble,
//! bounded psql, session readers); splitting the file would copy them.

mod common;
mod scripted;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{
    NamedServer, PSQL_BIN, PgBouncer, Postgres, REFUSAL_BOUND, Rolelb, free_port, psql,
    refusal_time, require_bin, stats_cli, still_open, try_psql, try_psql_as, wait_until,
    who_answers,
};
use scripted::{Reply, Scripted};
use tempfile::TempDir;

/// `inter` of every server here.
const INTER: Duration = Duration::from_millis(500);
/// `fall` of every server here.
const FALL: u32 = 2;
/// How long a role change may take to reach the data path: `fall × inter + inter`.
const ROLE_CHANGE_BOUND: Duration = Duration::from_millis(500 * (2 + 1));
/// What starting psql and logging in through PgBouncer may add on a loaded 2-core machine.
const PSQL_SLACK: Duration = Duration::from_millis(1000);
/// Which node answered and whether it is in recovery.
const WHO: &str = "SELECT pg_is_in_recovery(), current_setting('port')";

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `global` and `defaults` of every config here, with a stats socket at `sock`.
fn preamble(sock: &Path) -> String {
    format!(
        "global\n    maxconn 500\n    stats socket {} level admin\n\n\
         defaults\n    mode tcp\n    option tcplog\n    retries 3\n    option redispatch\n\
         \x20   timeout connect 3s\n    timeout client 1m\n    timeout server 1m\n\
         \x20   timeout check 1s\n\
         \x20   default-server inter {}ms fall {FALL} rise 2\n\n",
        sock.display(),
        INTER.as_millis()
    )
}

/// A primary (`pg1`) and streaming replicas (`pg2`, `pg3`), each behind its own PgBouncer,
/// and rolelb as in `conf/pgbouncer-roles.cfg`: traffic to the PgBouncers, role checks to
/// PostgreSQL, `writes` with `role primary`, `reads` with `role replica` and `max-lag 1m`.
struct Stack {
    // Fields drop in order: rolelb first, then PgBouncers, then the databases.
    lb: Rolelb,
    _bouncers: Vec<PgBouncer>,
    /// `nodes[i]` is server `pg{i+1}`; `nodes[0]` starts as the primary.
    nodes: Vec<Postgres>,
    write_port: u16,
    read_port: u16,
    dir: TempDir,
}

impl Stack {
    /// Starts everything and waits until the primary takes writes and every replica reads.
    fn start(replicas: usize) -> Stack {
        let primary = Postgres::primary();
        primary.psql(
            "CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), pad text)",
        );
        let mut nodes = vec![primary];
        for _ in 0..replicas {
            let replica = Postgres::replica_of(&nodes[0]);
            nodes.push(replica);
        }
        let bouncers: Vec<PgBouncer> = nodes.iter().map(|n| PgBouncer::new(n.port())).collect();
        let servers: String = nodes
            .iter()
            .zip(&bouncers)
            .enumerate()
            .map(|(i, (n, b))| {
                format!(
                    "    server pg{} 127.0.0.1:{} check port {}\n",
                    i + 1,
                    b.port(),
                    n.port()
                )
            })
            .collect();
        let dir = tempfile::tempdir().expect("temporary directory");
        let (write_port, read_port) = (free_port(), free_port());
        let cfg = format!(
            "{}listen writes\n    bind 127.0.0.1:{write_port}\n    role primary\n\
             \x20   role-check pgsql user postgres\n{servers}\n\
             listen reads\n    bind 127.0.0.1:{read_port}\n    balance roundrobin\n    role replica\n\
             \x20   role-check pgsql user postgres\n    max-lag 1m\n{servers}",
            preamble(&dir.path().join("admin.sock"))
        );
        let lb = Rolelb::start(&cfg);
        let stack = Stack {
            lb,
            _bouncers: bouncers,
            nodes,
            write_port,
            read_port,
            dir,
        };
        stack.expect_log(
            "Server writes/pg1 reports role primary",
            Duration::from_secs(10),
        );
        for i in 2..=replicas + 1 {
            stack.expect_log(
                &format!("Server reads/pg{i} is back within max-lag"),
                Duration::from_secs(10),
            );
        }
        stack
    }

    fn port(&self, i: usize) -> u16 {
        self.nodes[i].port()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// Waits for `needle` in rolelb's log, panicking with the log if it does not come.
    fn expect_log(&self, needle: &str, limit: Duration) {
        assert!(
            self.lb.wait_for_log(needle, limit),
            "rolelb did not log {needle:?} within {limit:?}:\n{}",
            self.lb.stderr_text()
        );
    }

    /// `stot` (sessions since start) of each server of `backend`, from `show stat`.
    fn sessions_total(&self, backend: &str) -> Vec<(String, u64)> {
        stats_cli(&self.socket(), "show stat")
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > 7 && f[0] == backend && f[1] != "FRONTEND" && f[1] != "BACKEND")
            .map(|f| (f[1].to_owned(), f[7].parse().unwrap_or(0)))
            .collect()
    }
}

/// psql running `sql` through `port`, killed after `limit` (PgBouncer may hold a client
/// while its server is gone): one attempt of the writer and reader loops.
fn psql_bounded(port: u16, sql: &str, limit: Duration) -> Result<String, String> {
    let mut child = Command::new(require_bin(PSQL_BIN))
        .args(["-X", "-w", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    let deadline = Instant::now() + limit;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("psql still running after {limit:?}: killed"));
        }
        thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// One attempt of a [`ClientLoop`].
#[derive(Debug, Clone)]
struct Attempt {
    finished: Instant,
    result: Result<String, String>,
}

/// Runs `sql` through a listener every 50 ms, each attempt in its own psql (so its own
/// connection) on its own thread, so that an attempt PgBouncer holds does not delay the next.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    runner: Option<JoinHandle<()>>,
}

impl ClientLoop {
    fn start(port: u16, sql: &'static str) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let runner = {
            let (stop, attempts) = (stop.clone(), attempts.clone());
            thread::spawn(move || {
                let in_flight = Arc::new(AtomicUsize::new(0));
                let mut workers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    if in_flight.load(Ordering::SeqCst) < 8 {
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let (attempts, in_flight) = (attempts.clone(), in_flight.clone());
                        workers.push(thread::spawn(move || {
                            let result = psql_bounded(port, sql, Duration::from_secs(3));
                            let finished = Instant::now();
                            if let Ok(mut a) = attempts.lock() {
                                a.push(Attempt { finished, result });
                            }
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                        }));
                    }
                    // Pacing of the client loop, not a wait.
                    thread::sleep(Duration::from_millis(50));
                }
                for w in workers {
                    let _ = w.join();
                }
            })
        };
        ClientLoop {
            stop,
            attempts,
            runner: Some(runner),
        }
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Stops the loop, waits for attempts under way, and returns every attempt.
    fn finish(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.runner.take() {
            let _ = r.join();
        }
        self.attempts()
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.runner.take() {
            let _ = r.join();
        }
    }
}

/// A PostgreSQL session held open across a scenario (tokio-postgres on its own runtime).
struct PgSession {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl PgSession {
    /// Logs in as `postgres` through 127.0.0.1:`port`.
    fn open(port: u16) -> Result<PgSession, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let params = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
        let client = rt.block_on(async {
            let connect = tokio_postgres::connect(&params, tokio_postgres::NoTls);
            let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .map_err(|_| format!("no login through :{port} within 5s"))?
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok::<_, String>(client)
        })?;
        Ok(PgSession { rt, client })
    }

    /// Runs `sql`; the first row's columns joined by `|`, as [`psql`] prints them.
    fn query(&self, sql: &str) -> Result<String, String> {
        self.rt.block_on(async {
            let messages =
                tokio::time::timeout(Duration::from_secs(5), self.client.simple_query(sql))
                    .await
                    .map_err(|_| "no answer within 5s".to_owned())?
                    .map_err(|e| e.to_string())?;
            let row = messages
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .ok_or("no row")?;
            Ok((0..row.len())
                .map(|i| row.get(i).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("|"))
        })
    }
}

/// Opens sessions through the read listener until one lands on the node at `pg_port`;
/// returns it (the others are closed).
fn read_session_on(read_port: u16, pg_port: u16) -> PgSession {
    for _ in 0..4 {
        let session = PgSession::open(read_port).expect("a read session");
        if session.query(WHO).as_deref() == Ok(&format!("t|{pg_port}")) {
            return session;
        }
    }
    panic!("four read sessions and none on the replica at :{pg_port}");
}

#[test]
fn writes_go_to_the_primary_and_reads_alternate_between_replicas() {
    let stack = Stack::start(2);
    let (p, r1, r2) = (stack.port(0), stack.port(1), stack.port(2));

    for _ in 0..3 {
        assert_eq!(
            psql(stack.write_port, WHO),
            format!("f|{p}"),
            "every write connection must reach the primary"
        );
    }
    psql(
        stack.write_port,
        "INSERT INTO ticks (pad) VALUES ('through rolelb')",
    );

    let reads: Vec<String> = (0..6).map(|_| psql(stack.read_port, WHO)).collect();
    let replicas = [format!("t|{r1}"), format!("t|{r2}")];
    assert!(
        reads.iter().all(|r| replicas.contains(r)),
        "every read must reach a replica: {reads:?}"
    );
    assert!(
        reads.windows(2).all(|w| w[0] != w[1]),
        "reads must alternate between the two replicas: {reads:?}"
    );

    for replica in &stack.nodes[1..] {
        replica.wait_replayed(&stack.nodes[0]);
    }
    for _ in 0..2 {
        assert_eq!(
            psql(
                stack.read_port,
                "SELECT count(*) FROM ticks WHERE pad = 'through rolelb'"
            ),
            "1",
            "the write made through rolelb is read back on each replica"
        );
    }
}

#[test]
fn switchover_moves_writes_within_fall_times_inter_and_no_write_hits_a_replica() {
    let mut stack = Stack::start(2);
    let (r1, r2) = (stack.port(1), stack.port(2));
    let writer = ClientLoop::start(stack.write_port, "INSERT INTO ticks DEFAULT VALUES");
    let reader = ClientLoop::start(stack.read_port, WHO);
    let ok_count = |l: &ClientLoop| l.attempts().iter().filter(|a| a.result.is_ok()).count();
    assert!(
        wait_until(Duration::from_secs(10), || ok_count(&writer) >= 3
            && ok_count(&reader) >= 3),
        "writes and reads do not flow before the switchover"
    );

    let stopping = Instant::now();
    stack.nodes[0].stop();
    let stopped = Instant::now();
    stack.nodes[1].promote();
    let promoted = Instant::now();
    stack.nodes[2].psql(&format!(
        "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={r1} user=postgres'"
    ));
    stack.nodes[2].psql("SELECT pg_reload_conf()");

    let first_write = |attempts: &[Attempt]| {
        attempts
            .iter()
            .filter(|a| a.result.is_ok() && a.finished > promoted)
            .map(|a| a.finished)
            .min()
    };
    let resumed = wait_until(Duration::from_secs(10), || {
        first_write(&writer.attempts()).is_some()
    });
    // Keep writing a while on the new primary (five more writes), then settle the books.
    let written_after = || {
        writer
            .attempts()
            .iter()
            .filter(|a| a.result.is_ok() && a.finished > promoted)
            .count()
    };
    wait_until(Duration::from_secs(10), || written_after() >= 5);
    let writes = writer.finish();
    let reads = reader.finish();
    assert!(
        resumed,
        "no write succeeded through rolelb within 10s of the promotion; errors: {:?}\n{}",
        writes.iter().rev().take(5).collect::<Vec<_>>(),
        stack.lb.stderr_text()
    );
    let failover = first_write(&writes).expect("checked above") - promoted;
    let ok = writes.iter().filter(|a| a.result.is_ok()).count();
    let errors: Vec<&String> = writes
        .iter()
        .filter_map(|a| a.result.as_ref().err())
        .collect();
    let read_only = errors
        .iter()
        .filter(|e| e.contains("read-only transaction"))
        .count();
    let read_errors: Vec<&String> = reads
        .iter()
        .filter_map(|a| a.result.as_ref().err())
        .collect();
    // How the failed writes failed, by psql's first line (closed before login: refused by
    // rolelb; lost: the session died under it, e.g. the primary stopping).
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for e in &errors {
        let kind = e.lines().next().unwrap_or("").to_owned();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    eprintln!(
        "switchover: primary stop took {:?}, promotion {:?}; first write through rolelb {:?} after \
         the promotion finished (bound {:?} + {:?} psql); writes: {ok} ok, {} failed, {read_only} \
         answered read-only; reads: {} ok, {} failed; write errors: {kinds:?}",
        stopped - stopping,
        promoted - stopped,
        failover,
        ROLE_CHANGE_BOUND,
        PSQL_SLACK,
        errors.len(),
        reads.len() - read_errors.len(),
        read_errors.len()
    );
    assert_eq!(
        read_only, 0,
        "a write reached a server in recovery: {errors:?}"
    );
    assert!(
        failover <= ROLE_CHANGE_BOUND + PSQL_SLACK,
        "writes resumed {failover:?} after the promotion, more than fall × inter + inter ({ROLE_CHANGE_BOUND:?}) + {PSQL_SLACK:?}"
    );
    assert!(
        read_errors.is_empty(),
        "reads must keep working during the switchover: {read_errors:?}"
    );

    assert_eq!(psql(stack.write_port, WHO), format!("f|{r1}"));
    for _ in 0..4 {
        assert_eq!(
            psql(stack.read_port, WHO),
            format!("t|{r2}"),
            "the promoted node left the read rotation; the other replica serves the reads"
        );
    }
    // The repointed replica follows the new primary: every write made through rolelb is there.
    stack.nodes[2].wait_replayed(&stack.nodes[1]);
    let count = "SELECT count(*) FROM ticks";
    assert_eq!(stack.nodes[2].psql(count), stack.nodes[1].psql(count));
}

#[test]
fn split_brain_refuses_writes_fast_and_names_both_servers() {
    let mut stack = Stack::start(1);
    let (p, r1) = (stack.port(0), stack.port(1));
    let write = local(stack.write_port);

    // Sessions through the write listener to the old primary, opened before the conflict: a
    // real one, and a raw TCP one that never logs in (PgBouncer keeps such a client waiting
    // for its startup packet even after its server is gone, so only rolelb can close it).
    let held = PgSession::open(stack.write_port).expect("a write session");
    assert_eq!(held.query(WHO), Ok(format!("f|{p}")));
    let mut raw = TcpStream::connect(write).expect("a raw session through the write listener");
    assert!(still_open(&mut raw));
    let sessions_before = stack.sessions_total("writes");
    assert!(
        sessions_before.len() == 2 && sessions_before[0].1 >= 2,
        "show stat counts the two held sessions on writes/pg1: {sessions_before:?}"
    );

    stack.nodes[1].promote();
    let promoted = Instant::now();
    stack.expect_log(
        "role conflict: servers pg1 and pg2 all report primary",
        ROLE_CHANGE_BOUND,
    );
    let detected = promoted.elapsed();

    let raw_refusals: Vec<Duration> = (0..5)
        .map(|_| refusal_time(write).expect("the write listener refuses during the conflict"))
        .collect();
    let started = Instant::now();
    let refused = try_psql(stack.write_port, "SELECT 1");
    let psql_refusal = started.elapsed();
    assert!(
        refused.is_err(),
        "psql got through during the conflict: {refused:?}"
    );
    let slowest = raw_refusals.iter().max().copied().unwrap_or_default();
    eprintln!(
        "split brain: conflict logged {detected:?} after the promotion; refusals: raw TCP \
         {raw_refusals:?}, psql {psql_refusal:?} (timeout connect is 3s)"
    );
    assert!(slowest < REFUSAL_BOUND, "refusal took {slowest:?}");
    // Refused, not left to `timeout connect` (3 s): psql's own start-up gets a loaded
    // machine's margin.
    assert!(
        psql_refusal < Duration::from_secs(2),
        "psql refusal took {psql_refusal:?}"
    );

    // The old primary's sessions go on; nothing new was opened anywhere.
    assert_eq!(held.query(WHO), Ok(format!("f|{p}")));
    assert!(
        still_open(&mut raw),
        "the held raw session was closed during the conflict"
    );
    assert_eq!(
        stack.sessions_total("writes"),
        sessions_before,
        "no server may receive a new session during the conflict"
    );

    stack.nodes[0].stop();
    let stopped = Instant::now();
    let resumed = wait_until(Duration::from_secs(5), || {
        try_psql(stack.write_port, WHO).as_deref() == Ok(&format!("f|{r1}"))
    });
    let resume_time = stopped.elapsed();
    assert!(
        resumed,
        "writes did not reach pg2 within 5s of pg1 stopping\n{}",
        stack.lb.stderr_text()
    );
    stack.expect_log("role conflict resolved", Duration::from_secs(1));
    let closed = wait_until(Duration::from_secs(2), || !still_open(&mut raw));
    eprintln!(
        "split brain: writes reach the remaining primary {resume_time:?} after the old one stopped \
         (bound {ROLE_CHANGE_BOUND:?} + {PSQL_SLACK:?} psql); held raw session closed: {closed}"
    );
    assert!(
        resume_time <= ROLE_CHANGE_BOUND + PSQL_SLACK,
        "routing resumed {resume_time:?} after the stop"
    );
    assert!(
        closed,
        "the session held through the write listener to pg1 is still open 2s after pg2 became \
         the sole primary: rolelb did not close the old writer's sessions\n{}",
        stack.lb.stderr_text()
    );
}

#[test]
fn a_lagging_replica_leaves_the_read_rotation_and_returns_after_catching_up() {
    let stack = Stack::start(2);
    let (r1, r2) = (stack.port(1), stack.port(2));
    let (lagging, steady) = (format!("t|{r1}"), format!("t|{r2}"));
    let held = read_session_on(stack.read_port, r1);

    stack.nodes[1].psql("SELECT pg_wal_replay_pause()");
    let log_mark = stack.lb.log_mark();
    // About 10 MB of WAL, ten times max-lag.
    let writing = Instant::now();
    stack.nodes[0]
        .psql("INSERT INTO ticks (pad) SELECT repeat('x', 200) FROM generate_series(1, 40000)");
    let written = Instant::now();
    let behind =
        "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) > 1048576";
    assert!(
        wait_until(Duration::from_secs(5), || stack.nodes[1].psql(behind)
            == "t"),
        "pg2 did not fall more than 1 MiB behind"
    );
    stack.expect_log("Server reads/pg2 is NOLB", Duration::from_secs(5));
    let detection = written.elapsed();

    // pg3 replays the same WAL at full speed; a check during that may see it briefly over
    // max-lag too. Wait until it serves again, then every read must go there.
    stack.nodes[2].wait_replayed(&stack.nodes[0]);
    assert!(
        wait_until(Duration::from_secs(5), || {
            (0..3).all(|_| try_psql(stack.read_port, WHO).as_deref() == Ok(steady.as_str()))
        }),
        "reads did not settle on pg3\n{}",
        stack.lb.stderr_text()
    );
    let pg3_blipped = stack.lb.stderr_text()[log_mark..].contains("Server reads/pg3 is NOLB");
    for _ in 0..6 {
        assert_eq!(
            psql(stack.read_port, WHO),
            steady,
            "a replica over max-lag takes no new reads"
        );
    }
    assert_eq!(
        held.query(WHO),
        Ok(lagging.clone()),
        "a read session running on the lagging replica is left alone"
    );

    stack.nodes[1].psql("SELECT pg_wal_replay_resume()");
    let resumed = Instant::now();
    let back = stack.lb.wait_for_log_since(
        log_mark,
        "Server reads/pg2 is back within max-lag",
        Duration::from_secs(10),
    );
    let return_time = resumed.elapsed();
    assert!(
        back,
        "pg2 did not come back within 10s of resuming replay\n{}",
        stack.lb.stderr_text()
    );
    let reads: Vec<String> = (0..6).map(|_| psql(stack.read_port, WHO)).collect();
    eprintln!(
        "lag: pg2 NOLB logged {detection:?} after ~10 MB of WAL were written (the INSERT took \
         {:?}); back in rotation \
         {return_time:?} after replay resumed (rise 2 × inter {INTER:?}); pg3 briefly NOLB while \
         replaying: {pg3_blipped}",
        written - writing
    );
    // The clock ran through the psql polls above too: they get the usual slack.
    assert!(
        detection <= ROLE_CHANGE_BOUND + PSQL_SLACK,
        "lag took {detection:?} to detect"
    );
    assert!(
        reads.windows(2).all(|w| w[0] != w[1]) && reads.contains(&lagging),
        "reads must alternate between both replicas again: {reads:?}"
    );
    assert_eq!(held.query(WHO), Ok(lagging));
}

#[test]
fn role_checks_authenticate_with_md5_and_scram() {
    let pg = Postgres::primary();
    let port = pg.port();
    pg.psql("ALTER SYSTEM SET log_connections = on");
    pg.psql("SET password_encryption = 'md5'; CREATE ROLE monitor_md5 LOGIN PASSWORD 'md5-secret'");
    pg.psql(
        "SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE monitor_scram LOGIN PASSWORD 'scram-secret'",
    );
    let stored = pg.psql(
        "SELECT string_agg(rolname || ':' || left(rolpassword, 13), ',' ORDER BY rolname) \
         FROM pg_authid WHERE rolname LIKE 'monitor%'",
    );
    assert!(
        stored.starts_with("monitor_md5:md5") && stored.contains("monitor_scram:SCRAM-SHA-256"),
        "passwords stored as md5 and SCRAM: {stored}"
    );
    pg.hba_prepend(
        "host all monitor_md5 127.0.0.1/32 md5\n\
         host all monitor_scram 127.0.0.1/32 scram-sha-256",
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            try_psql_as(port, "monitor_md5", None, "SELECT 1").is_err()
                && try_psql_as(port, "monitor_scram", None, "SELECT 1").is_err()
        }),
        "pg_hba.conf did not start asking the monitors for a password"
    );
    assert_eq!(
        try_psql_as(port, "monitor_md5", Some("md5-secret"), "SELECT 1"),
        Ok("1".into())
    );
    assert_eq!(
        try_psql_as(port, "monitor_scram", Some("scram-secret"), "SELECT 1"),
        Ok("1".into())
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let (md5, scram, wrong) = (free_port(), free_port(), free_port());
    let listen = |name: &str, bind: u16, user: &str, password: &str| {
        format!(
            "listen {name}\n    bind 127.0.0.1:{bind}\n    role primary\n\
             \x20   role-check pgsql user {user} password {password} database postgres\n\
             \x20   server pg 127.0.0.1:{port}\n\n"
        )
    };
    let cfg = format!(
        "{}{}{}{}",
        preamble(&dir.path().join("admin.sock")),
        listen("md5", md5, "monitor_md5", "md5-secret"),
        listen("scram", scram, "monitor_scram", "scram-secret"),
        listen("wrong", wrong, "monitor_scram", "not-the-password"),
    );
    let lb = Rolelb::start(&cfg);
    for needle in [
        "Server md5/pg reports role primary",
        "Server scram/pg reports role primary",
        "Role check for server wrong/pg failed (rejected)",
    ] {
        assert!(
            lb.wait_for_log(needle, Duration::from_secs(5)),
            "no {needle:?} in rolelb's log:\n{}",
            lb.stderr_text()
        );
    }
    assert_eq!(psql(md5, WHO), format!("f|{port}"));
    assert_eq!(psql(scram, WHO), format!("f|{port}"));
    // Several rounds of checks: the server behind wrong credentials never becomes eligible.
    let deadline = Instant::now() + INTER * 4;
    while Instant::now() < deadline {
        let took = refusal_time(local(wrong)).expect("refused: no server with a known role");
        assert!(took < REFUSAL_BOUND, "refusal took {took:?}");
        // Proving an absence over several check rounds: sample every 100 ms.
        thread::sleep(Duration::from_millis(100));
    }
    let log = lb.stderr_text();
    assert!(
        !log.contains("Server wrong/pg reports role"),
        "a server behind wrong credentials got a role:\n{log}"
    );
    let pg_log = std::fs::read_to_string(pg.log_path()).expect("the PostgreSQL log");
    for user in ["monitor_md5", "monitor_scram"] {
        let line = format!(
            "connection authorized: user={user} database=postgres application_name=rolelb role-check"
        );
        assert!(
            pg_log.contains(&line),
            "PostgreSQL did not log rolelb's login as {user}"
        );
    }
    assert!(
        pg_log.contains("password authentication failed for user \"monitor_scram\""),
        "PostgreSQL did not log the wrong password"
    );
}

#[test]
fn broken_role_checks_are_told_apart_and_never_stall_rolelb() {
    let pg = Postgres::primary();
    let garbage = Scripted::start(Reply::text("HTTP/1.1 400 Bad Request\r\n\r\n"), false);
    let silent = Scripted::start(Reply::Silent, false);
    let healthy = NamedServer::start("healthy");
    let closed = free_port();
    let dir = tempfile::tempdir().expect("temporary directory");
    let sock = dir.path().join("admin.sock");

    // (listener, role-check user, server address, expected problem)
    let broken = [
        ("refused", "postgres", local(closed), "refused"),
        ("garbage", "postgres", garbage.addr(), "bad_answer"),
        ("hung", "postgres", silent.addr(), "bad_answer"),
        ("nouser", "nobody", local(pg.port()), "rejected"),
    ];
    let mut cfg = preamble(&sock);
    let mut ports = Vec::new();
    for (name, user, addr, _) in &broken {
        let port = free_port();
        ports.push(port);
        cfg.push_str(&format!(
            "listen {name}\n    bind 127.0.0.1:{port}\n    role primary\n\
             \x20   role-check pgsql user {user}\n    server s {addr}\n\n"
        ));
    }
    let healthy_port = free_port();
    cfg.push_str(&format!(
        "listen healthy\n    bind 127.0.0.1:{healthy_port}\n    role any\n    server named {}\n",
        healthy.addr()
    ));
    let mut lb = Rolelb::start(&cfg);
    let started = Instant::now();

    // While the broken checks fail round after round, the healthy listener and the stats
    // socket answer at their usual speed.
    let mut latencies = Vec::new();
    let mut socket_times = Vec::new();
    while started.elapsed() < Duration::from_secs(4) {
        let t = Instant::now();
        assert_eq!(
            who_answers(local(healthy_port)).expect("healthy"),
            "healthy"
        );
        latencies.push(t.elapsed());
        let t = Instant::now();
        let state = stats_cli(&sock, "show servers state");
        socket_times.push(t.elapsed());
        assert!(
            ["refused", "garbage", "hung", "nouser", "healthy"]
                .iter()
                .all(|be| state.contains(&format!(" {be} "))),
            "show servers state lists every backend:\n{state}"
        );
        // Sampling pace over the 4 s window, not a wait.
        thread::sleep(Duration::from_millis(50));
    }
    let mut refusals = Vec::new();
    for ((name, _, addr, problem), port) in broken.iter().zip(&ports) {
        let needle = format!("Role check for server {name}/s failed ({problem})");
        assert!(
            lb.wait_for_log(&needle, Duration::from_secs(2)),
            "no {needle:?} for {addr}:\n{}",
            lb.stderr_text()
        );
        let took = refusal_time(local(*port))
            .unwrap_or_else(|e| panic!("listener {name} must refuse (no server has a role): {e}"));
        refusals.push((name, took));
    }
    let log = lb.stderr_text();
    for line in log.lines().filter(|l| l.contains("Role check for server")) {
        eprintln!("broken role checks: {line}");
    }
    assert!(
        log.contains("failed (bad_answer): no PostgreSQL handshake"),
        "the hung server's check names the missing handshake:\n{log}"
    );
    assert!(
        !log.contains("reports role"),
        "no broken server may get a role:\n{log}"
    );
    assert!(!log.contains("panicked"), "rolelb panicked:\n{log}");
    assert_eq!(lb.exited(), None, "rolelb exited");

    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (lat_max, sock_max) = (max(&latencies), max(&socket_times));
    let (lat_median, sock_median) = (median(&mut latencies), median(&mut socket_times));
    eprintln!(
        "broken role checks: healthy listener median {lat_median:?} max {lat_max:?} over {} \
         connections; show servers state median {sock_median:?} max {sock_max:?}; refusals \
         {refusals:?}",
        latencies.len(),
    );
    // A stalled rolelb shows in the typical case; one slow sample is the shared machine.
    assert!(
        lat_median < Duration::from_millis(50) && lat_max < Duration::from_secs(2),
        "the healthy listener stalled: median {lat_median:?}, max {lat_max:?}"
    );
    assert!(
        sock_median < Duration::from_millis(50) && sock_max < Duration::from_secs(2),
        "the stats socket stalled: median {sock_median:?}, max {sock_max:?}"
    );
    for (name, took) in refusals {
        assert!(took < REFUSAL_BOUND, "{name} refusal took {took:?}");
    }
}
