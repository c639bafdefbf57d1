//! `rolelb-bench`: rolelb against HAProxy, same config, same machine, same run.
//!
//! It starts echo/sink/source backends in-process on 127.0.0.1, writes one HAProxy-syntax
//! config (`mode tcp`, round robin over two servers, `nbthread 1`) that both proxies read
//! unchanged but for the bind port, starts both, and measures bulk throughput, short
//! connection rate and echo round-trip latency against each — and directly against a
//! backend as a reference. Tests run in rounds with the target order rotated, so drift in
//! the machine's load falls on every target alike. The output is a table with the
//! rolelb/haproxy ratio; the process exits non-zero only when setup fails.

mod backend;
mod histogram;
mod machine;
mod proxy;
mod report;
mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;

use crate::proxy::{Kind, Proxy};
use crate::report::{Shape, Totals};

/// Benchmark rolelb against HAProxy on 127.0.0.1 with one shared config.
#[derive(Debug, Parser)]
#[command(name = "rolelb-bench", version)]
struct Args {
    /// The rolelb binary (run as `rolelb -f FILE`).
    #[arg(long, value_name = "PATH")]
    rolelb: PathBuf,
    /// The HAProxy binary (run as `haproxy -db -f FILE`).
    #[arg(long, value_name = "PATH")]
    haproxy: PathBuf,
    /// Seconds per measurement (default 1).
    #[arg(long, value_name = "N")]
    seconds: Option<f64>,
    /// Short smoke run: one round instead of six (≈ 15 s in all).
    #[arg(long)]
    quick: bool,
    /// Rounds over all tests and targets (default 6, or 1 with --quick).
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// Concurrent streams in the bulk tests.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Concurrent workers in the short-connection test.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Persistent connections in the echo latency test.
    #[arg(long, default_value_t = 8)]
    echo_conns: usize,
    /// Tokio worker threads for the load generator and backends.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

/// The four tests, in the order they run within a round.
#[derive(Debug, Clone, Copy)]
enum Test {
    Upload,
    Download,
    ShortConns,
    Echo,
}

const TESTS: [Test; 4] = [Test::Upload, Test::Download, Test::ShortConns, Test::Echo];

/// Pause between measurements so sockets from one do not weigh on the next.
const SETTLE: Duration = Duration::from_millis(200);

/// One thing to load: a proxy, or a backend directly.
struct Target<'a> {
    name: &'static str,
    addr: SocketAddr,
    proxy: Option<&'a Proxy>,
}

impl Target<'_> {
    fn cpu(&self) -> Option<Duration> {
        self.proxy.and_then(Proxy::cpu_time)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rolelb-bench: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run_until_signal(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rolelb-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the benchmark; SIGINT or SIGTERM abandons it, which drops (and so kills) the proxies.
async fn run_until_signal(args: Args) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = run(args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted (SIGINT); proxies stopped")),
        _ = term.recv() => Err(anyhow!("terminated (SIGTERM); proxies stopped")),
    }
}

/// A scratch directory for configs and proxy logs, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("rolelb-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run(args: Args) -> Result<()> {
    let secs = args.seconds.unwrap_or(1.0);
    if !(secs > 0.0 && secs <= 600.0) {
        bail!("--seconds must be in (0, 600], got {secs}");
    }
    let duration = Duration::from_secs_f64(secs);
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 6 }).max(1);
    check_program(&args.haproxy, "--haproxy")?;
    check_program(&args.rolelb, "--rolelb")?;

    let started = std::time::Instant::now();
    let machine = machine::Machine::detect();
    let load_start = machine::load_average();
    println!("rolelb-bench {}", env!("CARGO_PKG_VERSION"));
    println!(
        "machine: {} CPUs (nproc), {}, kernel {}",
        machine.nproc, machine.cpu_model, machine.kernel
    );
    println!("haproxy: {}", proxy::version_of(&args.haproxy));
    println!("rolelb:  {}", proxy::version_of(&args.rolelb));
    println!(
        "setup: both proxies are configured with `nbthread 1`; load generator and backends \
         share this process on {} tokio worker thread(s); all traffic on 127.0.0.1",
        args.client_threads.max(1)
    );
    println!(
        "plan: {rounds} round(s) x 4 tests x 3 targets x {secs} s, target order rotated each test"
    );
    if let Some(load) = load_start {
        println!("load average (1 min) at start: {load:.2}");
        if load > 0.5 * machine.nproc.max(1) as f64 {
            println!(
                "NOTE: the machine is busy (load {load:.2} on {} CPUs): expect noisy numbers",
                machine.nproc
            );
        }
    }

    let work = WorkDir::create()?;
    let backends = backend::start(2).await?;
    let ports = proxy::free_ports(2)?;
    let (hap_addr, rlb_addr) = (ports[0], ports[1]);
    let hap_cfg = proxy::config_text(hap_addr, &backends.addrs);
    let rlb_cfg = proxy::config_text(rlb_addr, &backends.addrs);
    println!("\nconfig (haproxy's; rolelb's differs only in the bind port):");
    for line in hap_cfg.lines() {
        println!("  {line}");
    }
    let mut haproxy = Proxy::start(Kind::Haproxy, &args.haproxy, &work.0, hap_addr, &hap_cfg)?;
    println!("\nstarted haproxy pid {} on {hap_addr}", haproxy.pid());
    let mut rolelb = Proxy::start(Kind::Rolelb, &args.rolelb, &work.0, rlb_addr, &rlb_cfg)?;
    println!("started rolelb pid {} on {rlb_addr}", rolelb.pid());

    let targets = [
        Target {
            name: "direct",
            addr: backends.addrs[0],
            proxy: None,
        },
        Target {
            name: Kind::Haproxy.name(),
            addr: haproxy.addr,
            proxy: Some(&haproxy),
        },
        Target {
            name: Kind::Rolelb.name(),
            addr: rolelb.addr,
            proxy: Some(&rolelb),
        },
    ];
    for t in &targets {
        warm_up(t).await?;
    }

    // One `[direct, haproxy, rolelb]` per round: the table shows totals and per-round spread.
    let mut rounds_totals: Vec<[Totals; 3]> = Vec::new();
    let mut raw = Vec::new();
    for round in 0..rounds as usize {
        let mut totals: [Totals; 3] = Default::default();
        for (ti, test) in TESTS.iter().enumerate() {
            for k in 0..targets.len() {
                let idx = (k + round + ti) % targets.len();
                let line = measure(*test, &targets[idx], &args, duration, &mut totals[idx]).await;
                let line = format!("round {} {line}", round + 1);
                eprintln!("{line}");
                raw.push(line);
                tokio::time::sleep(SETTLE).await;
            }
        }
        rounds_totals.push(totals);
    }
    // A proxy that died mid-run is a finding, not a setup failure: its errors are in the table.
    let deaths: Vec<String> = [haproxy.exit_report(), rolelb.exit_report()]
        .into_iter()
        .flatten()
        .collect();
    let threads = |p: &Proxy| p.threads().map_or("?".to_string(), |n| n.to_string());
    let threads_line = format!(
        "OS threads at the end (config says nbthread 1): haproxy {}, rolelb {}\n\
         proxy output over the whole run (no logging configured): haproxy {} bytes, rolelb {} bytes",
        threads(&haproxy),
        threads(&rolelb),
        haproxy.log_bytes(),
        rolelb.log_bytes()
    );

    let shape = Shape {
        streams: args.streams,
        workers: args.workers,
        echo_conns: args.echo_conns,
    };
    println!("\n{}", report::table(&mut rounds_totals, &shape));
    println!("{threads_line}\n");
    for d in &deaths {
        println!("WARNING: {d}\n");
    }
    println!("per measurement (busy = proxy CPU time / wall time, 100% = one core):");
    for line in &raw {
        println!("  {line}");
    }
    if let Some(load) = machine::load_average() {
        println!("load average (1 min) at end: {load:.2}");
    }
    println!("total run time: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Fails early with a clear message when a binary path is wrong.
fn check_program(path: &Path, flag: &str) -> Result<()> {
    if !path.is_file() {
        bail!("{flag} {}: no such file", path.display());
    }
    Ok(())
}

/// A few short connections through `t`; a target that forwards none is a setup failure.
async fn warm_up(t: &Target<'_>) -> Result<()> {
    let r = workload::conn_rate(t.addr, 2, Duration::from_millis(300)).await;
    if r.ok == 0 {
        let log = t.proxy.map(Proxy::log_tail).unwrap_or_default();
        bail!(
            "{} on {} forwarded no connection during warm-up ({} errors); its output:\n{log}",
            t.name,
            t.addr,
            r.errors
        );
    }
    Ok(())
}

/// What one test returned, before it is added to the totals.
enum Outcome {
    Upload(workload::Bulk),
    Download(workload::Bulk),
    Conns(workload::ConnRate),
    Echo(workload::Latency),
}

/// Runs one test against one target, adds it to `totals`, and describes it in one line.
async fn measure(
    test: Test,
    t: &Target<'_>,
    args: &Args,
    duration: Duration,
    totals: &mut Totals,
) -> String {
    let cpu0 = t.cpu();
    let outcome = match test {
        Test::Upload => {
            Outcome::Upload(workload::bulk_upload(t.addr, args.streams, duration).await)
        }
        Test::Download => {
            Outcome::Download(workload::bulk_download(t.addr, args.streams, duration).await)
        }
        Test::ShortConns => {
            Outcome::Conns(workload::conn_rate(t.addr, args.workers, duration).await)
        }
        Test::Echo => {
            Outcome::Echo(workload::echo_latency(t.addr, args.echo_conns, duration).await)
        }
    };
    let cpu = match (cpu0, t.cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let per_sec = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let (summary, elapsed, errors) = match outcome {
        Outcome::Upload(r) => {
            totals.add_upload(&r, cpu);
            let s = format!("upload    {:>9.1} MB/s", per_sec(r.bytes, r.elapsed) / 1e6);
            (s, r.elapsed, r.errors)
        }
        Outcome::Download(r) => {
            totals.add_download(&r, cpu);
            let s = format!("download  {:>9.1} MB/s", per_sec(r.bytes, r.elapsed) / 1e6);
            (s, r.elapsed, r.errors)
        }
        Outcome::Conns(r) => {
            totals.add_conns(&r, cpu);
            let s = format!("conns     {:>9.0} conn/s", per_sec(r.ok, r.elapsed));
            (s, r.elapsed, r.errors)
        }
        Outcome::Echo(mut r) => {
            let p50 = r.hist.quantile_us(0.5).unwrap_or(f64::NAN);
            let p99 = r.hist.quantile_us(0.99).unwrap_or(f64::NAN);
            let s = format!(
                "echo      {:>9.0} msg/s  p50 {p50:.1} µs  p99 {p99:.1} µs",
                per_sec(r.hist.count(), r.elapsed)
            );
            totals.add_echo(&r, cpu);
            (s, r.elapsed, r.errors)
        }
    };
    let busy = cpu
        .map(|c| {
            format!(
                "  busy {:.0}%",
                100.0 * c.as_secs_f64() / elapsed.as_secs_f64().max(1e-9)
            )
        })
        .unwrap_or_default();
    format!("{:<8} {summary}  errors {errors}{busy}", t.name)
}
