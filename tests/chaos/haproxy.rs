//! The comparison's proxy: HAProxy 2.6 in rolelb's place, set up the way Patroni clusters run it
//! (`option httpchk OPTIONS /primary`, `http-check expect status 200`, `on-marked-down
//! shutdown-sessions`, each server checked on its health agent's HTTP port), with one
//! `rolelb-agent` beside each PostgreSQL node answering `/primary` from `pg_is_in_recovery()`.
//! HAProxy reads no etcd: a schedule's etcd changes do not reach it.
//!
//! The agent is this build's `target/debug/rolelb-agent` (`cargo build -p rolelb-agent`).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::common::{
    Haproxy, Proc, command, free_port, log_tail, rolelb_bin, stat_row, stats_cli, wait_until,
};

/// The agents' poll interval and HAProxy's check `inter`, as rolelb's role checks.
const INTER_MS: u64 = 300;

/// This build's `rolelb-agent`, beside the `rolelb` binary.
fn agent_bin() -> PathBuf {
    let bin = rolelb_bin().with_file_name("rolelb-agent");
    assert!(
        bin.is_file(),
        "{} not found: build it (cargo build -p rolelb-agent)",
        bin.display()
    );
    bin
}

/// A `rolelb-agent` polling one PostgreSQL.
pub struct Agent {
    // Fields drop in order: the process (stopped by PID) before its directory.
    _proc: Proc,
    dir: TempDir,
    /// Its HTTP listener's port (`/primary`).
    pub http: u16,
}

impl Agent {
    /// Starts an agent for the PostgreSQL on `host`:`pg_port`; returns once it listens.
    pub fn start(host: &str, pg_port: u16) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("chaos-agent-")
            .tempdir()
            .expect("creating a temporary directory");
        let agent = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let cfg = format!(
            "database:\n  kind: postgres\n  host: {host}\n  port: {pg_port}\n  user: postgres\n  dbname: postgres\n\
             listen:\n  agent: {agent}\n  http: {http}\nstate_file: {}\ninter: {INTER_MS}ms\ntimeout: 1s\n",
            dir.path().join("state").display()
        );
        let file = dir.path().join("agent.yaml");
        std::fs::write(&file, cfg).expect("writing agent.yaml");
        let mut cmd = command(&agent_bin(), false, dir.path());
        cmd.arg("-f").arg(&file);
        let mut proc = Proc::spawn(
            "rolelb-agent",
            &mut cmd,
            &dir.path().join("agent.log"),
            Signal::SIGTERM,
        );
        let accepts = |a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok();
        proc.wait_ready("waiting for its listeners", || {
            accepts(agent) && accepts(http)
        });
        Agent {
            _proc: proc,
            dir,
            http: http.port(),
        }
    }

    fn log(&self) -> String {
        log_tail(&self.dir.path().join("agent.log"), 20)
    }
}

/// HAProxy and the agents it checks; dropping it stops HAProxy, then the agents.
pub struct HaproxyFront {
    haproxy: Haproxy,
    agents: Vec<Agent>,
    _dir: TempDir,
}

impl HaproxyFront {
    /// Starts an agent per node (`(address, traffic port, PostgreSQL port)`, named `n1`, `n2`,
    /// ...) and
    /// HAProxy with a `writes` listener on `write_port`; returns once HAProxy sees only
    /// `primary` (index) up.
    pub fn start(nodes: &[(String, u16, u16)], write_port: u16, primary: usize) -> HaproxyFront {
        let agents: Vec<Agent> = nodes
            .iter()
            .map(|(host, _, pg)| Agent::start(host, *pg))
            .collect();
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let sock = dir.path().join("stats.sock");
        let servers: String = nodes
            .iter()
            .zip(&agents)
            .enumerate()
            .map(|(i, ((host, traffic, _), agent))| {
                format!(
                    "    server n{} {host}:{traffic} check addr 127.0.0.1 port {}\n",
                    i + 1,
                    agent.http
                )
            })
            .collect();
        let cfg = format!(
            "global\n    maxconn 500\n    stats socket {} level admin\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             \x20   timeout check 1s\n\
             listen writes\n    bind 127.0.0.1:{write_port}\n    option httpchk OPTIONS /primary\n\
             \x20   http-check expect status 200\n\
             \x20   default-server inter {INTER_MS}ms fall 2 rise 1 on-marked-down shutdown-sessions\n{servers}",
            sock.display()
        );
        let (valid, out) = Haproxy::check(&cfg);
        assert!(
            valid,
            "haproxy -c refused the comparison's config: {out}\n{cfg}"
        );
        let front = HaproxyFront {
            haproxy: Haproxy::start(&cfg),
            agents,
            _dir: dir,
        };
        // HAProxy starts every server up: wait until its checks marked the replicas down.
        let settled = wait_until(Duration::from_secs(20), || {
            let csv = stats_cli(&sock, "show stat");
            (0..nodes.len()).all(|i| {
                let status = stat_row(&csv, "writes", &format!("n{}", i + 1))
                    .and_then(|row| row.get("status").cloned())
                    .unwrap_or_default();
                status.starts_with(if i == primary { "UP" } else { "DOWN" })
            })
        });
        assert!(
            settled,
            "HAProxy's checks never marked only n{} up\n{}",
            primary + 1,
            front.log()
        );
        front
    }

    /// HAProxy's stderr and the agents' logs.
    pub fn log(&self) -> String {
        let mut out = format!("haproxy:\n{}\n", self.haproxy.stderr_text());
        for (i, agent) in self.agents.iter().enumerate() {
            out += &format!("agent of n{}:\n{}\n", i + 1, agent.log());
        }
        out
    }
}
