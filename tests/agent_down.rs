//! An agent's `down` is a server going DOWN like any other cause, as in HAProxy 2.6: it counts
//! in `chkdown` and applies `on-marked-down shutdown-sessions`. rolelb and HAProxy run the same
//! config against the same agents, side by side, and must agree on both.

mod common;
mod scripted;

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Haproxy, NamedServer, Rolelb, Session, free_port, open_named, session_state, stat_row,
    stats_cli, wait_closed, wait_until,
};
use scripted::{Reply, Scripted};

/// `a` closes its sessions when marked down, `b` does not; each has a health check and its
/// own agent.
fn cfg(sock: &Path, port: u16, a: &NamedServer, b: &NamedServer, agents: (u16, u16)) -> String {
    format!(
        "global\n    stats socket {} level admin\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    \
         timeout client 30s\n    timeout server 30s\n\nlisten lb\n    bind 127.0.0.1:{port}\n    balance first\n    \
         server a {} maxconn 1 check inter 500ms agent-check agent-port {} agent-inter 200ms on-marked-down shutdown-sessions\n    \
         server b {} maxconn 1 check inter 500ms agent-check agent-port {} agent-inter 200ms\n",
        sock.display(),
        a.addr(),
        agents.0,
        b.addr(),
        agents.1
    )
}

/// (status, chkdown) of `lb/sv` in `show stat`.
fn status(sock: &Path, sv: &str) -> (String, String) {
    let row = stat_row(&stats_cli(sock, "show stat"), "lb", sv).unwrap_or_default();
    let col = |c: &str| row.get(c).cloned().unwrap_or_default();
    (col("status"), col("chkdown"))
}

/// One session through `port` to `a` and one to `b` (`balance first`, `maxconn 1` each).
fn sessions(port: u16) -> (TcpStream, TcpStream) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (first, s1) = open_named(addr).expect("first session");
    let (second, s2) = open_named(addr).expect("second session");
    assert_eq!((first.as_str(), second.as_str()), ("a", "b"), "port {port}");
    (s1, s2)
}

#[test]
fn an_agent_down_counts_in_chkdown_and_shuts_sessions_down_like_haproxy() {
    let a = NamedServer::start("a");
    let b = NamedServer::start("b");
    let agent_a = Scripted::start(Reply::text("up\n"), false);
    let agent_b = Scripted::start(Reply::text("up\n"), false);
    let agents = (agent_a.port(), agent_b.port());
    let dir = tempfile::tempdir().expect("tempdir");
    let (rsock, hsock) = (
        dir.path().join("rolelb.sock"),
        dir.path().join("haproxy.sock"),
    );
    let (rport, hport) = (free_port(), free_port());
    let lb = Rolelb::start(&cfg(&rsock, rport, &a, &b, agents));
    let _ha = Haproxy::start(&cfg(&hsock, hport, &a, &b, agents));
    let both_up = |sock: &Path| status(sock, "a").0 == "UP" && status(sock, "b").0 == "UP";
    assert!(
        wait_until(Duration::from_secs(10), || both_up(&rsock)
            && both_up(&hsock)),
        "servers up: rolelb {:?} {:?}, HAProxy {:?} {:?}",
        status(&rsock, "a"),
        status(&rsock, "b"),
        status(&hsock, "a"),
        status(&hsock, "b")
    );
    let (mut r_a, mut r_b) = sessions(rport);
    let (mut h_a, mut h_b) = sessions(hport);

    let set_at = Instant::now();
    agent_a.set(Reply::text("down #stopped by the test\n"));
    agent_b.set(Reply::text("down #stopped by the test\n"));
    let both_down = |sock: &Path| {
        status(sock, "a").0.starts_with("DOWN") && status(sock, "b").0.starts_with("DOWN")
    };
    assert!(
        wait_until(Duration::from_secs(10), || both_down(&rsock)
            && both_down(&hsock)),
        "servers down: rolelb {:?} {:?}, HAProxy {:?} {:?}\n{}",
        status(&rsock, "a"),
        status(&rsock, "b"),
        status(&hsock, "a"),
        status(&hsock, "b"),
        lb.stderr_text()
    );
    let down_after = set_at.elapsed();

    // on-marked-down shutdown-sessions: a's sessions closed by both; b's left alone by both.
    let closed = Duration::from_secs(5);
    assert!(
        wait_closed(&mut h_a, closed).is_some(),
        "HAProxy closes a's session when the agent marks it down"
    );
    assert!(
        wait_closed(&mut r_a, closed).is_some(),
        "rolelb must close a's session when the agent marks it down (as HAProxy did)\n{}",
        lb.stderr_text()
    );
    let stays = Duration::from_secs(1);
    assert_eq!(
        session_state(&mut h_b, stays),
        Session::Open,
        "HAProxy leaves b's session"
    );
    assert_eq!(
        session_state(&mut r_b, stays),
        Session::Open,
        "rolelb leaves b's session"
    );

    // chkdown counts the transition whatever its cause: 1 for each server, in both.
    let (r, h) = (
        (status(&rsock, "a").1, status(&rsock, "b").1),
        (status(&hsock, "a").1, status(&hsock, "b").1),
    );
    assert_eq!(h, ("1".to_string(), "1".to_string()), "HAProxy's chkdown");
    assert_eq!(r, h, "chkdown: rolelb vs HAProxy");

    // Back up and down again: the count follows, the same in both.
    agent_a.set(Reply::text("up\n"));
    assert!(
        wait_until(Duration::from_secs(10), || status(&rsock, "a").0 == "UP"
            && status(&hsock, "a").0 == "UP"),
        "a back up"
    );
    agent_a.set(Reply::text("down\n"));
    assert!(
        wait_until(Duration::from_secs(10), || status(&rsock, "a").1 == "2"
            && status(&hsock, "a").1 == "2"),
        "a down twice: rolelb {:?}, HAProxy {:?}",
        status(&rsock, "a"),
        status(&hsock, "a")
    );
    eprintln!("agent down seen by both within {down_after:?}");
}
