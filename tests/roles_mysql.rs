//! Acceptance for role awareness on MariaDB 10.11 (issue 4): `role-check mysql` reads
//! `@@global.read_only` (MariaDB has no `super_read_only`), so toggling it moves a server
//! between the write and the read listener, closes the sessions of a server that stops being
//! the primary, and two writable servers are a conflict. Real MariaDB, the `mariadb` client.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    MARIADB_BIN, Mariadb, REFUSAL_BOUND, Rolelb, free_port, refusal_time, require_bin, wait_until,
};

/// How long a role change may take to reach the data path: `fall × inter + inter` with the
/// config's `inter 500ms fall 2`.
const ROLE_CHANGE_BOUND: Duration = Duration::from_millis(500 * (2 + 1));
/// What starting the `mariadb` client and logging in may add on a loaded 2-core machine.
const CLIENT_SLACK: Duration = Duration::from_millis(1000);

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The `mariadb` client over TCP through 127.0.0.1:`port` as the application user; rows
/// tab-separated, trimmed. Err carries the client's stderr.
fn try_app_sql(port: u16, sql: &str) -> Result<String, String> {
    let out = Command::new(require_bin(MARIADB_BIN))
        .args(["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1"])
        .args(["-P", &port.to_string(), "-u", "app", "-papp-pw"])
        .args([
            "--batch",
            "--skip-column-names",
            "--connect-timeout=3",
            "-e",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run mariadb: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A write through `port`: records which server took it and returns that server's port.
fn write_through(port: u16) -> Result<String, String> {
    try_app_sql(
        port,
        "INSERT INTO app.writes VALUES (@@port); SELECT @@port",
    )
}

/// A MariaDB session held open across the scenario (mysql_async on its own runtime).
struct MySession {
    rt: tokio::runtime::Runtime,
    conn: Option<mysql_async::Conn>,
}

impl MySession {
    /// Logs in as the application user through 127.0.0.1:`port`.
    fn open(port: u16) -> Result<MySession, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some("app"))
            .pass(Some("app-pw"))
            .prefer_socket(false);
        let conn = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), mysql_async::Conn::new(opts))
                .await
                .map_err(|_| format!("no login through :{port} within 5s"))?
                .map_err(|e| e.to_string())
        })?;
        Ok(MySession {
            rt,
            conn: Some(conn),
        })
    }

    /// `SELECT @@port` on the session.
    fn port(&mut self) -> Result<String, String> {
        use mysql_async::prelude::Queryable;
        let conn = self.conn.as_mut().ok_or("no connection")?;
        self.rt.block_on(async {
            let port: Option<u16> =
                tokio::time::timeout(Duration::from_secs(5), conn.query_first("SELECT @@port"))
                    .await
                    .map_err(|_| "no answer within 5s".to_owned())?
                    .map_err(|e| e.to_string())?;
            port.map(|p| p.to_string())
                .ok_or_else(|| "no row".to_owned())
        })
    }
}

impl Drop for MySession {
    fn drop(&mut self) {
        // mysql_async disconnects from a task: it needs the runtime at hand.
        let _in_runtime = self.rt.enter();
        self.conn.take();
    }
}

/// A MariaDB with the role check's user (status only) and an application user and table.
fn mariadb() -> Mariadb {
    let db = Mariadb::start();
    db.sql(
        "CREATE USER 'monitor'@'127.0.0.1' IDENTIFIED BY 'monitor-pw'; \
         GRANT SLAVE MONITOR ON *.* TO 'monitor'@'127.0.0.1'; \
         CREATE DATABASE app; CREATE TABLE app.writes (port int); \
         CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw'; \
         GRANT ALL ON app.* TO 'app'@'127.0.0.1'",
    );
    db
}

/// Polls `f` until it returns `want`; how long that took, or the last answer on timeout.
fn time_until(
    want: &str,
    limit: Duration,
    mut f: impl FnMut() -> Result<String, String>,
) -> Result<Duration, Result<String, String>> {
    let started = Instant::now();
    let mut last = Err("never asked".to_owned());
    while started.elapsed() < limit {
        last = f();
        if last.as_deref() == Ok(want) {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last)
}

#[test]
fn mariadb_read_only_moves_servers_between_write_and_read_listeners() {
    let m1 = mariadb();
    let m2 = mariadb();
    m2.sql("SET GLOBAL read_only = 1");
    let (p1, p2) = (m1.port().to_string(), m2.port().to_string());
    let (write, read, lagged) = (free_port(), free_port(), free_port());
    let servers = format!(
        "    server m1 127.0.0.1:{}\n    server m2 127.0.0.1:{}\n",
        m1.port(),
        m2.port()
    );
    let cfg = format!(
        "global\n    maxconn 200\n\n\
         defaults\n    mode tcp\n    option tcplog\n    timeout connect 3s\n    timeout client 1m\n\
         \x20   timeout server 1m\n    timeout check 1s\n    default-server inter 500ms fall 2 rise 2\n\
         \x20   role-check mysql user monitor password monitor-pw\n\n\
         listen writes\n    bind 127.0.0.1:{write}\n    role primary\n{servers}\n\
         listen reads\n    bind 127.0.0.1:{read}\n    role replica\n{servers}\n\
         listen lagged\n    bind 127.0.0.1:{lagged}\n    role replica\n    max-lag 10s\n{servers}"
    );
    let lb = Rolelb::start(&cfg);
    let expect_log_since = |mark: usize, needle: &str, limit: Duration| {
        assert!(
            lb.wait_for_log_since(mark, needle, limit),
            "rolelb did not log {needle:?} within {limit:?}:\n{}",
            lb.stderr_text()
        );
    };
    for needle in [
        "Server writes/m1 reports role primary",
        "Server reads/m2 reports role replica",
        "Server lagged/m2 reports role replica",
    ] {
        expect_log_since(0, needle, Duration::from_secs(5));
    }

    for _ in 0..3 {
        assert_eq!(write_through(write), Ok(p1.clone()), "writes reach m1");
        assert_eq!(
            try_app_sql(read, "SELECT @@port"),
            Ok(p2.clone()),
            "reads reach m2"
        );
    }
    // Without replication the lag is unknown: with max-lag, unknown keeps a replica out,
    // round after round of checks, and the log says why from the first reading.
    expect_log_since(
        0,
        "Server lagged/m2 is NOLB: lag unknown, unknown",
        Duration::from_secs(2),
    );
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        let took = refusal_time(local(lagged)).unwrap_or_else(|e| {
            panic!("a replica of unknown lag took a client under max-lag: {e}")
        });
        assert!(took < REFUSAL_BOUND, "refusal took {took:?}");
        // Proving an absence over several check rounds: sample every 100 ms.
        std::thread::sleep(Duration::from_millis(100));
    }

    // Switch the roles: m1 read-only first, then m2 writable.
    let mut held = MySession::open(write).expect("a session through the write listener");
    assert_eq!(held.port(), Ok(p1.clone()));
    m1.sql("SET GLOBAL read_only = 1");
    m2.sql("SET GLOBAL read_only = 0");
    let toggled = Instant::now();
    let mut write_errors = Vec::new();
    let writes_moved = time_until(&p2, Duration::from_secs(5), || {
        let r = write_through(write);
        if let Err(e) = &r {
            write_errors.push(e.clone());
        }
        r
    });
    let reads_moved = time_until(&p1, Duration::from_secs(5), || {
        try_app_sql(read, "SELECT @@port")
    })
    .map(|_| toggled.elapsed());
    let closed = wait_until(Duration::from_secs(2), || held.port().is_err());
    let held_closed_after = toggled.elapsed();
    eprintln!(
        "mariadb: writes reach m2 {writes_moved:?} and reads reach m1 {reads_moved:?} after the \
         read_only toggle (bound {ROLE_CHANGE_BOUND:?} + {CLIENT_SLACK:?}); held write session on \
         m1 closed: {closed} (by {held_closed_after:?}); writes refused by the read-only m1 before rolelb's next check: {}",
        write_errors
            .iter()
            .filter(|e| e.contains("read-only"))
            .count()
    );
    let writes_moved = writes_moved.unwrap_or_else(|last| {
        panic!(
            "writes did not move to m2 within 5s: {last:?}\n{}",
            lb.stderr_text()
        )
    });
    let reads_moved = reads_moved.unwrap_or_else(|last| {
        panic!(
            "reads did not move to m1 within 5s: {last:?}\n{}",
            lb.stderr_text()
        )
    });
    assert!(
        writes_moved <= ROLE_CHANGE_BOUND + CLIENT_SLACK,
        "writes moved after {writes_moved:?}"
    );
    assert!(
        reads_moved <= ROLE_CHANGE_BOUND + 2 * CLIENT_SLACK,
        "reads moved after {reads_moved:?}"
    );
    // Until its next role check rolelb cannot know m1 went read-only, so writes in that window
    // fail on m1 (every balancer has that window); once it has seen the change, none may.
    for _ in 0..5 {
        assert_eq!(write_through(write), Ok(p2.clone()), "writes stay on m2");
    }
    assert!(
        closed,
        "the session through the write listener to m1 survived m1 becoming read-only"
    );
    expect_log_since(
        0,
        "Server writes/m1 is no longer the primary",
        Duration::ZERO,
    );
    let log = lb.stderr_text();
    let stray: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("max-lag") && !l.contains("Server lagged/"))
        .collect();
    assert!(
        stray.is_empty(),
        "lag is logged only for backends with max-lag: {stray:#?}"
    );

    // Both writable: a split brain; the write listener refuses at once and names both.
    let mark = lb.log_mark();
    m1.sql("SET GLOBAL read_only = 0");
    expect_log_since(
        mark,
        "role conflict: servers m1 and m2 all report primary",
        ROLE_CHANGE_BOUND,
    );
    let took = refusal_time(local(write)).unwrap_or_else(|e| {
        panic!(
            "the write listener must refuse during the conflict: {e}\n{}",
            lb.stderr_text()
        )
    });
    assert!(took < REFUSAL_BOUND, "refusal took {took:?}");
    assert!(
        write_through(write).is_err(),
        "a write got through during the conflict"
    );
}
