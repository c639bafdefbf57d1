//! [`PgBouncer`]: session pooling with trust auth in front of one PostgreSQL, on a free port in
//! its own temporary directory, stopped by PID when dropped.

use std::fs;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::net::{free_port, is_listening};
use crate::process::{Proc, command, db_tempdir, require_bin};

/// Debian's PgBouncer.
pub const PGBOUNCER_BIN: &str = "/usr/sbin/pgbouncer";

/// A PgBouncer (session pooling, trust auth, user `postgres`) in front of one PostgreSQL.
pub struct PgBouncer {
    // Fields drop in order: stop the process before removing its directory.
    proc: Proc,
    _dir: TempDir,
    port: u16,
}

impl PgBouncer {
    /// Starts PgBouncer on a free 127.0.0.1 port, forwarding every database to
    /// 127.0.0.1:`pg_port`; returns once it listens. Only `postgres` may log in.
    pub fn new(pg_port: u16) -> PgBouncer {
        PgBouncer::with_users(pg_port, &[])
    }

    /// Like [`PgBouncer::new`], letting `users` log in too (its `auth_file` lists them:
    /// with `auth_type = trust` PgBouncer refuses users it does not list).
    pub fn with_users(pg_port: u16, users: &[&str]) -> PgBouncer {
        let dir = db_tempdir("rolelb-pgbouncer-");
        let port = free_port();
        let userlist = dir.path().join("userlist.txt");
        let listed: String = std::iter::once("postgres")
            .chain(users.iter().copied())
            .map(|u| format!("\"{u}\" \"\"\n"))
            .collect();
        fs::write(&userlist, listed).expect("writing userlist.txt");
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
        PgBouncer {
            proc,
            _dir: dir,
            port,
        }
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
