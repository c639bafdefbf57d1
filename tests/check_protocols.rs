//! Each check type against real servers: PostgreSQL 15, PgBouncer, MariaDB 10.11, and tiny
//! HTTP / agent / line servers started here (std listeners answering fixed bytes). Where it
//! matters, HAProxy 2.6 runs the same check against the same server and its log must show
//! the same status.
//!
//! Longer than 700 lines on purpose: one section per check protocol, each with its small
//! server; splitting would duplicate the shared HAProxy side-by-side helpers.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Haproxy, Mariadb, PgBouncer, Postgres, free_port};
use rolelb::check::agent::{self, AgentAdmin, AgentHealth};
use rolelb::check::{CheckResult, Status, Target, http, mysql, pgsql, tcp, tcp_check};
use rolelb::config::{HttpCheck, HttpExpect, TcpCheckRule};

/// Timeouts for most checks: long enough for a loaded CI machine, short enough to fail fast.
const CONNECT: Duration = Duration::from_secs(2);
const READ: Duration = Duration::from_secs(2);

fn target(addr: SocketAddr) -> Target {
    Target {
        addr,
        connect_timeout: CONNECT,
        read_timeout: READ,
        tls: None,
        proxy_header: None,
        source: None,
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A check that should fail by timing out: `read_timeout` short, and the check must end
/// within it plus slack.
fn short(addr: SocketAddr) -> Target {
    Target {
        addr,
        connect_timeout: Duration::from_millis(300),
        read_timeout: Duration::from_millis(300),
        tls: None,
        proxy_header: None,
        source: None,
    }
}

fn assert_status(result: &CheckResult, status: Status) {
    assert_eq!(result.status, status, "unexpected result: {result}");
}

// ---------------------------------------------------------------------------------------------
// Tiny servers
// ---------------------------------------------------------------------------------------------

/// What a [`FixedServer`] does after writing its reply.
#[derive(Clone, Copy)]
enum After {
    /// Drain what the client sent, then close (FIN).
    Close,
    /// Keep the connection open, saying nothing more.
    Hold,
}

/// A server on 127.0.0.1 that writes the same bytes to every connection.
struct FixedServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FixedServer {
    fn start(reply: &[u8], after: After) -> FixedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let reply = reply.to_vec();
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let reply = reply.clone();
                            match after {
                                After::Hold => {
                                    let mut conn = conn;
                                    let _ = std::io::Write::write_all(&mut conn, &reply);
                                    held.push(conn);
                                }
                                After::Close => {
                                    thread::spawn(move || answer_and_close(conn, &reply));
                                }
                            }
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FixedServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Writes `reply`, reads what the client sends until it closes (or 500ms), then closes.
fn answer_and_close(mut conn: TcpStream, reply: &[u8]) {
    let _ = conn.set_nonblocking(false);
    let _ = std::io::Write::write_all(&mut conn, reply);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    while let Ok(n) = conn.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

impl Drop for FixedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A listener whose accept queue is full: connects to it hang (SYNs are dropped).
struct FullBacklog {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

impl FullBacklog {
    fn start() -> FullBacklog {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let addr = local(free_port());
        listener.bind(&addr.into()).expect("bind");
        listener.listen(0).expect("listen");
        // Never accepted: fill the queue until a connect no longer completes.
        let mut queued = Vec::new();
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(conn) => queued.push(conn),
                Err(_) => break,
            }
        }
        FullBacklog {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HAProxy as the reference
// ---------------------------------------------------------------------------------------------

/// Runs HAProxy with `check_lines` (proxy-level check keywords) and one server at `addr` with
/// `server_opts`, and returns the reason of the first check it logs (`Layer7 check passed`,
/// ...) and the whole log line. `agent` picks the agent's log lines instead of the health
/// check's.
fn haproxy_verdict(
    check_lines: &str,
    addr: SocketAddr,
    server_opts: &str,
    agent: bool,
) -> (String, String) {
    let cfg = format!(
        "global\n  log stderr format raw local0\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n  timeout check 2s\n\
         listen l\n  bind 127.0.0.1:{}\n  option log-health-checks\n  log global\n{check_lines}\n\
           server s1 {addr} {server_opts}\n",
        free_port()
    );
    let haproxy = Haproxy::start(&cfg);
    let prefix = if agent {
        "Agent check for server l/s1 "
    } else {
        "Health check for server l/s1 "
    };
    haproxy.check_reason(prefix)
}

/// Asserts that HAProxy reported the same status as rolelb's `result`.
fn assert_same_as_haproxy(result: &CheckResult, haproxy: (String, String)) {
    let (reason, line) = haproxy;
    assert_eq!(
        result.status.describe(),
        reason,
        "rolelb: {result}\nHAProxy: {line}"
    );
}

// ---------------------------------------------------------------------------------------------
// tcp
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tcp_check_passes_on_a_listening_port() {
    let server = FixedServer::start(b"", After::Hold);
    let result = tcp::check(&target(server.addr())).await;
    assert_status(&result, Status::L4Ok);
    assert!(result.duration < CONNECT);
}

#[tokio::test]
async fn tcp_check_on_a_closed_port_is_a_refused_connection() {
    let result = tcp::check(&target(local(free_port()))).await;
    assert_status(&result, Status::L4Con);
    assert_eq!(result.info, "Connection refused");
    assert_eq!(
        result.to_string(),
        format!(
            "Layer4 connection problem, info: \"Connection refused\", check duration: {}ms",
            result.duration.as_millis()
        )
    );
}

#[tokio::test]
async fn tcp_check_times_out_against_a_full_backlog_within_connect_timeout() {
    let blackhole = FullBacklog::start();
    let started = Instant::now();
    let result = tcp::check(&short(blackhole.addr)).await;
    assert_status(&result, Status::L4Tout);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(result.duration >= Duration::from_millis(300));
}

// ---------------------------------------------------------------------------------------------
// tcp-check
// ---------------------------------------------------------------------------------------------

fn send(text: &str) -> TcpCheckRule {
    TcpCheckRule::Send(text.as_bytes().to_vec())
}

fn expect(text: &str, negate: bool) -> TcpCheckRule {
    TcpCheckRule::ExpectString {
        pattern: text.as_bytes().to_vec(),
        negate,
    }
}

fn expect_re(re: &str, negate: bool) -> TcpCheckRule {
    TcpCheckRule::ExpectRegex {
        pattern: re.to_string(),
        negate,
    }
}

#[tokio::test]
async fn tcp_check_send_expect_passes_like_haproxy() {
    let server = FixedServer::start(b"+PONG\r\n", After::Close);
    let rules = [send("PING\r\n"), expect("+PONG", false)];
    let result = tcp_check::check(&target(server.addr()), &rules).await;
    assert_status(&result, Status::L7Ok);
    assert_eq!(result.info, "(tcp-check)");
    assert_eq!(result.code.as_deref(), Some("0"));
    let haproxy = haproxy_verdict(
        "  option tcp-check\n  tcp-check send PING\\r\\n\n  tcp-check expect string +PONG",
        server.addr(),
        "check inter 1s",
        false,
    );
    assert_same_as_haproxy(&result, haproxy);
}

#[tokio::test]
async fn tcp_check_mismatch_names_the_step_like_haproxy() {
    let server = FixedServer::start(b"-ERR unknown\r\n", After::Close);
    let rules = [send("PING\r\n"), expect("+PONG", false)];
    let result = tcp_check::check(&target(server.addr()), &rules).await;
    assert_status(&result, Status::L7Rsp);
    assert_eq!(
        result.info,
        "TCPCHK did not match content '+PONG' at step 2"
    );
    let haproxy = haproxy_verdict(
        "  option tcp-check\n  tcp-check send PING\\r\\n\n  tcp-check expect string +PONG",
        server.addr(),
        "check inter 1s",
        false,
    );
    assert!(haproxy.1.contains(&result.info), "{}", haproxy.1);
    assert_same_as_haproxy(&result, haproxy);
}

#[tokio::test]
async fn tcp_check_regex_and_negations() {
    let server = FixedServer::start(b"role:master\r\n", After::Close);
    let t = target(server.addr());
    let ok = tcp_check::check(&t, &[expect_re("^role:(master|primary)", false)]).await;
    assert_status(&ok, Status::L7Ok);
    let miss = tcp_check::check(&t, &[expect_re("^role:slave", false)]).await;
    assert_status(&miss, Status::L7Rsp);
    assert_eq!(miss.info, "TCPCHK did not match content (regex) at step 1");
    let unwanted = tcp_check::check(&t, &[expect("master", true)]).await;
    assert_status(&unwanted, Status::L7Rsp);
    assert_eq!(
        unwanted.info,
        "TCPCHK matched unwanted content 'master' at step 1"
    );
    let unwanted_re = tcp_check::check(&t, &[expect_re("mas+ter", true)]).await;
    assert_eq!(
        unwanted_re.info,
        "TCPCHK matched unwanted content (regex) at step 1"
    );
    // A negated expect passes once the answer is complete without the pattern.
    let absent = tcp_check::check(&t, &[expect("slave", true)]).await;
    assert_status(&absent, Status::L7Ok);
    // Two expects see the same data; a send discards it (HAProxy 2.6).
    let twice = tcp_check::check(&t, &[expect("role", false), expect("master", false)]).await;
    assert_status(&twice, Status::L7Ok);
    let after_send = tcp_check::check(
        &t,
        &[expect("role", false), send("x"), expect("master", false)],
    )
    .await;
    assert_status(&after_send, Status::L7Rsp);
    assert_eq!(after_send.info, "TCPCHK got an empty response at step 3");
}

#[tokio::test]
async fn tcp_check_without_expect_is_l7ok_and_without_rules_l4ok() {
    let server = FixedServer::start(b"", After::Close);
    let t = target(server.addr());
    let sent = tcp_check::check(&t, &[send("hello\r\n")]).await;
    assert_status(&sent, Status::L7Ok);
    let none = tcp_check::check(&t, &[]).await;
    assert_status(&none, Status::L4Ok);
}

#[tokio::test]
async fn tcp_check_connect_port_and_refusals_name_the_step() {
    let server = FixedServer::start(b"hello\n", After::Close);
    let closed = free_port();
    // The target's own port is closed; `connect port` goes to the live server.
    let t = target(local(closed));
    let ok = tcp_check::check(
        &t,
        &[
            TcpCheckRule::Connect {
                port: Some(server.addr().port()),
            },
            expect("hello", false),
        ],
    )
    .await;
    assert_status(&ok, Status::L7Ok);
    let implicit = tcp_check::check(&t, &[expect("hello", false)]).await;
    assert_status(&implicit, Status::L4Con);
    assert_eq!(
        implicit.info,
        "Connection refused at initial connection step of tcp-check"
    );
    let explicit = tcp_check::check(
        &target(server.addr()),
        &[
            expect("hello", false),
            TcpCheckRule::Connect { port: Some(closed) },
        ],
    )
    .await;
    assert_status(&explicit, Status::L4Con);
    assert_eq!(
        explicit.info,
        format!("Connection refused at step 2 of tcp-check (connect port {closed})")
    );
}

#[tokio::test]
async fn tcp_check_expect_times_out_on_a_silent_server() {
    let server = FixedServer::start(b"", After::Hold);
    let started = Instant::now();
    let result = tcp_check::check(&short(server.addr()), &[expect("+PONG", false)]).await;
    assert_status(&result, Status::L7Tout);
    assert_eq!(
        result.info,
        "at step 1 of tcp-check (expect string '+PONG')"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// pgsql-check
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pgsql_check_passes_on_postgres_and_pgbouncer_and_fails_when_stopped() {
    let mut pg = Postgres::primary();
    let bouncer = PgBouncer::new(pg.port());

    let direct = pgsql::check(&target(local(pg.port())), "postgres").await;
    assert_status(&direct, Status::L7Ok);
    assert_eq!(direct.info, "PostgreSQL server is ok");
    let haproxy = haproxy_verdict(
        "  option pgsql-check user postgres",
        local(pg.port()),
        "check inter 1s",
        false,
    );
    assert_same_as_haproxy(&direct, haproxy);

    let pooled = pgsql::check(&target(local(bouncer.port())), "postgres").await;
    assert_status(&pooled, Status::L7Ok);

    // An unknown role: with trust authentication PostgreSQL sends AuthenticationOk before it
    // looks the role up, so HAProxy (and rolelb) see a healthy server.
    let unknown = pgsql::check(&target(local(pg.port())), "nobody").await;
    assert_status(&unknown, Status::L7Ok);
    let haproxy = haproxy_verdict(
        "  option pgsql-check user nobody",
        local(pg.port()),
        "check inter 1s",
        false,
    );
    assert_same_as_haproxy(&unknown, haproxy);

    // PgBouncer refuses a user missing from its auth_file before authenticating.
    let refused = pgsql::check(&target(local(bouncer.port())), "nobody").await;
    assert_status(&refused, Status::L7Rsp);
    assert_eq!(refused.code.as_deref(), Some("08P01"));
    assert_eq!(refused.info, "FATAL: \"trust\" authentication failed");
    let haproxy = haproxy_verdict(
        "  option pgsql-check user nobody",
        local(bouncer.port()),
        "check inter 1s",
        false,
    );
    assert_same_as_haproxy(&refused, haproxy);

    pg.stop();
    let stopped = pgsql::check(&target(local(pg.port())), "postgres").await;
    assert_status(&stopped, Status::L4Con);
    assert_eq!(stopped.info, "Connection refused");
    let pooled_down = pgsql::check(&target(local(bouncer.port())), "postgres").await;
    // PgBouncer authenticates the client before it needs a server connection: HAProxy and
    // rolelb both see it healthy while its database is down.
    assert_status(&pooled_down, Status::L7Ok);
    let haproxy = haproxy_verdict(
        "  option pgsql-check user postgres",
        local(bouncer.port()),
        "check inter 1s",
        false,
    );
    assert_same_as_haproxy(&pooled_down, haproxy);
}

#[tokio::test]
async fn pgsql_check_judges_garbage_like_haproxy() {
    // Not a PostgreSQL message at all: HAProxy says "PostgreSQL unknown error" (L7STS).
    let garbage = FixedServer::start(b"HTTP/1.1 400 Bad Request\r\n\r\n", After::Close);
    let result = pgsql::check(&target(garbage.addr()), "postgres").await;
    assert_status(&result, Status::L7Sts);
    assert_eq!(result.info, "PostgreSQL unknown error");
    let haproxy = haproxy_verdict(
        "  option pgsql-check user postgres",
        garbage.addr(),
        "check inter 1s",
        false,
    );
    assert_same_as_haproxy(&result, haproxy);

    // An ErrorResponse whose length lies and whose fields are junk: L7RSP, no panic.
    let junk = FixedServer::start(b"E\x7f\xff\xff\xffS\xff\xfe", After::Close);
    let result = pgsql::check(&target(junk.addr()), "postgres").await;
    assert_status(&result, Status::L7Rsp);

    // Nothing at all, then close.
    let empty = FixedServer::start(b"", After::Close);
    let result = pgsql::check(&target(empty.addr()), "postgres").await;
    assert_status(&result, Status::L7Rsp);

    // Accepts and never answers.
    let silent = FixedServer::start(b"", After::Hold);
    let started = Instant::now();
    let result = pgsql::check(&short(silent.addr()), "postgres").await;
    assert_status(&result, Status::L7Tout);
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// mysql-check
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mysql_check_against_mariadb_like_haproxy() {
    let mut db = Mariadb::start();
    db.sql("CREATE USER 'haproxy_check'@'127.0.0.1'");
    let t = target(local(db.port()));

    for post_41 in [true, false] {
        let ok = mysql::check(&t, "haproxy_check", post_41).await;
        assert_status(&ok, Status::L7Ok);
        assert!(ok.info.contains("MariaDB"), "{ok}");
    }
    // The checks quit properly: MariaDB counted no aborted connection.
    let aborted = db.sql("SHOW GLOBAL STATUS LIKE 'Aborted_connects'");
    assert_eq!(aborted, "Aborted_connects\t0", "{aborted}");
    let keyword = "post-41";
    let haproxy = haproxy_verdict(
        &format!("  option mysql-check user haproxy_check {keyword}"),
        local(db.port()),
        "check inter 1s",
        false,
    );
    assert_same_as_haproxy(&mysql::check(&t, "haproxy_check", true).await, haproxy);

    let denied = mysql::check(&t, "nobody", true).await;
    assert_status(&denied, Status::L7Sts);
    assert_eq!(denied.code.as_deref(), Some("1045"));
    assert!(
        denied.info.contains("Access denied for user 'nobody'"),
        "{denied}"
    );
    let haproxy = haproxy_verdict(
        "  option mysql-check user nobody post-41",
        local(db.port()),
        "check inter 1s",
        false,
    );
    assert!(haproxy.1.contains("code: 1045"), "{}", haproxy.1);
    assert_same_as_haproxy(&denied, haproxy);
    let denied_old = mysql::check(&t, "nobody", false).await;
    assert_status(&denied_old, Status::L7Sts);
    assert!(denied_old.info.starts_with("Access denied"), "{denied_old}");

    db.stop();
    let stopped = mysql::check(&t, "haproxy_check", true).await;
    assert_status(&stopped, Status::L4Con);
}

#[tokio::test]
async fn mysql_check_survives_garbage_and_silence() {
    // An error packet instead of the handshake, as a server blocking the host sends it.
    let blocked = FixedServer::start(
        b"\x2c\x00\x00\x00\xff\x69\x04Host '127.0.0.1' is blocked because of many connection errors",
        After::Close,
    );
    let result = mysql::check(&target(blocked.addr()), "haproxy_check", true).await;
    assert_status(&result, Status::L7Sts);
    assert_eq!(result.code.as_deref(), Some("1129"));
    assert!(
        result.info.starts_with("Host '127.0.0.1' is blocked"),
        "{result}"
    );

    // A length field of 16 MiB: refused without reading it.
    let huge = FixedServer::start(b"\xff\xff\xff\x00\x0a", After::Hold);
    let result = mysql::check(&target(huge.addr()), "u", true).await;
    assert_status(&result, Status::L7Rsp);

    let http = FixedServer::start(b"HTTP/1.1 400 Bad Request\r\n\r\n", After::Close);
    let result = mysql::check(&target(http.addr()), "u", true).await;
    assert_status(&result, Status::L7Rsp);

    let silent = FixedServer::start(b"", After::Hold);
    let started = Instant::now();
    let result = mysql::check(&short(silent.addr()), "u", true).await;
    assert_status(&result, Status::L7Tout);
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// httpchk
// ---------------------------------------------------------------------------------------------

fn httpchk(expect: HttpExpect) -> HttpCheck {
    HttpCheck {
        method: "OPTIONS".into(),
        uri: "/primary".into(),
        version: "HTTP/1.1".into(),
        headers: Vec::new(),
        body: String::new(),
        expect,
        disable_on_404: false,
    }
}

fn status(codes: &[(u16, u16)], negate: bool) -> HttpExpect {
    HttpExpect::Status {
        codes: codes.to_vec(),
        negate,
    }
}

const OK_BODY: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"role\":\"master\"}";
const UNAVAILABLE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 17\r\n\r\n{\"role\":\"replica\"}";

#[tokio::test]
async fn httpchk_200_and_503_like_haproxy() {
    let primary = FixedServer::start(OK_BODY, After::Close);
    let replica = FixedServer::start(UNAVAILABLE, After::Close);

    let up = http::check(
        &target(primary.addr()),
        &httpchk(status(&[(200, 200)], false)),
    )
    .await;
    assert_status(&up, Status::L7Ok);
    assert_eq!(up.code.as_deref(), Some("200"));
    let haproxy = haproxy_verdict(
        "  option httpchk OPTIONS /primary HTTP/1.1\n  http-check expect status 200",
        primary.addr(),
        "check inter 1s",
        false,
    );
    assert_same_as_haproxy(&up, haproxy);

    let down = http::check(
        &target(replica.addr()),
        &httpchk(status(&[(200, 200)], false)),
    )
    .await;
    assert_status(&down, Status::L7Sts);
    assert_eq!(down.code.as_deref(), Some("503"));
    assert_eq!(down.info, "Service Unavailable");
    let haproxy = haproxy_verdict(
        "  option httpchk OPTIONS /primary HTTP/1.1\n  http-check expect status 200",
        replica.addr(),
        "check inter 1s",
        false,
    );
    assert!(
        haproxy
            .1
            .contains("code: 503, info: \"Service Unavailable\""),
        "{}",
        haproxy.1
    );
    assert_same_as_haproxy(&down, haproxy);
}

#[tokio::test]
async fn httpchk_expect_rules() {
    let primary = FixedServer::start(OK_BODY, After::Close);
    let replica = FixedServer::start(UNAVAILABLE, After::Close);
    let redirect = FixedServer::start(b"HTTP/1.0 302 Found\r\n\r\n", After::Close);
    let (p, r, x) = (
        target(primary.addr()),
        target(replica.addr()),
        target(redirect.addr()),
    );

    // Default: any 2xx or 3xx.
    assert_status(
        &http::check(&p, &httpchk(HttpExpect::default())).await,
        Status::L7Ok,
    );
    assert_status(
        &http::check(&x, &httpchk(HttpExpect::default())).await,
        Status::L7Ok,
    );
    assert_status(
        &http::check(&r, &httpchk(HttpExpect::default())).await,
        Status::L7Sts,
    );
    // `! status 503`.
    let not_503 = httpchk(status(&[(503, 503)], true));
    assert_status(&http::check(&p, &not_503).await, Status::L7Ok);
    assert_status(&http::check(&r, &not_503).await, Status::L7Sts);
    // Ranges.
    let ranges = httpchk(status(&[(200, 204), (300, 399)], false));
    assert_status(&http::check(&x, &ranges).await, Status::L7Ok);
    assert_status(&http::check(&r, &ranges).await, Status::L7Sts);
    // `string` looks at the body, whatever the status.
    let master = httpchk(HttpExpect::String {
        text: "\"master\"".into(),
        negate: false,
    });
    assert_status(&http::check(&p, &master).await, Status::L7Ok);
    let miss = http::check(&r, &master).await;
    assert_status(&miss, Status::L7Rsp);
    assert_eq!(miss.info, "HTTP content check did not match");
    let not_replica = httpchk(HttpExpect::String {
        text: "replica".into(),
        negate: true,
    });
    assert_status(&http::check(&p, &not_replica).await, Status::L7Ok);
    let unwanted = http::check(&r, &not_replica).await;
    assert_eq!(unwanted.info, "HTTP check matched unwanted content");
}

#[tokio::test]
async fn httpchk_garbage_empty_and_silence() {
    let garbage = FixedServer::start(b"garbage\r\n\r\n", After::Close);
    let result = http::check(&target(garbage.addr()), &httpchk(HttpExpect::default())).await;
    assert_status(&result, Status::L7Rsp);
    let haproxy = haproxy_verdict("  option httpchk", garbage.addr(), "check inter 1s", false);
    assert_same_as_haproxy(&result, haproxy);

    let empty = FixedServer::start(b"", After::Close);
    let result = http::check(&target(empty.addr()), &httpchk(HttpExpect::default())).await;
    assert_status(&result, Status::L7Rsp);

    let cut = FixedServer::start(b"HTTP/1.1 200 OK\r\nContent-", After::Close);
    let result = http::check(&target(cut.addr()), &httpchk(HttpExpect::default())).await;
    assert_status(&result, Status::L7Rsp);

    let endless = FixedServer::start(&vec![b'x'; 64 * 1024], After::Hold);
    let result = http::check(&target(endless.addr()), &httpchk(HttpExpect::default())).await;
    assert_status(&result, Status::L7Rsp);

    let silent = FixedServer::start(b"", After::Hold);
    let started = Instant::now();
    let result = http::check(&short(silent.addr()), &httpchk(HttpExpect::default())).await;
    assert_status(&result, Status::L7Tout);
    assert!(started.elapsed() < Duration::from_secs(2));
    let haproxy = haproxy_verdict("  option httpchk", silent.addr(), "check inter 1s", false);
    assert_same_as_haproxy(&result, haproxy);
}

// ---------------------------------------------------------------------------------------------
// agent-check
// ---------------------------------------------------------------------------------------------

async fn ask_agent(reply: &[u8]) -> Result<(agent::AgentReply, CheckResult), CheckResult> {
    let server = FixedServer::start(reply, After::Close);
    agent::query(&target(server.addr()), None).await
}

#[tokio::test]
async fn agent_replies_are_parsed() {
    let (reply, result) = ask_agent(b"up 75%\n").await.expect("up 75%");
    assert_eq!(reply.health, Some(AgentHealth::Up));
    assert_eq!(reply.weight_pct, Some(75));
    assert_status(&result, Status::L7Ok);
    assert_eq!(result.info, "via agent : up");

    let (reply, _) = ask_agent(b"drain\n").await.expect("drain");
    assert_eq!(reply.admin, Some(AgentAdmin::Drain));

    let (reply, _) = ask_agent(b"maint #role=primary lag=0\n")
        .await
        .expect("maint");
    assert_eq!(reply.admin, Some(AgentAdmin::Maint));
    assert_eq!(reply.description.as_deref(), Some("role=primary lag=0"));

    let (reply, result) = ask_agent(b"down #replica lagging\r\n").await.expect("down");
    assert_eq!(reply.health, Some(AgentHealth::Down));
    assert_status(&result, Status::L7Sts);
    assert_eq!(result.info, "via agent : down (replica lagging)");

    // Unknown words are ignored and reported, as HAProxy does; no verdict (`CHECKED`).
    let (reply, result) = ask_agent(b"garbage\n").await.expect("garbage");
    assert_eq!(reply.error.as_deref(), Some("garbage"));
    assert_eq!(reply.health, None);
    assert_status(&result, Status::Checked);
    assert_eq!(result.info, "agent reports an error : garbage");
}

#[tokio::test]
async fn agent_failures_are_reported_not_applied() {
    // HAProxy's words for an empty answer and for a line the agent did not end.
    let empty = ask_agent(b"").await.expect_err("empty");
    assert_status(&empty, Status::L7Rsp);
    assert_eq!(empty.info, "TCPCHK got an empty response at step 2");

    let no_newline = ask_agent(b"drain").await.expect_err("no newline");
    assert_status(&no_newline, Status::L7Tout);

    let mut huge = vec![b'x'; 100 * 1024];
    huge.push(b'\n');
    let huge = ask_agent(&huge).await.expect_err("100 KB");
    assert_status(&huge, Status::L7Rsp);
    assert!(huge.info.contains("no end of line"), "{huge}");

    let binary = ask_agent(b"up\x00 junk\n").await.expect_err("binary");
    assert_status(&binary, Status::L7Rsp);
    assert!(binary.info.contains("binary"), "{binary}");

    let refused = agent::query(&target(local(free_port())), None)
        .await
        .expect_err("refused");
    assert_status(&refused, Status::L4Con);

    let silent = FixedServer::start(b"", After::Hold);
    let started = Instant::now();
    let timeout = agent::query(&short(silent.addr()), None)
        .await
        .expect_err("silent");
    assert_status(&timeout, Status::L7Tout);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn agent_send_is_written_first() {
    // A real agent that answers only after reading the request line.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\n") && conn.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
            got.push(byte[0]);
        }
        let reply: &[u8] = if got == b"role?\n" {
            b"up 50%\n"
        } else {
            b"down\n"
        };
        let _ = std::io::Write::write_all(&mut conn, reply);
        got
    });
    let (reply, _) = agent::query(&target(addr), Some(b"role?\n"))
        .await
        .expect("agent answered");
    assert_eq!(server.join().expect("agent thread"), b"role?\n");
    assert_eq!(reply.health, Some(AgentHealth::Up));
    assert_eq!(reply.weight_pct, Some(50));
}

#[tokio::test]
async fn agent_up_and_down_match_haproxy() {
    for line in [&b"up 75%\n"[..], b"fail #oops\n"] {
        let server = FixedServer::start(line, After::Close);
        let (_, result) = agent::query(&target(server.addr()), None)
            .await
            .expect("parsed");
        // The agent needs a server to belong to: point the server at a closed port.
        let haproxy = haproxy_verdict(
            "",
            local(free_port()),
            &format!(
                "agent-check agent-port {} agent-inter 500ms",
                server.addr().port()
            ),
            true,
        );
        assert!(haproxy.1.contains(&result.info), "{}", haproxy.1);
        assert_same_as_haproxy(&result, haproxy);
    }
}
