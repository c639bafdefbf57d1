//! `slowstart` side by side with HAProxy 2.6: a weight-1 server that comes back ramps up.
//!
//! HAProxy scales user weights by 16 and ramps a returning server's effective weight once a
//! second, so even at weight 1 (the default) the server starts with 1/17 of new connections
//! next to a weight-1 peer and reaches 1/2 when `slowstart` ends. The same two servers sit
//! behind HAProxy and rolelb at once; one goes down and comes back, and clients of both
//! proxies are counted per second of the ramp. The `throttle` column of `show stat` is read
//! from both during the ramp.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{Haproxy, NamedServer, Rolelb, free_port, stats_cli, wait_until, who_answers};

/// `slowstart` of the returning server, in seconds.
const SLOWSTART: u64 = 6;

/// The shared part of both configs; `extra_global` and `extra` add each one's metrics endpoint.
fn config(
    balance: &str,
    port: u16,
    sock: &Path,
    (a, b): (u16, u16),
    extra_global: &str,
    extra: &str,
) -> String {
    format!(
        "global\n    stats socket {} level admin\n{extra_global}\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
         listen p\n    bind 127.0.0.1:{port}\n    balance {balance}\n\
         \x20   server a 127.0.0.1:{a} check inter 100 fall 1 rise 1 slowstart {SLOWSTART}s\n\
         \x20   server b 127.0.0.1:{b}\n{extra}",
        sock.display()
    )
}

/// `haproxy_server_current_throttle` of `p/a` in the Prometheus text at `addr`/metrics.
fn metrics_throttle(addr: SocketAddr) -> Option<i64> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    text.lines()
        .find(|l| {
            l.starts_with("haproxy_server_current_throttle{")
                && l.contains("proxy=\"p\"")
                && l.contains("server=\"a\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
}

/// The `show stat` row of server `a`: column name to value.
fn stat_row(sock: &Path) -> HashMap<String, String> {
    common::stat_row(&stats_cli(sock, "show stat"), "p", "a").unwrap_or_default()
}

/// Clients in turn through `addr` until `until`: (seconds since `since`, server name).
fn count(addr: SocketAddr, since: Instant, until: Instant) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    while Instant::now() < until {
        if let Ok(name) = who_answers(addr) {
            seen.push((since.elapsed().as_secs(), name));
        }
        thread::sleep(Duration::from_millis(5));
    }
    seen
}

/// Share of `a` in each second of the ramp.
fn shares(seen: &[(u64, String)]) -> Shares {
    (0..SLOWSTART)
        .map(|sec| {
            let in_sec: Vec<_> = seen.iter().filter(|(s, _)| *s == sec).collect();
            let a = in_sec.iter().filter(|(_, n)| n == "a").count();
            (a as f64 / in_sec.len().max(1) as f64, in_sec.len())
        })
        .collect()
}

/// HAProxy's share of a weight-1 server in second `k` of the ramp next to a weight-1 peer.
fn expected_share(k: u64) -> f64 {
    let eweight = ((16 * k + SLOWSTART) / SLOWSTART) as f64;
    eweight / (eweight + 16.0)
}

/// Share of `a` in each second of the ramp, with the number of clients it is taken over.
type Shares = Vec<(f64, usize)>;

/// What both proxies showed while server `a` came back under `slowstart`.
struct SideBySide {
    /// Share of `a` per second of the ramp: HAProxy, rolelb.
    shares: (Shares, Shares),
    /// `show stat` of `a` at 2.5 s: HAProxy, rolelb.
    rows: (HashMap<String, String>, HashMap<String, String>),
    /// `haproxy_server_current_throttle` of `a` at 2.5 s: HAProxy, rolelb.
    metrics: (Option<i64>, Option<i64>),
    /// Everything above as a table, for messages and the log.
    report: String,
}

impl SideBySide {
    fn col(row: &HashMap<String, String>, c: &str) -> String {
        row.get(c).cloned().unwrap_or_default()
    }
}

/// Runs HAProxy and rolelb with `balance` in front of the same two servers, takes `a` down
/// and back, and records what clients of each saw during the `slowstart` that follows.
fn side_by_side(balance: &str) -> SideBySide {
    let mut a = NamedServer::start("a");
    let a_addr = a.addr();
    let b = NamedServer::start("b");
    let servers = (a.port(), b.port());
    let dir = tempfile::tempdir().expect("temporary directory");
    let (h_sock, r_sock) = (
        dir.path().join("haproxy.sock"),
        dir.path().join("rolelb.sock"),
    );
    let (h_port, r_port) = (free_port(), free_port());
    let (h_prom, r_admin) = (free_port(), free_port());
    let haproxy = Haproxy::start(&config(
        balance,
        h_port,
        &h_sock,
        servers,
        "",
        &format!(
            "frontend prom\n    mode http\n    bind 127.0.0.1:{h_prom}\n    http-request use-service prometheus-exporter if {{ path /metrics }}\n"
        ),
    ));
    let rolelb = Rolelb::start(&config(
        balance,
        r_port,
        &r_sock,
        servers,
        &format!("    admin bind 127.0.0.1:{r_admin}\n"),
        "",
    ));
    let h_prom = SocketAddr::from(([127, 0, 0, 1], h_prom));
    let r_admin = SocketAddr::from(([127, 0, 0, 1], r_admin));
    let h_addr = SocketAddr::from(([127, 0, 0, 1], h_port));
    let r_addr = SocketAddr::from(([127, 0, 0, 1], r_port));

    // Down: both proxies send everything to b.
    a.stop();
    let down = |sock: &Path| stat_row(sock).get("status").is_some_and(|s| s == "DOWN");
    assert!(
        wait_until(Duration::from_secs(5), || down(&h_sock) && down(&r_sock)),
        "a is not DOWN in both: haproxy {:?}, rolelb {:?}",
        stat_row(&h_sock).get("status"),
        stat_row(&r_sock).get("status")
    );
    // Back: the ramp starts in both within one check interval.
    let _a = NamedServer::start_on("a", a_addr);
    let back = Instant::now();
    let until = back + Duration::from_secs(SLOWSTART);
    let h_count = thread::spawn(move || count(h_addr, back, until));
    let r_count = thread::spawn(move || count(r_addr, back, until));
    // The throttle column mid-ramp, read from both at the same moment (second 2).
    thread::sleep(Duration::from_millis(2500));
    let rows = (stat_row(&h_sock), stat_row(&r_sock));
    let metrics = (metrics_throttle(h_prom), metrics_throttle(r_admin));
    let h_seen = h_count.join().expect("haproxy clients");
    let r_seen = r_count.join().expect("rolelb clients");
    drop((haproxy, rolelb));

    let shares = (shares(&h_seen), shares(&r_seen));
    let mut report = format!(
        "balance {balance}\nsecond | HAProxy's ramp at roundrobin | HAProxy a share (n) | rolelb a share (n)\n"
    );
    for k in 0..SLOWSTART as usize {
        report.push_str(&format!(
            "{k} | {:.3} | {:.3} ({}) | {:.3} ({})\n",
            expected_share(k as u64),
            shares.0[k].0,
            shares.0[k].1,
            shares.1[k].0,
            shares.1[k].1
        ));
    }
    let col = SideBySide::col;
    report.push_str(&format!(
        "mid-ramp show stat: HAProxy status {} throttle {}% weight {}, rolelb status {} throttle {}% weight {}\n",
        col(&rows.0, "status"),
        col(&rows.0, "throttle"),
        col(&rows.0, "weight"),
        col(&rows.1, "status"),
        col(&rows.1, "throttle"),
        col(&rows.1, "weight")
    ));
    report.push_str(&format!(
        "mid-ramp /metrics haproxy_server_current_throttle: HAProxy {:?}, rolelb {:?}\n",
        metrics.0, metrics.1
    ));
    println!("{report}");
    SideBySide {
        shares,
        rows,
        metrics,
        report,
    }
}

impl SideBySide {
    /// Per-second shares within `tolerance` of each other, with enough clients to judge.
    fn assert_same_shares(&self, tolerance: f64) {
        let report = &self.report;
        for k in 0..SLOWSTART as usize {
            let (h, r) = (self.shares.0[k], self.shares.1[k]);
            assert!(
                h.1 >= 10 && r.1 >= 10,
                "too few clients in second {k} to judge:\n{report}"
            );
            assert!(
                (h.0 - r.0).abs() <= tolerance,
                "second {k}: rolelb gives a a share of {:.3}, HAProxy {:.3}\n{report}",
                r.0,
                h.0
            );
        }
    }

    /// The throttle of `show stat` and `/metrics` from both: (HAProxy, rolelb), checked to be
    /// within `tolerance` points of each other, and rolelb's two to agree.
    fn assert_same_throttle(&self, tolerance: i64) -> (i64, i64) {
        let report = &self.report;
        let throttle = |row: &HashMap<String, String>| -> i64 {
            Self::col(row, "throttle")
                .parse()
                .unwrap_or_else(|_| panic!("no throttle mid-ramp:\n{report}"))
        };
        let (ht, rt) = (throttle(&self.rows.0), throttle(&self.rows.1));
        assert!(
            (ht - rt).abs() <= tolerance,
            "throttle: HAProxy {ht}%, rolelb {rt}%\n{report}"
        );
        let (Some(hm), Some(rm)) = self.metrics else {
            panic!("no throttle in /metrics mid-ramp:\n{report}");
        };
        assert!(
            (hm - rm).abs() <= tolerance,
            "/metrics throttle: HAProxy {hm}, rolelb {rm}\n{report}"
        );
        assert_eq!(
            rt, rm,
            "rolelb's show stat and /metrics disagree:\n{report}"
        );
        assert_eq!(
            Self::col(&self.rows.1, "uweight"),
            "1",
            "the user weight stays 1:\n{report}"
        );
        (ht, rt)
    }
}

#[test]
fn slowstart_ramps_a_weight_one_server_like_haproxy() {
    let seen = side_by_side("roundrobin");
    seen.assert_same_shares(0.12);
    // Both really ramp: far below half at first, near half at the end.
    for (who, s) in [("HAProxy", &seen.shares.0), ("rolelb", &seen.shares.1)] {
        assert!(s[0].0 < 0.2, "{who} does not start low:\n{}", seen.report);
        assert!(
            s[SLOWSTART as usize - 1].0 > 0.35,
            "{who} does not end near half:\n{}",
            seen.report
        );
    }
    // One ramp step of 6 s is about 17%; the two may sit a step apart at the read.
    seen.assert_same_throttle(19);
}

#[test]
fn slowstart_keeps_static_rr_at_full_weight_like_haproxy() {
    let seen = side_by_side("static-rr");
    seen.assert_same_shares(0.12);
    // HAProxy's static algorithms do not ramp weights: a shares evenly from the start.
    for (who, s) in [("HAProxy", &seen.shares.0), ("rolelb", &seen.shares.1)] {
        assert!(s[0].0 > 0.4, "{who} ramps static-rr:\n{}", seen.report);
    }
    assert_eq!(seen.assert_same_throttle(0), (100, 100));
}
