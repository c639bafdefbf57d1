//! `rolelb-bench`: rolelb against HAProxy 2.6, same config, same machine, same run.
//!
//! It starts echo/sink/source/hold backends in-process on 127.0.0.1 and, for each
//! `nbthread` asked for (1 and 2 by default), five proxies reading one HAProxy-syntax config
//! that differs only in its ports (and `option splice-auto` for two): HAProxy, HAProxy
//! with `option splice-auto`, rolelb, rolelb with `option splice-auto`, and a second plain
//! HAProxy for an A/A pair that shows the noise; every target has its own two backends, and
//! the run has its own network namespace (see [`netns`]). It measures idle-session memory
//! once, then in rounds, in an order that gives every target the same mean place in a pass
//! (see [`measure::pass_order`]) so drift in the machine's load and what one measurement
//! leaves for the next fall on every target alike: short connections, ping-pong latency, bulk
//! upload and download, and the echo while 1,000 etcd members change (against a real etcd
//! and an extra etcd-watching rolelb per `nbthread`, see [`churn`]). The output is one table
//! per `nbthread` with rolelb/HAProxy and A/A ratios; the process exits non-zero only when
//! setup fails.

mod backend;
mod churn;
mod histogram;
mod machine;
mod measure;
mod netns;
mod profile;
mod proxy;
mod report;
mod syscalls;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;

use crate::measure::{
    ChurnVia, Target, Test, measure, measure_churn, measure_idle, pass_order, warm_up,
};
use crate::proxy::{Kind, Proxy, Variant};
use crate::report::{Group, Idle, Shape, Totals};

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
    /// The etcd binary for the churn test (Debian's etcd-server).
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Seconds per measurement (default 1, or 0.5 with --quick).
    #[arg(long, value_name = "N")]
    seconds: Option<f64>,
    /// Short smoke run: one round, 0.5 s measurements, 1,000 idle sessions, 200 etcd
    /// members (≈ 1 min in all); not a measurement.
    #[arg(long)]
    quick: bool,
    /// Rounds over all tests and targets (default 6, or 1 with --quick); they go in pairs,
    /// the second in the first's order backwards.
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// `nbthread` values to compare, each with its own five proxies.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [1u32, 2])]
    nbthread: Vec<u32>,
    /// Concurrent streams in the bulk tests.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Concurrent connectors in the short-connection test.
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// Persistent connections in the ping-pong test.
    #[arg(long, default_value_t = 32)]
    echo_conns: usize,
    /// Idle sessions opened through each proxy for the memory row (default 9,900, at most
    /// 9,900; 1,000 with --quick).
    #[arg(long, value_name = "N")]
    idle_sessions: Option<usize>,
    /// etcd members put per churn pass (default 1,000, 200 with --quick; 0 leaves the etcd
    /// churn row out and starts neither etcd nor the etcd-watching rolelb).
    #[arg(long, value_name = "N")]
    churn_members: Option<usize>,
    /// Tokio worker threads for the load generator and backends.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Instead of the benchmark: count each proxy's system calls (`strace -c -f`) for N
    /// short connections at the first --nbthread, and print both tables side by side.
    #[arg(long, value_name = "N")]
    syscalls: Option<u64>,
    /// Instead of the benchmark: sample each proxy's CPU (`perf record`) for N short
    /// connections at the first --nbthread, and print where it went side by side (kernel,
    /// user space, the busiest user-space functions).
    #[arg(long, value_name = "N", conflicts_with = "syscalls")]
    profile: Option<u64>,
    /// Only these rows (a profile of one workload; the report leaves the others out).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ROW,...")]
    only: Vec<Row>,
    /// Measure in the host's network namespace, with its TIME_WAIT settings, instead of the
    /// bench's own namespace where closed connections leave no TIME_WAIT (needs root).
    #[arg(long)]
    host_net: bool,
    /// The strace binary for --syscalls.
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/strace")]
    strace: PathBuf,
    /// The perf binary for --profile.
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/perf")]
    perf: PathBuf,
}

/// A row of the report, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Row {
    /// Connections/s and CPU per connection.
    Short,
    /// Ping-pong messages/s, latency and CPU per message.
    Echo,
    /// Bulk upload.
    Upload,
    /// Bulk download.
    Download,
    /// Echo latency during etcd churn.
    Churn,
    /// RSS per idle session.
    Idle,
}

impl Row {
    fn test(self) -> Option<Test> {
        match self {
            Row::Short => Some(Test::ShortConns),
            Row::Echo => Some(Test::Echo),
            Row::Upload => Some(Test::Upload),
            Row::Download => Some(Test::Download),
            Row::Churn => Some(Test::Churn),
            Row::Idle => None,
        }
    }
}

/// Pause between measurements so sockets from one do not weigh on the next.
const SETTLE: Duration = Duration::from_millis(200);

/// Descriptors the bench keeps for itself beside the idle sessions' two each (listeners,
/// the etcd client, the runtime, stdio).
const OWN_FDS: u64 = 150;

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.host_net
        && let Err(e) = netns::enter()
    {
        eprintln!("rolelb-bench: {e:#}");
        return ExitCode::from(1);
    }
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

/// The run's settings after defaults and limits.
struct Plan {
    duration: Duration,
    rounds: u32,
    idle_sessions: usize,
    churn_members: usize,
    tests: Vec<Test>,
}

impl Plan {
    fn from(args: &Args, fd_limit: u64) -> Result<Plan> {
        let secs = args.seconds.unwrap_or(if args.quick { 0.5 } else { 1.0 });
        if !(secs > 0.0 && secs <= 600.0) {
            bail!("--seconds must be in (0, 600], got {secs}");
        }
        if args.nbthread.is_empty() || args.nbthread.iter().any(|n| !(1..=64).contains(n)) {
            bail!(
                "--nbthread wants values from 1 to 64, got {:?}",
                args.nbthread
            );
        }
        let asked = args.idle_sessions.unwrap_or(if args.quick {
            1_000
        } else {
            proxy::MAX_IDLE_SESSIONS
        });
        if asked > proxy::MAX_IDLE_SESSIONS {
            bail!(
                "--idle-sessions {asked}: at most {} fit the generated maxconn {}",
                proxy::MAX_IDLE_SESSIONS,
                proxy::MAXCONN
            );
        }
        // The bench holds both ends of every idle session (client and backend).
        let room = usize::try_from(fd_limit.saturating_sub(OWN_FDS) / 2).unwrap_or(usize::MAX);
        let idle_sessions = asked.min(room);
        if idle_sessions < asked {
            println!(
                "NOTE: descriptor limit {fd_limit} leaves room for {idle_sessions} idle sessions, not {asked}"
            );
        }
        let churn_members = args
            .churn_members
            .unwrap_or(if args.quick { 200 } else { 1_000 });
        let mut tests = vec![Test::ShortConns, Test::Echo, Test::Upload, Test::Download];
        if churn_members > 0 {
            tests.push(Test::Churn);
        }
        if !args.only.is_empty() {
            tests.retain(|t| args.only.iter().any(|r| r.test() == Some(*t)));
        }
        Ok(Plan {
            duration: Duration::from_secs_f64(secs),
            rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 6 }).max(1),
            idle_sessions,
            churn_members,
            tests,
        })
    }
}

async fn run(args: Args) -> Result<()> {
    check_program(&args.haproxy, "--haproxy")?;
    check_program(&args.rolelb, "--rolelb")?;
    if let Some(conns) = args.syscalls {
        let work = WorkDir::create()?;
        let nbthread = args.nbthread.first().copied().unwrap_or(1);
        return syscalls::run(
            &args.haproxy,
            &args.rolelb,
            &args.strace,
            &work.0,
            nbthread,
            args.workers,
            conns,
        )
        .await;
    }
    if let Some(conns) = args.profile {
        let work = WorkDir::create()?;
        let nbthread = args.nbthread.first().copied().unwrap_or(1);
        return profile::run(
            &args.haproxy,
            &args.rolelb,
            &args.perf,
            &work.0,
            nbthread,
            args.workers,
            conns,
        )
        .await;
    }
    let fd_limit = proxy::raise_nofile_limit()?;
    let plan = Plan::from(&args, fd_limit)?;

    let started = std::time::Instant::now();
    let machine = machine::Machine::detect();
    let load_start = machine::load_average();
    println!("rolelb-bench {}", env!("CARGO_PKG_VERSION"));
    println!(
        "machine: {} CPUs (nproc), {}, kernel {}, {}",
        machine.nproc, machine.cpu_model, machine.kernel, machine.memory
    );
    println!("haproxy: {}", proxy::version_of(&args.haproxy));
    println!("rolelb:  {}", proxy::version_of(&args.rolelb));
    println!(
        "setup: nbthread {:?}; per nbthread: haproxy, haproxy + option splice-auto, rolelb, rolelb + option splice-auto, haproxy#2 (A/A); \
         load generator and backends share this process on {} tokio worker thread(s); \
         all traffic on 127.0.0.1 in {}; descriptor limit {fd_limit} (inherited by the proxies)",
        args.nbthread,
        args.client_threads.max(1),
        netns::describe(args.host_net)
    );
    let secs = plan.duration.as_secs_f64();
    println!(
        "plan: idle-session RSS once ({} sessions per proxy); then {} round(s) x {} tests x {} targets x {secs} s \
         (etcd churn: {} members per pass), targets in a new order each round (rounds go in pairs, the second in the first's order backwards)",
        plan.idle_sessions,
        plan.rounds,
        plan.tests.len(),
        1 + 4 * args.nbthread.len(),
        plan.churn_members
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
    // Every target gets its own two backends: the `TIME_WAIT` sockets one target's short
    // connections leave towards its backends then do not slow another target's connects
    // (the kernel searches for a free port per destination).
    let mut backends = vec![backend::start(2).await?];
    let mut etcd = if plan.churn_members > 0 {
        let e = churn::Etcd::start(&args.etcd, &work.0).await?;
        println!("started etcd pid {} at {}", e.pid(), e.endpoint);
        Some(e)
    } else {
        None
    };

    let mut proxies: Vec<Proxy> = Vec::new();
    let mut targets: Vec<Target> = vec![Target {
        name: "direct".into(),
        addr: backends[0].addrs[0],
        proxy: None,
        churn: ChurnVia {
            proxy: None,
            addr: backends[0].addrs[0],
            prefix: churn::UNWATCHED.into(),
            watcher: None,
        },
    }];
    let mut groups = Vec::new();
    let mut shown_config = false;
    for &nbthread in &args.nbthread {
        let plain = Variant {
            nbthread,
            splice_auto: false,
        };
        let spliced = Variant {
            splice_auto: true,
            ..plain
        };
        let mut idx = [0usize; 5];
        for (slot, (kind, name, variant)) in [
            (Kind::Haproxy, "haproxy", plain),
            (Kind::Haproxy, "haproxy+splice", spliced),
            (Kind::Rolelb, "rolelb", plain),
            (Kind::Rolelb, "rolelb+splice", spliced),
            (Kind::Haproxy, "haproxy#2", plain),
        ]
        .into_iter()
        .enumerate()
        {
            let label = format!("{name}/t{nbthread}");
            let addr = proxy::free_ports(1)?[0];
            let own = backend::start(2).await?;
            let cfg = proxy::config_text(addr, &own.addrs, variant);
            backends.push(own);
            if !shown_config {
                println!(
                    "\nconfig (haproxy/t{nbthread}'s; the others differ in the bind port, the two server ports (every target has its own backends), nbthread, and `option splice-auto` for the +splice ones):"
                );
                for line in cfg.lines() {
                    println!("  {line}");
                }
                println!();
                shown_config = true;
            }
            let program = if kind == Kind::Rolelb {
                &args.rolelb
            } else {
                &args.haproxy
            };
            let p = Proxy::start(kind, &label, program, &work.0, addr, &cfg)?;
            println!("started {label} pid {} on {addr}", p.pid());
            proxies.push(p);
            idx[slot] = targets.len();
            targets.push(Target {
                name: label,
                addr,
                proxy: Some(proxies.len() - 1),
                churn: ChurnVia {
                    proxy: Some(proxies.len() - 1),
                    addr,
                    prefix: churn::UNWATCHED.into(),
                    watcher: None,
                },
            });
        }
        if let Some(etcd) = &etcd {
            let label = format!("rolelb+etcd/t{nbthread}");
            let ports = proxy::free_ports(3)?;
            let prefix = churn::prefix_for(nbthread);
            let own = backend::start(2).await?;
            let shared = proxy::config_text(ports[0], &own.addrs, plain);
            backends.push(own);
            let cfg = churn::rolelb_config(&shared, ports[1], &etcd.endpoint, ports[2], &prefix);
            let p = Proxy::start(Kind::Rolelb, &label, &args.rolelb, &work.0, ports[0], &cfg)
                .context("starting the etcd-watching rolelb for the churn row")?;
            println!(
                "started {label} pid {} on {} (watches {prefix}/ at {}; admin {})",
                p.pid(),
                ports[0],
                etcd.endpoint,
                ports[1]
            );
            if nbthread == args.nbthread[0] {
                println!("  its config adds to the shared one:");
                for line in cfg.lines().filter(|l| !shared.contains(l)) {
                    println!("  {line}");
                }
            }
            proxies.push(p);
            targets[idx[2]].churn = ChurnVia {
                proxy: Some(proxies.len() - 1),
                addr: ports[0],
                prefix,
                watcher: Some(ports[1]),
            };
        }
        groups.push(Group {
            title: format!("nbthread {nbthread}"),
            direct: 0,
            haproxy: idx[0],
            splice: idx[1],
            rolelb: idx[2],
            rolelb_splice: idx[3],
            haproxy2: idx[4],
        });
    }
    println!("all proxies started");

    for t in &targets {
        warm_up(&t.name, t.addr, t.proxy.map(|i| &proxies[i])).await?;
        if t.churn.addr != t.addr {
            warm_up(&t.name, t.churn.addr, t.churn.proxy.map(|i| &proxies[i])).await?;
        }
    }

    // Idle-session memory first, on fresh processes, once per proxy.
    let mut idle: Vec<Option<Idle>> = vec![None; targets.len()];
    let mut raw = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let Some(p) = t.proxy.map(|i| &proxies[i]) else {
            continue;
        };
        if !args.only.is_empty() && !args.only.contains(&Row::Idle) {
            continue;
        }
        let (result, line) = measure_idle(p, t.addr, plan.idle_sessions).await;
        eprintln!("{line}");
        raw.push(line);
        idle[i] = result;
    }

    let shape = Shape {
        streams: args.streams,
        workers: args.workers,
        echo_conns: args.echo_conns,
        idle_sessions: plan.idle_sessions,
        churn_members: plan.churn_members,
    };
    // One `Totals` per target per round: the table shows totals and per-round spread.
    let mut rounds_totals: Vec<Vec<Totals>> = Vec::new();
    for round in 0..plan.rounds as usize {
        let mut totals: Vec<Totals> = vec![Totals::default(); targets.len()];
        for (ti, test) in plan.tests.iter().enumerate() {
            for i in pass_order(targets.len(), round, ti) {
                let line = match (test, etcd.as_mut()) {
                    (Test::Churn, Some(etcd)) => {
                        measure_churn(
                            etcd,
                            &targets[i],
                            &proxies,
                            plan.churn_members,
                            &mut totals[i],
                        )
                        .await
                    }
                    _ => {
                        let p = targets[i].proxy.map(|i| &proxies[i]);
                        measure(*test, &targets[i], p, &shape, plan.duration, &mut totals[i]).await
                    }
                };
                let line = format!("round {} {line}", round + 1);
                eprintln!("{line}");
                raw.push(line);
                tokio::time::sleep(SETTLE).await;
            }
        }
        rounds_totals.push(totals);
    }
    if let Some(first) = rounds_totals.first_mut() {
        for (t, i) in first.iter_mut().zip(&idle) {
            t.idle = *i;
        }
    }
    // A proxy that died mid-run is a finding, not a setup failure: its errors are in the table.
    let deaths: Vec<String> = proxies.iter_mut().filter_map(Proxy::exit_report).collect();

    println!("\n{}", report::table(&mut rounds_totals, &groups, &shape));
    println!("OS threads at the end, and bytes of output (no logging configured):");
    for p in &proxies {
        println!(
            "  {:<20} {:>3} threads  {:>6} bytes",
            p.label(),
            p.threads().map_or("?".to_string(), |n| n.to_string()),
            p.log_bytes()
        );
    }
    println!();
    for d in &deaths {
        println!("WARNING: {d}\n");
    }
    println!(
        "per measurement (busy = proxy CPU time / wall time, 100% = one core; waited = time its threads were runnable but waited for a CPU / wall time):"
    );
    for line in &raw {
        println!("  {line}");
    }
    if let Some(load) = machine::load_average() {
        println!("load average (1 min) at end: {load:.2}");
    }
    println!("total run time: {:.0} s", started.elapsed().as_secs_f64());
    drop(proxies);
    drop(etcd.take());
    Ok(())
}

/// Fails early with a clear message when a binary path is wrong.
fn check_program(path: &Path, flag: &str) -> Result<()> {
    if !path.is_file() {
        bail!("{flag} {}: no such file", path.display());
    }
    Ok(())
}
