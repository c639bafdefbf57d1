//! The etcd churn test: the data path's echo latency while etcd members change.
//!
//! The bench starts one etcd (Debian's `etcd`, one member, 127.0.0.1, temporary data dir;
//! killed on drop) as `bench/etcd-swap` does, and for each `nbthread` one extra rolelb
//! instance whose config is the shared one plus an `admin bind`, an `etcd` section and a
//! `listen pool` discovering members under its own prefix. A pass puts N members one by one
//! (each awaited: one revision each) while paced echo connections run through the target's
//! `listen bench`; for that rolelb instance the pass lasts until its table holds all N
//! (read from `/metrics?scope=backend`), and a delete-range then empties prefix and table.
//! HAProxy has no etcd watch: against it (and `direct`) the same puts go to a prefix nobody
//! watches, so the row shows what the same burst on this machine does to its data path.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{Client, DeleteOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::workload::{self, Latency};

/// The prefix the puts go to when no proxy watches them.
pub const UNWATCHED: &str = "/rolelb-bench/unwatched";

/// Paced echo connections during a pass, and the pause between one's messages.
const ECHO_CONNS: usize = 4;
const ECHO_GAP: Duration = Duration::from_millis(1);

/// How long rolelb may take to show all members (or none after the delete) in its table.
const CONVERGE_LIMIT: Duration = Duration::from_secs(30);

/// The longest one pass may run, whatever happens.
const PASS_LIMIT: Duration = Duration::from_secs(120);

/// The etcd prefix rolelb instance `nbthread` watches.
pub fn prefix_for(nbthread: u32) -> String {
    format!("/rolelb-bench/t{nbthread}")
}

/// A running one-member etcd and a client of it; the process is killed on drop.
pub struct Etcd {
    child: Child,
    client: Client,
    /// Its client URL.
    pub endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Starts etcd `bin` with its data and log in `dir`, and waits until it answers.
    pub async fn start(bin: &Path, dir: &Path) -> Result<Etcd> {
        if !bin.is_file() {
            bail!(
                "--etcd {}: no such file (run scripts/deps.sh: Debian's etcd-server)",
                bin.display()
            );
        }
        let ports = crate::proxy::free_ports(2)?;
        let endpoint = format!("http://{}", ports[0]);
        let peer = format!("http://{}", ports[1]);
        let log_path = dir.join("etcd.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(["--name", "bench", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .args(["--log-level", "warn", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the etcd log")?)
            .stderr(log);
        crate::proxy::die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting etcd ({})", bin.display()))?;
        for _ in 0..150 {
            if let Some(status) = child.try_wait().context("polling etcd")? {
                bail!(
                    "etcd exited at start ({status}); its log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(2),
                Client::connect([endpoint.as_str()], None),
            )
            .await
                && let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), c.status()).await
            {
                return Ok(Etcd {
                    child,
                    client: c,
                    endpoint,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("etcd did not answer at {endpoint} within 15 s")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Puts `n` members under `prefix` one by one, each awaited.
    async fn put_members(&mut self, prefix: &str, n: usize) -> Result<()> {
        for i in 0..n {
            let key = format!("{prefix}/members/m{i:05}");
            let value = format!(
                r#"{{"host": "127.0.0.1", "port": {}, "role": "replica"}}"#,
                10_000 + i % 50_000
            );
            tokio::time::timeout(Duration::from_secs(10), self.client.put(key, value, None))
                .await
                .map_err(|_| anyhow!("etcd put timed out"))?
                .context("etcd put")?;
        }
        Ok(())
    }

    /// Removes every member under `prefix` with one delete-range.
    async fn delete_members(&mut self, prefix: &str) -> Result<()> {
        let opts = DeleteOptions::new().with_prefix();
        tokio::time::timeout(
            Duration::from_secs(10),
            self.client.delete(format!("{prefix}/members/"), Some(opts)),
        )
        .await
        .map_err(|_| anyhow!("etcd delete-range timed out"))?
        .context("etcd delete-range")?;
        Ok(())
    }
}

/// The shared config with what the etcd-watching rolelb adds: its admin API, the `etcd`
/// section and a `listen pool` whose servers all come from `prefix`.
pub fn rolelb_config(
    shared: &str,
    admin: SocketAddr,
    endpoint: &str,
    pool: SocketAddr,
    prefix: &str,
) -> String {
    let mut s = shared.replacen("global\n", &format!("global\n    admin bind {admin}\n"), 1);
    s.push_str(&format!(
        "\netcd main\n    endpoints {endpoint}\n\n\
         listen pool\n    bind {pool}\n    balance roundrobin\n    discover etcd main path {prefix}\n"
    ));
    s
}

/// How many servers rolelb's table has in backend `pool` (`haproxy_backend_active_servers`
/// in `/metrics?scope=backend`: a few KB whatever the member count).
pub async fn servers_in_table(admin: SocketAddr) -> Option<usize> {
    let body = tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = tokio::net::TcpStream::connect(admin).await.ok()?;
        conn.write_all(b"GET /metrics?scope=backend HTTP/1.0\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).await.ok()?;
        Some(text)
    })
    .await
    .ok()??;
    body.lines()
        .find_map(|l| l.strip_prefix("haproxy_backend_active_servers{proxy=\"pool\"} "))
        .and_then(|n| n.trim().parse().ok())
}

/// Polls rolelb's table until it holds `want` members; how long that took after `from`.
async fn converge(admin: SocketAddr, want: usize, from: Instant) -> Option<Duration> {
    let deadline = Instant::now() + CONVERGE_LIMIT;
    while Instant::now() < deadline {
        if servers_in_table(admin).await == Some(want) {
            return Some(from.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// What one pass measured.
pub struct Pass {
    /// Echo round trips through the target during the pass.
    pub echo: Latency,
    /// Time the puts took.
    pub puts: Duration,
    /// For a watching rolelb: from the last put until all members were in its table
    /// (`None` if that did not happen within the limit).
    pub converged: Option<Option<Duration>>,
}

/// One pass against `addr`: paced echo while `members` are put under `prefix`; with
/// `watcher` (a rolelb's admin address) the pass lasts until its table has them all. The
/// members are deleted again afterwards.
pub async fn pass(
    etcd: &mut Etcd,
    addr: SocketAddr,
    prefix: &str,
    members: usize,
    watcher: Option<SocketAddr>,
) -> Result<Pass> {
    let stop = Arc::new(AtomicBool::new(false));
    let echo = tokio::spawn(workload::echo_paced(
        addr,
        ECHO_CONNS,
        ECHO_GAP,
        stop.clone(),
        PASS_LIMIT,
    ));
    // Let the echo connections open before the burst starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = Instant::now();
    let put = etcd.put_members(prefix, members).await;
    let puts = first.elapsed();
    let converged = match (&put, watcher) {
        (Ok(()), Some(admin)) => Some(converge(admin, members, Instant::now()).await),
        _ => None,
    };
    stop.store(true, Ordering::Relaxed);
    let echo = echo.await.context("the churn echo task failed")?;
    let deleted = etcd.delete_members(prefix).await;
    if let Some(admin) = watcher {
        converge(admin, 0, Instant::now()).await;
    }
    put?;
    deleted?;
    Ok(Pass {
        echo,
        puts,
        converged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolelb_config_adds_admin_etcd_and_pool() {
        let shared =
            "global\n    maxconn 10\n    nbthread 2\n\nlisten bench\n    bind 127.0.0.1:1\n";
        let text = rolelb_config(
            shared,
            "127.0.0.1:2".parse().unwrap(),
            "http://127.0.0.1:3",
            "127.0.0.1:4".parse().unwrap(),
            &prefix_for(2),
        );
        assert!(text.starts_with("global\n    admin bind 127.0.0.1:2\n    maxconn 10\n"));
        assert!(text.contains("etcd main\n    endpoints http://127.0.0.1:3\n"));
        assert!(text.contains("    discover etcd main path /rolelb-bench/t2\n"));
        assert!(text.contains("listen bench\n    bind 127.0.0.1:1\n"));
    }
}
