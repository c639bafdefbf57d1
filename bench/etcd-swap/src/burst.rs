//! The `burst` mode: `--members` members put one by one (each its own etcd revision), then
//! all removed by one delete-range, while the data path carries traffic.
//!
//! rolelb runs two listeners: `pool`, whose servers all come from etcd (the members: hosts
//! 127.0.0.1, ports that need not listen, no checks), and `echo`, a static server in this
//! process. One persistent connection through `echo` ping-pongs 16 bytes every millisecond
//! the whole time (its own thread, blocking sockets), so its round trips show what the burst
//! does to the data path. Measured:
//! - the time from the last put returning to every member being in rolelb's table (read from
//!   `haproxy_backend_active_servers{proxy="pool"}` in `/metrics?scope=backend`, a few KB
//!   whatever the member count, polled every 20 ms only after the last put), and rolelb's CPU
//!   time (user+system, `/proc/PID/stat`) from the first put to that moment;
//! - the time from the delete-range returning to the table having no member, and its CPU;
//! - echo round trips: p50/p99 over the quiet seconds before the burst, during the same burst
//!   of puts under a prefix rolelb does not watch (what etcd and the putting client alone do
//!   to the data path on this machine), during it again under a prefix a bare etcd client
//!   watches (what etcd's serving of a watch adds, without rolelb's work), and during the
//!   burst rolelb applies;
//! - rolelb's RSS (`VmRSS`) before, at the last put (before the first poll), 1 s after all
//!   members were in, 1 s after the delete-range emptied the table, and its peak (`VmHWM`),
//!   next to the size of the members' keys and values; and the load average, as the machine
//!   may be shared.
//!
//! The whole sequence runs `--rounds` times on the same etcd and rolelb; the echo's samples of
//! each kind of window are also pooled over the rounds, as one window's p99 (its ~20 worst
//! round trips) moves several-fold from one window to the next on a shared machine. With
//! `--etcd-place apart` (the default) etcd and the putting client stand for machines of their
//! own (see [`super::LoadPlace`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etcd_client::DeleteOptions;

use super::{
    Options, cpu_time, cpu_time_of, http_get, load_average, ms, peak_rss, percentile, rss,
    wait_until,
};

const PREFIX: &str = "/bench/burst";
/// Where the same burst goes first, unwatched.
const ELSEWHERE: &str = "/bench/elsewhere";
/// Where the same burst goes next, watched by a bare client that only counts the events.
const WATCHED: &str = "/bench/watched";
/// How long the quiet echo window lasts.
const QUIET: Duration = Duration::from_secs(3);

/// Watches `prefix` from its own thread (its own client and runtime) and only counts the
/// events, until `want` have arrived: etcd then serves a watch as it does for rolelb.
fn bare_watcher(
    endpoint: String,
    prefix: &'static str,
    want: usize,
) -> Result<thread::JoinHandle<Result<usize>>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = thread::spawn(move || -> Result<usize> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut client = etcd_client::Client::connect([endpoint.as_str()], None).await?;
            let mut stream = client
                .watch(prefix, Some(etcd_client::WatchOptions::new().with_prefix()))
                .await?;
            let _ = ready_tx.send(());
            let mut seen = 0;
            while seen < want {
                match stream.message().await? {
                    Some(resp) => seen += resp.events().len(),
                    None => break,
                }
            }
            Ok(seen)
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the bare watcher did not start")?;
    Ok(handle)
}

/// The echo's threads stand for a client and a database on other machines: with
/// `short_slice` they ask for the short time slice rolelb's data path uses, so that their
/// own wakeups wait for no other thread of this machine and the round trip measures rolelb.
fn echo_thread(short_slice: bool) {
    if short_slice && let Err(e) = set_slice(ECHO_SLICE_NS) {
        eprintln!("the echo thread keeps the default time slice: {e}");
    }
}

/// The slice the echo threads ask for: the shortest Linux accepts (0.1 ms). Linux 6.12 and
/// later let a waking thread whose slice is shorter than the running one's take the CPU at
/// once; older kernels ignore it.
const ECHO_SLICE_NS: u64 = 100_000;

/// Sets the calling thread's time slice, keeping its policy (`SCHED_OTHER`) and `nice`.
#[cfg(target_os = "linux")]
fn set_slice(slice_ns: u64) -> io::Result<()> {
    // SAFETY: getpriority reads a plain integer; errno is cleared first because -1 is
    // also a valid nice value.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let errno = io::Error::last_os_error();
    if nice == -1 && errno.raw_os_error().unwrap_or(0) != 0 {
        return Err(errno);
    }
    // SAFETY: sched_attr is plain integers; all-zero is a valid value to start from.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    attr.size = u32::try_from(std::mem::size_of::<libc::sched_attr>()).unwrap_or(u32::MAX);
    attr.sched_policy = u32::try_from(libc::SCHED_OTHER).unwrap_or(0);
    attr.sched_nice = nice;
    attr.sched_runtime = slice_ns;
    // SAFETY: the kernel reads `size` bytes of `attr`, which lives across the call; pid 0
    // is the calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An echo server on its own threads; returns its port.
fn echo_server(short_slice: bool) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                echo_thread(short_slice);
                let mut buf = [0u8; 256];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// Round trips of one persistent connection, with when each ended.
type Samples = Arc<Mutex<Vec<(Instant, Duration)>>>;

/// Ping-pongs 16 bytes through `addr` every millisecond until `stop`.
fn echo_client(
    addr: SocketAddr,
    short_slice: bool,
    stop: Arc<AtomicBool>,
    samples: Samples,
) -> Result<()> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    thread::spawn(move || {
        echo_thread(short_slice);
        let msg = [b'x'; 16];
        let mut back = [0u8; 16];
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            if conn.write_all(&msg).is_err() || conn.read_exact(&mut back).is_err() {
                if !stop.load(Ordering::Relaxed) {
                    eprintln!("echo connection broke");
                }
                return;
            }
            let end = Instant::now();
            samples
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((end, end - start));
            thread::sleep(Duration::from_millis(1));
        }
    });
    Ok(())
}

/// Sorted round trips that ended within `[from, to]`.
fn window(samples: &Samples, from: Instant, to: Instant) -> Vec<Duration> {
    let mut v: Vec<Duration> = samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .map(|(_, d)| *d)
        .collect();
    v.sort();
    v
}

/// How many servers rolelb's table has in backend `pool`: its active servers in
/// `/metrics?scope=backend` (the members have no `check`, so every one in the table is
/// active, as in HAProxy). A small answer whatever the member count, unlike the admin API's
/// JSON of every server, so polling it does not load rolelb nor grow its heap.
fn servers_in_table(admin: SocketAddr) -> Option<usize> {
    let body = http_get(admin, "/metrics?scope=backend").ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("haproxy_backend_active_servers{proxy=\"pool\"} "))
        .and_then(|n| n.trim().parse().ok())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Puts `n` members under `prefix` one by one, each awaited; the bytes of keys and values.
async fn put_members(etcd: &mut etcd_client::Client, prefix: &str, n: usize) -> Result<u64> {
    let mut bytes = 0u64;
    for i in 0..n {
        let key = format!("{prefix}/members/m{i:05}");
        let value = format!(
            r#"{{"host": "127.0.0.1", "port": {}, "role": "replica"}}"#,
            10_000 + i % 50_000
        );
        bytes += (key.len() + value.len()) as u64;
        etcd.put(key, value, None).await?;
    }
    Ok(bytes)
}

/// CPU time of each of process `pid`'s threads, by thread name (threads of one name summed).
fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, Duration> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(t) = cpu_time_of(&format!("/proc/{pid}/task/{tid}/stat")) {
            *by_name.entry(name.trim().to_owned()).or_default() += t;
        }
    }
    by_name
}

/// What each thread name's CPU time grew by from `before` to `after`, biggest first.
fn thread_cpu_delta(
    before: &std::collections::BTreeMap<String, Duration>,
    after: &std::collections::BTreeMap<String, Duration>,
) -> String {
    let mut v: Vec<(&String, Duration)> = after
        .iter()
        .map(|(n, t)| {
            (
                n,
                t.saturating_sub(before.get(n).copied().unwrap_or_default()),
            )
        })
        .filter(|(_, d)| !d.is_zero())
        .collect();
    v.sort_by_key(|b| std::cmp::Reverse(b.1));
    v.iter()
        .map(|(n, d)| format!("{n} {:.2} s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one round measured.
struct Round {
    /// Echo round trips per window: quiet, the same burst unwatched, watched by a bare
    /// client, the burst rolelb applies, the delete.
    windows: [Vec<Duration>; 5],
    puts: Duration,
    all_in: Duration,
    cpu_burst: Duration,
    threads: String,
    emptied: Duration,
    cpu_delete: Duration,
    seen: usize,
    rss: [u64; 5],
    bytes: u64,
    load: String,
}

/// Names of [`Round::windows`], in order.
const WINDOWS: [&str; 5] = [
    "quiet",
    "during the same burst unwatched",
    "during the same burst watched by a bare client",
    "during the burst",
    "during the delete",
];

/// The putting client's thread stands apart too (see [`super::LoadPlace::Apart`]) while it
/// puts, and is back at the normal policy before it polls rolelb.
fn load_apart(o: &Options, apart: bool) {
    if o.etcd_place == super::LoadPlace::Apart
        && let Err(e) = super::sched_idle(apart)
    {
        eprintln!("the putting client keeps its scheduling policy: {e}");
    }
}

/// One quiet window, the unwatched and bare-watched bursts, the burst rolelb applies and
/// its delete-range.
async fn round(
    o: &Options,
    etcd: &mut super::Etcd,
    pid: u32,
    admin: SocketAddr,
    samples: &Samples,
) -> Result<Round> {
    let quiet_from = Instant::now();
    tokio::time::sleep(QUIET).await;
    let quiet_to = Instant::now();
    let rss_before = rss(pid)?;
    let load = load_average();

    load_apart(o, true);
    // The same burst where rolelb does not look: etcd's and the client's own share.
    let unwatched_from = Instant::now();
    put_members(&mut etcd.client, ELSEWHERE, o.members).await?;
    let unwatched_to = Instant::now();
    etcd.client
        .delete(ELSEWHERE, Some(DeleteOptions::new().with_prefix()))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The same burst again, watched by a bare client: what etcd's serving a watch adds.
    let watcher = bare_watcher(etcd.endpoint.clone(), WATCHED, o.members)?;
    let watched_from = Instant::now();
    put_members(&mut etcd.client, WATCHED, o.members).await?;
    let watched_to = Instant::now();
    let seen = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the bare watcher panicked"))??;
    etcd.client
        .delete(WATCHED, Some(DeleteOptions::new().with_prefix()))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The burst: one put per member, each awaited (one revision each).
    let cpu0 = cpu_time(pid)?;
    let threads0 = thread_cpu(pid);
    let first_put = Instant::now();
    let bytes = put_members(&mut etcd.client, PREFIX, o.members).await?;
    let last_put = Instant::now();
    load_apart(o, false);
    // Before the first poll.
    let rss_last_put = rss(pid)?;
    let all_in = wait_until(Duration::from_secs(300), Duration::from_millis(20), || {
        servers_in_table(admin) == Some(o.members)
    })
    .context("not every member reached the table")?;
    let cpu1 = cpu_time(pid)?;
    let threads1 = thread_cpu(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss(pid)?;

    // One delete-range removes them all in one revision.
    let cpu2 = cpu_time(pid)?;
    let deleted_from = Instant::now();
    etcd.client
        .delete(
            format!("{PREFIX}/members/"),
            Some(DeleteOptions::new().with_prefix()),
        )
        .await?;
    let deleted = Instant::now();
    let empty = wait_until(Duration::from_secs(300), Duration::from_millis(20), || {
        servers_in_table(admin) == Some(0)
    })
    .context("the table did not empty after the delete-range")?;
    let cpu3 = cpu_time(pid)?;
    let delete_to = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_deleted = rss(pid)?;
    let peak = peak_rss(pid)?;

    Ok(Round {
        windows: [
            window(samples, quiet_from, quiet_to),
            window(samples, unwatched_from, unwatched_to),
            window(samples, watched_from, watched_to),
            window(samples, first_put, all_in),
            window(samples, deleted_from, delete_to),
        ],
        puts: last_put - first_put,
        all_in: all_in - last_put,
        cpu_burst: cpu1.saturating_sub(cpu0),
        threads: thread_cpu_delta(&threads0, &threads1),
        emptied: empty - deleted,
        cpu_delete: cpu3.saturating_sub(cpu2),
        seen,
        rss: [rss_before, rss_last_put, rss_after, rss_deleted, peak],
        bytes,
        load,
    })
}

/// `p99 during the burst: 1.23× quiet, ...` for one round or the pooled samples.
fn ratios(w: &[Vec<Duration>; 5]) -> String {
    let p99 = |v: &[Duration]| percentile(v, 0.99).as_secs_f64();
    let (quiet, unwatched, burst) = (p99(&w[0]), p99(&w[1]), p99(&w[3]));
    if quiet <= 0.0 || unwatched <= 0.0 {
        return "echo p99: too few samples".to_owned();
    }
    format!(
        "echo p99 quiet / unwatched / bare watcher / burst {:.2} / {:.2} / {:.2} / {:.2} ms: burst {:.2}× quiet, {:.2}× the same burst unwatched (unwatched: {:.2}× quiet)",
        quiet * 1e3,
        unwatched * 1e3,
        p99(&w[2]) * 1e3,
        burst * 1e3,
        burst / quiet,
        burst / unwatched,
        unwatched / quiet
    )
}

/// Runs the burst `--rounds` times and prints what each round and all of them measured.
pub async fn run(o: &Options) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut etcd = super::start_etcd(&o.etcd, dir.path(), o.etcd_place).await?;
    let echo = echo_server(o.echo_short_slice)?;
    let (port, echo_port, admin_port) = (
        super::free_port()?,
        super::free_port()?,
        super::free_port()?,
    );
    let nbthread = o
        .nbthread
        .map(|n| format!("    nbthread {n}\n"))
        .unwrap_or_default();
    let rolelb = super::start_rolelb(
        &o.rolelb,
        dir.path(),
        &format!(
            "global\n{nbthread}    admin bind 127.0.0.1:{admin_port}\n\
             defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 600s\n    timeout server 600s\n\
             etcd main\n    endpoints {}\n\
             listen pool\n    bind 127.0.0.1:{port}\n    balance roundrobin\n    discover etcd main path {PREFIX}\n\
             listen echo\n    bind 127.0.0.1:{echo_port}\n    server e 127.0.0.1:{echo}\n",
            etcd.endpoint
        ),
    )?;
    let pid = rolelb.pid();
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        servers_in_table(admin) == Some(0)
    })
    .context("rolelb's admin API did not answer")?;

    let samples: Samples = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    echo_client(
        SocketAddr::from(([127, 0, 0, 1], echo_port)),
        o.echo_short_slice,
        stop.clone(),
        samples.clone(),
    )
    .context("connecting through rolelb's echo listener")?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let n = o.members;
    println!(
        "burst of {n} members put one by one, {} round(s) (nbthread {}; echo threads' slice {}; etcd and the putting client {}; load average {} before):",
        o.rounds,
        o.nbthread.map_or("default".to_owned(), |n| n.to_string()),
        if o.echo_short_slice {
            "short"
        } else {
            "default"
        },
        match o.etcd_place {
            super::LoadPlace::Apart => "apart (data on tmpfs, SCHED_IDLE)",
            super::LoadPlace::Shared => "shared (data on disk, normal priority)",
        },
        load_average()
    );
    let mut pooled: [Vec<Duration>; 5] = Default::default();
    for i in 1..=o.rounds {
        let r = round(o, &mut etcd, pid, admin, &samples).await?;
        println!("round {i} (load average {}):", r.load);
        println!(
            "  puts took {:.2} s ({:.0}/s); last put → all {n} in the table: {}; rolelb CPU from the first put: {:.2} s",
            r.puts.as_secs_f64(),
            n as f64 / r.puts.as_secs_f64(),
            ms(r.all_in),
            r.cpu_burst.as_secs_f64(),
        );
        println!("  rolelb CPU by thread: {}", r.threads);
        println!(
            "  one delete-range of all {n} → table empty: {} (rolelb CPU {:.2} s)",
            ms(r.emptied),
            r.cpu_delete.as_secs_f64(),
        );
        println!("  the bare watcher saw {} of {n} events", r.seen);
        for (what, v) in WINDOWS.iter().zip(&r.windows) {
            println!(
                "  echo round trip {what}: p50 {}   p99 {}   max {}   ({} samples)",
                ms(percentile(v, 0.50)),
                ms(percentile(v, 0.99)),
                ms(v.last().copied().unwrap_or_default()),
                v.len()
            );
        }
        println!("  {}", ratios(&r.windows));
        let [before, last_put, after, deleted, peak] = r.rss;
        println!(
            "  RSS before {}, at the last put {}, 1 s after all were in {}, 1 s after the delete {}, peak {}; members' keys+values {}",
            mib(before),
            mib(last_put),
            mib(after),
            mib(deleted),
            mib(peak),
            mib(r.bytes)
        );
        for (all, w) in pooled.iter_mut().zip(r.windows) {
            all.extend(w);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in &mut pooled {
        w.sort();
    }
    println!(
        "all {} round(s) pooled ({} quiet and {} burst samples, load average {} after): {}",
        o.rounds,
        pooled[0].len(),
        pooled[3].len(),
        load_average(),
        ratios(&pooled)
    );
    Ok(())
}
