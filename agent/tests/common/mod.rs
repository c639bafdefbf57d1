//! Helpers for the agent's integration tests, on top of the workspace's `testkit` harness (real
//! PostgreSQL, HAProxy, [`NamedServer`]), which this module re-exports.
//!
//! [`Agent`] runs this build's `rolelb-agent` on free 127.0.0.1 ports with its config and
//! state file in a temporary directory, and stops it by PID when dropped. [`agent_line`] and
//! [`http_get`] are plain std clients with timeouts, so a hung agent fails a test instead of
//! hanging it.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

// Not every test binary uses it.
#[allow(unused_imports)]
pub use testkit::lbcfg::local as addr;
pub use testkit::*;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

/// This build's agent binary.
pub fn agent_bin() -> PathBuf {
    require_bin(env!("CARGO_BIN_EXE_rolelb-agent"))
}

/// The `database:` section for a PostgreSQL on 127.0.0.1:`port` as user `user`.
pub fn pg_database(port: u16, user: &str) -> String {
    format!(
        "database:\n  kind: postgres\n  host: 127.0.0.1\n  port: {port}\n  user: {user}\n  dbname: postgres\n"
    )
}

/// A running `rolelb-agent -f agent.yaml`.
pub struct Agent {
    // Fields drop in order: stop the process before removing its directory.
    proc: Option<Proc>,
    dir: TempDir,
    /// The agent-check listener.
    pub agent: SocketAddr,
    /// The HTTP listener.
    pub http: SocketAddr,
}

impl Agent {
    /// Starts an agent with `database` (a `database:` section) and `extra` top-level keys
    /// (e.g. `inter: 300ms`); returns once both listeners accept.
    pub fn start(database: &str, extra: &str) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("rolelb-agent-")
            .tempdir()
            .expect("creating a temporary directory");
        let agent = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let state = dir.path().join("state");
        let cfg = format!(
            "{database}listen:\n  agent: {agent}\n  http: {http}\nstate_file: {}\n{extra}",
            state.display()
        );
        fs::write(dir.path().join("agent.yaml"), cfg).expect("writing agent.yaml");
        let mut a = Agent {
            proc: None,
            dir,
            agent,
            http,
        };
        a.spawn();
        a
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("agent.yaml")
    }

    fn spawn(&mut self) {
        let mut cmd = command(&agent_bin(), false, self.dir.path());
        cmd.arg("-f").arg(self.config());
        let log = self.dir.path().join("agent.log");
        let mut proc = Proc::spawn("rolelb-agent", &mut cmd, &log, Signal::SIGTERM);
        // Connecting, not is_listening(): /proc/net/tcp gets slow to read on a machine full of
        // TIME_WAIT sockets (after a burst test), and a probe connection is harmless here.
        let (agent, http) = (self.agent, self.http);
        let accepts = |a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok();
        proc.wait_ready("waiting for its listeners", || {
            accepts(agent) && accepts(http)
        });
        self.proc = Some(proc);
    }

    /// Stops the agent (SIGTERM) and starts it again on the same config and state file.
    pub fn restart(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
        self.spawn();
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        log_tail(&self.dir.path().join("agent.log"), 40)
    }

    /// `rolelb-agent state WORD -f agent.yaml`, asserting it succeeds.
    pub fn set_state(&self, word: &str) {
        set_state(&self.config(), word);
    }

    /// The agent-check line (no `agent-send`).
    pub fn line(&self) -> String {
        agent_line(self.agent, None)
    }

    /// GET `path` on the HTTP listener: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, "GET", path)
    }

    /// Waits until the agent-check line satisfies `cond`; returns the time it took, or
    /// panics with the last line and the agent's log.
    pub fn wait_line(&self, timeout: Duration, cond: impl Fn(&str) -> bool) -> Duration {
        let start = Instant::now();
        let mut last = String::new();
        let ok = wait_until(timeout, || {
            last = self.line();
            cond(&last)
        });
        assert!(
            ok,
            "agent line never matched; last: {last:?}\n{}",
            self.log()
        );
        start.elapsed()
    }

    /// Waits until `GET path` answers `status`; returns the time it took.
    pub fn wait_status(&self, path: &str, status: u16, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut last = (0, String::new());
        let ok = wait_until(timeout, || {
            last = self.get(path);
            last.0 == status
        });
        assert!(
            ok,
            "GET {path} never answered {status}; last: {last:?}\n{}",
            self.log()
        );
        start.elapsed()
    }
}

/// Runs `rolelb-agent state WORD -f CONFIG`, asserting it succeeds.
pub fn set_state(config: &Path, word: &str) {
    let out = Command::new(agent_bin())
        .args(["state", word, "-f"])
        .arg(config)
        .output()
        .expect("running rolelb-agent state");
    assert!(
        out.status.success(),
        "rolelb-agent state {word} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects to an agent-check port, optionally sends `send`, and reads the reply to EOF.
/// Panics if the agent does not answer within 5 s.
pub fn agent_line(addr: SocketAddr, send: Option<&str>) -> String {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to agent {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set_read_timeout");
    if let Some(text) = send {
        conn.write_all(text.as_bytes()).expect("agent-send");
    }
    let mut out = String::new();
    conn.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("reading the agent line from {addr}: {e}"));
    out
}

/// One request to the agent's HTTP listener ([`http_request`], 5 s): (status, body). Panics
/// when the agent does not answer in time or not with an HTTP status line.
pub fn http_get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let (status, head, body) = http_request(addr, method, path, &[], "", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{method} {path} on agent http {addr}: {e}"));
    assert!(status != 0, "not an HTTP reply: {head:?}");
    (status, body)
}

/// A "database" that accepts connections and never says anything (a hung server).
pub struct SilentServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentServer {
    /// Starts listening on an ephemeral 127.0.0.1 port.
    pub fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("SilentServer: bind");
        let addr = listener.local_addr().expect("SilentServer: local_addr");
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopping);
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    held.push(c);
                }
            }
        });
        SilentServer {
            addr,
            stopping,
            thread: Some(thread),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `status` column of `backend/server` in HAProxy's `show stat` on the stats socket.
pub fn haproxy_status(socket: &Path, backend: &str, server: &str) -> String {
    let csv = stats_cli(socket, "show stat");
    stat_row(&csv, backend, server)
        .unwrap_or_else(|| panic!("{backend}/{server} not in show stat:\n{csv}"))
        .remove("status")
        .unwrap_or_else(|| panic!("show stat has no status column:\n{csv}"))
}

/// Waits until `frontend` is served by `name` five times in a row; returns how long it took.
pub fn wait_routed(frontend: SocketAddr, name: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    let mut streak = 0;
    let mut last = String::new();
    let ok = wait_until(timeout, || {
        last = who_answers(frontend).unwrap_or_else(|e| format!("<{e}>"));
        streak = if last == name { streak + 1 } else { 0 };
        streak >= 5
    });
    assert!(ok, "{frontend} not routed to {name}; last answer {last:?}");
    start.elapsed()
}

/// A primary and a replica, a NamedServer and an agent for each, with `extra` agent keys.
pub struct Cluster {
    // Agents before servers: they stop first.
    pub agents: [Agent; 2],
    pub nodes: [NamedServer; 2],
    pub primary: Postgres,
    pub replica: Postgres,
}

impl Cluster {
    pub fn start(extra: &str) -> Cluster {
        let primary = Postgres::primary();
        let replica = Postgres::replica_of(&primary);
        let agents = [
            Agent::start(&pg_database(primary.port(), "postgres"), extra),
            Agent::start(&pg_database(replica.port(), "postgres"), extra),
        ];
        agents[0].wait_line(Duration::from_secs(10), |l| l.contains("#role=primary"));
        agents[1].wait_line(Duration::from_secs(10), |l| l.contains("#role=replica"));
        Cluster {
            agents,
            nodes: [NamedServer::start("node1"), NamedServer::start("node2")],
            primary,
            replica,
        }
    }

    /// Stops the primary and promotes the replica; returns when `pg_promote` has finished.
    pub fn fail_over(&mut self) -> Instant {
        self.primary.stop();
        self.replica.promote();
        Instant::now()
    }
}
