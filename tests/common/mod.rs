//! The integration-test harness: real servers on 127.0.0.1, never mocks.
//!
//! Every `tests/*.rs` file does `mod common;` and uses what it needs from here: PostgreSQL 15
//! primaries and streaming replicas, PgBouncer, HAProxy, rolelb itself, and [`NamedServer`] (a
//! tiny TCP server that says its name, so a balancing test can see which backend served it).
//!
//! Rules every helper follows:
//! - Everything listens on 127.0.0.1, on ports from [`free_port`], with its files in its own
//!   temporary directory that is removed when the helper is dropped.
//! - A helper owns the process it started and stops it by that PID when dropped, including
//!   when the test panics (signal, a short grace period, then `SIGKILL`, then `wait`). Children
//!   also get `PR_SET_PDEATHSIG = SIGKILL`, so a test runner that is killed outright does not
//!   leave servers behind. Linux ties that signal to the *thread* that spawned the child:
//!   create servers on the test's own thread, not on a helper thread that ends early.
//! - A missing binary panics with "`PATH` not found: run scripts/deps.sh".
//! - When a server does not come up, the panic message carries the tail of its log.
//!
//! Database servers and PgBouncer refuse to run as root; when the tests run as root (CI does),
//! they run as the `postgres` user (set through the child's uid/gid, the same thing
//! `runuser -u postgres --` does, but the PID we hold is the server's own), and their
//! directories are owned by that user. As another user they simply run as that user.
//!
//! Synchronous on purpose (std::process, std::net, threads) so any test, async or not, can use it.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, User};
use tempfile::TempDir;

/// Where Debian's PostgreSQL 15 server binaries live (`initdb`, `postgres`, `pg_basebackup`).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Debian's PgBouncer.
pub const PGBOUNCER_BIN: &str = "/usr/sbin/pgbouncer";
/// Debian's HAProxy (2.6), the reference rolelb is compared against.
pub const HAPROXY_BIN: &str = "/usr/sbin/haproxy";
/// The PostgreSQL client tools used by the helpers below.
pub const PSQL_BIN: &str = "/usr/bin/psql";
/// `pg_isready`, used to wait for a PostgreSQL server.
pub const PG_ISREADY_BIN: &str = "/usr/bin/pg_isready";
/// `pgbench`, for load through the balancer.
pub const PGBENCH_BIN: &str = "/usr/bin/pgbench";

/// How long a server may take to come up before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Binaries, ports, waiting
// ---------------------------------------------------------------------------------------------

/// Returns `path` if it is an existing file, else panics telling the reader to run deps.sh.
pub fn require_bin(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    assert!(
        path.is_file(),
        "{} not found: run scripts/deps.sh",
        path.display()
    );
    path.to_path_buf()
}

/// The process-wide set of ports already handed out by [`free_port`].
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Ports [`free_port`] chooses from: below Linux's ephemeral range (32768 and up), so the
/// kernel never gives one of them to an outgoing connection between our check and the bind.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// A TCP port on 127.0.0.1 that nothing listens on and that this process never handed out.
///
/// Scans [`PORT_RANGE`] from a random start (so parallel test processes rarely meet), skips
/// ports handed out before in this process, and proves each candidate free by binding it
/// (which also fails when another socket listens on the port's wildcard address).
pub fn free_port() -> u16 {
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let start = (hasher.finish() % u64::from(span)) as u16;
    let mut taken = handed_out().lock().expect("free_port: port set poisoned");
    for i in 0..span {
        let port = PORT_RANGE.start + (start + i) % span;
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("free_port: no free port in {PORT_RANGE:?}");
}

/// True when some socket on this machine is in LISTEN state on `port` (any address, v4 or v6).
///
/// Reads `/proc/net/tcp{,6}` instead of connecting, so checking a proxy's port does not open a
/// session that the proxy would forward to a backend (and move its round-robin on).
pub fn is_listening(port: u16) -> bool {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        let Ok(text) = fs::read_to_string(table) else {
            return false;
        };
        text.lines().skip(1).any(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1).unwrap_or("");
            let state = cols.nth(1).unwrap_or("");
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            state == LISTEN && local_port == Some(port)
        })
    })
}

/// Waits until `addr` accepts a TCP connection; false if `timeout` passes first.
///
/// This opens (and closes) real connections: through a proxy they reach a backend. Use
/// [`wait_listening`] to wait for a proxy's listener without that side effect.
pub fn wait_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until something listens on `port` (see [`is_listening`]); false if `timeout` passes.
pub fn wait_listening(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || is_listening(port))
}

/// Polls `cond` every 50 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// How soon [`refusal_time`] must see a refusal for it to count as "at once": far below any
/// `timeout connect` or `timeout queue` the tests use (3 s), loose enough for a shared,
/// loaded 2-core test machine.
pub const REFUSAL_BOUND: Duration = Duration::from_millis(1000);

/// Connects to `addr` and waits (up to 5 s) for the peer to close without a word, as a
/// balancer with no server to offer does; returns how long that took. Err when the peer
/// answered, or kept the connection open (a server on the other side).
pub fn refusal_time(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    match read_session_until(&mut conn, Duration::from_secs(5), true) {
        (Session::Closed, got) if got.is_empty() => Ok(started.elapsed()),
        (_, got) if !got.is_empty() => Err(format!(
            "{addr} answered instead of refusing: {:?}",
            String::from_utf8_lossy(&got)
        )),
        _ => Err(format!(
            "{addr} neither answered nor closed within {:?}",
            started.elapsed()
        )),
    }
}

/// True while the peer of `conn` has not closed it (see [`session_state`]) within a 100 ms read.
/// Whatever the peer sent is consumed.
pub fn still_open(conn: &mut TcpStream) -> bool {
    session_state(conn, Duration::from_millis(100)) == Session::Open
}

/// The addresses of every `bind` line in an HAProxy-syntax config, as addresses to reach them
/// at (`*`, `0.0.0.0` and an empty host become 127.0.0.1; `::` becomes ::1).
pub fn bind_addrs(cfg: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in cfg.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("bind") {
            continue;
        }
        let Some(list) = words.next() else { continue };
        for item in list.split(',') {
            let Some((host, port)) = item.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let ip = match host {
                "" | "*" | "0.0.0.0" => "127.0.0.1",
                "::" => "::1",
                other => other,
            };
            if let Ok(ip) = ip.parse() {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

/// The last `max` lines of a log file, for panic messages.
pub fn log_tail(path: &Path, max: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(max);
    let mut out = format!("--- last lines of {} ---\n", path.display());
    for l in &lines[from..] {
        let _ = writeln!(out, "{l}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// The uid/gid database servers run as: `postgres` when we are root, else ourselves (`None`).
fn db_user() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = User::from_name("postgres")
        .expect("looking up the postgres user")
        .expect("the postgres user not found: run scripts/deps.sh");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// A temporary directory the database user owns (it must be able to write there).
fn db_tempdir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("creating a temporary directory");
    if let Some((uid, gid)) = db_user() {
        chown(dir.path(), Some(uid), Some(gid)).expect("chown of the temporary directory");
    }
    dir
}

/// A command for `program` that dies with the spawning thread (PDEATHSIG) and, when
/// `as_db_user`, runs as the database user from `cwd` (which that user can enter).
pub fn command(program: &Path, as_db_user: bool, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd).stdin(Stdio::null());
    if as_db_user && let Some((uid, gid)) = db_user() {
        cmd.uid(uid)
            .gid(gid)
            .env("HOME", cwd)
            .env("USER", "postgres");
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs a short-lived command to completion, panicking with its output if it fails.
fn run_ok(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Opens `path` for appending, to hand to a child as stdout/stderr.
fn log_file(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening log {}: {e}", path.display()))
}

/// A running server process that this test started, stopped by its PID when dropped.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    stop_signal: Signal,
    grace: Duration,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path, stop_signal: Signal) -> Proc {
        let child = cmd
            .stdout(log_file(log))
            .stderr(log_file(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            stop_signal,
            grace: Duration::from_secs(10),
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32);
        signal::kill(pid, sig).unwrap_or_else(|e| panic!("{}: kill {sig}: {e}", self.name));
    }

    /// Panics with the log tail unless the process is still running.
    fn assert_running(&mut self, while_doing: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}) while {while_doing}\n{}",
                self.name,
                log_tail(&self.log, 40)
            );
        }
    }

    /// Waits until `ready()` holds, panicking with the log if the process dies or time runs out.
    pub fn wait_ready(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.assert_running(what);
            if ready() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not ready after {START_TIMEOUT:?} ({what})\n{}",
                self.name,
                log_tail(&self.log, 40)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process: its stop signal, up to the grace period, then SIGKILL; then reaps it.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = signal::kill(pid, self.stop_signal);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return status;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("{}: wait: {e}", self.name));
        self.status = Some(status);
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// `psql` on 127.0.0.1:`port` as user `postgres`, database `postgres`: unaligned, tuples only
/// (`a|b` per row), trimmed. Err carries psql's stderr.
pub fn try_psql(port: u16, sql: &str) -> Result<String, String> {
    try_psql_as(port, "postgres", None, sql)
}

/// Like [`try_psql`] as `user` with `password` (none: psql never prompts, so a server that
/// wants one refuses).
pub fn try_psql_as(
    port: u16,
    user: &str,
    password: Option<&str>,
    sql: &str,
) -> Result<String, String> {
    let mut cmd = Command::new(require_bin(PSQL_BIN));
    cmd.args(["-X", "-w", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", user, "-d", "postgres", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null());
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    let out = cmd.output().map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Like [`try_psql`], panicking with psql's error when the command fails.
pub fn psql(port: u16, sql: &str) -> String {
    try_psql(port, sql).unwrap_or_else(|e| panic!("psql -p {port} -c {sql:?} failed: {e}"))
}

/// Runs `pgbench -h 127.0.0.1 -p PORT -U postgres ARGS postgres` and returns its stdout and
/// stderr; panics with them if pgbench fails.
pub fn pgbench(port: u16, args: &[&str]) -> String {
    let out = run_ok(
        &format!("pgbench -p {port} {}", args.join(" ")),
        Command::new(require_bin(PGBENCH_BIN))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null()),
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Settings appended to every server's postgresql.conf: loopback TCP only, small, and fast
/// rather than durable (test data is thrown away).
const PG_TEST_SETTINGS: &str = "
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 50
max_wal_senders = 10
wal_keep_size = 64MB
hot_standby_feedback = on
";

/// A PostgreSQL 15 server (primary or streaming replica) in its own temporary directory.
pub struct Postgres {
    dir: TempDir,
    port: u16,
    proc: Option<Proc>,
}

impl Postgres {
    /// Initialises (`initdb`, trust auth) and starts a new primary; returns once it accepts
    /// connections.
    pub fn primary() -> Postgres {
        let dir = db_tempdir("rolelb-pg-");
        let data = dir.path().join("data");
        let initdb = require_bin(Path::new(PG_BIN).join("initdb"));
        run_ok(
            "initdb",
            command(&initdb, true, dir.path())
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "--no-sync"])
                .args(["--encoding=UTF8", "--locale=C"]),
        );
        let port = free_port();
        append(
            &data.join("postgresql.conf"),
            &format!("{PG_TEST_SETTINGS}port = {port}\n"),
        );
        let mut pg = Postgres {
            dir,
            port,
            proc: None,
        };
        pg.start();
        pg
    }

    /// Makes a streaming replica of `primary` (`pg_basebackup -R`) and starts it; returns once
    /// it accepts read-only connections.
    pub fn replica_of(primary: &Postgres) -> Postgres {
        let dir = db_tempdir("rolelb-pg-");
        let data = dir.path().join("data");
        let basebackup = require_bin(Path::new(PG_BIN).join("pg_basebackup"));
        run_ok(
            "pg_basebackup",
            command(&basebackup, true, dir.path())
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
                .args(["-U", "postgres", "-D"])
                .arg(&data)
                .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]),
        );
        let port = free_port();
        // The copied postgresql.conf carries the primary's port; a later line wins.
        append(&data.join("postgresql.conf"), &format!("port = {port}\n"));
        let mut pg = Postgres {
            dir,
            port,
            proc: None,
        };
        pg.start();
        pg
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file (its stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The postmaster's PID while running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Starts the server (again) on the same data directory and port; waits until ready.
    pub fn start(&mut self) {
        assert!(
            self.proc.is_none(),
            "postgres on port {} already running",
            self.port
        );
        let postgres = require_bin(Path::new(PG_BIN).join("postgres"));
        let mut cmd = command(&postgres, true, self.dir.path());
        cmd.arg("-D").arg(self.dir.path().join("data"));
        let name = format!("postgres :{}", self.port);
        // SIGINT is PostgreSQL's "fast" shutdown: roll back sessions and stop at once.
        let mut proc = Proc::spawn(&name, &mut cmd, &self.log_path(), Signal::SIGINT);
        let port = self.port.to_string();
        let isready = require_bin(PG_ISREADY_BIN);
        proc.wait_ready("waiting for pg_isready", || {
            Command::new(&isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port, "-t", "1"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        });
        self.proc = Some(proc);
    }

    /// Fast shutdown (SIGINT to the postmaster), waiting for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.stop();
        }
    }

    /// Promotes this replica to primary (`pg_promote()`, waiting for it to finish).
    pub fn promote(&self) {
        let done = self.psql("SELECT pg_promote(true, 30)");
        assert_eq!(done, "t", "pg_promote on port {} did not finish", self.port);
    }

    /// True while the server is a replica (`pg_is_in_recovery()`).
    pub fn is_replica(&self) -> bool {
        self.psql("SELECT pg_is_in_recovery()") == "t"
    }

    /// Waits until this replica has replayed everything `primary` has written so far.
    pub fn wait_replayed(&self, primary: &Postgres) {
        let lsn = primary.psql("SELECT pg_current_wal_lsn()");
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        let caught_up = wait_until(Duration::from_secs(30), || {
            try_psql(self.port, &sql).as_deref() == Ok("t")
        });
        assert!(
            caught_up,
            "replica :{} did not replay the primary's WAL up to {lsn} within 30s\n{}",
            self.port,
            log_tail(&self.log_path(), 20)
        );
    }

    /// Runs `sql` on this server with [`psql`].
    pub fn psql(&self, sql: &str) -> String {
        psql(self.port, sql)
    }

    /// Puts `lines` at the top of `pg_hba.conf`, ahead of initdb's trust lines (the first
    /// matching line wins), and reloads. The reload is asynchronous: prove it took effect
    /// (e.g. a login that must now fail) before relying on it.
    pub fn hba_prepend(&self, lines: &str) {
        let path = self.dir.path().join("data").join("pg_hba.conf");
        let old =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        fs::write(&path, format!("{lines}\n{old}"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        assert_eq!(self.psql("SELECT pg_reload_conf()"), "t");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Appends `text` to the file at `path`.
fn append(path: &Path, text: &str) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("appending to {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------
// PgBouncer
// ---------------------------------------------------------------------------------------------

/// A PgBouncer (session pooling, trust auth, user `postgres`) in front of one PostgreSQL.
pub struct PgBouncer {
    // Fields drop in order: stop the process before removing its directory.
    proc: Proc,
    dir: TempDir,
    port: u16,
}

impl PgBouncer {
    /// Starts PgBouncer on a free 127.0.0.1 port, forwarding every database to
    /// 127.0.0.1:`pg_port`; returns once it listens.
    pub fn new(pg_port: u16) -> PgBouncer {
        let dir = db_tempdir("rolelb-pgbouncer-");
        let port = free_port();
        let userlist = dir.path().join("userlist.txt");
        fs::write(&userlist, "\"postgres\" \"\"\n").expect("writing userlist.txt");
        let ini = dir.path().join("pgbouncer.ini");
        fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={pg_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {}\n\
                 admin_users = postgres\n\
                 pool_mode = session\n\
                 max_client_conn = 500\n\
                 default_pool_size = 20\n\
                 ignore_startup_parameters = extra_float_digits\n",
                userlist.display()
            ),
        )
        .expect("writing pgbouncer.ini");
        let bin = require_bin(PGBOUNCER_BIN);
        let mut cmd = command(&bin, true, dir.path());
        cmd.arg(&ini);
        let log = dir.path().join("pgbouncer.log");
        // SIGINT is PgBouncer's safe shutdown (waits for clients); SIGTERM stops at once.
        let mut proc = Proc::spawn(
            &format!("pgbouncer :{port}"),
            &mut cmd,
            &log,
            Signal::SIGTERM,
        );
        proc.wait_ready("waiting for its listener", || is_listening(port));
        PgBouncer { proc, dir, port }
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PID of the pgbouncer process.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

// ---------------------------------------------------------------------------------------------
// HAProxy and rolelb
// ---------------------------------------------------------------------------------------------

/// A proxy process (HAProxy or rolelb) running a config file from its own temporary directory.
struct ProxyRun {
    // Fields drop in order: stop the process before removing its directory.
    proc: Proc,
    dir: TempDir,
    cfg: PathBuf,
    stderr: PathBuf,
}

impl ProxyRun {
    /// Writes `cfg_text`, runs `bin ARGS -f FILE`, and waits until every `bind` port listens.
    fn start(name: &str, bin: &Path, args: &[&str], cfg_text: &str) -> ProxyRun {
        let dir = tempfile::Builder::new()
            .prefix("rolelb-proxy-")
            .tempdir()
            .expect("creating a temporary directory");
        let cfg = dir.path().join("proxy.cfg");
        fs::write(&cfg, cfg_text).expect("writing the proxy config");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = command(bin, false, dir.path());
        cmd.args(args).arg("-f").arg(&cfg);
        let child = cmd
            .stdout(log_file(&dir.path().join("stdout.log")))
            .stderr(log_file(&stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {}: {e}", bin.display()));
        let mut proc = Proc {
            name: name.to_string(),
            child,
            log: stderr.clone(),
            stop_signal: Signal::SIGTERM,
            grace: Duration::from_secs(3),
            status: None,
        };
        for addr in bind_addrs(cfg_text) {
            proc.wait_ready(&format!("waiting for bind {addr}"), || {
                is_listening(addr.port())
            });
        }
        ProxyRun {
            proc,
            dir,
            cfg,
            stderr,
        }
    }

    fn stderr_text(&self) -> String {
        fs::read(&self.stderr)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// Runs `bin ARGS -c -f FILE` on `cfg_text`; returns (exit code 0, stdout + stderr).
fn check_config(bin: &Path, cfg_text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let cfg = dir.path().join("check.cfg");
    fs::write(&cfg, cfg_text).expect("writing the config to check");
    let out = Command::new(bin)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// HAProxy (`haproxy -db -f FILE`), the reference implementation, running a test's config.
pub struct Haproxy {
    run: ProxyRun,
}

impl Haproxy {
    /// Starts HAProxy on `cfg_text` and waits until every `bind` port listens.
    pub fn start(cfg_text: &str) -> Haproxy {
        let bin = require_bin(HAPROXY_BIN);
        Haproxy {
            run: ProxyRun::start("haproxy", &bin, &["-db"], cfg_text),
        }
    }

    /// `haproxy -c -f` on `cfg_text`: (valid, output).
    pub fn check(cfg_text: &str) -> (bool, String) {
        check_config(&require_bin(HAPROXY_BIN), cfg_text)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.run.proc.pid()
    }

    /// Everything HAProxy wrote to stderr so far (its log with `log stderr`).
    pub fn stderr_text(&self) -> String {
        self.run.stderr_text()
    }
}

/// Sends one command line to the `stats socket` at `path` and reads the reply until rolelb
/// closes (a non-interactive session answers one command).
pub fn stats_cli(path: &Path, line: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    s.write_all(line.as_bytes()).expect("writing the command");
    s.write_all(b"\n").expect("writing the newline");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("reading the reply");
    out
}

/// The rolelb binary built for this test run: cargo names it for the root package's tests;
/// other crates that include this harness (agent/tests) may name one in `$ROLELB_BIN`.
pub fn rolelb_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_rolelb") {
        Some(path) => require_bin(path),
        None => {
            require_bin(std::env::var_os("ROLELB_BIN").unwrap_or_else(|| {
                panic!("no rolelb binary in this crate's tests: set ROLELB_BIN")
            }))
        }
    }
}

/// rolelb (`rolelb -f FILE`) running a test's config, with stderr captured to a file.
pub struct Rolelb {
    run: ProxyRun,
}

impl Rolelb {
    /// Starts this build's rolelb on `cfg_text` and waits until every `bind` port listens.
    pub fn start(cfg_text: &str) -> Rolelb {
        Rolelb::start_bin(&rolelb_bin(), cfg_text)
    }

    /// Like [`Rolelb::start`] with another rolelb binary.
    pub fn start_bin(bin: &Path, cfg_text: &str) -> Rolelb {
        Rolelb {
            run: ProxyRun::start("rolelb", bin, &[], cfg_text),
        }
    }

    /// `rolelb -c -f` on `cfg_text`: (valid, output).
    pub fn check(cfg_text: &str) -> (bool, String) {
        check_config(&rolelb_bin(), cfg_text)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.run.proc.pid()
    }

    /// The config file rolelb was started with.
    pub fn config_path(&self) -> &Path {
        &self.run.cfg
    }

    /// Replaces the config file's contents (atomically, by rename); follow with [`Rolelb::reload`].
    pub fn rewrite_config(&self, cfg_text: &str) {
        let tmp = self.run.dir.path().join("proxy.cfg.new");
        fs::write(&tmp, cfg_text).expect("writing the new config");
        fs::rename(&tmp, &self.run.cfg).expect("replacing the config");
    }

    /// Sends SIGHUP: reload the config in place.
    pub fn reload(&self) {
        self.run.proc.signal(Signal::SIGHUP);
    }

    /// Sends `sig` to rolelb.
    pub fn signal(&self, sig: Signal) {
        self.run.proc.signal(sig);
    }

    /// The exit status if rolelb has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.run.proc.exited()
    }

    /// Stops rolelb (SIGTERM, 3 s grace, then SIGKILL) and returns how it exited.
    pub fn stop(&mut self) -> ExitStatus {
        self.run.proc.stop()
    }

    /// Everything rolelb wrote to stderr so far (its log).
    pub fn stderr_text(&self) -> String {
        self.run.stderr_text()
    }

    /// Waits until rolelb's stderr contains `needle`; false if `timeout` passes first.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_since(0, needle, timeout)
    }

    /// Where the log ends now: a mark for [`Rolelb::wait_for_log_since`].
    pub fn log_mark(&self) -> usize {
        self.stderr_text().len()
    }

    /// Like [`Rolelb::wait_for_log`], looking only at what was logged after `mark`.
    pub fn wait_for_log_since(&self, mark: usize, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.stderr_text()
                .get(mark..)
                .is_some_and(|text| text.contains(needle))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// NamedServer
// ---------------------------------------------------------------------------------------------

/// Shared between a [`NamedServer`] and its threads.
#[derive(Default)]
struct NamedState {
    accepted: AtomicUsize,
    open: AtomicUsize,
    stopping: AtomicBool,
    next_id: AtomicU64,
    // Clones of open connections, so stop() can close them.
    conns: Mutex<HashMap<u64, TcpStream>>,
}

/// A tiny real TCP backend: on every connection it writes its name and "\n", then echoes
/// whatever it receives until the client closes. Counts connections, so balancing tests can
/// see which backend served a client and how many sessions each one holds.
pub struct NamedServer {
    name: String,
    addr: SocketAddr,
    state: Arc<NamedState>,
    acceptor: Option<JoinHandle<()>>,
}

impl NamedServer {
    /// Starts a server called `name` on an ephemeral 127.0.0.1 port.
    pub fn start(name: &str) -> NamedServer {
        NamedServer::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts a server called `name` on `addr` (e.g. a port a config already names).
    pub fn start_on(name: &str, addr: SocketAddr) -> NamedServer {
        let listener = TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("NamedServer {name}: bind {addr}: {e}"));
        let addr = listener.local_addr().expect("NamedServer: local_addr");
        let state = Arc::new(NamedState::default());
        let banner = format!("{name}\n");
        let acceptor = {
            let state = Arc::clone(&state);
            thread::spawn(move || accept_loop(listener, banner, state))
        };
        NamedServer {
            name: name.to_string(),
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// The server's name (the first line it sends).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open.
    pub fn open(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every open connection (like a backend going away).
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.state.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so it sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = acceptor.join();
        if let Ok(conns) = self.state.conns.lock() {
            for conn in conns.values() {
                let _ = conn.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for NamedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts until `stopping`; one thread per connection.
fn accept_loop(listener: TcpListener, banner: String, state: Arc<NamedState>) {
    for conn in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        state.open.fetch_add(1, Ordering::SeqCst);
        let id = state.next_id.fetch_add(1, Ordering::SeqCst);
        if let (Ok(clone), Ok(mut conns)) = (conn.try_clone(), state.conns.lock()) {
            conns.insert(id, clone);
        }
        let state = Arc::clone(&state);
        let banner = banner.clone();
        thread::spawn(move || {
            let _ = serve_named(conn, banner.as_bytes());
            if let Ok(mut conns) = state.conns.lock() {
                conns.remove(&id);
            }
            state.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Sends the banner, echoes until EOF, then half-closes.
fn serve_named(mut conn: TcpStream, banner: &[u8]) -> io::Result<()> {
    conn.write_all(banner)?;
    let mut reader = conn.try_clone()?;
    io::copy(&mut reader, &mut conn)?;
    conn.shutdown(Shutdown::Write)
}

/// Connects to `addr` and reads the first line a [`NamedServer`] sends (through any proxy);
/// returns the name and the still-open connection.
pub fn open_named(addr: SocketAddr) -> io::Result<(String, TcpStream)> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        // Byte by byte, so nothing after the newline is consumed from the stream.
        match conn.read(&mut byte)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{addr} closed before sending a name"),
                ));
            }
            _ if byte[0] == b'\n' => break,
            _ => name.push(byte[0]),
        }
    }
    Ok((String::from_utf8_lossy(&name).into_owned(), conn))
}

/// Connects to `addr`, returns the name of the [`NamedServer`] that answered, and closes.
pub fn who_answers(addr: SocketAddr) -> io::Result<String> {
    open_named(addr).map(|(name, _)| name)
}

// ---------------------------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------------------------

/// Debian's MariaDB 10.11 server.
pub const MARIADBD_BIN: &str = "/usr/sbin/mariadbd";
/// Creates a MariaDB data directory.
pub const MARIADB_INSTALL_DB_BIN: &str = "/usr/bin/mariadb-install-db";
/// The MariaDB client, used by [`Mariadb::sql`].
pub const MARIADB_BIN: &str = "/usr/bin/mariadb";

/// A MariaDB 10.11 server (grants enforced, `root@localhost` without a password over its
/// socket, names not resolved so users are matched by IP) in its own temporary directory.
///
/// Runs as the current user (`--user=root` when that is root: mariadbd insists on being told).
pub struct Mariadb {
    // Fields drop in order: stop the process before removing its directory.
    proc: Option<Proc>,
    dir: TempDir,
    port: u16,
}

impl Mariadb {
    /// Initialises a data directory (`mariadb-install-db`) and starts the server on a free
    /// 127.0.0.1 port; returns once it answers queries.
    pub fn start() -> Mariadb {
        let dir = tempfile::Builder::new()
            .prefix("rolelb-mariadb-")
            .tempdir()
            .expect("creating a temporary directory");
        let install = require_bin(MARIADB_INSTALL_DB_BIN);
        // Each server keeps its temporary tables in its own directory: bootstraps running in
        // parallel in a shared /tmp were seen losing theirs ("Unknown table tmp_user_sys").
        let tmp = dir.path().join("tmp");
        fs::create_dir_all(&tmp).expect("creating MariaDB's tmpdir");
        run_ok(
            "mariadb-install-db",
            command(&install, false, dir.path())
                .arg("--no-defaults")
                .arg("--user=root")
                .arg(format!("--datadir={}", dir.path().join("data").display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"]),
        );
        let mut db = Mariadb {
            proc: None,
            dir,
            port: free_port(),
        };
        db.restart();
        db
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's error log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mariadb.log")
    }

    /// The server's Unix socket (what [`Mariadb::sql`] connects through).
    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// The PID of the mariadbd process while running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Starts the server (again) on the same data directory and port; waits until it
    /// answers queries.
    pub fn restart(&mut self) {
        assert!(
            self.proc.is_none(),
            "mariadb on port {} already running",
            self.port
        );
        let bin = require_bin(MARIADBD_BIN);
        let dir = self.dir.path();
        let mut cmd = command(&bin, false, dir);
        // --no-defaults must come first: nothing from /etc/mysql.
        cmd.arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", self.log_path().display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .args(["--skip-name-resolve", "--skip-log-bin"])
            .args(["--innodb-buffer-pool-size=16M", "--max-connections=50"]);
        let name = format!("mariadb :{}", self.port);
        // SIGTERM is mariadbd's normal shutdown.
        let mut proc = Proc::spawn(&name, &mut cmd, &self.log_path(), Signal::SIGTERM);
        proc.wait_ready("waiting for it to answer queries", || {
            self.try_sql("SELECT 1").as_deref() == Ok("1")
        });
        self.proc = Some(proc);
    }

    /// Stops the server (SIGTERM, waiting for it to exit).
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.stop();
        }
    }

    /// Runs `sql` as root over the socket: tab-separated rows without headers, trimmed.
    /// Err carries the client's stderr.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(require_bin(MARIADB_BIN))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "--batch", "--skip-column-names"])
            .args(["--connect-timeout=5", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run mariadb: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Like [`Mariadb::try_sql`], panicking with the client's error when it fails.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("mariadb :{} {sql:?} failed: {e}", self.port))
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// etcd
// ---------------------------------------------------------------------------------------------

/// Debian's etcd server (3.4).
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// Debian's etcdctl (v3 API).
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";

/// A one-member etcd 3.4 cluster on 127.0.0.1 (client and peer ports from [`free_port`]) with
/// its data directory in its own temporary directory. It can be stopped and started again on
/// the same data, and a second process can run on that data on another client port while it
/// is stopped ([`Etcd::offline`]), to change keys that rolelb cannot see being changed.
pub struct Etcd {
    // Fields drop in order: stop the process before removing its directory.
    proc: Option<Proc>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts a new cluster; returns once it answers.
    pub fn start() -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("rolelb-etcd-")
            .tempdir()
            .expect("creating a temporary directory");
        let mut etcd = Etcd {
            proc: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.restart();
        etcd
    }

    /// The client URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&self, client_port: u16) -> Proc {
        let bin = require_bin(ETCD_BIN);
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = command(&bin, false, self.dir.path());
        cmd.args(["--name", "rolelb-test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("rolelb-test={peer}")])
            .args(["--log-level", "warn", "--logger", "zap"]);
        let name = format!("etcd :{client_port}");
        let mut proc = Proc::spawn(&name, &mut cmd, &self.log_path(), Signal::SIGTERM);
        let endpoint = client.clone();
        proc.wait_ready("waiting for endpoint health", || {
            etcdctl(&endpoint, &["endpoint", "health"]).is_ok()
        });
        proc
    }

    /// Starts the server (again) on its data directory and client port; waits until ready.
    pub fn restart(&mut self) {
        assert!(
            self.proc.is_none(),
            "etcd :{} already running",
            self.client_port
        );
        self.proc = Some(self.spawn(self.client_port));
    }

    /// Stops the server (SIGTERM, waiting for it to exit); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.stop();
        }
    }

    /// While stopped: runs `change` against a second etcd process on the same data but
    /// another client port (so nothing watching the usual port sees it happen), then stops it.
    pub fn offline(&mut self, change: impl FnOnce(&str)) {
        assert!(self.proc.is_none(), "etcd :{} is running", self.client_port);
        let port = free_port();
        let mut proc = self.spawn(port);
        change(&format!("http://127.0.0.1:{port}"));
        proc.stop();
    }

    /// `etcdctl put KEY VALUE`.
    pub fn put(&self, key: &str, value: &str) {
        etcd_put(&self.endpoint(), key, value);
    }

    /// `etcdctl del KEY`.
    pub fn del(&self, key: &str) {
        etcd_ctl_ok(&self.endpoint(), &["del", key]);
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> i64 {
        etcd_revision(&self.endpoint())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `etcdctl --endpoints=ENDPOINT ARGS` (v3 API); Ok(stdout) or Err(stderr).
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(require_bin(ETCDCTL_BIN))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=2s", "--command-timeout=5s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run etcdctl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Like [`etcdctl`], panicking with etcdctl's error.
pub fn etcd_ctl_ok(endpoint: &str, args: &[&str]) -> String {
    etcdctl(endpoint, args).unwrap_or_else(|e| panic!("etcdctl {args:?} at {endpoint}: {e}"))
}

/// `etcdctl put KEY VALUE` at `endpoint` (the value after `--`, so it may start with `-`).
pub fn etcd_put(endpoint: &str, key: &str, value: &str) {
    etcd_ctl_ok(endpoint, &["put", "--", key, value]);
}

/// The current revision at `endpoint` (from `etcdctl endpoint status -w json`).
pub fn etcd_revision(endpoint: &str) -> i64 {
    let text = etcd_ctl_ok(endpoint, &["endpoint", "status", "-w", "json"]);
    let at = text
        .find("\"revision\":")
        .expect("revision in endpoint status")
        + 11;
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a revision number")
}

// ---------------------------------------------------------------------------------------------
// Patroni
// ---------------------------------------------------------------------------------------------

/// Debian's Patroni (3.0).
pub const PATRONI_BIN: &str = "/usr/bin/patroni";
/// Debian's patronictl.
pub const PATRONICTL_BIN: &str = "/usr/bin/patronictl";

/// One Patroni node: its process (which runs PostgreSQL 15) and ports.
struct PatroniNode {
    proc: Proc,
    name: String,
    pg_port: u16,
    config: PathBuf,
}

/// A Patroni cluster (etcd3 DCS) of PostgreSQL 15 nodes on 127.0.0.1, as the `postgres` user,
/// each node in a subdirectory of one temporary directory; trust authentication on loopback.
/// Dropping it stops every Patroni (which stops its PostgreSQL) before removing the files.
pub struct PatroniCluster {
    // Fields drop in order: stop the nodes before removing their directory.
    nodes: Vec<PatroniNode>,
    dir: TempDir,
    scope: String,
}

impl PatroniCluster {
    /// Starts `n` nodes in scope `scope` against `etcd` and waits (up to 120 s) until one is
    /// the leader and every other one a running replica.
    pub fn start(etcd: &Etcd, scope: &str, n: usize) -> PatroniCluster {
        let bin = require_bin(PATRONI_BIN);
        require_bin(PATRONICTL_BIN);
        let pg_bin = require_bin(Path::new(PG_BIN).join("postgres"));
        let pg_bin_dir = pg_bin.parent().expect("PostgreSQL's bin directory");
        let dir = db_tempdir("rolelb-patroni-");
        let mut cluster = PatroniCluster {
            nodes: Vec::new(),
            dir,
            scope: scope.to_owned(),
        };
        for i in 1..=n {
            let name = format!("node{i}");
            let node_dir = cluster.dir.path().join(&name);
            fs::create_dir(&node_dir).expect("creating a node directory");
            if let Some((uid, gid)) = db_user() {
                chown(&node_dir, Some(uid), Some(gid)).expect("chown of a node directory");
            }
            let (pg_port, api_port) = (free_port(), free_port());
            let config = node_dir.join("patroni.yml");
            fs::write(
                &config,
                format!(
                    "scope: {scope}\nnamespace: /service/\nname: {name}\n\
                     restapi:\n  listen: 127.0.0.1:{api_port}\n  connect_address: 127.0.0.1:{api_port}\n\
                     etcd3:\n  hosts: 127.0.0.1:{etcd_port}\n\
                     bootstrap:\n  dcs:\n    ttl: 20\n    loop_wait: 1\n    retry_timeout: 5\n\
                     \x20   maximum_lag_on_failover: 1048576\n    postgresql:\n      use_pg_rewind: false\n\
                     \x20     parameters:\n        wal_level: replica\n        hot_standby: 'on'\n\
                     \x20       max_wal_senders: 10\n        max_replication_slots: 10\n        wal_keep_size: 64MB\n\
                     \x20 initdb:\n  - encoding: UTF8\n  - locale: C\n  - auth: trust\n\
                     \x20 pg_hba:\n  - host replication postgres 127.0.0.1/32 trust\n  - host all all 127.0.0.1/32 trust\n\
                     postgresql:\n  listen: 127.0.0.1:{pg_port}\n  connect_address: 127.0.0.1:{pg_port}\n\
                     \x20 data_dir: {data}\n  bin_dir: {bin_dir}\n  pgpass: {pgpass}\n\
                     \x20 authentication:\n    replication:\n      username: postgres\n    superuser:\n      username: postgres\n\
                     \x20 parameters:\n    unix_socket_directories: '{sockets}'\n    fsync: 'off'\n\
                     \x20   synchronous_commit: 'off'\n    shared_buffers: 16MB\n    max_connections: 50\n",
                    etcd_port = etcd.port(),
                    data = node_dir.join("data").display(),
                    bin_dir = pg_bin_dir.display(),
                    pgpass = node_dir.join("pgpass").display(),
                    sockets = node_dir.display(),
                ),
            )
            .expect("writing patroni.yml");
            let mut cmd = command(&bin, true, &node_dir);
            cmd.arg(&config);
            let log = node_dir.join("patroni.log");
            let proc = Proc::spawn(&format!("patroni {name}"), &mut cmd, &log, Signal::SIGTERM);
            cluster.nodes.push(PatroniNode {
                proc,
                name,
                pg_port,
                config,
            });
            // The first node bootstraps the cluster; the others clone it.
            if i == 1 {
                cluster.wait_members(1, Duration::from_secs(60));
            }
        }
        cluster.wait_members(n, Duration::from_secs(120));
        cluster
    }

    /// `patronictl list -f json`: (member, role, state) per member.
    pub fn members(&self) -> Vec<(String, String, String)> {
        let Some(node) = self.nodes.first() else {
            return Vec::new();
        };
        let out = Command::new(PATRONICTL_BIN)
            .arg("-c")
            .arg(&node.config)
            .args(["list", "-f", "json"])
            .stdin(Stdio::null())
            .output();
        let Ok(out) = out else { return Vec::new() };
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let field = |m: &serde_json::Value, f: &str| m[f].as_str().unwrap_or_default().to_owned();
        list.as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| (field(m, "Member"), field(m, "Role"), field(m, "State")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `n` members run, one of them the leader; panics with the logs otherwise.
    fn wait_members(&mut self, n: usize, limit: Duration) {
        let ok = wait_until(limit, || {
            let members = self.members();
            members.len() == n
                && members.iter().any(|(_, role, _)| role == "Leader")
                && members
                    .iter()
                    .all(|(_, _, state)| state == "running" || state == "streaming")
        });
        if !ok {
            let mut logs = String::new();
            for node in &mut self.nodes {
                node.proc.assert_running("starting the cluster");
                logs.push_str(&log_tail(&node.proc.log, 15));
            }
            panic!(
                "Patroni cluster '{}' not up with {n} members within {limit:?}: {:?}\n{logs}",
                self.scope,
                self.members()
            );
        }
    }

    /// The current leader's name.
    pub fn leader(&self) -> Option<String> {
        self.members()
            .into_iter()
            .find(|(_, role, _)| role == "Leader")
            .map(|(name, _, _)| name)
    }

    /// The names of the members.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The PostgreSQL port of member `name`.
    pub fn pg_port(&self, name: &str) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.pg_port)
            .unwrap_or_else(|| panic!("no Patroni member {name}"))
    }

    /// `patronictl switchover --leader FROM --candidate TO --force`.
    pub fn switchover(&self, from: &str, to: &str) -> String {
        let node = self.nodes.first().expect("a node");
        let out = run_ok(
            "patronictl switchover",
            Command::new(PATRONICTL_BIN)
                .arg("-c")
                .arg(&node.config)
                .args(["switchover", "--leader", from, "--candidate", to, "--force"])
                .stdin(Stdio::null()),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Session state: the one place that decides whether a peer closed a connection
// ---------------------------------------------------------------------------------------------
//
// A read that times out means the peer is still there and silent: the session is OPEN. Only an
// EOF or an error other than a timeout (reset, aborted) means CLOSED. Every test that asks "was
// this session closed?" goes through these helpers, so none can count a silent, open session as
// closed.

/// What the client end of a TCP session sees of its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// The peer has not closed: reads block (or returned data).
    Open,
    /// The peer closed (EOF) or reset the connection.
    Closed,
}

/// Reads `conn` for up to `wait`, keeping whatever arrives, and stops early when the peer
/// closes. Returns the state at the end and the bytes received meanwhile. The stream's read
/// timeout is restored before returning.
pub fn read_session(conn: &mut TcpStream, wait: Duration) -> (Session, Vec<u8>) {
    read_session_until(conn, wait, false)
}

/// [`read_session`], returning as soon as the first bytes arrive when `stop_on_data`.
fn read_session_until(
    conn: &mut TcpStream,
    wait: Duration,
    stop_on_data: bool,
) -> (Session, Vec<u8>) {
    let before = conn.read_timeout().ok().flatten();
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let state = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Session::Open;
        }
        conn.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("setting a read timeout");
        match conn.read(&mut buf) {
            Ok(0) => break Session::Closed,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if stop_on_data {
                    break Session::Open;
                }
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => break Session::Open,
                io::ErrorKind::Interrupted => {}
                _ => break Session::Closed,
            },
        }
    };
    let _ = conn.set_read_timeout(before);
    (state, got)
}

/// The state of `conn` after reading it for up to `wait` (data that arrives is consumed).
pub fn session_state(conn: &mut TcpStream, wait: Duration) -> Session {
    read_session(conn, wait).0
}

/// Waits up to `timeout` for the peer to close `conn`; returns how long that took, or `None`
/// when the session is still open at the deadline.
pub fn wait_closed(conn: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    (session_state(conn, timeout) == Session::Closed).then(|| started.elapsed())
}

/// The row of `px`/`sv` in `show stat` CSV text (HAProxy's or rolelb's): column name to value.
pub fn stat_row(csv: &str, px: &str, sv: &str) -> Option<HashMap<String, String>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&px) && f.get(1) == Some(&sv))
        .map(|f| {
            header
                .iter()
                .zip(f)
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
}

// ---- A minimal HTTP/1.1 client for the admin API and stats listeners ---------------------------

/// One HTTP/1.1 request on its own connection, the whole answer within `timeout`:
/// (status, head, body), the body de-chunked when the answer is chunked.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> io::Result<(u16, String, String)> {
    let deadline = Instant::now() + timeout;
    let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    conn.set_write_timeout(Some(timeout))?;
    conn.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no full answer in time",
            ));
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, head.to_owned(), body))
}

/// The data of a chunked HTTP body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
