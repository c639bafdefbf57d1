//! `etcd-swap`: how long rolelb takes to route by an etcd change.
//!
//! Starts a one-member etcd (Debian's 3.4) and two tiny backends on 127.0.0.1, publishes
//! them as members `m0` and `m1` (native schema) with `leader` = `m0`, and runs rolelb with a
//! `role primary` + `role-source etcd` listener that discovers them. Then, `--changes` times,
//! it moves the leader to the other member and measures from the moment the etcd put
//! returns to the moment a new connection through rolelb is answered by the new leader
//! (connections are opened back to back, each one reading the backend's name). That span is
//! watch delivery + parsing + one table swap + one connection. It prints p50, p90, p99 and
//! max. Every child process is killed on exit (and gets SIGKILL if this process dies).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Command-line options (`--rolelb PATH --etcd PATH --changes N`).
struct Options {
    rolelb: PathBuf,
    etcd: PathBuf,
    changes: usize,
}

fn options() -> Result<Options> {
    let mut o = Options {
        rolelb: PathBuf::from("target/release/rolelb"),
        etcd: PathBuf::from("/usr/bin/etcd"),
        changes: 100,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rolelb" => o.rolelb = value.into(),
            "--etcd" => o.etcd = value.into(),
            "--changes" => o.changes = value.parse().context("--changes N")?,
            other => bail!("unknown option {other} (known: --rolelb, --etcd, --changes)"),
        }
    }
    Ok(o)
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, log: &std::path::Path) -> Result<Killed> {
    let log = std::fs::File::create(log)?;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    Ok(Killed(child))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A backend that writes its name on every connection and closes.
async fn backend(name: &'static str) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = conn.write_all(format!("{name}\n").as_bytes()).await;
            });
        }
    });
    Ok(port)
}

/// The name the backend behind `addr` sends, through rolelb.
async fn who(addr: SocketAddr) -> Option<String> {
    let mut conn = TcpStream::connect(addr).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf).trim().to_owned())
}

async fn wait_for(addr: SocketAddr, name: &str, limit: Duration) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if who(addr).await.as_deref() == Some(name) {
            return Ok(Instant::now());
        }
    }
    bail!("{addr} not answered by {name} within {limit:?}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let o = options()?;
    let dir = tempfile::tempdir()?;
    let (client, peer) = (free_port()?, free_port()?);
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let _etcd = spawn(
        Command::new(&o.etcd)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--log-level", "warn", "--logger", "zap"]),
        &dir.path().join("etcd.log"),
    )?;
    let mut etcd = None;
    for _ in 0..100 {
        if let Ok(mut c) = etcd_client::Client::connect([endpoint.as_str()], None).await
            && c.status().await.is_ok()
        {
            etcd = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut etcd = etcd.context("etcd did not come up")?;
    let prefix = "/bench/pool";
    for (name, port) in [("m0", backend("m0").await?), ("m1", backend("m1").await?)] {
        let value = format!(r#"{{"host": "127.0.0.1", "port": {port}, "role": "replica"}}"#);
        etcd.put(format!("{prefix}/members/{name}"), value, None)
            .await?;
    }
    etcd.put(format!("{prefix}/leader"), "m0", None).await?;

    let port = free_port()?;
    let cfg = dir.path().join("rolelb.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    nbthread 1\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n\
             etcd main\n    endpoints {endpoint}\n\
             listen writes\n    bind 127.0.0.1:{port}\n    role primary\n    role-source etcd\n    discover etcd main path {prefix}\n"
        ),
    )?;
    let _rolelb = spawn(
        Command::new(&o.rolelb).arg("-f").arg(&cfg),
        &dir.path().join("rolelb.log"),
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(addr, "m0", Duration::from_secs(10))
        .await
        .context("rolelb did not start routing to m0")?;

    let mut spans = Vec::with_capacity(o.changes);
    for i in 0..o.changes {
        let next = if i % 2 == 0 { "m1" } else { "m0" };
        etcd.put(format!("{prefix}/leader"), next, None).await?;
        let put_returned = Instant::now();
        let routed = wait_for(addr, next, Duration::from_secs(5)).await?;
        spans.push(routed - put_returned);
    }
    spans.sort();
    println!(
        "etcd leader change → first connection routed by the new table, {} changes:",
        spans.len()
    );
    println!(
        "  p50 {}   p90 {}   p99 {}   max {}   min {}",
        ms(percentile(&spans, 0.50)),
        ms(percentile(&spans, 0.90)),
        ms(percentile(&spans, 0.99)),
        ms(spans[spans.len() - 1]),
        ms(spans[0]),
    );
    Ok(())
}
