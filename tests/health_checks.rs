//! Health checks as HAProxy runs them, against real servers: intervals (`inter`, `fastinter`,
//! `downinter`), rise/fall timing with `pgsql-check` in front of a real PgBouncer + PostgreSQL,
//! `httpchk` routing like Patroni's `/primary`, `on-marked-down shutdown-sessions`, and a
//! server that accepts but never answers being failed by `timeout check`.

mod common;
mod lbcfg;
mod scripted;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{
    NamedServer, PgBouncer, Postgres, Rolelb, free_port, open_named, try_psql, wait_until,
    who_answers,
};
use lbcfg::local;
use scripted::{Reply, Scripted, gaps_after};

const DEFAULTS: &str = "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\n";

fn within(d: Duration, lo_ms: u64, hi_ms: u64) -> bool {
    d >= Duration::from_millis(lo_ms) && d <= Duration::from_millis(hi_ms)
}

/// Waits for the `n`-th occurrence of `needle` in rolelb's log; returns how long it took.
fn time_to_log(lb: &Rolelb, needle: &str, n: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    assert!(
        wait_until(limit, || lb.stderr_text().matches(needle).count() >= n),
        "no {n}x '{needle}' within {limit:?}: {}",
        lb.stderr_text()
    );
    started.elapsed()
}

#[test]
fn check_intervals_follow_inter_fastinter_and_downinter() {
    let app = NamedServer::start("app");
    let health = Scripted::start(Reply::text("OK\n"), false);
    let port = free_port();
    let lb = Rolelb::start(&format!(
        "{DEFAULTS}listen lb\n    bind 127.0.0.1:{port}\n    option tcp-check\n    tcp-check expect string OK\n    \
         server app {} check port {} inter 1s fastinter 200ms downinter 2s rise 2 fall 3\n",
        app.addr(),
        health.port()
    ));
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(4500));
    // Steady UP: one check per `inter` (the first one settles the start state).
    let steady = gaps_after(&health.arrivals(), started + Duration::from_millis(1200));
    assert!(steady.len() >= 2, "{steady:?}");
    for g in &steady {
        assert!(within(*g, 900, 1100), "inter 1s: gaps {steady:?}");
    }
    assert_eq!(who_answers(local(port)).expect("UP serves"), "app");

    // Failing: the first failure comes within one inter, then `fastinter` until DOWN.
    health.set(Reply::text("NO\n"));
    let flipped = Instant::now();
    let down_after = time_to_log(&lb, "is DOWN", 1, Duration::from_secs(4));
    assert!(
        within(down_after, 350, 1500),
        "DOWN after {down_after:?} (<= inter + 2 x fastinter)"
    );
    let fast = gaps_after(&health.arrivals(), flipped);
    assert!(
        fast.iter().take(2).all(|g| within(*g, 150, 300)),
        "fastinter 200ms: {fast:?}"
    );
    assert!(
        who_answers(local(port)).is_err(),
        "no server while DOWN: closed at once"
    );

    // Steady DOWN: one check per `downinter`.
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_millis(4300));
    let slow = gaps_after(&health.arrivals(), down_at);
    assert!(
        !slow.is_empty() && slow.iter().all(|g| within(*g, 1800, 2200)),
        "downinter 2s: {slow:?}"
    );

    // Recovering: the next check passes (within downinter), then `fastinter` to `rise`.
    health.set(Reply::text("OK\n"));
    let up_after = time_to_log(&lb, "is UP", 1, Duration::from_secs(4));
    assert!(
        up_after <= Duration::from_millis(2500),
        "UP after {up_after:?} (<= downinter + fastinter)"
    );
    assert_eq!(who_answers(local(port)).expect("UP again"), "app");
    let log = lb.stderr_text();
    assert!(
        log.contains("Server lb/app is DOWN, reason: Layer7 invalid response"),
        "{log}"
    );
}

#[test]
fn pgsql_check_marks_a_pgbouncer_backend_down_after_fall_and_up_after_rise() {
    let mut pg = Postgres::primary();
    let bouncer = PgBouncer::new(pg.port());
    let port = free_port();
    // Traffic to PgBouncer, the check straight to PostgreSQL (as in the seed deployment).
    let lb = Rolelb::start(&format!(
        "{DEFAULTS}listen db\n    bind 127.0.0.1:{port}\n    option pgsql-check user postgres\n    \
         server pg1 127.0.0.1:{} check port {} inter 500ms rise 2 fall 3\n",
        bouncer.port(),
        pg.port()
    ));
    assert_eq!(
        try_psql(port, "SELECT 1").expect("psql through rolelb"),
        "1"
    );
    std::thread::sleep(Duration::from_millis(1200));

    pg.stop();
    let down_after = time_to_log(&lb, "is DOWN", 1, Duration::from_secs(5));
    // fall x inter = 1.5s; the first failure lands anywhere within one inter of the stop.
    assert!(
        within(down_after, 900, 2000),
        "DOWN {down_after:?} after the stop (fall x inter = 1.5s)"
    );
    let log = lb.stderr_text();
    assert!(
        log.contains("Server db/pg1 is DOWN, reason: Layer4 connection problem"),
        "{log}"
    );
    assert!(try_psql(port, "SELECT 1").is_err(), "no server while DOWN");

    pg.start();
    let up_after = time_to_log(&lb, "is UP", 1, Duration::from_secs(5));
    assert!(
        up_after <= Duration::from_millis(1600),
        "UP {up_after:?} after restart (rise x inter = 1s)"
    );
    assert!(
        lb.stderr_text()
            .contains("Server db/pg1 is UP, reason: Layer7 check passed")
    );
    assert!(
        wait_until(Duration::from_secs(5), || try_psql(port, "SELECT 1")
            .as_deref()
            == Ok("1")),
        "psql through rolelb works again"
    );
}

#[test]
fn httpchk_sends_traffic_only_to_the_server_answering_200_like_patronis_primary() {
    let n1 = NamedServer::start("node1");
    let n2 = NamedServer::start("node2");
    let api1 = Scripted::start(Reply::http(200, "OK", r#"{"role":"primary"}"#), true);
    let api2 = Scripted::start(
        Reply::http(503, "Service Unavailable", r#"{"role":"replica"}"#),
        true,
    );
    let port = free_port();
    let lb = Rolelb::start(&format!(
        "{DEFAULTS}listen primary\n    bind 127.0.0.1:{port}\n    option httpchk OPTIONS /primary\n    \
         http-check expect status 200\n    default-server inter 300ms fall 2 rise 2 on-marked-down shutdown-sessions\n    \
         server node1 {} check port {}\n    server node2 {} check port {}\n",
        n1.addr(),
        api1.port(),
        n2.addr(),
        api2.port()
    ));
    time_to_log(
        &lb,
        "Server primary/node2 is DOWN",
        1,
        Duration::from_secs(3),
    );
    let seq: Vec<String> = (0..6)
        .map(|_| who_answers(local(port)).expect("conn"))
        .collect();
    assert!(seq.iter().all(|n| n == "node1"), "{seq:?}");
    assert!(
        lb.stderr_text().contains("Layer7 wrong status, code: 503"),
        "{}",
        lb.stderr_text()
    );

    // Switchover: node2 becomes primary, node1 a replica.
    api1.set(Reply::http(
        503,
        "Service Unavailable",
        r#"{"role":"replica"}"#,
    ));
    api2.set(Reply::http(200, "OK", r#"{"role":"primary"}"#));
    time_to_log(
        &lb,
        "Server primary/node1 is DOWN",
        1,
        Duration::from_secs(3),
    );
    time_to_log(&lb, "Server primary/node2 is UP", 1, Duration::from_secs(3));
    let seq: Vec<String> = (0..6)
        .map(|_| who_answers(local(port)).expect("conn"))
        .collect();
    assert!(seq.iter().all(|n| n == "node2"), "{seq:?}");
}

fn echo_alive(conn: &mut std::net::TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(2))).is_ok()
        && conn.write_all(b"ping").is_ok()
        && {
            let mut b = [0u8; 4];
            conn.read_exact(&mut b).is_ok()
        }
}

#[test]
fn on_marked_down_shutdown_sessions_closes_sessions_within_one_check_interval() {
    for shutdown in [true, false] {
        let app = NamedServer::start("app");
        let health = Scripted::start(Reply::text("OK\n"), false);
        let port = free_port();
        let opt = if shutdown {
            "on-marked-down shutdown-sessions"
        } else {
            ""
        };
        let lb = Rolelb::start(&format!(
            "{DEFAULTS}listen lb\n    bind 127.0.0.1:{port}\n    option tcp-check\n    tcp-check expect string OK\n    \
             server app {} check port {} inter 300ms fall 1 rise 1 {opt}\n",
            app.addr(),
            health.port()
        ));
        std::thread::sleep(Duration::from_millis(700));
        let (_, mut held) = open_named(local(port)).expect("session");
        assert!(echo_alive(&mut held));
        health.set(Reply::text("NO\n"));
        time_to_log(&lb, "is DOWN", 1, Duration::from_secs(3));
        let marked = Instant::now();
        if shutdown {
            held.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            let mut b = [0u8; 8];
            let closed = matches!(held.read(&mut b), Ok(0)) || !echo_alive(&mut held);
            assert!(closed, "session should be closed once the server is DOWN");
            assert!(
                marked.elapsed() < Duration::from_millis(600),
                "closed within one inter"
            );
            assert!(
                wait_until(Duration::from_secs(1), || app.open() == 0),
                "server side closed too"
            );
        } else {
            std::thread::sleep(Duration::from_millis(600));
            assert!(
                echo_alive(&mut held),
                "without shutdown-sessions the session is left alone"
            );
        }
    }
}

#[test]
fn a_server_that_accepts_but_never_answers_is_failed_by_timeout_check() {
    let app = NamedServer::start("app");
    let hung = Scripted::start(Reply::Silent, false);
    let port = free_port();
    let lb = Rolelb::start(&format!(
        "{DEFAULTS}    timeout check 300ms\nlisten lb\n    bind 127.0.0.1:{port}\n    option tcp-check\n    \
         tcp-check expect string OK\n    server app {} check port {} inter 1s fall 1 rise 1\n",
        app.addr(),
        hung.port()
    ));
    let down_after = time_to_log(&lb, "is DOWN", 1, Duration::from_secs(4));
    assert!(down_after < Duration::from_millis(2500), "{down_after:?}");
    let log = lb.stderr_text();
    assert!(
        log.contains("timeout"),
        "the reason names the timeout: {log}"
    );
}

#[test]
fn mysql_check_marks_a_mariadb_backend_down_after_fall_and_up_after_rise() {
    let mut db = common::Mariadb::start();
    db.sql("CREATE USER 'haproxy_check'@'127.0.0.1'; CREATE USER 'haproxy_check'@'localhost';");
    let port = free_port();
    let lb = Rolelb::start(&format!(
        "{DEFAULTS}listen mysql\n    bind 127.0.0.1:{port}\n    option mysql-check user haproxy_check\n    \
         server m1 127.0.0.1:{} check inter 500ms rise 2 fall 3\n",
        db.port()
    ));
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        !lb.stderr_text().contains("is DOWN"),
        "{}",
        lb.stderr_text()
    );
    db.stop();
    let down_after = time_to_log(&lb, "is DOWN", 1, Duration::from_secs(5));
    assert!(
        within(down_after, 900, 2000),
        "DOWN {down_after:?} after the stop (fall x inter = 1.5s)"
    );
    assert!(
        lb.stderr_text()
            .contains("Server mysql/m1 is DOWN, reason: Layer4 connection problem")
    );
    db.restart();
    let up_after = time_to_log(&lb, "is UP", 1, Duration::from_secs(5));
    assert!(
        up_after <= Duration::from_millis(1600),
        "UP {up_after:?} after restart (rise x inter = 1s)"
    );
    assert!(
        lb.stderr_text()
            .contains("Server mysql/m1 is UP, reason: Layer7 check passed"),
        "{}",
        lb.stderr_text()
    );
}
