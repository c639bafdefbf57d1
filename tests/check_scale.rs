//! 200 servers checked every 100 ms for one minute: the check interval seen by the servers
//! stays within 10% of `inter`, and rolelb's CPU use is measured and reported (bounded so a
//! regression fails the suite).

mod common;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{NamedServer, Rolelb, free_port, wait_until, who_answers};

const SERVERS: usize = 200;
const RUN: Duration = Duration::from_secs(60);

/// utime + stime of `pid` in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn two_hundred_servers_checked_every_100ms_keep_their_interval() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // One real listener per server; each records when a check connection arrived. The check
    // sends a line: a connect-only check is reset before the server accepts it, as HAProxy's.
    let arrivals: Vec<Arc<Mutex<Vec<Instant>>>> = (0..SERVERS).map(|_| Arc::default()).collect();
    let mut ports = Vec::new();
    for log in &arrivals {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        ports.push(listener.local_addr().expect("addr").port());
        let log = log.clone();
        rt.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                if let Ok(mut l) = log.lock() {
                    l.push(Instant::now());
                }
                drop(conn);
            }
        });
    }
    let app = NamedServer::start("app");
    let port = free_port();
    let mut cfg = format!(
        "global\n    nbthread 1\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    \
         timeout server 30s\n\nlisten lb\n    bind 127.0.0.1:{port}\n    default-server inter 100ms fall 3 rise 2\n    \
         option tcp-check\n    tcp-check send ping\\n\n"
    );
    for (i, p) in ports.iter().enumerate() {
        let _ = writeln!(cfg, "    server s{i} {} check port {p}", app.addr());
    }
    let lb = Rolelb::start(&cfg);
    // Every server is being checked before the measurement starts.
    let checked = |n: usize| {
        arrivals
            .iter()
            .all(|a| a.lock().map_or(0, |l| l.len()) >= n)
    };
    assert!(
        wait_until(Duration::from_secs(30), || checked(2)),
        "not every server is being checked:\n{}",
        lb.stderr_text()
    );
    let from = Instant::now();
    let cpu_before = cpu_ticks(lb.pid());
    // The measurement window, not a wait for a condition.
    std::thread::sleep(RUN);
    let cpu_used = cpu_ticks(lb.pid()) - cpu_before;
    let to = Instant::now();
    assert_eq!(
        who_answers(std::net::SocketAddr::from(([127, 0, 0, 1], port))).expect("still serving"),
        "app"
    );

    let mut gaps = Vec::new();
    let mut worst_mean = Duration::ZERO;
    for log in &arrivals {
        let l = log.lock().expect("lock");
        let window: Vec<Instant> = l
            .iter()
            .copied()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        assert!(
            window.len() >= 500,
            "a server got only {} checks in a minute",
            window.len()
        );
        let mine: Vec<Duration> = window.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = mine.iter().sum::<Duration>() / mine.len() as u32;
        let off = if mean > Duration::from_millis(100) {
            mean - Duration::from_millis(100)
        } else {
            Duration::from_millis(100) - mean
        };
        worst_mean = worst_mean.max(off);
        gaps.extend(mine);
    }
    gaps.sort();
    let (p50, p90, p99) = (
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.9),
        percentile(&gaps, 0.99),
    );
    let cpu_pct = cpu_used as f64 / RUN.as_secs_f64();
    eprintln!(
        "200 servers x inter 100ms for {RUN:?}: {} checks; interval p50 {p50:?} p90 {p90:?} p99 {p99:?}; \
         worst per-server mean off by {worst_mean:?}; rolelb CPU {cpu_pct:.1}% of one core",
        gaps.len() + SERVERS
    );
    assert!(
        worst_mean <= Duration::from_millis(10),
        "a server's mean interval is off by {worst_mean:?}"
    );
    assert!(
        p50 >= Duration::from_millis(90) && p50 <= Duration::from_millis(110),
        "p50 {p50:?}"
    );
    // The tail gets a margin for a loaded 2-core machine (threads wake late); the mean and
    // median above hold the interval itself.
    assert!(p90 <= Duration::from_millis(150), "p90 {p90:?}");
    assert!(
        cpu_pct < 60.0,
        "rolelb used {cpu_pct:.1}% of a core for 2000 checks/s"
    );
    drop(lb);
}
