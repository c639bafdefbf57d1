//! The database down, refusing the agent's credentials, or hanging: the agent answers
//! `down` / 503 with a reason within its own timeout, never hangs a client, never panics.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Postgres, SilentServer, free_port, pg_database, psql};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const EXTRA: &str = "inter: 300ms\ntimeout: 500ms\n";
/// One poll's timeout plus one interval, plus scheduling slack.
const VERDICT_WITHIN: Duration = Duration::from_millis(300 + 500 + 1000);

fn reason(agent: &Agent) -> String {
    let (code, body) = agent.get("/health");
    assert_eq!(code, 503, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(j["state"], "down", "{body}");
    j["reason"].as_str().unwrap_or_default().to_string()
}

/// Every request answers from the agent's last verdict, without waiting on the database: each
/// reply comes back in less than the poll's `timeout` (500 ms), which a reply that waited on
/// the hanging database would need. (How fast it answers is bench/'s business.)
fn assert_replies_fast(agent: &Agent) {
    for _ in 0..20 {
        let t = Instant::now();
        let line = agent.line();
        assert!(line.starts_with("down ready 100%"), "{line}");
        let (code, _) = agent.get("/primary");
        assert_eq!(code, 503);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a reply took {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn database_down_is_down_with_reason() {
    let port = free_port();
    let agent = Agent::start(&pg_database(port, "postgres"), EXTRA);
    agent.wait_line(VERDICT_WITHIN, |l| l.starts_with("down ready"));
    let why = reason(&agent);
    assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
    assert!(why.contains("refused"), "{why}");
    assert_replies_fast(&agent);
    assert_eq!(agent.get("/liveness").0, 200);
}

#[test]
fn wrong_credentials_are_down_with_reason() {
    let pg = Postgres::primary();
    let agent = Agent::start(&pg_database(pg.port(), "no_such_user"), EXTRA);
    agent.wait_line(VERDICT_WITHIN, |l| l.starts_with("down ready"));
    let why = reason(&agent);
    assert!(why.contains("no_such_user"), "{why}");
    println!("reason: {why}");
    assert_replies_fast(&agent);
}

#[test]
fn hanging_database_is_down_within_the_timeout() {
    let silent = SilentServer::start();
    let started = Instant::now();
    let agent = Agent::start(&pg_database(silent.port(), "postgres"), EXTRA);
    println!("agent listening after {:?}", started.elapsed());
    // The first answer waits for the first poll: at most one timeout.
    let first = agent.line();
    println!("first line after {:?}: {first}", started.elapsed());
    // One timeout (500 ms) plus a margin for starting the agent on a loaded machine.
    assert!(started.elapsed() < Duration::from_millis(500 + 2500));
    assert_replies_fast(&agent);
    let why = reason(&agent);
    assert!(why.contains("no answer"), "{why}");
    assert!(why.contains("within 500ms"), "{why}");
    println!("reason after {:?}: {why}", started.elapsed());
}

/// The database answers, then freezes (SIGSTOP on the postmaster and the agent's backend):
/// the kept-open session hangs mid-query and new connections hang too. The agent goes down
/// within one timeout and comes back up when the database thaws.
#[test]
fn database_that_freezes_goes_down_then_recovers() {
    let pg = Postgres::primary();
    let agent = Agent::start(&pg_database(pg.port(), "postgres"), EXTRA);
    agent.wait_line(VERDICT_WITHIN * 5, |l| {
        l.starts_with("up ready 100% #role=primary")
    });
    let backend: i32 = psql(
        pg.port(),
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'rolelb-agent'",
    )
    .parse()
    .expect("the agent's backend pid");
    let postmaster = pg.pid().expect("postmaster pid") as i32;
    let frozen = [Pid::from_raw(postmaster), Pid::from_raw(backend)];
    for pid in frozen {
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    }
    let t = Instant::now();
    let outcome = std::panic::catch_unwind(|| {
        agent.wait_line(VERDICT_WITHIN, |l| l.starts_with("down ready"));
        let took = t.elapsed();
        assert_replies_fast(&agent);
        (took, reason(&agent))
    });
    for pid in frozen {
        let _ = kill(pid, Signal::SIGCONT);
    }
    let (took, why) = outcome.unwrap_or_else(|e| std::panic::resume_unwind(e));
    println!("frozen database seen down after {took:?}: {why}");
    assert!(why.contains("no answer"), "{why}");
    agent.wait_line(VERDICT_WITHIN * 5, |l| {
        l.starts_with("up ready 100% #role=primary")
    });
}

/// Raw bytes on a socket, then whatever comes back until close or timeout.
fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(8)))
        .expect("set_read_timeout");
    let _ = conn.write_all(bytes);
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn malformed_requests_get_errors_not_panics() {
    let agent = Agent::start(&pg_database(free_port(), "postgres"), EXTRA);
    let garbage = raw_exchange(agent.http, b"\x00\x01GARBAGE \xff\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(1 << 20));
    let reply = raw_exchange(agent.http, huge.as_bytes());
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
        "{reply:?}"
    );
    let post = raw_exchange(
        agent.http,
        b"POST /primary HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(post.starts_with("HTTP/1.0 405"), "{post:?}");
    // A client that sends a partial request and stalls is cut off by the header timeout
    // (5 s) rather than held forever.
    let t = Instant::now();
    let stalled = raw_exchange(agent.http, b"GET /prim");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "held {:?}",
        t.elapsed()
    );
    println!(
        "stalled request closed after {:?}: {stalled:?}",
        t.elapsed()
    );
    // Junk instead of an agent-send line: still one well-formed line.
    let line = raw_exchange(agent.agent, &[0xff; 4096]);
    assert!(
        line.starts_with("down ready 100% #role=unknown"),
        "{line:?}"
    );
    assert_eq!(agent.get("/liveness").0, 200);
}
