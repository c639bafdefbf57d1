//! One MariaDB chaos cluster: a primary (`n1`) and two replicas (`n2`, `n3`) replicating with
//! GTIDs (`MASTER_USE_GTID=slave_pos`, binary logs with `log_slave_updates` so any node can
//! become the others' source), published in etcd in rolelb's native schema under a prefix of
//! its own, and two rolelb instances sharing that etcd, each with a `role primary` /
//! `role-source both` write listener and a `role replica` read listener checking
//! `@@read_only` (`role-check mysql`), or, for the auditor's self-test, a plain round-robin
//! listener. Every change the test makes to the ground truth — etcd's `leader` key, a node's
//! `read_only` flipped, a node killed — goes through here and is recorded as an [`Event`] with
//! the window in which it took effect.
//!
//! The servers are not the harness's [`crate::common::Mariadb`] (that one runs without a
//! binary log): each node is a copy of one data directory initialised once per test
//! ([`Template`]), started with its own `server_id`, and killed outright when dropped.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use etcd_client::{Client, Txn, TxnOp};
use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::audit::{Event, Fact, NodeId};
use crate::common::{
    Etcd, MARIADB_BIN, MARIADB_INSTALL_DB_BIN, MARIADBD_BIN, Proc, Rolelb, command, free_port,
    require_bin, wait_until,
};
use crate::writers::{APP_PASSWORD, APP_USER, DATABASE, attempt, whoami};

/// The proxy under test and how its write listener is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// `role primary`, `role-source both`, servers from etcd: the configuration under test.
    RolePrimary,
    /// A plain `listen` round-robin over every node, no role: the auditor must catch it.
    Plain,
}

/// `inter` of the role checks.
const INTER_MS: u64 = 300;
/// How many rolelb instances share the etcd (as behind one keepalived address).
const INSTANCES: usize = 2;
/// The replication user.
const REPL: (&str, &str) = ("repl", "repl-pw");
/// The role check's user (`SLAVE MONITOR` only).
const MONITOR: (&str, &str) = ("monitor", "monitor-pw");
/// InnoDB's redo log size, the same at initialisation and at every start.
const REDO_LOG: &str = "--innodb-log-file-size=4M";

/// A data directory initialised once (`mariadb-install-db`), copied for every node.
pub struct Template {
    dir: TempDir,
}

impl Template {
    /// Runs `mariadb-install-db` into a temporary directory.
    pub fn new() -> Template {
        let dir = tempfile::Builder::new()
            .prefix("rolelb-chaos-mariadb-template-")
            .tempdir()
            .expect("creating a temporary directory");
        let tmp = dir.path().join("tmp");
        fs::create_dir_all(&tmp).expect("creating MariaDB's tmpdir");
        let install = require_bin(MARIADB_INSTALL_DB_BIN);
        let out = command(&install, false, dir.path())
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(REDO_LOG)
            .output()
            .unwrap_or_else(|e| panic!("mariadb-install-db: cannot run: {e}"));
        assert!(
            out.status.success(),
            "mariadb-install-db failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Template { dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let entries = fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copying {}: {e}", entry.path().display()));
        }
    }
}

/// One MariaDB node with a binary log, in its own temporary directory.
pub struct Node {
    // Fields drop in order: kill the process before removing its directory.
    proc: Option<Proc>,
    dir: TempDir,
    pub port: u16,
    pub server_id: u32,
}

impl Node {
    /// Starts a copy of `template` as `server_id`, `read_only` from the start when asked;
    /// [`Node::wait_up`] waits for it.
    fn spawn(template: &Template, server_id: u32, read_only: bool) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("rolelb-chaos-mariadb-")
            .tempdir()
            .expect("creating a temporary directory");
        copy_tree(&template.data(), &dir.path().join("data"));
        fs::create_dir_all(dir.path().join("tmp")).expect("creating MariaDB's tmpdir");
        let port = free_port();
        let mut cmd = command(&require_bin(MARIADBD_BIN), false, dir.path());
        let path = |name: &str| dir.path().join(name).display().to_string();
        // --no-defaults must come first: nothing from /etc/mysql.
        cmd.arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", path("data")))
            .arg(format!("--socket={}", path("mysqld.sock")))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", path("mariadb.pid")))
            .arg(format!("--log-error={}", path("mariadb.log")))
            .arg(format!("--tmpdir={}", path("tmp")))
            .arg(format!("--server-id={server_id}"))
            .arg(format!("--read-only={}", u8::from(read_only)))
            .args(["--skip-name-resolve", "--skip-slave-start"])
            .args([
                "--log-bin=binlog",
                "--log-slave-updates",
                "--binlog-format=ROW",
            ])
            // A killed node is never restarted: no need to flush every commit to disk.
            .args(["--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0"])
            .args(["--innodb-buffer-pool-size=16M", REDO_LOG])
            .arg("--max-connections=300");
        let name = format!("mariadb n{server_id} :{port}");
        // Killed when dropped: its data goes with it.
        let proc = Proc::spawn(
            &name,
            &mut cmd,
            &dir.path().join("mariadb.log"),
            Signal::SIGKILL,
        );
        Node {
            proc: Some(proc),
            dir,
            port,
            server_id,
        }
    }

    /// Waits until the node answers queries.
    fn wait_up(&mut self) {
        let mut proc = self.proc.take().expect("a node waited for is running");
        proc.wait_ready("waiting for it to answer queries", || {
            self.try_sql("SELECT 1").as_deref() == Ok("1")
        });
        self.proc = Some(proc);
    }

    /// Runs `sql` as root over the node's socket: tab-separated rows without headers,
    /// trimmed. Err carries the client's stderr.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.client(sql, "--skip-column-names")
    }

    /// The `mariadb` client as root over the node's socket in batch mode, with `extra`.
    fn client(&self, sql: &str, extra: &str) -> Result<String, String> {
        let out = Command::new(require_bin(MARIADB_BIN))
            .arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("mysqld.sock").display()
            ))
            .args(["-u", "root", "--batch", extra])
            .args(["--connect-timeout=5", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run mariadb: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// `SHOW SLAVE STATUS` as (column, value) pairs; empty when the node replicates from
    /// nobody.
    fn slave_status(&self) -> Result<Vec<(String, String)>, String> {
        let text = self.client("SHOW SLAVE STATUS", "--column-names")?;
        let mut lines = text.lines();
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return Ok(Vec::new());
        };
        Ok(names
            .split('\t')
            .zip(values.split('\t'))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect())
    }

    /// Like [`Node::try_sql`], panicking with the client's error when it fails.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("n{} {sql:?} failed: {e}", self.server_id))
    }

    /// SIGKILL, then reaps the process.
    fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal(Signal::SIGKILL);
            proc.stop();
        }
    }

    /// `CHANGE MASTER TO` `source` with GTIDs from this node's own position, and starts the
    /// replica threads. A former primary has no slave position yet: it starts from what its
    /// binary log holds (`gtid_current_pos`).
    fn follow(&self, source: u16) -> Result<String, String> {
        self.try_sql(&format!(
            "STOP SLAVE; SET GLOBAL gtid_slave_pos = @@global.gtid_current_pos; \
             CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={source}, \
             MASTER_USER='{}', MASTER_PASSWORD='{}', MASTER_USE_GTID=slave_pos, \
             MASTER_CONNECT_RETRY=1; START SLAVE",
            REPL.0, REPL.1
        ))
    }

    /// Waits (up to `limit`) until this node has applied `gtid_pos`; whether it did.
    fn wait_gtid(&self, gtid_pos: &str, limit: Duration) -> bool {
        self.try_sql(&format!(
            "SELECT MASTER_GTID_WAIT('{gtid_pos}', {})",
            limit.as_secs_f64()
        ))
        .is_ok_and(|answer| answer == "0")
    }
}

/// The cluster of one schedule; dropping it stops rolelb, then kills the nodes.
pub struct Cluster {
    fronts: Vec<Rolelb>,
    pub nodes: Vec<Node>,
    /// Each instance's write listener.
    pub write_ports: Vec<u16>,
    prefix: String,
    rt: tokio::runtime::Runtime,
    etcd: Client,
    pub events: Vec<Event>,
    /// The next id of a probe write ([`Cluster::wait_writes_on`]); negative, apart from the writers'.
    probe: AtomicI64,
}

impl Cluster {
    /// Builds the cluster for schedule `generation` against `etcd`; returns once a write
    /// through every write listener lands on `n1` (and, guarded, a read on a replica).
    pub fn build(etcd: &Etcd, template: &Template, generation: usize, guard: Guard) -> Cluster {
        let mut nodes: Vec<Node> = (1..=3)
            .map(|id| Node::spawn(template, id, id != 1))
            .collect();
        nodes.iter_mut().for_each(Node::wait_up);
        let primary = nodes[0].port;
        for replica in &nodes[1..] {
            replica
                .follow(primary)
                .unwrap_or_else(|e| panic!("n{}: starting replication: {e}", replica.server_id));
        }
        // Replicated to n2 and n3 like everything else.
        nodes[0].sql(&format!(
            "CREATE USER '{repl}'@'127.0.0.1' IDENTIFIED BY '{repl_pw}'; \
             GRANT REPLICATION SLAVE ON *.* TO '{repl}'@'127.0.0.1'; \
             CREATE USER '{mon}'@'127.0.0.1' IDENTIFIED BY '{mon_pw}'; \
             GRANT SLAVE MONITOR ON *.* TO '{mon}'@'127.0.0.1'; \
             CREATE DATABASE {DATABASE}; \
             CREATE TABLE {DATABASE}.writes (id bigint PRIMARY KEY, writer int NOT NULL, \
             at datetime(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB; \
             CREATE USER '{APP_USER}'@'127.0.0.1' IDENTIFIED BY '{APP_PASSWORD}'; \
             GRANT ALL ON {DATABASE}.* TO '{APP_USER}'@'127.0.0.1'",
            repl = REPL.0,
            repl_pw = REPL.1,
            mon = MONITOR.0,
            mon_pw = MONITOR.1,
        ));
        let pos = nodes[0].sql("SELECT @@global.gtid_binlog_pos");
        for replica in &nodes[1..] {
            assert!(
                replica.wait_gtid(&pos, Duration::from_secs(30)),
                "n{} did not replicate n1's setup ({pos}) within 30 s: {:?}",
                replica.server_id,
                replica.slave_status()
            );
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the etcd client");
        let client = rt
            .block_on(Client::connect([etcd.endpoint()], None))
            .expect("connecting to etcd");
        let prefix = format!("/chaos-mariadb/g{generation}");
        let ports: Vec<(u16, u16)> = (0..INSTANCES).map(|_| (free_port(), free_port())).collect();
        let configs: Vec<String> = ports
            .iter()
            .map(|&(write, read)| match guard {
                Guard::RolePrimary => guarded_config(&etcd.endpoint(), &prefix, write, read),
                Guard::Plain => plain_config(&nodes, write),
            })
            .collect();
        let mut cluster = Cluster {
            fronts: Vec::new(),
            nodes,
            write_ports: ports.iter().map(|&(write, _)| write).collect(),
            prefix,
            rt,
            etcd: client,
            events: Vec::new(),
            probe: AtomicI64::new(-1),
        };
        for n in 0..cluster.nodes.len() {
            cluster.put_member(n, if n == 0 { "primary" } else { "replica" });
        }
        let now = SystemTime::now();
        cluster.put_leader(0);
        for n in 0..cluster.nodes.len() {
            cluster.events.push(Event {
                start: now,
                end: now,
                fact: Fact::Writable(n, n == 0),
            });
        }
        cluster.fronts = configs.iter().map(|cfg| Rolelb::start(cfg)).collect();
        cluster.wait_writes_on(0);
        if guard == Guard::RolePrimary {
            for &(_, read) in &ports {
                let reads = wait_until(Duration::from_secs(20), || {
                    cluster
                        .rt
                        .block_on(whoami(read))
                        .is_ok_and(|(_, read_only)| read_only)
                });
                assert!(
                    reads,
                    "the read listener :{read} never reached a replica\n{}",
                    cluster.log()
                );
            }
        }
        cluster
    }

    /// The name of node `n`.
    pub fn name(n: NodeId) -> String {
        format!("n{}", n + 1)
    }

    /// The node that says it listens on `port` with `server_id`; `None` when no node does, or
    /// the two disagree.
    pub fn node_of(&self, port: u16, server_id: u32) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|node| node.port == port && node.server_id == server_id)
    }

    /// The instances' logs so far.
    pub fn log(&self) -> String {
        self.fronts
            .iter()
            .enumerate()
            .map(|(i, lb)| format!("--- rolelb instance {} ---\n{}", i + 1, lb.stderr_text()))
            .collect()
    }

    fn member(&self, n: NodeId, role: &str) -> (String, String) {
        (
            format!("{}/members/{}", self.prefix, Cluster::name(n)),
            format!(
                r#"{{"host": "127.0.0.1", "port": {}, "role": "{role}"}}"#,
                self.nodes[n].port
            ),
        )
    }

    /// Puts node `n`'s member value with `role` (one etcd put; not a ground-truth fact: the
    /// `leader` key decides).
    pub fn put_member(&mut self, n: NodeId, role: &str) {
        let (key, value) = self.member(n, role);
        self.rt
            .block_on(self.etcd.put(key, value, None))
            .expect("etcd put of a member");
    }

    /// Puts the `leader` key naming node `n` (one etcd put).
    pub fn put_leader(&mut self, n: NodeId) {
        let start = SystemTime::now();
        let key = format!("{}/leader", self.prefix);
        self.rt
            .block_on(self.etcd.put(key, Cluster::name(n), None))
            .expect("etcd put of the leader key");
        self.record(start, Fact::Leader(n));
    }

    /// Moves the primary from `old` to `new` in etcd as ONE transaction: `old` → replica,
    /// `new` → primary, `leader` → `new`.
    pub fn txn_switch(&mut self, old: NodeId, new: NodeId) {
        let (old_key, old_value) = self.member(old, "replica");
        let (new_key, new_value) = self.member(new, "primary");
        let txn = Txn::new().and_then([
            TxnOp::put(old_key, old_value, None),
            TxnOp::put(new_key, new_value, None),
            TxnOp::put(format!("{}/leader", self.prefix), Cluster::name(new), None),
        ]);
        let start = SystemTime::now();
        self.rt
            .block_on(self.etcd.txn(txn))
            .expect("etcd switchover transaction");
        self.record(start, Fact::Leader(new));
    }

    /// `SET GLOBAL read_only` on node `n`: 1 fences it, 0 makes it writable.
    pub fn set_read_only(&mut self, n: NodeId, read_only: bool) {
        let start = SystemTime::now();
        self.nodes[n].sql(&format!("SET GLOBAL read_only = {}", u8::from(read_only)));
        self.record(start, Fact::Writable(n, !read_only));
    }

    /// Stops node `n`'s replication for good (`STOP SLAVE; RESET SLAVE ALL`), then makes it
    /// writable.
    pub fn promote(&mut self, n: NodeId) {
        self.nodes[n].sql("STOP SLAVE; RESET SLAVE ALL");
        self.set_read_only(n, false);
    }

    /// Stops node `n`'s replication (it keeps `read_only` as it is): the first step of a
    /// replica taken over in a split brain.
    pub fn stop_replication(&mut self, n: NodeId) {
        self.nodes[n].sql("STOP SLAVE");
    }

    /// Kills node `n`'s mariadbd (SIGKILL): commits it had not yet sent to a replica are lost.
    pub fn kill(&mut self, n: NodeId) {
        let start = SystemTime::now();
        self.nodes[n].kill();
        self.record(start, Fact::Writable(n, false));
    }

    /// Waits (up to 30 s) until node `replica` has applied every transaction node `source`
    /// logged so far (`MASTER_GTID_WAIT`).
    pub fn wait_caught_up(&self, replica: NodeId, source: NodeId) {
        let pos = self.nodes[source].sql("SELECT @@global.gtid_binlog_pos");
        assert!(
            self.nodes[replica].wait_gtid(&pos, Duration::from_secs(30)),
            "{} did not apply {}'s transactions up to {pos} within 30 s: {:?}",
            Cluster::name(replica),
            Cluster::name(source),
            self.nodes[replica].slave_status()
        );
    }

    /// Waits (up to 30 s) until node `n`, whose source is gone, has applied everything it had
    /// received (its SQL thread's position reaches its IO thread's).
    pub fn wait_relay_applied(&self, n: NodeId) {
        let node = &self.nodes[n];
        let applied = wait_until(Duration::from_secs(30), || relay_applied(node));
        assert!(
            applied,
            "{} did not apply its relay log within 30 s: {:?}",
            Cluster::name(n),
            node.slave_status()
        );
    }

    /// Points node `n`'s replication at node `source`. Best effort: after a split brain or a
    /// crash `n` may hold transactions `source` never had, and MariaDB then refuses to
    /// replicate (as it should); `n` stays read-only either way. Returns the refusal.
    pub fn repoint(&self, n: NodeId, source: NodeId) -> Result<(), String> {
        self.nodes[n].follow(self.nodes[source].port).map(|_| ())
    }

    fn record(&mut self, start: SystemTime, fact: Fact) {
        self.events.push(Event {
            start,
            end: SystemTime::now(),
            fact,
        });
    }

    /// Waits (up to 30 s per instance) until a write through each write listener is
    /// acknowledged by node `n`.
    pub fn wait_writes_on(&self, n: NodeId) {
        let node = &self.nodes[n];
        for &port in &self.write_ports {
            let landed = wait_until(Duration::from_secs(30), || {
                let id = self.probe.fetch_sub(1, Ordering::Relaxed);
                let a = self.rt.block_on(attempt(port, id, 999));
                a.result
                    .is_ok_and(|ack| ack.port == node.port && ack.server_id == node.server_id)
            });
            assert!(
                landed,
                "no write through the write listener :{port} landed on {} within 30 s\n{}",
                Cluster::name(n),
                self.log()
            );
        }
    }

    /// The ids node `n` holds (read directly, not through rolelb).
    pub fn ids_on(&self, n: NodeId) -> HashSet<i64> {
        let text = self.nodes[n]
            .try_sql(&format!("SELECT id FROM {DATABASE}.writes"))
            .unwrap_or_else(|e| panic!("reading the writes on {}: {e}", Cluster::name(n)));
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

/// Whether `node`'s replica status shows everything it read from its source executed.
fn relay_applied(node: &Node) -> bool {
    let Ok(status) = node.slave_status() else {
        return false;
    };
    let field = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    field("Read_Master_Log_Pos").is_some()
        && field("Master_Log_File") == field("Relay_Master_Log_File")
        && field("Read_Master_Log_Pos") == field("Exec_Master_Log_Pos")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for mut lb in self.fronts.drain(..) {
            lb.stop();
        }
        self.nodes.clear();
    }
}

/// The configuration under test: writes to the one primary that etcd's leader AND its role
/// check agree on; reads over the replicas.
fn guarded_config(endpoint: &str, prefix: &str, write_port: u16, read_port: u16) -> String {
    let (user, password) = MONITOR;
    format!(
        "global\n    maxconn 500\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         \x20   timeout check 1s\n    default-server inter {INTER_MS}ms fall 2 rise 1 check\n\
         \x20   role-check mysql user {user} password {password}\n\
         etcd main\n    endpoints {endpoint}\n    dial-timeout 1s\n\
         listen writes\n    bind 127.0.0.1:{write_port}\n    role primary\n    role-source both\n\
         \x20   discover etcd main path {prefix}\n\
         listen reads\n    bind 127.0.0.1:{read_port}\n    balance roundrobin\n    role replica\n\
         \x20   discover etcd main path {prefix}\n"
    )
}

/// The unsafe setup of the auditor's self-test: every node behind one round-robin listener.
fn plain_config(nodes: &[Node], write_port: u16) -> String {
    let servers: String = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| format!("    server {} 127.0.0.1:{}\n", Cluster::name(n), node.port))
        .collect();
    format!(
        "global\n    maxconn 500\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         listen writes\n    bind 127.0.0.1:{write_port}\n    balance roundrobin\n{servers}"
    )
}
