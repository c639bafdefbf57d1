//! `stot` and `lbtot` side by side with HAProxy 2.6: the same config and the same clients —
//! balanced ones, ones a stick table holds on their server, one whose server refuses so it
//! is redispatched, one no server takes, and retries on a server that never answers — then
//! the `stot`/`lbtot` (and retry) columns of `show stat` for every server and backend, and
//! the `/metrics` counters derived from them, must be HAProxy's: a server counts a session
//! for every connect it was sent (`stot`) and a choice of the balancer (`lbtot`), never a
//! stick table's; a backend counts every session routed to it.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::{
    Haproxy, NamedServer, Rolelb, free_port, http_request, stat_row, stats_cli, wait_until,
};

/// One thing done.
enum Step<'a> {
    /// A client from 127.0.0.N connects to `lb` and reads the answering server's name.
    Ask(u8),
    /// A client connects to `plain`.
    AskPlain,
    /// A runtime-socket command (its reply is not compared).
    Cli(&'a str),
}

const STEPS: &[Step<'static>] = &[
    Step::Ask(3),
    Step::Ask(3),
    // The third server refuses: the retry is redispatched to another one.
    Step::Ask(3),
    // 127.0.0.2 is stored and then held on its server.
    Step::Ask(2),
    Step::Ask(2),
    Step::Ask(2),
    Step::Ask(3),
    Step::Cli("disable server lb/a"),
    Step::Cli("disable server lb/b"),
    Step::Cli("disable server lb/c"),
    // No server at all: refused, yet routed to the backend.
    Step::Ask(4),
    Step::Cli("enable server lb/a"),
    Step::Cli("enable server lb/b"),
    Step::Cli("enable server lb/c"),
    Step::Ask(2),
    // Three attempts on a server that refuses, without redispatch.
    Step::AskPlain,
];

/// The counters compared, per `(proxy, server)` row of `show stat`.
const COLUMNS: [&str; 5] = ["stot", "lbtot", "wretr", "wredis", "econ"];

/// What a client saw and what the counters say afterwards.
#[derive(Debug, PartialEq)]
struct Observed {
    answers: Vec<String>,
    stat: BTreeMap<String, String>,
    metrics: BTreeMap<String, String>,
}

fn ask(addr: SocketAddr, from: u8) -> String {
    common::first_line_from(addr, Ipv4Addr::new(127, 0, 0, from))
        .0
        .unwrap_or_else(|| "-".to_string())
}

/// The `/metrics` samples of the session counters, as `name{proxy,server} value`.
fn session_metrics(addr: SocketAddr) -> BTreeMap<String, String> {
    let (_, _, text) = http_request(addr, "GET", "/metrics", &[], "", Duration::from_secs(10))
        .expect("GET /metrics");
    let wanted = [
        "haproxy_server_sessions_total{",
        "haproxy_server_loadbalanced_total{",
        "haproxy_backend_sessions_total{",
        "haproxy_backend_loadbalanced_total{",
    ];
    text.lines()
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .filter(|l| l.contains("proxy=\"lb\"") || l.contains("proxy=\"plain\""))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(which: &str, servers: &[SocketAddr; 2], dead: SocketAddr) -> Observed {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("stats.sock");
    let (lb, plain, prom) = (free_port(), free_port(), free_port());
    let metrics_at = match which {
        "rolelb" => format!("    admin bind 127.0.0.1:{prom}\n"),
        _ => String::new(),
    };
    let mut cfg = format!(
        "global\n    stats socket {} level admin\n{metrics_at}\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\
         listen lb\n    bind 127.0.0.1:{lb}\n    balance roundrobin\n    retries 2\n    option redispatch\n    \
         stick-table type ip size 10\n    stick on src if {{ src 127.0.0.2 }}\n    \
         server a {}\n    server b {}\n    server c {dead}\n\
         listen plain\n    bind 127.0.0.1:{plain}\n    retries 2\n    server d {dead}\n",
        sock.display(),
        servers[0],
        servers[1],
    );
    if which == "haproxy" {
        cfg.push_str(&format!(
            "frontend prom\n    mode http\n    bind 127.0.0.1:{prom}\n    \
             http-request use-service prometheus-exporter if {{ path /metrics }}\n"
        ));
    }
    let _proxy: Box<dyn std::any::Any> = match which {
        "rolelb" => Box::new(Rolelb::start(&cfg)),
        _ => Box::new(Haproxy::start(&cfg)),
    };
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()
            && stats_cli(&sock, "show stat").contains("lb,BACKEND")),
        "{which} did not start"
    );
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut answers = Vec::new();
    for step in STEPS {
        match step {
            Step::Ask(from) => answers.push(format!("127.0.0.{from} -> {}", ask(at(lb), *from))),
            Step::AskPlain => answers.push(format!("plain -> {}", ask(at(plain), 1))),
            Step::Cli(cmd) => {
                stats_cli(&sock, cmd);
            }
        }
    }
    let idle = |sock: &Path| {
        let csv = stats_cli(sock, "show stat");
        ["lb", "plain"].iter().all(|px| {
            stat_row(&csv, px, "BACKEND").is_some_and(|r| r.get("scur").is_some_and(|v| v == "0"))
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || idle(&sock)),
        "{which}: sessions did not end"
    );
    let csv = stats_cli(&sock, "show stat");
    let mut stat = BTreeMap::new();
    for (px, sv) in [
        ("lb", "a"),
        ("lb", "b"),
        ("lb", "c"),
        ("lb", "BACKEND"),
        ("plain", "d"),
        ("plain", "BACKEND"),
    ] {
        let row = stat_row(&csv, px, sv).unwrap_or_else(|| panic!("{which}: no {px}/{sv}"));
        for col in COLUMNS {
            stat.insert(
                format!("{px}/{sv} {col}"),
                row.get(col).cloned().unwrap_or_default(),
            );
        }
    }
    Observed {
        answers,
        stat,
        metrics: session_metrics(at(prom)),
    }
}

#[test]
fn stot_counts_connects_and_lbtot_the_balancers_choices_as_in_haproxy() {
    let a = NamedServer::start("a");
    let b = NamedServer::start("b");
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let servers = [a.addr(), b.addr()];
    let haproxy = run("haproxy", &servers, dead);
    let rolelb = run("rolelb", &servers, dead);
    assert_eq!(rolelb, haproxy, "rolelb (left) and HAProxy 2.6 (right)");
    let stat = |k: &str| rolelb.stat[k].as_str();
    // The stuck client's server took more sessions than the balancer gave it.
    let held = rolelb.answers[3].rsplit(" -> ").next().unwrap_or_default();
    assert_ne!(
        stat(&format!("lb/{held} stot")),
        stat(&format!("lb/{held} lbtot")),
        "{rolelb:#?}"
    );
    // The refusing server was chosen twice and sent one connect each time, then both
    // sessions were redispatched; the backend counts the client no server took, in `stot`
    // and in `econ`.
    assert_eq!(
        (stat("lb/c stot"), stat("lb/c lbtot"), stat("lb/c wredis")),
        ("2", "2", "2"),
        "{rolelb:#?}"
    );
    assert_eq!(
        (stat("lb/BACKEND stot"), stat("lb/BACKEND econ")),
        ("9", "1"),
        "{rolelb:#?}"
    );
    assert_eq!(
        (
            stat("plain/d stot"),
            stat("plain/d lbtot"),
            stat("plain/d wretr")
        ),
        ("3", "1", "2"),
        "{rolelb:#?}"
    );
    assert!(
        rolelb
            .metrics
            .get("haproxy_server_loadbalanced_total{proxy=\"plain\",server=\"d\"}")
            .is_some_and(|v| v == "1"),
        "{rolelb:#?}"
    );
}

/// `(stot, lbtot)` of server `a` and of the backend of `q` after one client held the only
/// slot and a second one waited in the queue for it.
fn queued_counts(which: &str, server: SocketAddr) -> [(String, String); 2] {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("stats.sock");
    let port = free_port();
    let cfg = format!(
        "global\n    stats socket {} level admin\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\
         listen q\n    bind 127.0.0.1:{port}\n    timeout queue 10s\n    server a {server} maxconn 1\n",
        sock.display(),
    );
    let _proxy: Box<dyn std::any::Any> = match which {
        "rolelb" => Box::new(Rolelb::start(&cfg)),
        _ => Box::new(Haproxy::start(&cfg)),
    };
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()
            && stats_cli(&sock, "show stat").contains("q,BACKEND")),
        "{which} did not start"
    );
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    let (first, held) = common::open_named(lb).expect("first client");
    assert_eq!(first, "a");
    let second = std::thread::spawn(move || ask(lb, 3));
    let queued = || {
        stat_row(&stats_cli(&sock, "show stat"), "q", "BACKEND")
            .is_some_and(|r| r.get("qcur").is_some_and(|v| v == "1"))
    };
    assert!(
        wait_until(Duration::from_secs(10), queued),
        "{which}: the second client did not queue"
    );
    drop(held);
    assert_eq!(second.join().expect("second client"), "a", "{which}");
    let csv = stats_cli(&sock, "show stat");
    ["a", "BACKEND"].map(|sv| {
        let row = stat_row(&csv, "q", sv).unwrap_or_else(|| panic!("{which}: no q/{sv}"));
        let get = |c: &str| row.get(c).cloned().unwrap_or_default();
        (get("stot"), get("lbtot"))
    })
}

#[test]
fn a_session_served_from_the_queue_is_not_counted_as_balanced() {
    let a = NamedServer::start("a");
    let haproxy = queued_counts("haproxy", a.addr());
    let rolelb = queued_counts("rolelb", a.addr());
    assert_eq!(rolelb, haproxy, "rolelb (left) and HAProxy 2.6 (right)");
    let pair = |s: &str, l: &str| (s.to_string(), l.to_string());
    assert_eq!(rolelb, [pair("2", "1"), pair("2", "1")]);
}
