//! The check forms of HAProxy 2.6 beyond the basic ones, side by side with HAProxy: the same
//! check lines run by rolelb (parsed from config text, run by the scheduler's
//! `run_check`) and by HAProxy, against recording servers started here. The request bytes each
//! sends and the verdict each reaches must be the same: `option httpchk` with one, two and
//! three arguments, `http-check send`, `http-check expect [!] rstatus|rstring|string`,
//! `http-check disable-on-404`, and `option mysql-check` without `user` against MariaDB and
//! against odd servers.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::{
    Haproxy, Mariadb, NamedServer, Rolelb, free_port, stat_row, stats_cli, wait_until, who_answers,
};
use rolelb::check::scheduler::{run_check, run_check_as};
use rolelb::check::{CheckResult, Status, Target};
use rolelb::config::CheckMethod;

/// A server on 127.0.0.1 that records what each connection sends and answers `reply`.
struct Recorder {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    fn start(reply: &[u8]) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reply = reply.to_vec();
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let (requests, reply) = (requests.clone(), reply.clone());
                            thread::spawn(move || serve(conn, &reply, &requests));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Recorder {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The first request received, once one arrived (within 15 s).
    fn first_request(&self) -> Vec<u8> {
        let arrived = wait_until(Duration::from_secs(15), || {
            self.requests.lock().map(|r| !r.is_empty()).unwrap_or(false)
        });
        assert!(arrived, "no check reached the server at {}", self.addr);
        self.requests.lock().expect("lock")[0].clone()
    }
}

/// Reads a request until the client has been quiet for 300 ms (a check sends everything at
/// once), records it, answers, and closes.
fn serve(mut conn: TcpStream, reply: &[u8], requests: &Mutex<Vec<Vec<u8>>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(300)));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    if let Ok(mut r) = requests.lock() {
        r.push(got);
    }
    let _ = conn.write_all(reply);
}

/// A server that speaks first: writes `greeting` on accept, then drains and closes.
fn greeter(greeting: &'static [u8]) -> (SocketAddr, JoinHandle<()>, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local_addr");
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(greeting);
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(300)));
                        let mut sink = [0u8; 1024];
                        while let Ok(n) = conn.read(&mut sink) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    (addr, handle, stop)
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The check method rolelb builds from `check_lines`.
fn rolelb_method(check_lines: &str) -> CheckMethod {
    rolelb_method_with("", check_lines)
}

/// Like [`rolelb_method`], with `defaults_lines` in the `defaults` section.
fn rolelb_method_with(defaults_lines: &str, check_lines: &str) -> CheckMethod {
    let text = format!(
        "defaults\n{defaults_lines}  mode tcp\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n\
         backend b\n{check_lines}\n  server s1 127.0.0.1:1 check\n"
    );
    match rolelb::config::parse_sources(&[("check_forms.cfg", &text)]) {
        Ok(config) => config.backends[0].check.clone(),
        Err(e) => panic!("rolelb refused:\n{check_lines}\n{e}"),
    }
}

/// What rolelb's check of `check_lines` concludes against `addr`.
async fn rolelb_result(check_lines: &str, addr: SocketAddr) -> CheckResult {
    rolelb_result_with("", check_lines, addr).await
}

/// Like [`rolelb_result`], with `defaults_lines` in the `defaults` section.
async fn rolelb_result_with(
    defaults_lines: &str,
    check_lines: &str,
    addr: SocketAddr,
) -> CheckResult {
    let target = Target {
        addr,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        tls: None,
        proxy_header: None,
        source: None,
    };
    run_check(&rolelb_method_with(defaults_lines, check_lines), &target).await
}

/// HAProxy's first health-check log line for `check_lines` against `addr`: (reason, line).
fn haproxy_verdict(check_lines: &str, addr: SocketAddr) -> (String, String) {
    haproxy_verdict_with("", check_lines, addr)
}

/// Like [`haproxy_verdict`], with `defaults_lines` in the `defaults` section.
fn haproxy_verdict_with(
    defaults_lines: &str,
    check_lines: &str,
    addr: SocketAddr,
) -> (String, String) {
    let cfg = format!(
        "global\n  log stderr format raw local0\n\
         defaults\n{defaults_lines}  mode tcp\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n  timeout check 2s\n\
         listen l\n  bind 127.0.0.1:{}\n  option log-health-checks\n  log global\n{check_lines}\n\
           server s1 {addr} check inter 1s\n",
        free_port()
    );
    let haproxy = Haproxy::start(&cfg);
    haproxy.check_reason("Health check for server l/s1 ")
}

/// Runs `check_lines` in rolelb and in HAProxy against servers answering `reply`; asserts
/// both sent the same bytes and reached the same status. Returns rolelb's result.
async fn side_by_side(check_lines: &str, reply: &[u8]) -> CheckResult {
    side_by_side_with("", check_lines, reply).await
}

/// Like [`side_by_side`], with `defaults_lines` in the `defaults` section of both.
async fn side_by_side_with(defaults_lines: &str, check_lines: &str, reply: &[u8]) -> CheckResult {
    let ours = Recorder::start(reply);
    let result = rolelb_result_with(defaults_lines, check_lines, ours.addr).await;
    let theirs = Recorder::start(reply);
    let (reason, line) = haproxy_verdict_with(defaults_lines, check_lines, theirs.addr);
    assert_eq!(
        String::from_utf8_lossy(&ours.first_request()),
        String::from_utf8_lossy(&theirs.first_request()),
        "request bytes differ for:\n{check_lines}"
    );
    assert_eq!(
        result.status.describe(),
        reason,
        "verdicts differ for:\n{check_lines}\nrolelb: {result}\nHAProxy: {line}"
    );
    result
}

const OK_RUNNING: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\n{\"state\":\"running\"}";
const UNAVAILABLE_STOPPED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 19\r\n\r\n{\"state\":\"stopped\"}";
const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";

#[tokio::test]
async fn httpchk_argument_forms_send_what_haproxy_sends() {
    // One argument is the URI, whatever it looks like: `OPTIONS GET HTTP/1.0`.
    let r = side_by_side("  option httpchk GET", OK_RUNNING).await;
    assert_eq!(r.code.as_deref(), Some("200"));
    for lines in [
        "  option httpchk",
        "  option httpchk /health",
        "  option httpchk GET /x",
        "  option httpchk get /x",
        "  option httpchk POST /x",
        "  option httpchk DELETE /x HTTP/1.1",
        "  option httpchk TRACE /x",
        "  option httpchk HEAD /x HTTP/1.1",
        "  option httpchk GET /x HTTP/1.1\\r\\nHost:\\ foo",
    ] {
        side_by_side(lines, OK_RUNNING).await;
    }
}

#[tokio::test]
async fn http_check_send_builds_the_request_as_haproxy_does() {
    for lines in [
        "  option httpchk\n  http-check send meth GET uri /health ver HTTP/1.1 hdr Host example.com",
        "  option httpchk\n  http-check send hdr X-Foo bar body hello",
        "  option httpchk HEAD / HTTP/1.1\n  http-check send hdr Host x hdr X-A b",
        "  option httpchk POST /p HTTP/1.1\n  http-check send body abc",
        "  option httpchk\n  http-check send meth GET",
        "  option httpchk GET /x HTTP/1.1\\r\\nHost:\\ foo\n  http-check send hdr X-B c",
        "  option httpchk\n  http-check send ver HTTP/1.1 hdr Connection keep-alive",
        "  option httpchk\n  http-check send ver HTTP/1.1 hdr content-length 3 hdr X-A b body hello",
    ] {
        side_by_side(lines, OK_RUNNING).await;
    }
}

#[tokio::test]
async fn http_check_expect_forms_judge_as_haproxy_does() {
    let cases: [(&str, &[u8]); 12] = [
        ("  http-check expect rstatus ^2", OK_RUNNING),
        ("  http-check expect rstatus ^2", UNAVAILABLE_STOPPED),
        ("  http-check expect ! rstatus ^5", OK_RUNNING),
        ("  http-check expect ! rstatus ^5", UNAVAILABLE_STOPPED),
        ("  http-check expect rstring runn?ing", OK_RUNNING),
        ("  http-check expect rstring runn?ing", UNAVAILABLE_STOPPED),
        ("  http-check expect ! rstring stop+ed", OK_RUNNING),
        ("  http-check expect ! rstring stop+ed", UNAVAILABLE_STOPPED),
        ("  http-check expect string running", UNAVAILABLE_STOPPED),
        ("  http-check expect ! string running", NO_CONTENT),
        ("  http-check expect ! status 503", UNAVAILABLE_STOPPED),
        ("  http-check expect status 200-299", NO_CONTENT),
    ];
    let mut verdicts = Vec::new();
    for (expect, reply) in cases {
        let lines = format!("  option httpchk GET /health\n{expect}");
        let r = side_by_side(&lines, reply).await;
        verdicts.push(r.status.passed());
    }
    // The forms really discriminate: each pair above has one pass and one failure.
    assert_eq!(
        verdicts,
        [
            true, false, true, false, true, false, true, false, false, false, false, true
        ]
    );
}

#[tokio::test]
async fn mysql_check_without_user_reads_the_greeting_like_haproxy() {
    let db = Mariadb::start();
    let addr = SocketAddr::from(([127, 0, 0, 1], db.port()));
    let ours = rolelb_result("  option mysql-check", addr).await;
    assert!(ours.status.passed(), "{ours}");
    assert!(ours.info.contains("MariaDB"), "{ours}");
    let (reason, line) = haproxy_verdict("  option mysql-check", addr);
    assert_eq!(ours.status.describe(), reason, "HAProxy: {line}");

    // An error packet instead of a greeting (a host MariaDB blocks): L7STS with its code.
    let (blocked, h1, s1) = greeter(
        b"\x2c\x00\x00\x00\xff\x69\x04Host '127.0.0.1' is blocked because of many connection errors",
    );
    // A complete packet that is no protocol-10 greeting: HAProxy does not look further.
    let (odd, h2, s2) = greeter(b"\x06\x00\x00\x00\x09hello");
    // Not MySQL at all: a length no packet fits in.
    let (http, h3, s3) = greeter(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    for (addr, passes) in [(blocked, false), (odd, true), (http, false)] {
        let ours = rolelb_result("  option mysql-check", addr).await;
        let (reason, line) = haproxy_verdict("  option mysql-check", addr);
        assert_eq!(
            ours.status.describe(),
            reason,
            "rolelb: {ours}\nHAProxy: {line}"
        );
        assert_eq!(ours.status.passed(), passes, "{ours}");
    }
    for (handle, stop) in [(h1, s1), (h2, s2), (h3, s3)] {
        stop.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }
}

const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";

#[tokio::test]
async fn disable_on_404_passes_conditionally_while_the_server_runs() {
    let lines =
        "  option httpchk GET /health\n  http-check disable-on-404\n  http-check expect status 200";
    // HAProxy starts its servers running: the first 404 is a conditional pass.
    let r = side_by_side(lines, NOT_FOUND).await;
    assert_eq!(r.status, Status::L7Okc, "{r}");
    assert_eq!(r.code.as_deref(), Some("404"));
    // The rule has precedence over `expect`, but only for a running server: one that is
    // DOWN is judged by `expect` as usual.
    let server = Recorder::start(NOT_FOUND);
    let target = Target {
        addr: server.addr,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        tls: None,
        proxy_header: None,
        source: None,
    };
    let down = run_check_as(&rolelb_method(lines), &target, false).await;
    assert_eq!(down.status, Status::L7Sts, "{down}");
    // Without the rule, a 404 is a plain failure in both.
    let r = side_by_side("  option httpchk GET /health", NOT_FOUND).await;
    assert_eq!(r.status, Status::L7Sts, "{r}");
}

/// `show stat`'s status of `l/s1`, from HAProxy's or rolelb's stats socket.
fn s1_status(sock: &std::path::Path) -> Option<String> {
    stat_row(&stats_cli(sock, "show stat"), "l", "s1").and_then(|r| r.get("status").cloned())
}

#[test]
fn disable_on_404_puts_a_running_server_in_nolb_like_haproxy() {
    let (a, b) = (NamedServer::start("a"), NamedServer::start("b"));
    let health = Recorder::start(NOT_FOUND);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = |sock: &std::path::Path, port: u16| {
        format!(
            "global\n  stats socket {} level admin\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
             listen l\n  bind 127.0.0.1:{port}\n  balance first\n  option httpchk GET /health\n  http-check disable-on-404\n\
               server s1 {} check port {} inter 500ms\n  server s2 {}\n",
            sock.display(),
            a.addr(),
            health.addr.port(),
            b.addr(),
        )
    };
    let (hsock, rsock) = (
        dir.path().join("haproxy.sock"),
        dir.path().join("rolelb.sock"),
    );
    let (hport, rport) = (free_port(), free_port());
    let _haproxy = Haproxy::start(&cfg(&hsock, hport));
    let rolelb = Rolelb::start(&cfg(&rsock, rport));
    for (sock, port) in [(&hsock, hport), (&rsock, rport)] {
        let nolb = wait_until(Duration::from_secs(10), || {
            s1_status(sock).as_deref() == Some("NOLB")
        });
        assert!(
            nolb,
            "{}: s1 is {:?}, want NOLB\n{}",
            sock.display(),
            s1_status(sock),
            rolelb.stderr_text()
        );
        // `balance first` would pick s1; a NOLB server takes no new connection.
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(who_answers(local).expect("served").as_str(), "b");
    }
}

#[tokio::test]
async fn http_check_rules_inherit_from_defaults_as_in_haproxy() {
    let defaults =
        "  option httpchk\n  http-check send hdr Host x\n  http-check expect status 500\n";
    // A proxy writing nothing inherits the request and the rule.
    let r = side_by_side_with(defaults, "", OK_RUNNING).await;
    assert!(!r.status.passed(), "{r}");
    // Its own `option httpchk` starts a new rule set: no inherited header, no inherited expect.
    let r = side_by_side_with(defaults, "  option httpchk GET /y", OK_RUNNING).await;
    assert!(r.status.passed(), "{r}");
}
