//! Connect retries, the turn-around pause and `option redispatch [<interval>]` side by side
//! with HAProxy 2.6: the same config run by both, a server that refuses connections (or one
//! that drops SYNs, so `timeout connect` expires) picked first, and for each proxy what a
//! client sees (which server answers, how long it waits), the `show stat` counters of the
//! failing server (`wretr`, `wredis`, `econ`) and the TCP log line (server, termination
//! state, `%rc`).

mod common;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Haproxy, NamedServer, Rolelb, free_port, stat_row, stats_cli, wait_until};
use socket2::{Domain, Socket, Type};

/// A port where nothing listens (bound then closed): connects are refused at once.
fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

/// A listener whose accept queue is full and never drained: Linux drops further SYNs, so a
/// connect to it runs into `timeout connect` (no firewall rule needed).
struct Blackhole {
    addr: SocketAddr,
    _listener: Socket,
    _held: Vec<Socket>,
}

impl Blackhole {
    fn start() -> Blackhole {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        listener
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        listener.listen(0).expect("listen");
        let addr = listener
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        let held = (0..3)
            .map(|_| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
                s.set_nonblocking(true).expect("nonblocking");
                // In progress or done: either way it takes a place in the queue.
                let _ = s.connect(&addr.into());
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let probe = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(
            matches!(&probe, Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock),
            "the blackhole must drop SYNs: {probe:?}"
        );
        Blackhole {
            addr,
            _listener: listener,
            _held: held,
        }
    }
}

/// The config both proxies run: a stats socket, one `listen lb` logging in TCP format to
/// stderr, `lines` (balance, retries, redispatch ...) and the servers in order.
fn config(
    port: u16,
    sock: &Path,
    timeout_connect: &str,
    lines: &str,
    servers: &[(&str, SocketAddr)],
) -> String {
    let mut cfg = format!(
        "global\n    stats socket {} level admin\n\ndefaults\n    mode tcp\n    \
         timeout connect {timeout_connect}\n    timeout client 30s\n    timeout server 30s\n\n\
         listen lb\n    bind 127.0.0.1:{port}\n    log stderr format raw local0\n    option tcplog\n",
        sock.display()
    );
    for line in lines.lines() {
        cfg.push_str(&format!("    {}\n", line.trim()));
    }
    for (name, addr) in servers {
        cfg.push_str(&format!("    server {name} {addr}\n"));
    }
    cfg
}

/// One proxy under test.
enum Proxy {
    Rolelb(Rolelb),
    Haproxy(Haproxy),
}

impl Proxy {
    fn start(which: &str, cfg: &str) -> Proxy {
        match which {
            "rolelb" => Proxy::Rolelb(Rolelb::start(cfg)),
            _ => Proxy::Haproxy(Haproxy::start(cfg)),
        }
    }

    fn stderr_text(&self) -> String {
        match self {
            Proxy::Rolelb(p) => p.stderr_text(),
            Proxy::Haproxy(p) => p.stderr_text(),
        }
    }
}

/// What a client and an operator see of one session.
#[derive(Debug)]
struct Outcome {
    /// The name of the server that answered, `None` when the client was closed.
    answer: Option<String>,
    /// From the connect to the answer or the close.
    waited: Duration,
    /// `wretr`, `wredis`, `econ` of the server named `dead` in `show stat`.
    dead: (u64, u64, u64),
    /// `backend/server`, termination state and `%rc` of the TCP log line.
    log: (String, String, String),
    /// `%Tw` of the log line: until the last assignment (after a redispatch, the time spent
    /// on the failed server).
    tw: i64,
}

/// Connects from `from` (a 127.0.0.0/8 address) and reads the first line or the close.
fn ask(addr: SocketAddr, from: Ipv4Addr) -> (Option<String>, Duration) {
    common::first_line_from(addr, from)
}

/// Runs `lines` on `which` ("rolelb" or "haproxy") with the servers, one client from `from`.
fn run(
    which: &str,
    timeout_connect: &str,
    lines: &str,
    servers: &[(&str, SocketAddr)],
    from: Ipv4Addr,
) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock: PathBuf = dir.path().join("stats.sock");
    let port = free_port();
    let proxy = Proxy::start(which, &config(port, &sock, timeout_connect, lines, servers));
    let (answer, waited) = ask(SocketAddr::from(([127, 0, 0, 1], port)), from);
    let mut line = None;
    let logged = wait_until(Duration::from_secs(5), || {
        line = proxy
            .stderr_text()
            .lines()
            .find(|l| l.contains(" lb lb/"))
            .map(str::to_string);
        line.is_some()
    });
    assert!(logged, "{which}: no log line: {}", proxy.stderr_text());
    let line = line.unwrap_or_default();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let rc = fields
        .get(7)
        .and_then(|f| f.rsplit('/').next())
        .unwrap_or_default();
    let log = (
        fields.get(3).copied().unwrap_or_default().to_string(),
        fields.get(6).copied().unwrap_or_default().to_string(),
        rc.to_string(),
    );
    let tw = fields
        .get(4)
        .and_then(|t| t.split('/').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{which}: no %Tw in {line:?}"));
    let csv = stats_cli(&sock, "show stat");
    let row =
        stat_row(&csv, "lb", "dead").unwrap_or_else(|| panic!("{which}: no lb/dead row: {csv}"));
    let count = |col: &str| -> u64 {
        row.get(col)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{which}: column {col} of lb/dead: {row:?}"))
    };
    let dead = (count("wretr"), count("wredis"), count("econ"));
    drop(proxy);
    Outcome {
        answer,
        waited,
        dead,
        log,
        tw,
    }
}

/// What both proxies must show for one scenario; `waited` is a range with margins for a
/// loaded machine.
struct Expect<'a> {
    answer: Option<&'a str>,
    waited: (Duration, Duration),
    /// `wretr`, `wredis`, `econ` of `dead`.
    dead: (u64, u64, u64),
    /// Server of the log line, termination state, `%rc`.
    log: (&'a str, &'a str, &'a str),
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs the scenario on rolelb and on HAProxy and checks both against `want`.
fn side_by_side(
    timeout_connect: &str,
    lines: &str,
    servers: &[(&str, SocketAddr)],
    from: Ipv4Addr,
    want: &Expect<'_>,
) {
    let mut tw = Vec::new();
    for which in ["haproxy", "rolelb"] {
        let got = run(which, timeout_connect, lines, servers, from);
        tw.push(got.tw);
        let ctx = format!("{which} with [{}]: {got:?}", lines.replace('\n', "; "));
        assert_eq!(got.answer.as_deref(), want.answer, "answer: {ctx}");
        assert!(
            got.waited >= want.waited.0 && got.waited < want.waited.1,
            "waited {:?}, expected {:?}..{:?}: {ctx}",
            got.waited,
            want.waited.0,
            want.waited.1
        );
        assert_eq!(got.dead, want.dead, "wretr/wredis/econ of dead: {ctx}");
        let log = (got.log.0.as_str(), got.log.1.as_str(), got.log.2.as_str());
        assert_eq!(log, want.log, "log line server/termination/%rc: {ctx}");
    }
    // `%Tw` ends at the same step in both (the pauses are 300 ms and more apart).
    assert!(
        (tw[0] - tw[1]).abs() < 250,
        "%Tw: haproxy {} rolelb {} with [{}]",
        tw[0],
        tw[1],
        lines.replace('\n', "; ")
    );
}

const CLIENT: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[test]
fn refused_first_server_is_redispatched_at_once_without_turn_around() {
    let alive = NamedServer::start("alive");
    let servers = [("dead", refusing_addr()), ("alive", alive.addr())];
    // `first` always picks `dead` first; with two servers up and a non-hash balance HAProxy
    // redispatches on the first retry and skips the 1 s pause.
    for balance in ["balance first", "balance roundrobin", "balance leastconn"] {
        let lines = format!("{balance}\nretries 2\noption redispatch");
        let want = Expect {
            answer: Some("alive"),
            waited: (ms(0), ms(700)),
            dead: (0, 1, 0),
            log: ("lb/alive", "--", "+1"),
        };
        if balance == "balance first" {
            side_by_side("5s", &lines, &servers, CLIENT, &want);
        } else {
            // roundrobin/leastconn may start on either server: only compare when `dead`
            // was the first pick, which `first` guarantees; here just the outcome.
            for which in ["haproxy", "rolelb"] {
                let got = run(which, "5s", &lines, &servers, CLIENT);
                assert_eq!(got.answer.as_deref(), Some("alive"), "{which} {balance}");
                assert!(got.waited < ms(700), "{which} {balance}: {got:?}");
            }
        }
    }
}

#[test]
fn refused_without_redispatch_retries_the_same_server_after_turn_arounds() {
    let alive = NamedServer::start("alive");
    let servers = [("dead", refusing_addr()), ("alive", alive.addr())];
    // Two retries on `dead`, each after min(timeout connect, 1s) = 1 s; the failure counts
    // once in `econ`, the retries in `wretr`.
    side_by_side(
        "5s",
        "balance first\nretries 2",
        &servers,
        CLIENT,
        &Expect {
            answer: None,
            waited: (ms(1900), ms(3500)),
            dead: (2, 0, 1),
            log: ("lb/dead", "SC", "2"),
        },
    );
    // The pause is `timeout connect` when that is shorter.
    side_by_side(
        "300ms",
        "balance first\nretries 3",
        &servers,
        CLIENT,
        &Expect {
            answer: None,
            waited: (ms(850), ms(1900)),
            dead: (3, 0, 1),
            log: ("lb/dead", "SC", "3"),
        },
    );
}

#[test]
fn retry_on_none_gives_up_at_the_first_failure() {
    let alive = NamedServer::start("alive");
    let servers = [("dead", refusing_addr()), ("alive", alive.addr())];
    side_by_side(
        "5s",
        "balance first\nretries 3\nretry-on none\noption redispatch",
        &servers,
        CLIENT,
        &Expect {
            answer: None,
            waited: (ms(0), ms(700)),
            dead: (0, 0, 1),
            log: ("lb/dead", "SC", "0"),
        },
    );
    // `conn-failure` among HTTP-only words keeps the retries.
    side_by_side(
        "5s",
        "balance first\nretries 2\nretry-on 503 conn-failure\noption redispatch",
        &servers,
        CLIENT,
        &Expect {
            answer: Some("alive"),
            waited: (ms(0), ms(700)),
            dead: (0, 1, 0),
            log: ("lb/alive", "--", "+1"),
        },
    );
}

#[test]
fn a_single_server_is_retried_even_with_redispatch() {
    // The redispatch pick finds only the same server again: a plain retry (no `+`), after
    // the turn-around since no other server is up.
    let servers = [("dead", refusing_addr())];
    side_by_side(
        "400ms",
        "balance roundrobin\nretries 2\noption redispatch",
        &servers,
        CLIENT,
        &Expect {
            answer: None,
            waited: (ms(750), ms(1800)),
            dead: (2, 0, 1),
            log: ("lb/dead", "SC", "2"),
        },
    );
}

#[test]
fn connect_timeouts_are_retried_without_turn_around() {
    let hole = Blackhole::start();
    let alive = NamedServer::start("alive");
    let servers = [("dead", hole.addr), ("alive", alive.addr())];
    // Three attempts of 500 ms each, back to back (a turn-around would add 2 x 500 ms).
    side_by_side(
        "500ms",
        "balance first\nretries 2",
        &servers,
        CLIENT,
        &Expect {
            answer: None,
            waited: (ms(1400), ms(2250)),
            dead: (2, 0, 1),
            log: ("lb/dead", "sC", "2"),
        },
    );
    // With redispatch: one timeout, then the other server at once.
    side_by_side(
        "500ms",
        "balance first\nretries 2\noption redispatch",
        &servers,
        CLIENT,
        &Expect {
            answer: Some("alive"),
            waited: (ms(450), ms(1200)),
            dead: (0, 1, 0),
            log: ("lb/alive", "--", "+1"),
        },
    );
}

/// A client address in 127.0.0.0/8 that `balance source` with `hash_type` sends to the
/// first of two servers in both proxies (their hash functions differ, so it is probed: two
/// live servers named like the scenario's, one connection per candidate address).
fn client_hashed_to_first(hash_type: &str) -> Ipv4Addr {
    let first = NamedServer::start("dead");
    let second = NamedServer::start("alive");
    let servers = [("dead", first.addr()), ("alive", second.addr())];
    let lines = format!("balance source\nhash-type {hash_type}");
    let dir = tempfile::tempdir().expect("tempdir");
    let (rp, hp) = (free_port(), free_port());
    let lb = Rolelb::start(&config(
        rp,
        &dir.path().join("r.sock"),
        "1s",
        &lines,
        &servers,
    ));
    let ha = Haproxy::start(&config(
        hp,
        &dir.path().join("h.sock"),
        "1s",
        &lines,
        &servers,
    ));
    let found = (2..=120u8)
        .map(|n| Ipv4Addr::new(127, 0, 0, n))
        .find(|&ip| {
            [rp, hp].iter().all(|&port| {
                ask(SocketAddr::from(([127, 0, 0, 1], port)), ip)
                    .0
                    .as_deref()
                    == Some("dead")
            })
        });
    drop((lb, ha));
    found.unwrap_or_else(|| {
        panic!("no client address hashes to the first server in both ({hash_type})")
    })
}

#[test]
fn redispatch_interval_picks_which_retries_leave_a_hashed_server() {
    let alive = NamedServer::start("alive");
    let servers = [("dead", refusing_addr()), ("alive", alive.addr())];
    let from = client_hashed_to_first("consistent");
    // `balance source` stays on its server unless the interval names the retry; each retry
    // on the same server waits min(timeout connect, 1s) = 300 ms, the redispatch does not.
    let hashed = "balance source\nhash-type consistent\nretries 3\n";
    let cases: [(&str, Expect<'_>); 6] = [
        (
            "option redispatch 1",
            Expect {
                answer: Some("alive"),
                waited: (ms(0), ms(250)),
                dead: (0, 1, 0),
                log: ("lb/alive", "--", "+1"),
            },
        ),
        (
            "option redispatch 2",
            Expect {
                answer: Some("alive"),
                waited: (ms(280), ms(850)),
                dead: (1, 1, 0),
                log: ("lb/alive", "--", "+2"),
            },
        ),
        (
            // -2: the retry before the last one (retries 3: the 2nd).
            "option redispatch -2",
            Expect {
                answer: Some("alive"),
                waited: (ms(280), ms(850)),
                dead: (1, 1, 0),
                log: ("lb/alive", "--", "+2"),
            },
        ),
        (
            // The default (-1): the last retry.
            "option redispatch",
            Expect {
                answer: Some("alive"),
                waited: (ms(580), ms(1300)),
                dead: (2, 1, 0),
                log: ("lb/alive", "--", "+3"),
            },
        ),
        (
            "option redispatch -1",
            Expect {
                answer: Some("alive"),
                waited: (ms(580), ms(1300)),
                dead: (2, 1, 0),
                log: ("lb/alive", "--", "+3"),
            },
        ),
        (
            // 0: never by count (only a server going down would move it).
            "option redispatch 0",
            Expect {
                answer: None,
                waited: (ms(850), ms(1900)),
                dead: (3, 0, 1),
                log: ("lb/dead", "SC", "3"),
            },
        ),
    ];
    for (line, want) in &cases {
        side_by_side("300ms", &format!("{hashed}{line}"), &servers, from, want);
    }
}

#[test]
fn map_based_source_hash_redispatches_onto_the_same_server() {
    let alive = NamedServer::start("alive");
    let servers = [("dead", refusing_addr()), ("alive", alive.addr())];
    let from = client_hashed_to_first("map-based");
    // The map-based hash does not avoid the failed server: the redispatch at the 2nd retry
    // lands on `dead` again and counts as a retry, without a pause (it went back to the
    // balancer with two servers up); the 1st and 3rd retries pause 300 ms.
    side_by_side(
        "300ms",
        "balance source\nhash-type map-based\nretries 3\noption redispatch 2",
        &servers,
        from,
        &Expect {
            answer: None,
            waited: (ms(550), ms(1500)),
            dead: (3, 0, 1),
            log: ("lb/dead", "SC", "3"),
        },
    );
}

#[test]
fn a_redispatch_counts_against_the_other_servers_maxconn() {
    let alive = NamedServer::start("alive");
    let dead = refusing_addr();
    let lines = "balance first\nretries 2\noption redispatch\ntimeout queue 3s";
    for which in ["haproxy", "rolelb"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("stats.sock");
        let port = free_port();
        let mut cfg = config(port, &sock, "5s", lines, &[("dead", dead)]);
        cfg.push_str(&format!("    server alive {} maxconn 1\n", alive.addr()));
        let proxy = Proxy::start(which, &cfg);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // The first client is redispatched to `alive` and keeps its only slot.
        let (name, _held) = common::open_named(addr).expect("first client");
        assert_eq!(name, "alive", "{which}");
        // The second one may not take it: its redispatch finds `alive` full and lands on
        // `dead` again (plain retries, no pause with two servers up), then gives up.
        let (answer, waited) = ask(addr, CLIENT);
        assert_eq!(answer, None, "{which}");
        assert!(waited < ms(700), "{which}: waited {waited:?}");
        let csv = stats_cli(&sock, "show stat");
        let row = stat_row(&csv, "lb", "dead").expect("lb/dead row");
        let counters: Vec<&str> = ["wretr", "wredis", "econ"]
            .iter()
            .map(|c| row.get(*c).map_or("", String::as_str))
            .collect();
        assert_eq!(
            counters,
            ["2", "1", "1"],
            "{which}: wretr/wredis/econ of dead"
        );
        let mut lines = Vec::new();
        let logged = wait_until(Duration::from_secs(5), || {
            lines = proxy
                .stderr_text()
                .lines()
                .filter(|l| l.contains(" lb lb/dead "))
                .map(str::to_string)
                .collect();
            !lines.is_empty()
        });
        assert!(logged, "{which}: no log line for the second client");
        assert!(
            lines[0].contains(" SC ") && lines[0].ends_with("/2 0/0"),
            "{which}: {lines:?}"
        );
    }
}
