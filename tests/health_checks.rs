//! Health checks as HAProxy runs them, against real servers: intervals (`inter`, `fastinter`,
//! `downinter`), rise/fall timing with `pgsql-check` in front of a real PgBouncer + PostgreSQL,
//! `httpchk` routing like Patroni's `/primary`, `on-marked-down shutdown-sessions`, and a
//! server that accepts but never answers being failed by `timeout check`.

mod common;
mod lbcfg;
mod scripted;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    NamedServer, PgBouncer, Postgres, REFUSAL_BOUND, Rolelb, Session, free_port, open_named,
    refusal_time, session_state, stats_cli, try_psql, wait_closed, wait_until, who_answers,
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

/// Waits (up to 15 s) until `n` checks have arrived at `server` since `from`.
fn arrivals_after(server: &Scripted, from: Instant, n: usize) {
    let count = || server.arrivals().iter().filter(|&&t| t >= from).count();
    assert!(
        wait_until(Duration::from_secs(15), || count() >= n),
        "{} checks arrived, want {n}",
        count()
    );
}

/// A `global` section with a stats socket at `sock`, for [`wait_check_passed`].
fn global_with_socket(sock: &Path) -> String {
    format!(
        "global\n    stats socket {} level admin\n\n",
        sock.display()
    )
}

/// Waits until `show stat` reports `px/sv`'s last check as passed (`L7OK`): from then on, a
/// failure is counted from a server that was UP and checked, not from the start-up state.
fn wait_check_passed(lb: &Rolelb, sock: &Path, px: &str, sv: &str) {
    let status = || {
        common::stat_row(&stats_cli(sock, "show stat"), px, sv)
            .and_then(|row| row.get("check_status").cloned())
    };
    assert!(
        wait_until(Duration::from_secs(10), || status().as_deref()
            == Some("L7OK")),
        "{px}/{sv}: check status {:?}, want L7OK\n{}",
        status(),
        lb.stderr_text()
    );
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
    // Interval bounds: wide enough for a loaded 2-core machine (timers and threads wake late),
    // narrow enough that inter (1 s), fastinter (200 ms) and downinter (2 s) cannot pass for
    // one another.
    let started = Instant::now();
    // Steady UP: one check per `inter` (the first one settles the start state).
    let settled = started + Duration::from_millis(1200);
    arrivals_after(&health, settled, 3);
    let steady = gaps_after(&health.arrivals(), settled);
    assert!(steady.len() >= 2, "{steady:?}");
    for g in &steady {
        assert!(within(*g, 750, 1400), "inter 1s: gaps {steady:?}");
    }
    assert_eq!(who_answers(local(port)).expect("UP serves"), "app");

    // Failing: the first failure comes within one inter, then `fastinter` until DOWN.
    health.set(Reply::text("NO\n"));
    let flipped = Instant::now();
    let down_after = time_to_log(&lb, "is DOWN", 1, Duration::from_secs(5));
    assert!(
        within(down_after, 350, 2000),
        "DOWN after {down_after:?} (<= inter + 2 x fastinter = 1.4s; with inter alone 3s)"
    );
    let fast = gaps_after(&health.arrivals(), flipped);
    assert!(
        fast.len() >= 2 && fast.iter().take(2).all(|g| within(*g, 100, 450)),
        "fastinter 200ms: {fast:?}"
    );
    match refusal_time(local(port)) {
        Ok(took) => assert!(took < REFUSAL_BOUND, "refusal took {took:?}"),
        Err(e) => panic!("no server while DOWN: closed at once: {e}"),
    }

    // Steady DOWN: one check per `downinter`.
    let down_at = Instant::now();
    arrivals_after(&health, down_at, 3);
    let slow = gaps_after(&health.arrivals(), down_at);
    assert!(
        slow.len() >= 2 && slow.iter().all(|g| within(*g, 1600, 2600)),
        "downinter 2s: {slow:?}"
    );

    // Recovering: the next check passes (within downinter), then `fastinter` to `rise`.
    health.set(Reply::text("OK\n"));
    let up_after = time_to_log(&lb, "is UP", 1, Duration::from_secs(6));
    assert!(
        up_after <= Duration::from_millis(3200),
        "UP after {up_after:?} (<= downinter + fastinter = 2.2s; with downinter alone 4s)"
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
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("rolelb.sock");
    let lb = Rolelb::start(&format!(
        "{}{DEFAULTS}listen db\n    bind 127.0.0.1:{port}\n    option pgsql-check user postgres\n    \
         server pg1 127.0.0.1:{} check port {} inter 500ms rise 2 fall 3\n",
        global_with_socket(&sock),
        bouncer.port(),
        pg.port()
    ));
    assert_eq!(
        try_psql(port, "SELECT 1").expect("psql through rolelb"),
        "1"
    );
    wait_check_passed(&lb, &sock, "db", "pg1");

    let stopping = Instant::now();
    pg.stop();
    time_to_log(&lb, "is DOWN", 1, Duration::from_secs(6));
    let down_after = stopping.elapsed();
    // fall x inter: the first failure lands within one inter of the stop, two more follow,
    // so 1 to 1.5 s (fall 1 would be under 0.5 s); the upper bound leaves room for a loaded
    // machine and for the time the stop itself takes.
    assert!(
        within(down_after, 900, 3000),
        "DOWN {down_after:?} after the stop (fall x inter = 1.5s)"
    );
    let log = lb.stderr_text();
    assert!(
        log.contains("Server db/pg1 is DOWN, reason: Layer4 connection problem"),
        "{log}"
    );
    assert!(try_psql(port, "SELECT 1").is_err(), "no server while DOWN");

    pg.start();
    let up_after = time_to_log(&lb, "is UP", 1, Duration::from_secs(6));
    assert!(
        up_after <= Duration::from_millis(3000),
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
fn on_marked_down_shutdown_sessions_closes_sessions_when_marked_down() {
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
        // Two checks have arrived, so the first one's verdict (UP) is in.
        assert!(
            wait_until(Duration::from_secs(5), || health.arrivals().len() >= 2),
            "no health checks arrived"
        );
        let (_, mut held) = open_named(local(port)).expect("session");
        assert!(echo_alive(&mut held));
        health.set(Reply::text("NO\n"));
        time_to_log(&lb, "is DOWN", 1, Duration::from_secs(5));
        if shutdown {
            // Closed when marked DOWN (bounded by two check intervals here, far below the
            // 30 s `timeout client`/`timeout server` that would otherwise end it).
            let closed = wait_closed(&mut held, Duration::from_secs(2));
            assert!(
                closed.is_some(),
                "session should be closed once the server is DOWN"
            );
            assert!(
                wait_until(Duration::from_secs(2), || app.open() == 0),
                "server side closed too"
            );
        } else {
            // Proving an absence: the session stays open for as long as the other case
            // allows for the close, then still echoes.
            assert_eq!(
                session_state(&mut held, Duration::from_secs(2)),
                Session::Open,
                "without shutdown-sessions the session is left alone"
            );
            assert!(
                echo_alive(&mut held),
                "without shutdown-sessions the session still echoes"
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
    // The first check within `inter` (1 s) fails after `timeout check` (300 ms); without the
    // timeout it would hang until the silent server gives up after 5 s.
    let down_after = time_to_log(&lb, "is DOWN", 1, Duration::from_secs(6));
    assert!(down_after < Duration::from_millis(4000), "{down_after:?}");
    let log = lb.stderr_text();
    assert!(
        log.contains(
            "Server lb/app is DOWN, reason: Layer7 timeout, info: \"at step 1 of tcp-check (expect string 'OK')\""
        ),
        "the reason names the timeout and the step: {log}"
    );
}

#[test]
fn mysql_check_marks_a_mariadb_backend_down_after_fall_and_up_after_rise() {
    let mut db = common::Mariadb::start();
    db.sql("CREATE USER 'haproxy_check'@'127.0.0.1'; CREATE USER 'haproxy_check'@'localhost';");
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("rolelb.sock");
    let lb = Rolelb::start(&format!(
        "{}{DEFAULTS}listen mysql\n    bind 127.0.0.1:{port}\n    option mysql-check user haproxy_check\n    \
         server m1 127.0.0.1:{} check inter 500ms rise 2 fall 3\n",
        global_with_socket(&sock),
        db.port()
    ));
    wait_check_passed(&lb, &sock, "mysql", "m1");
    assert!(
        !lb.stderr_text().contains("is DOWN"),
        "{}",
        lb.stderr_text()
    );
    let stopping = Instant::now();
    db.stop();
    time_to_log(&lb, "is DOWN", 1, Duration::from_secs(6));
    let down_after = stopping.elapsed();
    assert!(
        within(down_after, 900, 3000),
        "DOWN {down_after:?} after the stop (fall x inter = 1.5s)"
    );
    assert!(
        lb.stderr_text()
            .contains("Server mysql/m1 is DOWN, reason: Layer4 connection problem")
    );
    db.restart();
    let up_after = time_to_log(&lb, "is UP", 1, Duration::from_secs(6));
    assert!(
        up_after <= Duration::from_millis(3000),
        "UP {up_after:?} after restart (rise x inter = 1s)"
    );
    assert!(
        lb.stderr_text()
            .contains("Server mysql/m1 is UP, reason: Layer7 check passed"),
        "{}",
        lb.stderr_text()
    );
}
