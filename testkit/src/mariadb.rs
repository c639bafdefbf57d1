//! [`Mariadb`]: a MariaDB 10.11 server on a free port in its own temporary directory, and the
//! `mariadb` client the tests query it with.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::net::free_port;
use crate::process::{Proc, command, require_bin, run_ok};

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
