//! `idle-rss`: what a session costs in memory while idle, and a proxy's CPU per GB moved in
//! bulk, for rolelb against HAProxy in the same run with the same config.
//!
//! Idle: each proxy is started alone, its resident memory (`VmRSS`) read, then `--sessions`
//! clients connect through it to a backend that answers one byte and holds the connection;
//! once every session has passed its byte both ways and sat idle for a moment, `VmRSS` is read
//! again. The growth divided by the sessions is the memory one idle session costs. The
//! backend runs as a child process of this tool (`--hold`), so the clients here, the backend
//! and the proxy each stay under the usual 20,000 descriptor limit at 9,900 sessions.
//!
//! Bulk (`--bulk-mb N`): `--streams` connections each download N MB through the proxy from
//! the backend; the proxy's user + system CPU time per GB moved is reported for copying,
//! `option splice-auto` and `option splice-response` (rolelb) and for copying and
//! `option splice-auto` (HAProxy).
//!
//! `cargo run --release -p rolelb-bench --bin idle-rss -- --rolelb target/release/rolelb`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[allow(dead_code)]
#[path = "../proxy.rs"]
mod proxy;

use proxy::{Kind, Proxy};

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Memory per idle session and CPU per GB: rolelb against HAProxy")]
struct Args {
    /// The rolelb binary.
    #[arg(long, default_value = "target/release/rolelb")]
    rolelb: PathBuf,
    /// The HAProxy binary.
    #[arg(long, default_value = "/usr/sbin/haproxy")]
    haproxy: PathBuf,
    /// Idle sessions to open through each proxy.
    #[arg(long, default_value_t = 9_900)]
    sessions: usize,
    /// Megabytes each bulk stream downloads (0: no bulk run).
    #[arg(long, default_value_t = 0)]
    bulk_mb: u64,
    /// Parallel bulk streams.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Internal: run as the backend on this address.
    #[arg(long, hide = true)]
    hold: Option<SocketAddr>,
}

/// What a client asks the backend for, in its first byte.
const PING: u8 = b'p';
/// Followed by 8 bytes (big endian): how many bytes to send before closing.
const DOWNLOAD: u8 = b'd';

/// `maxconn` of the config: room for 9,900 sessions, and HAProxy's descriptors for it
/// (2 per connection plus its own) stay under a 20,000 limit.
const MAXCONN: usize = 9_950;
/// `maxconn` of the bulk runs: HAProxy's default `maxpipes` (a quarter of it) then fits the
/// descriptor limit too.
const BULK_MAXCONN: usize = 1_000;

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if let Some(addr) = args.hold {
        return rt.block_on(backend(addr));
    }
    if args.sessions + 50 > MAXCONN {
        bail!("--sessions must stay under {}", MAXCONN - 50);
    }
    rt.block_on(run(&args))
}

/// The backend: one byte answered per ping, then the connection held until the client
/// closes; or a download of the asked size.
async fn backend(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the backend on {addr}"))?;
    loop {
        let (mut conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("backend accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let mut op = [0u8; 1];
            if conn.read_exact(&mut op).await.is_err() {
                return;
            }
            match op[0] {
                PING if conn.write_all(&[PING]).await.is_ok() => {
                    let mut rest = Vec::new();
                    let _ = conn.read_to_end(&mut rest).await;
                }
                DOWNLOAD => {
                    let mut len = [0u8; 8];
                    if conn.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut left = u64::from_be_bytes(len);
                    let chunk = vec![0x5au8; 256 * 1024];
                    while left > 0 {
                        let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        if conn.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        left -= n as u64;
                    }
                }
                _ => {}
            }
        });
    }
}

/// The backend child, killed on drop.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(args: &Args) -> Result<()> {
    let ports = proxy::free_ports(2)?;
    let (backend_addr, bind) = (ports[0], ports[1]);
    let exe = std::env::current_exe().context("locating this program")?;
    let child = Command::new(exe)
        .arg("--hold")
        .arg(backend_addr.to_string())
        .stdin(Stdio::null())
        .spawn()
        .context("starting the backend")?;
    let _backend = Backend(child);
    wait_connectable(backend_addr).await?;
    let dir = tempdir()?;
    println!("rolelb:  {}", proxy::version_of(&args.rolelb));
    println!("haproxy: {}", proxy::version_of(&args.haproxy));
    println!("descriptor limit (soft): {}", fd_limit());
    println!();
    println!(
        "Idle sessions: {} through each proxy, same config (`nbthread 1`, maxconn {MAXCONN})",
        args.sessions
    );
    println!(
        "{:<8} {:>12} {:>16} {:>18}",
        "proxy", "RSS before", "RSS with idle", "per idle session"
    );
    for (kind, program) in [(Kind::Rolelb, &args.rolelb), (Kind::Haproxy, &args.haproxy)] {
        let config = config_text(bind, backend_addr, MAXCONN, "");
        let p = Proxy::start(kind, kind.name(), program, &dir, bind, &config)?;
        let (before, after) = idle_rss(&p, bind, args.sessions).await?;
        let per = (after.saturating_sub(before)) as f64 * 1024.0 / args.sessions as f64;
        println!(
            "{:<8} {:>9} KiB {:>13} KiB {:>13.0} bytes",
            kind.name(),
            before,
            after,
            per
        );
        drop(p);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if args.bulk_mb > 0 {
        println!();
        println!(
            "Bulk: {} streams × {} MB downloaded through each proxy (CPU = user + system of the proxy)",
            args.streams, args.bulk_mb
        );
        println!(
            "{:<8} {:<24} {:>10} {:>12} {:>12}",
            "proxy", "option", "seconds", "CPU s/GB", "MB/s"
        );
        for (kind, program, option) in [
            (Kind::Rolelb, &args.rolelb, ""),
            (Kind::Rolelb, &args.rolelb, "option splice-auto"),
            (Kind::Rolelb, &args.rolelb, "option splice-response"),
            (Kind::Haproxy, &args.haproxy, ""),
            (Kind::Haproxy, &args.haproxy, "option splice-auto"),
        ] {
            let config = config_text(bind, backend_addr, BULK_MAXCONN, option);
            let label = format!(
                "{}-{}",
                kind.name(),
                option.strip_prefix("option ").unwrap_or("copy")
            );
            let p = Proxy::start(kind, &label, program, &dir, bind, &config)?;
            let (wall, cpu, bytes) = bulk(&p, bind, args.streams, args.bulk_mb).await?;
            let gb = bytes as f64 / 1e9;
            println!(
                "{:<8} {:<24} {:>10.2} {:>12.3} {:>12.0}",
                kind.name(),
                if option.is_empty() { "(copy)" } else { option },
                wall.as_secs_f64(),
                cpu.as_secs_f64() / gb,
                bytes as f64 / 1e6 / wall.as_secs_f64()
            );
            drop(p);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The config both proxies read, with `maxconn`; `extra` goes into the `listen` section.
/// HAProxy's default `maxpipes` is `maxconn / 4`, two descriptors each.
fn config_text(bind: SocketAddr, backend: SocketAddr, maxconn: usize, extra: &str) -> String {
    format!(
        "global\n    maxconn {maxconn}\n    nbthread 1\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 10m\n    timeout server 10m\n\n\
         listen idle\n    bind {bind}\n    maxconn {maxconn}\n    {extra}\n    server s1 {backend}\n"
    )
}

/// `VmRSS` of the proxy in KiB before and after `n` idle sessions are open through it.
async fn idle_rss(p: &Proxy, bind: SocketAddr, n: usize) -> Result<(u64, u64)> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = vm_rss(p.pid())?;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(bind).await.context("connecting")?;
            c.write_all(&[PING]).await.context("writing")?;
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.context("reading the answer")?;
            drop(permit);
            anyhow::Ok(c)
        }));
    }
    let mut open = Vec::with_capacity(n);
    for t in tasks {
        open.push(t.await??);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = vm_rss(p.pid())?;
    drop(open);
    Ok((before, after))
}

/// Runs `streams` downloads of `mb` MB each through the proxy: wall time, proxy CPU, bytes.
async fn bulk(
    p: &Proxy,
    bind: SocketAddr,
    streams: usize,
    mb: u64,
) -> Result<(Duration, Duration, u64)> {
    let cpu0 = p.cpu_time().context("reading the proxy's CPU time")?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(bind).await.context("connecting")?;
            let mut ask = vec![DOWNLOAD];
            ask.extend_from_slice(&(mb * 1_000_000).to_be_bytes());
            c.write_all(&ask).await.context("asking")?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0u64;
            loop {
                let n = c.read(&mut buf).await.context("reading")?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            if got != mb * 1_000_000 {
                bail!("a stream got {got} bytes of {}", mb * 1_000_000);
            }
            anyhow::Ok(got)
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    let wall = start.elapsed();
    let cpu = p.cpu_time().context("reading the proxy's CPU time")? - cpu0;
    Ok((wall, cpu, bytes))
}

/// `VmRSS` of `pid`, in KiB.
fn vm_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// The soft descriptor limit of this process.
fn fd_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".to_string())
}

async fn wait_connectable(addr: SocketAddr) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the backend did not listen on {addr}")
}

/// A fresh directory for the configs and the proxies' logs.
fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("idle-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
