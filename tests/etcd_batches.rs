//! etcd changes that arrive together, against a real etcd 3.4 (Debian's, started per test on
//! free ports): every event of a watch response is applied, and one revision — a
//! transaction, a delete-range — is one table swap.
//!
//! - a switchover written as one transaction (old primary demoted, new one promoted, `leader`
//!   moved) moves the writes at once, closes the old primary's sessions, and no connection
//!   reaches the demoted member afterwards;
//! - a switchover in the middle of a burst of replica changes moves the writes as well, and
//!   the burst is applied whole;
//! - one delete-range of several members removes all of them;
//! - 1000 members put one by one are all in the table soon after the last put, without
//!   disturbing the sessions of another listener, and one delete-range empties the table
//!   in one swap (tables that big are built on the table builder thread, and the watch runs
//!   on the etcd thread at a lower priority; the 10,000-member version, with timings, is
//!   `bench/etcd-swap --mode burst`);
//! - a member whose host does not resolve, or whose value is bad, keeps its previous entry:
//!   the primary stays the primary and keeps its sessions, and the key is logged and counted
//!   in `rolelb_etcd_parse_errors_total`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    Etcd, NamedServer, Rolelb, etcd_ctl_ok, free_port, open_named, refusal_time, wait_until,
    who_answers,
};
use etcd_client::{Client, DeleteOptions, Txn, TxnOp};

const PREFIX: &str = "/rolelb-batches/pool";

/// How soon a change must reach the data path here: far above the milliseconds it takes (a
/// debug build applying 1000 members on a loaded 2-core machine has taken 3 s), far below the
/// 30 s re-list that used to repair a half-applied revision. How fast it really is, is measured
/// by `bench/etcd-swap` (p99 and the 10,000-member burst), not here.
const SOON: Duration = Duration::from_secs(10);

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn key(name: &str) -> String {
    format!("{PREFIX}/members/{name}")
}

/// A native-schema member value on 127.0.0.1.
fn member(port: u16, role: &str) -> String {
    format!(r#"{{"host": "127.0.0.1", "port": {port}, "role": "{role}"}}"#)
}

/// A config with the admin API on `admin` and a listener on `port` whose servers all come
/// from etcd, plus `extra` proxies.
fn config(endpoint: &str, admin: u16, port: u16, backend_extra: &str, extra: &str) -> String {
    format!(
        "global\n    admin bind 127.0.0.1:{admin}\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 120s\n    timeout server 120s\n\
         etcd main\n    endpoints {endpoint}\n    dial-timeout 1s\n\
         listen pool\n    bind 127.0.0.1:{port}\n    balance roundrobin\n{backend_extra}\
             discover etcd main path {PREFIX}\n{extra}"
    )
}

const WRITER: &str = "    role primary\n    role-source etcd\n";

/// `GET path` on the admin API: the body.
fn admin_get(admin: SocketAddr, path: &str) -> String {
    let mut conn = TcpStream::connect(admin).expect("connect to the admin API");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    conn.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .expect("send the request");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read the answer");
    text
}

/// Tables swapped since start (`rolelb_table_swaps_total`).
fn swaps(admin: SocketAddr) -> u64 {
    let text = admin_get(admin, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("rolelb_table_swaps_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no rolelb_table_swaps_total in /metrics:\n{text}")) as u64
}

/// `rolelb_etcd_parse_errors_total` of backend `pool`'s watch.
fn parse_errors(admin: SocketAddr) -> u64 {
    let text = admin_get(admin, "/metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("rolelb_etcd_parse_errors_total{") && l.contains("backend=\"pool\"")
        })
        .find_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| {
            panic!("no rolelb_etcd_parse_errors_total for pool in /metrics:\n{text}")
        }) as u64
}

/// How many servers backend `pool` has in the table in force (admin API).
fn servers_in_table(admin: SocketAddr) -> usize {
    admin_get(admin, "/api/v1/backends/pool")
        .matches("\"address\":")
        .count()
}

/// The `nice` value and CPU ticks (user + system) of process `pid`'s `rolelb-etcd` thread.
fn etcd_thread(pid: u32) -> Option<(i64, u64)> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "rolelb-etcd" {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the name: state is the first; utime, stime the 12th and 13th; nice
        // the 17th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        return Some((fields.get(16)?.parse().ok()?, ticks));
    }
    None
}

/// A tokio runtime for the etcd client (transactions, delete-ranges, fast puts).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn client(rt: &tokio::runtime::Runtime, etcd: &Etcd) -> Client {
    rt.block_on(Client::connect([etcd.endpoint()], None))
        .expect("connect to etcd")
}

/// Whether `conn` (opened with [`open_named`]) still echoes.
fn echoes(mut conn: &TcpStream) -> bool {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4];
    conn.write_all(b"ping").is_ok() && conn.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

/// Whether the peer closed `conn` (within 5 s).
fn closed(conn: &mut TcpStream) -> bool {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 1];
    matches!(conn.read(&mut buf), Ok(0) | Err(_))
}

/// Waits until `want` answers a new connection via `addr`; how long that took.
fn wait_answered_by(rolelb: &Rolelb, addr: SocketAddr, want: &str) -> Duration {
    let start = Instant::now();
    let ok = wait_until(Duration::from_secs(40), || {
        who_answers(addr).is_ok_and(|n| n == want)
    });
    assert!(
        ok,
        "{want} never answered via {addr}\n{}",
        rolelb.stderr_text()
    );
    start.elapsed()
}

/// The DBaaS backend's switchover from `a` to `b`: one transaction, one revision, three
/// events (`a` demoted, `b` promoted, the `leader` key moved).
fn switchover_to_b(a: &NamedServer, b: &NamedServer) -> Txn {
    Txn::new().and_then([
        TxnOp::put(key("a"), member(a.port(), "replica"), None),
        TxnOp::put(key("b"), member(b.port(), "primary"), None),
        TxnOp::put(format!("{PREFIX}/leader"), "b", None),
    ])
}

/// Twenty new connections via `addr`, each answered by `want`.
fn all_answered_by(addr: SocketAddr, want: &str, when: &str) {
    for i in 0..20 {
        let name = who_answers(addr).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(name, want, "connection {i} {when}");
    }
}

/// Members `a` (the primary, the `leader` key) and `b` (a replica) in etcd, rolelb writing
/// to `a` through `addr`, and one session open to `a` that echoes.
struct WriterLab {
    etcd: Etcd,
    a: NamedServer,
    b: NamedServer,
    rolelb: Rolelb,
    addr: SocketAddr,
    admin: SocketAddr,
    writer: TcpStream,
}

impl WriterLab {
    fn start() -> WriterLab {
        let etcd = Etcd::start();
        let (a, b) = (NamedServer::start("a"), NamedServer::start("b"));
        etcd.put(&key("a"), &member(a.port(), "primary"));
        etcd.put(&key("b"), &member(b.port(), "replica"));
        etcd.put(&format!("{PREFIX}/leader"), "a");
        let (admin, port) = (free_port(), free_port());
        let rolelb = Rolelb::start(&config(&etcd.endpoint(), admin, port, WRITER, ""));
        let (addr, admin) = (local(port), local(admin));
        wait_answered_by(&rolelb, addr, "a");
        let (_, writer) = open_named(addr).expect("a connection to the primary");
        assert!(echoes(&writer));
        WriterLab {
            etcd,
            a,
            b,
            rolelb,
            addr,
            admin,
            writer,
        }
    }
}

#[test]
fn a_switchover_written_as_one_txn_moves_the_writes_at_once() {
    let WriterLab {
        etcd,
        a,
        b,
        rolelb,
        addr,
        admin,
        mut writer,
    } = WriterLab::start();
    let before = swaps(admin);

    // The DBaaS backend's switchover: one transaction, one revision, three events.
    let rt = runtime();
    let mut etcd_client = client(&rt, &etcd);
    rt.block_on(etcd_client.txn(switchover_to_b(&a, &b)))
        .expect("the switchover txn");
    let took = wait_answered_by(&rolelb, addr, "b");
    assert!(
        took < SOON,
        "writes moved to b only after {took:?}\n{}",
        rolelb.stderr_text()
    );
    // From then on, nothing reaches the demoted member, and its session was closed.
    all_answered_by(addr, "b", "after the switchover");
    assert!(closed(&mut writer), "the demoted primary's session is open");
    assert_eq!(
        swaps(admin) - before,
        1,
        "one transaction is one table swap"
    );

    // Back again, the leader key first this time: the order within the txn does not matter.
    let txn = Txn::new().and_then([
        TxnOp::put(format!("{PREFIX}/leader"), "a", None),
        TxnOp::put(key("b"), member(b.port(), "replica"), None),
        TxnOp::put(key("a"), member(a.port(), "primary"), None),
    ]);
    rt.block_on(etcd_client.txn(txn))
        .expect("the switchover back");
    let took = wait_answered_by(&rolelb, addr, "a");
    assert!(took < SOON, "writes moved back to a only after {took:?}");
    all_answered_by(addr, "a", "after the switchover back");
    let log = rolelb.stderr_text();
    assert!(!log.contains("role conflict"), "{log}");
}

#[test]
fn one_delete_range_removes_every_member_it_covers() {
    let etcd = Etcd::start();
    let servers: Vec<NamedServer> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| NamedServer::start(n))
        .collect();
    for s in &servers {
        etcd.put(&key(s.name()), &member(s.port(), "replica"));
    }
    let (admin, port) = (free_port(), free_port());
    let rolelb = Rolelb::start(&config(&etcd.endpoint(), admin, port, "", ""));
    let (addr, admin) = (local(port), local(admin));
    let ok = wait_until(SOON, || servers_in_table(admin) == 4);
    assert!(ok, "{}", rolelb.stderr_text());
    let before = swaps(admin);

    // `etcdctl del --prefix`: one revision, four delete events.
    let out = etcd_ctl_ok(&etcd.endpoint(), &["del", "--prefix", &key("")]);
    assert_eq!(out.trim(), "4", "etcdctl deleted {out}");
    let emptied = wait_until(SOON, || servers_in_table(admin) == 0);
    assert!(
        emptied,
        "{} servers left after the delete-range\n{}",
        servers_in_table(admin),
        rolelb.stderr_text()
    );
    assert!(
        refusal_time(addr).is_ok(),
        "a connection still reaches a deleted member"
    );
    assert_eq!(
        swaps(admin) - before,
        1,
        "one delete-range is one table swap"
    );
    assert!(servers.iter().all(|s| s.open() == 0));
}

/// In a burst the watch reads at most every few milliseconds (fewer wake-ups of the etcd
/// thread); a switchover that arrives in the middle of one is not held with the replicas'
/// changes: the writes move, the demoted member's session is closed, and nothing reaches it
/// afterwards, while the burst goes on.
#[test]
fn a_switchover_in_the_middle_of_a_burst_moves_the_writes_and_the_burst_is_applied_whole() {
    const MEMBERS: usize = 3000;
    let WriterLab {
        etcd,
        a,
        b,
        rolelb,
        addr,
        admin,
        mut writer,
    } = WriterLab::start();
    let done = Arc::new(AtomicUsize::new(0));
    let endpoint = etcd.endpoint();
    let putter = {
        let done = done.clone();
        std::thread::spawn(move || {
            let rt = runtime();
            rt.block_on(async {
                let mut c = Client::connect([endpoint], None)
                    .await
                    .expect("connect to etcd");
                for i in 0..MEMBERS {
                    let value = member(20_000 + i as u16, "replica");
                    c.put(key(&format!("m{i:04}")), value, None)
                        .await
                        .expect("put");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        })
    };
    let rt = runtime();
    let mut etcd_client = client(&rt, &etcd);
    assert!(
        wait_until(SOON, || done.load(Ordering::Relaxed) >= 300),
        "the burst did not start"
    );
    rt.block_on(etcd_client.txn(switchover_to_b(&a, &b)))
        .expect("the switchover txn");
    let at = done.load(Ordering::Relaxed);
    let took = wait_answered_by(&rolelb, addr, "b");
    let moved_at = done.load(Ordering::Relaxed);
    assert!(
        took < SOON,
        "writes moved to b only after {took:?}\n{}",
        rolelb.stderr_text()
    );
    assert!(closed(&mut writer), "the demoted primary's session is open");
    all_answered_by(addr, "b", "after the switchover");
    putter.join().expect("the putting thread");
    assert!(
        wait_until(SOON, || servers_in_table(admin) == MEMBERS + 2),
        "{} of {} members in the table\n{}",
        servers_in_table(admin),
        MEMBERS + 2,
        rolelb.stderr_text()
    );
    all_answered_by(addr, "b", "after the burst");
    eprintln!(
        "switchover written after put {at} of {MEMBERS}; writes on b {took:?} later, at put {moved_at}"
    );
}

#[test]
fn a_burst_of_1000_members_is_applied_whole_and_one_delete_range_empties_it() {
    const MEMBERS: usize = 1000;
    let etcd = Etcd::start();
    let echo = NamedServer::start("echo");
    let (admin, port, echo_port) = (free_port(), free_port(), free_port());
    let rolelb = Rolelb::start(&config(
        &etcd.endpoint(),
        admin,
        port,
        "",
        &format!(
            "listen echo\n    bind 127.0.0.1:{echo_port}\n    server echo 127.0.0.1:{}\n",
            echo.port()
        ),
    ));
    let admin = local(admin);
    let (_, held) = open_named(local(echo_port)).expect("a connection through 'echo'");
    assert!(echoes(&held));

    // One put per member, each its own revision, as fast as the client goes.
    let rt = runtime();
    let mut etcd_client = client(&rt, &etcd);
    let started = Instant::now();
    rt.block_on(async {
        for i in 0..MEMBERS {
            let value = member(20_000 + i as u16, "replica");
            etcd_client
                .put(key(&format!("m{i:04}")), value, None)
                .await
                .expect("put");
        }
    });
    let last_put = Instant::now();
    let all_in = wait_until(Duration::from_secs(30), || {
        servers_in_table(admin) == MEMBERS
    });
    let took = last_put.elapsed();
    assert!(
        all_in,
        "{} of {MEMBERS} members in the table\n{}",
        servers_in_table(admin),
        rolelb.stderr_text()
    );
    assert!(
        took < SOON,
        "the last of {MEMBERS} puts (made in {:?}) reached the table after {took:?}",
        last_put - started
    );
    assert!(echoes(&held), "the other listener's session broke");
    // The watch ran on the etcd thread, at a lower priority than the data path's threads.
    let (nice, ticks) = etcd_thread(rolelb.pid())
        .unwrap_or_else(|| panic!("no rolelb-etcd thread in rolelb {}", rolelb.pid()));
    assert_eq!(nice, 5, "the etcd thread's nice value");
    assert!(
        ticks > 0,
        "the etcd thread used no CPU time for {MEMBERS} puts"
    );

    let before = swaps(admin);
    rt.block_on(etcd_client.delete(key(""), Some(DeleteOptions::new().with_prefix())))
        .expect("the delete-range");
    let emptied = wait_until(SOON, || servers_in_table(admin) == 0);
    assert!(
        emptied,
        "{} members left after the delete-range\n{}",
        servers_in_table(admin),
        rolelb.stderr_text()
    );
    assert_eq!(
        swaps(admin) - before,
        1,
        "one delete-range is one table swap"
    );
    assert!(echoes(&held), "the other listener's session broke");
    eprintln!(
        "{MEMBERS} puts in {:?}, all in the table {took:?} after the last",
        last_put - started
    );
}

#[test]
fn an_unresolvable_host_or_a_bad_value_keeps_the_primary_and_its_sessions() {
    let WriterLab {
        etcd,
        a,
        b: _b,
        rolelb,
        addr,
        admin,
        writer,
    } = WriterLab::start();

    let unresolvable = format!(
        r#"{{"host": "no-such-host.invalid", "port": {}, "role": "primary"}}"#,
        a.port()
    );
    let bad = format!(
        r#"{{"host": "127.0.0.1", "port": {}, "role": "chief"}}"#,
        a.port()
    );
    assert_eq!(parse_errors(admin), 0);
    for (i, (value, logged)) in [
        (
            &unresolvable,
            format!(
                "etcd key {} for backend 'pool': host 'no-such-host.invalid' does not resolve; keeping its previous entry",
                key("a")
            ),
        ),
        (
            &bad,
            format!("etcd key {} for backend 'pool': ", key("a")),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mark = rolelb.log_mark();
        etcd.put(&key("a"), value);
        // A later change has reached the table, so the one above was handled in full.
        let later = format!("later{i}");
        etcd.put(&key(&later), &member(1, "replica"));
        let applied = wait_until(SOON, || {
            admin_get(admin, "/api/v1/backends/pool").contains(&format!("\"name\":\"{later}\""))
        });
        assert!(applied, "{}", rolelb.stderr_text());
        assert!(
            echoes(&writer),
            "the primary's session was closed after {value}\n{}",
            rolelb.stderr_text()
        );
        for n in 0..6 {
            assert_eq!(
                who_answers(addr).map_err(|e| e.to_string()),
                Ok("a".to_owned()),
                "connection {n} after {value}\n{}",
                rolelb.stderr_text()
            );
        }
        assert!(
            rolelb.wait_for_log_since(mark, &logged, Duration::from_secs(10)),
            "no {logged:?} in the log:\n{}",
            rolelb.stderr_text()
        );
        // The unresolvable host counts as the bad value does, each once.
        assert_eq!(parse_errors(admin), i as u64 + 1, "after {value}");
    }
    // A new member whose host does not resolve stays out, and says so.
    etcd.put(
        &key("c"),
        r#"{"host": "no-such-host.invalid", "port": 1, "role": "replica"}"#,
    );
    assert!(
        rolelb.wait_for_log(
            &format!(
                "etcd key {} for backend 'pool': host 'no-such-host.invalid' does not resolve; leaving the member out until it resolves",
                key("c")
            ),
            Duration::from_secs(10)
        ),
        "{}",
        rolelb.stderr_text()
    );
    assert!(
        wait_until(SOON, || parse_errors(admin) == 3),
        "{}",
        admin_get(admin, "/metrics")
    );
    assert!(echoes(&writer));
    let log = rolelb.stderr_text();
    assert!(!log.contains("closing its sessions"), "{log}");
    assert!(!log.contains("was removed"), "{log}");
}
