//! [`PatroniCluster`]: Patroni 3.0 nodes (each running PostgreSQL 15) on an [`Etcd`], with
//! `patronictl` for the member list and switchovers.

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::etcd::Etcd;
use crate::net::{free_port, wait_until};
use crate::postgres::PG_BIN;
use crate::process::{Proc, command, db_tempdir, db_user, log_tail, require_bin, run_ok};

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

    /// The replication lag `patronictl list` shows for `member`, in MB (`None`: unknown, or
    /// the leader).
    pub fn lag_mb(&self, member: &str) -> Option<f64> {
        let node = self.nodes.first()?;
        let out = Command::new(PATRONICTL_BIN)
            .arg("-c")
            .arg(&node.config)
            .args(["list", "-f", "json"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let entry = list
            .as_array()?
            .iter()
            .find(|m| m["Member"].as_str() == Some(member))?;
        entry["Lag in MB"].as_f64()
    }

    /// `patronictl switchover --leader FROM --candidate TO --force`, once the candidate has
    /// caught up: Patroni refuses a candidate whose lag exceeds `maximum_lag_on_failover`
    /// (1 MB here; a replica of a busy machine can be a WAL segment behind for a while), so
    /// this waits (up to 60 s) for a lag of 0 and tries again (up to 3 times, 2 s apart)
    /// while Patroni answers "Switchover failed". Returns the last output.
    pub fn switchover(&self, from: &str, to: &str) -> String {
        let node = self.nodes.first().expect("a node");
        let mut out = String::new();
        for _ in 0..3 {
            wait_until(Duration::from_secs(60), || self.lag_mb(to) == Some(0.0));
            let run = run_ok(
                "patronictl switchover",
                Command::new(PATRONICTL_BIN)
                    .arg("-c")
                    .arg(&node.config)
                    .args(["switchover", "--leader", from, "--candidate", to, "--force"])
                    .stdin(Stdio::null()),
            );
            out = String::from_utf8_lossy(&run.stdout).into_owned();
            if !out.contains("Switchover failed") {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        out
    }
}
