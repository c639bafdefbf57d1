//! `rate-limit sessions` (frontend), `maxsessrate` and `maxconnrate` (global) side by side
//! with HAProxy 2.6 on the same config: a burst of clients connects at once, and the moments
//! their sessions start (each client reads the server's banner) must follow HAProxy's: the
//! limit's worth at once, then about the limit per second, the rest waiting in the backlog.
//! Connections a `tcp-request connection` rule refuses are not sessions and use none of the
//! session rate. `show stat`'s `rate_lim` and `show info`'s limits read as HAProxy's.
//!
//! Side by side at `nbthread 1`: with two threads HAProxy 2.6 lets more than the limit
//! through at once (8 for a limit of 5, measured: each thread's listener sees the room
//! before the other's sessions are counted), while rolelb reserves each place before it
//! accepts, so its limit holds at any `nbthread` (checked alone at `nbthread 2`).

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Haproxy, NamedServer, Rolelb, free_port, stat_row, stats_cli};

/// Clients in a burst.
const BURST: usize = 14;
/// Moments (after the first session) at which the sessions started so far are compared:
/// between the moments HAProxy's counter lets one through at a rate of 5 (every 200 ms from
/// 1 s on), so a few milliseconds of scheduling do not change the count.
const CHECKPOINTS_MS: [u64; 4] = [500, 1100, 1500, 2300];

fn config(global: &str, frontend: &str, port: u16, sock: &Path, server: &NamedServer) -> String {
    format!(
        "global\n    stats socket {}\n    nbthread 1\n{global}\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 20s\n    \
         timeout server 20s\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    maxconn 1000\n{frontend}    default_backend be\n\
         backend be\n    server s {}\n",
        sock.display(),
        server.addr()
    )
}

/// Connects `BURST` clients at once from `from`; each sends when it reads its banner.
fn burst(port: u16, from: Ipv4Addr, n: usize, done: &mpsc::Sender<Instant>) -> Vec<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut conns = Vec::new();
    for _ in 0..n {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.bind(&SocketAddr::from((from, 0)).into())
            .expect("bind the client address");
        s.connect(&addr.into()).expect("connect to the proxy");
        let stream: TcpStream = s.into();
        let mut reader = stream.try_clone().expect("clone");
        let done = done.clone();
        thread::spawn(move || {
            reader
                .set_read_timeout(Some(Duration::from_secs(8)))
                .expect("timeout");
            let mut byte = [0u8; 1];
            if matches!(reader.read(&mut byte), Ok(1)) {
                let _ = done.send(Instant::now());
            }
        });
        conns.push(stream);
    }
    conns
}

/// When each session of a burst started, in ms after the first, within 3 s.
fn session_starts(port: u16) -> Vec<u64> {
    let (tx, rx) = mpsc::channel();
    let _conns = burst(port, Ipv4Addr::LOCALHOST, BURST, &tx);
    let mut starts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(at) => starts.push(at),
            Err(_) => break,
        }
    }
    let first = starts.iter().min().copied().expect("at least one session");
    let mut ms: Vec<u64> = starts
        .iter()
        .map(|t| u64::try_from(t.duration_since(first).as_millis()).unwrap_or(u64::MAX))
        .collect();
    ms.sort_unstable();
    ms
}

/// Sessions started by each checkpoint.
fn counts(starts: &[u64]) -> Vec<usize> {
    CHECKPOINTS_MS
        .iter()
        .map(|c| starts.iter().filter(|&&t| t <= *c).count())
        .collect()
}

/// Runs `global`/`frontend` lines under `proxy` (`nbthread 1` unless `global` says another);
/// what a burst shows, and `show stat`'s `rate_lim` of the frontend and `show info`'s rate
/// limits.
fn run(proxy: &str, global: &str, frontend: &str, server: &NamedServer) -> (Vec<u64>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("stats.sock");
    let port = free_port();
    let cfg = config(global, frontend, port, &sock, server);
    let running: Box<dyn std::any::Any> = if proxy == "haproxy" {
        Box::new(Haproxy::start(&cfg))
    } else {
        Box::new(Rolelb::start(&cfg))
    };
    let starts = session_starts(port);
    let stat = stats_cli(&sock, "show stat");
    let rate_lim = stat_row(&stat, "fe", "FRONTEND")
        .and_then(|r| r.get("rate_lim").cloned())
        .unwrap_or_default();
    let info = stats_cli(&sock, "show info");
    let limits: Vec<&str> = info
        .lines()
        .filter(|l| l.starts_with("ConnRateLimit:") || l.starts_with("SessRateLimit:"))
        .collect();
    drop(running);
    (
        starts,
        format!("rate_lim={rate_lim:?} {}", limits.join(" ")),
    )
}

/// The same burst under both proxies: the counts at each checkpoint within one of each other
/// (and the first one exact), the same stats; rolelb's counts.
fn side_by_side(global: &str, frontend: &str) -> Vec<usize> {
    let s = NamedServer::start("s");
    let (ha_starts, ha_stats) = run("haproxy", global, frontend, &s);
    let (rb_starts, rb_stats) = run("rolelb", global, frontend, &s);
    let (ha, rb) = (counts(&ha_starts), counts(&rb_starts));
    let what = format!(
        "{global}{frontend}: HAProxy {ha:?} at {CHECKPOINTS_MS:?} ms ({ha_starts:?}), rolelb \
         {rb:?} ({rb_starts:?})"
    );
    assert_eq!(rb[0], ha[0], "{what}");
    for (r, h) in rb.iter().zip(&ha) {
        assert!(r.abs_diff(*h) <= 1, "{what}");
    }
    assert_eq!(rb_stats, ha_stats, "stats: {what}");
    rb
}

#[test]
fn rate_limit_sessions_lets_the_limit_through_then_about_the_limit_per_second() {
    let rb = side_by_side("", "    rate-limit sessions 5\n");
    // 5 at once, then one every 200 ms from 1 s on (the first second's five weigh less as
    // it slides away): HAProxy's 999, 1199, 1398, 1598, 1799, 1999, 2198...
    assert_eq!(rb[0], 5, "{rb:?}");
    assert_eq!(rb[1], 6, "{rb:?}");
    assert!((11..=13).contains(&rb[3]), "{rb:?}");
}

#[test]
fn maxsessrate_and_maxconnrate_limit_every_frontend_together() {
    for global in ["    maxsessrate 5\n", "    maxconnrate 5\n"] {
        let rb = side_by_side(global, "");
        assert_eq!(rb[0], 5, "{global}: {rb:?}");
    }
    // Unlimited: every client at once.
    let rb = side_by_side("", "");
    assert_eq!(rb[0], BURST, "{rb:?}");
}

#[test]
fn refused_connections_use_none_of_the_session_rate() {
    let s = NamedServer::start("s");
    let frontend = "    rate-limit sessions 5\n    \
                    tcp-request connection reject if { src 127.0.0.2 }\n";
    for proxy in ["haproxy", "rolelb"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("stats.sock");
        let port = free_port();
        let cfg = config("", frontend, port, &sock, &s);
        let running: Box<dyn std::any::Any> = if proxy == "haproxy" {
            Box::new(Haproxy::start(&cfg))
        } else {
            Box::new(Rolelb::start(&cfg))
        };
        // Ten refused clients first, each reset at once.
        let (tx, rx) = mpsc::channel();
        let refused = burst(port, Ipv4Addr::new(127, 0, 0, 2), 10, &tx);
        let dcon = |csv: &str| stat_row(csv, "fe", "FRONTEND").and_then(|r| r.get("dcon").cloned());
        let deadline = Instant::now() + Duration::from_secs(3);
        while dcon(&stats_cli(&sock, "show stat")).as_deref() != Some("10") {
            assert!(
                Instant::now() < deadline,
                "{proxy}: the ten were not refused"
            );
            thread::sleep(Duration::from_millis(20));
        }
        assert!(
            rx.try_recv().is_err(),
            "{proxy}: a refused client got a banner"
        );
        drop(refused);
        // Then five clients the rule lets through: the rate is untouched, all at once.
        let (tx, rx) = mpsc::channel();
        let _served = burst(port, Ipv4Addr::LOCALHOST, 5, &tx);
        let deadline = Instant::now() + Duration::from_millis(400);
        for i in 0..5 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                rx.recv_timeout(left).is_ok(),
                "{proxy}: client {i} of 5 waited: the refused ones used the rate"
            );
        }
        drop(running);
    }
}

#[test]
fn rolelb_holds_the_limits_exactly_with_two_threads() {
    let s = NamedServer::start("s");
    for (global, frontend) in [
        ("    nbthread 2\n", "    rate-limit sessions 5\n"),
        ("    nbthread 2\n    maxsessrate 4\n", ""),
        ("    nbthread 2\n    maxconnrate 3\n", ""),
    ] {
        let (starts, _) = run("rolelb", global, frontend, &s);
        let limit = if frontend.is_empty() {
            global.trim_end().rsplit(' ').next().expect("a limit")
        } else {
            "5"
        };
        let limit: usize = limit.parse().expect("a number");
        let at_once = starts.iter().filter(|&&t| t < 900).count();
        assert_eq!(at_once, limit, "{global}{frontend}: {starts:?}");
    }
}
