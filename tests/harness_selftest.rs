//! Proves the integration-test harness itself against real servers: PostgreSQL streaming
//! replication, PgBouncer, HAProxy and the NamedServer backends that balancing tests rely on.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{
    Haproxy, NamedServer, PgBouncer, Postgres, Session, free_port, open_named, read_session,
    session_state, wait_closed, who_answers,
};

#[test]
fn free_port_hands_out_distinct_unused_ports() {
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let distinct: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ports.len(),
        "free_port repeated a port: {ports:?}"
    );
    for &port in &ports {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} from free_port cannot be bound"
        );
    }
    println!("free_port handed out: {ports:?}");
}

/// Two test processes that scan from the same port (suites run side by side, or one in a
/// chroot beside one outside it) are handed different ports: each holds its ports until it
/// exits. The other process is this test binary running the test above.
#[test]
fn free_port_skips_the_ports_another_test_process_holds() {
    let ours: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "free_port_hands_out_distinct_unused_ports",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(common::SCAN_FROM, ours[0].to_string())
        .output()
        .expect("running the test binary as the other process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the other process failed: {stdout}");
    let theirs: Vec<u16> = stdout
        .lines()
        .find_map(|l| {
            l.split_once("free_port handed out: ")
                .map(|(_, ports)| ports)
        })
        .unwrap_or_else(|| panic!("the other process printed no ports: {stdout}"))
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|p| p.parse().expect("a port number"))
        .collect();
    assert_eq!(theirs.len(), 50, "{stdout}");
    let shared: Vec<u16> = theirs
        .iter()
        .filter(|p| ours.contains(p))
        .copied()
        .collect();
    assert!(
        shared.is_empty(),
        "the other process was handed ports this one holds: {shared:?} (ours {ours:?})"
    );
}

#[test]
fn named_server_sends_its_name_then_echoes_and_counts_connections() {
    let mut server = NamedServer::start("alpha");
    let (name, mut conn) = open_named(server.addr()).expect("connecting to the NamedServer");
    assert_eq!(name, "alpha");
    conn.write_all(b"ping").expect("writing to the NamedServer");
    conn.shutdown(Shutdown::Write).expect("half-closing");
    let mut echoed = String::new();
    conn.read_to_string(&mut echoed).expect("reading the echo");
    assert_eq!(
        echoed, "ping",
        "the NamedServer must echo until the client half-closes"
    );
    assert_eq!(server.accepted(), 1);
    assert!(
        common::wait_until(Duration::from_secs(2), || server.open() == 0),
        "a closed connection must not stay counted as open"
    );

    let (_, mut held) = open_named(server.addr()).expect("second connection");
    assert_eq!(server.open(), 1);
    assert_eq!(
        session_state(&mut held, Duration::from_millis(200)),
        Session::Open,
        "a held connection stays open while the NamedServer runs"
    );
    server.stop();
    assert!(
        wait_closed(&mut held, Duration::from_secs(5)).is_some(),
        "stop() must close open connections"
    );
    assert!(
        TcpStream::connect(server.addr()).is_err(),
        "a stopped NamedServer must refuse connections"
    );
}

#[test]
fn postgres_replica_streams_from_primary_and_pgbouncer_serves_both() {
    let mut primary = Postgres::primary();
    let replica = Postgres::replica_of(&primary);
    assert!(!primary.is_replica(), "the primary must not be in recovery");
    assert!(replica.is_replica(), "the replica must be in recovery");

    primary.psql("CREATE TABLE t (v text); INSERT INTO t VALUES ('replicated')");
    let seen = common::wait_until(Duration::from_secs(15), || {
        common::try_psql(replica.port(), "SELECT v FROM t").as_deref() == Ok("replicated")
    });
    assert!(
        seen,
        "a row inserted on the primary must appear on the replica"
    );

    let bouncer_primary = PgBouncer::new(primary.port());
    let bouncer_replica = PgBouncer::new(replica.port());
    let sql = "SELECT pg_is_in_recovery(), current_setting('port')";
    assert_eq!(
        common::psql(bouncer_primary.port(), sql),
        format!("f|{}", primary.port()),
        "PgBouncer in front of the primary must reach the primary"
    );
    assert_eq!(
        common::psql(bouncer_replica.port(), sql),
        format!("t|{}", replica.port()),
        "PgBouncer in front of the replica must reach the replica"
    );

    // stop / promote / start, as failover tests use them.
    primary.stop();
    assert!(
        common::try_psql(primary.port(), "SELECT 1").is_err(),
        "a stopped primary must refuse"
    );
    replica.promote();
    assert!(
        !replica.is_replica(),
        "a promoted replica must leave recovery"
    );
    replica.psql("INSERT INTO t VALUES ('after promotion')");
    primary.start();
    assert_eq!(primary.psql("SELECT count(*) FROM t"), "1");
}

#[test]
fn haproxy_roundrobin_alternates_between_two_named_servers() {
    let a = NamedServer::start("a");
    let b = NamedServer::start("b");
    let port = free_port();
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         listen rr\n    bind 127.0.0.1:{port}\n    balance roundrobin\n\
         \x20   server a {}\n    server b {}\n",
        a.addr(),
        b.addr()
    );
    let _haproxy = Haproxy::start(&cfg);
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    let names: Vec<String> = (0..6)
        .map(|_| who_answers(front).expect("connecting through HAProxy"))
        .collect();
    for pair in names.windows(2) {
        assert_ne!(pair[0], pair[1], "roundrobin must alternate: {names:?}");
    }
    assert_eq!(a.accepted(), 3, "{names:?}");
    assert_eq!(b.accepted(), 3, "{names:?}");
}

#[test]
fn session_state_tells_a_silent_open_peer_from_a_closed_or_reset_one() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");

    // Silent and open: a read timeout is Open, never Closed.
    let mut conn = TcpStream::connect(addr).expect("connect");
    let (mut peer, _) = listener.accept().expect("accept");
    assert_eq!(
        session_state(&mut conn, Duration::from_millis(300)),
        Session::Open
    );
    assert!(wait_closed(&mut conn, Duration::from_millis(300)).is_none());
    // Data is kept by read_session and does not count as a close.
    peer.write_all(b"hello").expect("write");
    let (state, got) = read_session(&mut conn, Duration::from_millis(300));
    assert_eq!((state, got.as_slice()), (Session::Open, &b"hello"[..]));
    // A FIN: Closed.
    peer.shutdown(Shutdown::Write).expect("shutdown");
    assert!(wait_closed(&mut conn, Duration::from_secs(2)).is_some());

    // A reset (close with unread data makes the kernel send RST): Closed.
    let mut conn = TcpStream::connect(addr).expect("connect");
    let (peer, _) = listener.accept().expect("accept");
    // On loopback the bytes are in the peer's receive queue once write returns.
    conn.write_all(b"unread").expect("write");
    drop(peer);
    assert!(wait_closed(&mut conn, Duration::from_secs(2)).is_some());
}
