//! One chaos cluster: a PostgreSQL 15 primary (`n1`) and two streaming replicas (`n2`, `n3`),
//! each behind its own PgBouncer, published in etcd in rolelb's native schema under a prefix
//! of its own (the role check logging in as `rolelb_monitor` through PgBouncer, as in
//! `conf/etcd-native.cfg`, or straight to PostgreSQL with the member's `check_port`), and the
//! proxy under test in front: rolelb (the guarded write/read listeners, or a plain listener
//! for the auditor's self-test), or, for the comparison, HAProxy with a health agent per node
//! (`tests/chaos/haproxy.rs`). Every change the test makes to the ground truth — etcd's
//! `leader` key, a node promoted or stopped — goes through here and is recorded as an
//! [`Event`] with the window in which it took effect. For the `partition` fault `n1` runs in
//! a network namespace of its own (`tests/chaos/cluster_netns.rs`), reached over a veth pair.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use etcd_client::{Client, Txn, TxnOp};

use crate::audit::{Event, Fact, NodeId};
use crate::common::{Etcd, PgBouncer, Postgres, Rolelb, free_port, try_psql, wait_until};
use crate::haproxy::HaproxyFront;
use crate::readers::MAX_LAG;
use crate::writers::attempt;

// The cluster's fault controls (etcd, a second rolelb, PgBouncer, replay, rejoining).
#[path = "cluster_ops.rs"]
mod ops;
// A node in a network namespace of its own, which the `partition` fault cuts off.
#[path = "cluster_netns.rs"]
mod netns;

use netns::Isolated;

/// The proxy under test and how its write listener is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// `role primary`, `role-source both`, servers from etcd: the configuration under test.
    RolePrimary,
    /// A plain `listen` round-robin over every node, no role: the auditor must catch it.
    Plain,
    /// HAProxy 2.6 instead of rolelb, Patroni's `OPTIONS /primary` check against a
    /// `rolelb-agent` per node: the comparison row.
    Haproxy,
}

/// The running proxy under test.
enum Front {
    Rolelb(Rolelb),
    Haproxy(HaproxyFront),
}

/// `inter` of the role checks.
const INTER_MS: u64 = 300;

/// The second rolelb of a `rolelb-kill` schedule.
struct SecondLb {
    lb: Option<Rolelb>,
    cfg: String,
    write_port: u16,
}

/// A node: its PgBouncer (dropped first) and its PostgreSQL.
pub struct Node {
    /// Set when the node runs in a network namespace ([`Isolated`]: its PostgreSQL and
    /// PgBouncer run there, on `pg`'s data directory and port).
    pub isolated: Option<Isolated>,
    /// The PgBouncer on 127.0.0.1 (none when isolated: the node's own runs in its namespace).
    pub bouncer: Option<PgBouncer>,
    /// The PostgreSQL on 127.0.0.1 (when isolated: stopped, holding the data directory).
    pub pg: Postgres,
}

impl Node {
    /// The address rolelb and the replicas reach the node at.
    pub fn host(&self) -> String {
        self.isolated
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_owned(), |i| i.addr().to_string())
    }

    /// The port of the node's PgBouncer.
    pub fn bouncer_port(&self) -> u16 {
        match (&self.isolated, &self.bouncer) {
            (Some(i), _) => i.bouncer_port(),
            (None, Some(b)) => b.port(),
            (None, None) => unreachable!("a node on the host has its PgBouncer"),
        }
    }

    /// The postmaster's PID while running.
    pub fn pg_pid(&self) -> Option<u32> {
        match &self.isolated {
            Some(i) => i.pg_pid(),
            None => self.pg.pid(),
        }
    }

    /// Fast shutdown of the node's PostgreSQL, waiting for it to exit.
    pub fn stop_pg(&mut self) {
        match &mut self.isolated {
            Some(i) => i.stop_pg(),
            None => self.pg.stop(),
        }
    }
}

/// The data directory of `pg` (the harness keeps it as `data` beside the server's log).
fn data_dir(pg: &Postgres) -> std::path::PathBuf {
    let log = pg.log_path();
    log.parent().unwrap_or(&log).join("data")
}

/// The cluster of one schedule; dropping it stops rolelb, then the nodes.
pub struct Cluster {
    lb: Option<Front>,
    /// A second rolelb on the same etcd and nodes, with its own listeners (`rolelb-kill`).
    second: Option<SecondLb>,
    pub nodes: Vec<Node>,
    pub write_port: u16,
    /// The read listener (`role replica`, `max-lag`), with rolelb only.
    pub read_port: Option<u16>,
    prefix: String,
    rt: tokio::runtime::Runtime,
    etcd: Client,
    endpoint: String,
    /// The schedule's own etcd server, when the schedule stops it (dropped after the nodes).
    own_etcd: Option<Etcd>,
    /// A `PAUSE` still waiting on a PgBouncer ([`Cluster::pause_bouncer`]).
    pausing: Option<std::process::Child>,
    pub events: Vec<Event>,
    cfg: String,
    /// Whether the role checks log in through PgBouncer (no `check_port` in the members).
    check_via_bouncer: bool,
    /// The next id of a probe write ([`Cluster::wait_writes_on`]); negative, apart from the writers'.
    probe: AtomicI64,
}

impl Cluster {
    /// Builds the cluster for schedule `generation` against `etcd`; returns once a write
    /// through the write listener lands on `n1`.
    pub fn build(etcd: &Etcd, generation: usize, guard: Guard, check_via_bouncer: bool) -> Cluster {
        Cluster::build_with(etcd, generation, guard, check_via_bouncer, false, false)
    }

    /// Like [`Cluster::build`]; `rewindable` turns on what `pg_rewind` needs on `n1`
    /// (`wal_log_hints`, `full_page_writes`) before the replicas are copied from it;
    /// `isolated` moves `n1` into a network namespace of its own once the replicas are copied
    /// (its PostgreSQL and PgBouncer reached over a veth pair: [`Cluster::partition`]), the
    /// replicas streaming from it over that link.
    pub fn build_with(
        etcd: &Etcd,
        generation: usize,
        guard: Guard,
        check_via_bouncer: bool,
        rewindable: bool,
        isolated: bool,
    ) -> Cluster {
        let mut primary = Postgres::primary();
        if rewindable {
            primary.psql("ALTER SYSTEM SET wal_log_hints = on");
            primary.psql("ALTER SYSTEM SET full_page_writes = on");
            primary.stop();
            primary.start();
        }
        primary.psql(
            "CREATE TABLE chaos_writes (id bigint PRIMARY KEY, writer int NOT NULL, \
             at timestamptz NOT NULL DEFAULT clock_timestamp())",
        );
        primary.psql("CREATE ROLE rolelb_monitor LOGIN; GRANT pg_monitor TO rolelb_monitor");
        let replicas = [
            Postgres::replica_of(&primary),
            Postgres::replica_of(&primary),
        ];
        let isolated = isolated.then(|| isolate(&mut primary, &replicas, generation));
        let mut nodes: Vec<Node> = std::iter::once(primary)
            .chain(replicas)
            .map(|pg| Node {
                isolated: None,
                bouncer: Some(PgBouncer::with_users(pg.port(), &["rolelb_monitor"])),
                pg,
            })
            .collect();
        if let Some(isolated) = isolated {
            nodes[0].bouncer = None;
            nodes[0].isolated = Some(isolated);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the etcd client");
        let client = rt
            .block_on(Client::connect([etcd.endpoint()], None))
            .expect("connecting to etcd");
        let (write_port, read_port) = (free_port(), free_port());
        let prefix = format!("/chaos/g{generation}");
        let cfg = match guard {
            Guard::RolePrimary => guarded_config(&etcd.endpoint(), &prefix, write_port, read_port),
            Guard::Plain => plain_config(&nodes, write_port),
            // Written by HaproxyFront::start, which needs the agents' ports.
            Guard::Haproxy => String::new(),
        };
        let mut cluster = Cluster {
            lb: None,
            second: None,
            nodes,
            write_port,
            read_port: (guard == Guard::RolePrimary).then_some(read_port),
            prefix,
            rt,
            etcd: client,
            endpoint: etcd.endpoint(),
            own_etcd: None,
            pausing: None,
            events: Vec::new(),
            cfg,
            check_via_bouncer,
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
        cluster.lb = Some(match guard {
            Guard::Haproxy => {
                let ports: Vec<(String, u16, u16)> = cluster
                    .nodes
                    .iter()
                    .map(|node| (node.host(), node.bouncer_port(), node.pg.port()))
                    .collect();
                Front::Haproxy(HaproxyFront::start(&ports, write_port, 0))
            }
            _ => Front::Rolelb(Rolelb::start(&cluster.cfg)),
        });
        cluster.wait_writes_on(0);
        if guard == Guard::RolePrimary {
            let reads = wait_until(Duration::from_secs(20), || {
                try_psql(read_port, "SELECT pg_is_in_recovery()").as_deref() == Ok("t")
            });
            assert!(
                reads,
                "the read listener never reached a replica\n{}",
                cluster.log()
            );
        }
        cluster
    }

    /// The name of node `n`.
    pub fn name(n: NodeId) -> String {
        format!("n{}", n + 1)
    }

    /// The node whose PostgreSQL listens on `port`.
    pub fn node_of_port(&self, port: u16) -> Option<NodeId> {
        self.nodes.iter().position(|node| node.pg.port() == port)
    }

    /// The proxy's log so far (HAProxy's with its agents'; a second rolelb's after the first's).
    pub fn log(&self) -> String {
        let mut log = match &self.lb {
            Some(Front::Rolelb(lb)) => lb.stderr_text(),
            Some(Front::Haproxy(front)) => front.log(),
            None => String::new(),
        };
        if let Some(lb) = self.second.as_ref().and_then(|s| s.lb.as_ref()) {
            log += &format!("second rolelb:\n{}", lb.stderr_text());
        }
        log
    }

    fn member(&self, n: NodeId, role: &str) -> (String, String) {
        let node = &self.nodes[n];
        let check_port = if self.check_via_bouncer {
            String::new()
        } else {
            format!(r#", "check_port": {}"#, node.pg.port())
        };
        (
            format!("{}/members/{}", self.prefix, Cluster::name(n)),
            format!(
                r#"{{"host": "{}", "port": {}, "role": "{role}"{check_port}}}"#,
                node.host(),
                node.bouncer_port()
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

    /// Promotes node `n` (`pg_promote()`, waiting for it to finish).
    pub fn promote(&mut self, n: NodeId) {
        let start = SystemTime::now();
        self.nodes[n].pg.promote();
        self.record(start, Fact::Writable(n, true));
    }

    /// Stops node `n` (fast shutdown): the fencing of a demoted primary.
    pub fn stop(&mut self, n: NodeId) {
        let start = SystemTime::now();
        self.nodes[n].stop_pg();
        self.record(start, Fact::Writable(n, false));
    }

    /// Cuts node `n` (isolated) off the network: the host side of its veth set down, so
    /// packets to and from it are dropped and sessions in flight hang; `false` heals it.
    pub fn partition(&self, n: NodeId, cut: bool) {
        let isolated = self.nodes[n]
            .isolated
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not in a network namespace", Cluster::name(n)));
        isolated.set_link(!cut);
    }

    /// Crashes node `n`: freezes the postmaster and every process it started (SIGSTOP, so none
    /// reacts to the others' end), then kills them all (SIGKILL). Commits still in its WAL
    /// buffers never reach a replica.
    pub fn crash(&mut self, n: NodeId) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let start = SystemTime::now();
        if let Some(postmaster) = self.nodes[n].pg_pid() {
            let postmaster = Pid::from_raw(postmaster as i32);
            let _ = kill(postmaster, Signal::SIGSTOP);
            let mut all = children_of(postmaster);
            all.push(postmaster);
            for &pid in &all {
                let _ = kill(pid, Signal::SIGSTOP);
            }
            for &pid in &all {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        // Reaps the postmaster (already dead: nothing left to stop).
        self.nodes[n].stop_pg();
        self.record(start, Fact::Writable(n, false));
    }

    /// Waits (up to 30 s) until node `replica` has replayed every commit node `primary` made
    /// so far. Up to the *insert* position: with `synchronous_commit = off` a commit may sit
    /// in the WAL buffers, beyond `pg_current_wal_lsn()`, for up to `wal_writer_delay`.
    pub fn wait_replayed(&self, replica: NodeId, primary: NodeId) {
        let lsn = self.nodes[primary]
            .pg
            .psql("SELECT pg_current_wal_insert_lsn()");
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        let port = self.nodes[replica].pg.port();
        let replayed = wait_until(Duration::from_secs(30), || {
            try_psql(port, &sql).as_deref() == Ok("t")
        });
        assert!(
            replayed,
            "{} did not replay {}'s WAL up to {lsn} within 30 s",
            Cluster::name(replica),
            Cluster::name(primary)
        );
    }

    /// SIGHUP to rolelb: reload its (unchanged) config in place. HAProxy (foreground, no
    /// master-worker) is left alone: it reads no etcd, so a reload between etcd puts tests
    /// nothing there.
    pub fn reload(&self) {
        if let Some(Front::Rolelb(lb)) = &self.lb {
            lb.rewrite_config(&self.cfg);
            lb.reload();
        }
    }

    fn record(&mut self, start: SystemTime, fact: Fact) {
        self.events.push(Event {
            start,
            end: SystemTime::now(),
            fact,
        });
    }

    /// Waits (up to 30 s) until a write through the write listener is acknowledged by node `n`
    /// (through the second rolelb's too, when there is one).
    pub fn wait_writes_on(&self, n: NodeId) {
        self.wait_port_writes_on(self.write_port, n);
        if let Some(second) = &self.second {
            self.wait_port_writes_on(second.write_port, n);
        }
    }

    fn wait_port_writes_on(&self, write_port: u16, n: NodeId) {
        let port = self.nodes[n].pg.port();
        let landed = wait_until(Duration::from_secs(30), || {
            let id = self.probe.fetch_sub(1, Ordering::Relaxed);
            let a = self.rt.block_on(attempt(write_port, id, 999));
            a.result.is_ok_and(|ack| ack.port == port)
        });
        assert!(
            landed,
            "no write through the write listener landed on {} within 30 s\n{}",
            Cluster::name(n),
            self.log()
        );
    }

    /// The ids node `n` holds (read directly, not through rolelb).
    pub fn ids_on(&self, n: NodeId) -> HashSet<i64> {
        let port = self.nodes[n].pg.port();
        let text = try_psql(port, "SELECT id FROM chaos_writes")
            .unwrap_or_else(|e| panic!("reading chaos_writes on {}: {e}", Cluster::name(n)));
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.pausing.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut lb) = self.second.take().and_then(|s| s.lb) {
            lb.stop();
        }
        match self.lb.take() {
            Some(Front::Rolelb(mut lb)) => {
                lb.stop();
            }
            Some(Front::Haproxy(front)) => drop(front),
            None => {}
        }
        // Replicas before the primary they stream from.
        while let Some(node) = self.nodes.pop() {
            drop(node);
        }
    }
}

/// Moves `primary` into a network namespace (number `generation`) and points `replicas` at
/// it there; returns once both stream from it over the veth.
fn isolate(primary: &mut Postgres, replicas: &[Postgres], generation: usize) -> Isolated {
    primary.stop();
    let isolated = Isolated::start(
        generation,
        &data_dir(primary),
        primary.port(),
        &["rolelb_monitor"],
    );
    let addr = isolated.addr();
    for replica in replicas {
        replica.psql(&format!(
            "ALTER SYSTEM SET primary_conninfo = 'host={addr} port={} user=postgres'",
            primary.port()
        ));
        replica.psql("SELECT pg_reload_conf()");
    }
    for replica in replicas {
        let streaming = wait_until(Duration::from_secs(30), || {
            try_psql(
                replica.port(),
                "SELECT status || ' ' || sender_host FROM pg_stat_wal_receiver",
            )
            .is_ok_and(|s| s == format!("streaming {addr}"))
        });
        assert!(
            streaming,
            "replica :{} does not stream from {addr} within 30 s\n{}",
            replica.port(),
            isolated.log(&data_dir(primary))
        );
    }
    isolated
}

/// The processes whose parent is `parent` (from `/proc/PID/stat`).
fn children_of(parent: nix::unistd::Pid) -> Vec<nix::unistd::Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the name: state, then the parent's PID.
        let ppid: i32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == parent.as_raw()).then_some(nix::unistd::Pid::from_raw(pid))
    })
    .collect()
}

/// The configuration under test: writes to the one primary that etcd's leader AND its role
/// check agree on; reads over the replicas.
fn guarded_config(endpoint: &str, prefix: &str, write_port: u16, read_port: u16) -> String {
    format!(
        "global\n    maxconn 500\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         \x20   timeout check 1s\n    default-server inter {INTER_MS}ms fall 2 rise 1 check\n\
         etcd main\n    endpoints {endpoint}\n    dial-timeout 1s\n\
         listen writes\n    bind 127.0.0.1:{write_port}\n    role primary\n    role-source both\n\
         \x20   role-check pgsql user rolelb_monitor database postgres\n    discover etcd main path {prefix}\n\
         listen reads\n    bind 127.0.0.1:{read_port}\n    balance roundrobin\n    role replica\n\
         \x20   max-lag {}ms\n\
         \x20   role-check pgsql user rolelb_monitor database postgres\n    discover etcd main path {prefix}\n",
        MAX_LAG.as_millis()
    )
}

/// The unsafe setup of the auditor's self-test: every node behind one round-robin listener.
fn plain_config(nodes: &[Node], write_port: u16) -> String {
    let servers: String = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            format!(
                "    server {} {}:{}\n",
                Cluster::name(n),
                node.host(),
                node.bouncer_port()
            )
        })
        .collect();
    format!(
        "global\n    maxconn 500\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         listen writes\n    bind 127.0.0.1:{write_port}\n    balance roundrobin\n{servers}"
    )
}
