//! A chaos node that can be cut off from the network: `n1`'s PostgreSQL and PgBouncer moved
//! into a network namespace the test creates, reached from the host (rolelb, the replicas'
//! `primary_conninfo`, the harness) over a veth pair with private addresses only
//! (`10.231.X.Y/30`: the host side `.1`, the namespace side `.2`, loopback up inside).
//! Setting the host side of the veth down partitions the node: packets to and from it are
//! dropped, sessions in flight hang. The servers run with `ip netns exec` (which execs, so the
//! PID is the server's own) and `setpriv` to the database user, and are stopped by PID;
//! dropping an [`Isolated`] stops them and deletes the namespace (and with it the veth pair),
//! even when the test panics. Namespaces of earlier runs whose process is gone are deleted
//! when a new one is made.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::User;
use tempfile::TempDir;

use crate::common::{
    IP_BIN, PG_BIN, PG_ISREADY_BIN, PGBOUNCER_BIN, Proc, command, free_port, ip, log_tail,
    remove_stale, require_bin,
};

/// The prefix of the namespaces made here: `rlcp-PID-N`.
const NS_PREFIX: &str = "rlcp-";
/// `setpriv` (util-linux): drops to the database user inside the namespace.
const SETPRIV_BIN: &str = "/usr/bin/setpriv";

/// A node's PostgreSQL (and its PgBouncer) running in a network namespace of its own.
pub struct Isolated {
    // Dropped in this order: PgBouncer, PostgreSQL, then the namespace (Drop) and directory.
    bouncer: Option<Proc>,
    pg: Option<Proc>,
    ns: String,
    /// The host side of the veth pair.
    link: String,
    /// The node's address inside the namespace.
    addr: Ipv4Addr,
    bouncer_port: u16,
    /// PgBouncer's files; PostgreSQL's data stays where the caller keeps it.
    dir: TempDir,
}

impl Isolated {
    /// Creates namespace number `n` and its veth pair, then starts PostgreSQL on `data` (a
    /// stopped server's data directory, port `pg_port`) inside it, listening on the node's
    /// address and the namespace's loopback, and a PgBouncer in front of it on the node's
    /// address (`users` may log in besides `postgres`). Returns once both accept connections
    /// from the host.
    pub fn start(n: usize, data: &Path, pg_port: u16, users: &[&str]) -> Isolated {
        require_bin(IP_BIN);
        require_bin(SETPRIV_BIN);
        assert!(
            nix::unistd::geteuid().is_root(),
            "the partition fault puts a node in a network namespace (ip netns add, veth) and \
             needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run it as root"
        );
        remove_stale(NS_PREFIX);
        let pid = std::process::id();
        // A /30 of 10.231.0.0/16 per namespace: unlikely to meet another test binary's.
        let k = (pid as usize * 31 + n) % 16384;
        let base = Ipv4Addr::new(10, 231, (k >> 6) as u8, ((k & 63) << 2) as u8);
        let host = Ipv4Addr::from(u32::from(base) + 1);
        let addr = Ipv4Addr::from(u32::from(base) + 2);
        let ns = format!("{NS_PREFIX}{pid}-{n}");
        let link = format!("rlcp{}h{n}", pid % 100_000);
        let dir = tempfile::Builder::new()
            .prefix("rolelb-chaos-ns-")
            .tempdir()
            .expect("creating a temporary directory");
        let (uid, gid) = db_user();
        chown(dir.path(), Some(uid), Some(gid)).expect("chown of the temporary directory");
        ip(&["netns", "add", &ns]);
        let mut node = Isolated {
            bouncer: None,
            pg: None,
            ns,
            link,
            addr,
            bouncer_port: free_port(),
            dir,
        };
        let ns = node.ns.clone();
        ip(&[
            "link", "add", &node.link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["addr", "add", &format!("{host}/30"), "dev", &node.link]);
        ip(&["link", "set", &node.link, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);

        // Later lines win: listen inside the namespace only; let the host side in (replication
        // too); a walsender whose replica went silent gives up after 2 s, so a fast shutdown
        // of a partitioned primary does not wait for the default minute.
        append(
            &data.join("postgresql.conf"),
            &format!(
                "listen_addresses = '127.0.0.1,{addr}'\nwal_sender_timeout = '2s'\n\
                 port = {pg_port}\n"
            ),
        );
        append(
            &data.join("pg_hba.conf"),
            &format!("host all all {host}/32 trust\nhost replication all {host}/32 trust\n"),
        );
        node.start_pg(data, pg_port);

        let userlist = node.dir.path().join("userlist.txt");
        let listed: String = std::iter::once("postgres")
            .chain(users.iter().copied())
            .map(|u| format!("\"{u}\" \"\"\n"))
            .collect();
        fs::write(&userlist, listed).expect("writing userlist.txt");
        let ini = node.dir.path().join("pgbouncer.ini");
        fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={pg_port}\n[pgbouncer]\n\
                 listen_addr = {addr}\nlisten_port = {}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {}\nadmin_users = postgres\n\
                 pool_mode = session\nmax_client_conn = 500\ndefault_pool_size = 20\n\
                 ignore_startup_parameters = extra_float_digits\n",
                node.bouncer_port,
                userlist.display()
            ),
        )
        .expect("writing pgbouncer.ini");
        let mut cmd = node.command(&require_bin(PGBOUNCER_BIN), node.dir.path());
        cmd.arg(&ini);
        let port = node.bouncer_port;
        let mut proc = Proc::spawn(
            &format!("pgbouncer {addr}:{port}"),
            &mut cmd,
            &node.dir.path().join("pgbouncer.log"),
            Signal::SIGTERM,
        );
        proc.wait_ready("waiting for its listener", || {
            TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_secs(1))
                .is_ok()
        });
        node.bouncer = Some(proc);
        node
    }

    /// `program` run inside the namespace as the database user, from `cwd`.
    fn command(&self, program: &Path, cwd: &Path) -> Command {
        let (uid, gid) = db_user();
        let mut cmd = command(&require_bin(IP_BIN), false, cwd);
        cmd.args(["netns", "exec", &self.ns, SETPRIV_BIN])
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            // The credentials change clears the death signal set for the test's thread.
            .args(["--init-groups", "--pdeathsig", "KILL"])
            .arg(program)
            .env("HOME", cwd)
            .env("USER", "postgres");
        cmd
    }

    fn start_pg(&mut self, data: &Path, port: u16) {
        let cwd = data.parent().unwrap_or(data).to_path_buf();
        let mut cmd = self.command(&require_bin(Path::new(PG_BIN).join("postgres")), &cwd);
        cmd.arg("-D").arg(data);
        let log: PathBuf = cwd.join("postgres-netns.log");
        let mut proc = Proc::spawn(
            &format!("postgres {}:{port}", self.addr),
            &mut cmd,
            &log,
            Signal::SIGINT,
        );
        let (addr, port) = (self.addr.to_string(), port.to_string());
        let isready = require_bin(PG_ISREADY_BIN);
        proc.wait_ready("waiting for pg_isready", || {
            Command::new(&isready)
                .args(["-q", "-h", &addr, "-p", &port, "-t", "1"])
                .status()
                .is_ok_and(|s| s.success())
        });
        self.pg = Some(proc);
    }

    /// The node's address (PostgreSQL and PgBouncer listen there).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn bouncer_port(&self) -> u16 {
        self.bouncer_port
    }

    /// The postmaster's PID while running.
    pub fn pg_pid(&self) -> Option<u32> {
        self.pg.as_ref().map(Proc::pid)
    }

    /// Fast shutdown of PostgreSQL (SIGINT to the postmaster), waiting for it to exit.
    pub fn stop_pg(&mut self) {
        if let Some(mut pg) = self.pg.take() {
            pg.stop();
        }
    }

    /// Sets the host side of the veth down (`cut`) or up: the node is partitioned or healed.
    pub fn set_link(&self, up: bool) {
        ip(&["link", "set", &self.link, if up { "up" } else { "down" }]);
    }

    /// PgBouncer's and PostgreSQL's log tails.
    pub fn log(&self, pg_data: &Path) -> String {
        let pg_log = pg_data
            .parent()
            .unwrap_or(pg_data)
            .join("postgres-netns.log");
        format!(
            "{}{}",
            log_tail(&self.dir.path().join("pgbouncer.log"), 20),
            log_tail(&pg_log, 20)
        )
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        if let Some(mut bouncer) = self.bouncer.take() {
            bouncer.stop();
        }
        self.stop_pg();
        // Deleting the namespace its processes have left destroys the veth pair with it.
        let _ = Command::new(IP_BIN)
            .args(["netns", "del", &self.ns])
            .stdin(Stdio::null())
            .output();
    }
}

/// The database user's uid and gid (the tests run as root; PostgreSQL refuses root).
fn db_user() -> (u32, u32) {
    let user = User::from_name("postgres")
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the postgres user not found: run scripts/deps.sh"));
    (user.uid.as_raw(), user.gid.as_raw())
}

/// Appends `text` to the file at `path`.
fn append(path: &Path, text: &str) {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("appending to {}: {e}", path.display()));
}
