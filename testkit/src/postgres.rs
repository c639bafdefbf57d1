//! PostgreSQL 15: [`Postgres`] (a primary, or a streaming replica of one, in its own temporary
//! directory, as the `postgres` user when the tests run as root) and the `psql` / `pgbench`
//! clients the tests drive it with.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::net::{free_port, wait_until};
use crate::process::{Proc, command, db_tempdir, log_tail, require_bin, run_ok};

/// Where Debian's PostgreSQL 15 server binaries live (`initdb`, `postgres`, `pg_basebackup`).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The PostgreSQL client tools used by the helpers below.
pub const PSQL_BIN: &str = "/usr/bin/psql";
/// `pg_isready`, used to wait for a PostgreSQL server.
pub const PG_ISREADY_BIN: &str = "/usr/bin/pg_isready";
/// `pgbench`, for load through the balancer.
pub const PGBENCH_BIN: &str = "/usr/bin/pgbench";

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
        // The insert position, not the write position: with `synchronous_commit = off` a
        // commit can be acknowledged before its WAL is written out, and the write position
        // would let this return before the replica has it.
        let lsn = primary.psql("SELECT pg_current_wal_insert_lsn()");
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
