//! `agent-check` against a real agent answering `75%`, `drain`, `maint`, `ready`, `down`,
//! `up`, garbage and nothing: rolelb and HAProxy 2.6 run the same config against the same
//! agent, and after every answer their `show servers state` agree on the server's operating
//! state, administrative state and weights; traffic follows.

mod common;
mod lbcfg;
mod scripted;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Haproxy, NamedServer, Rolelb, free_port, wait_until, who_answers};
use lbcfg::local;
use scripted::{Reply, Scripted};

fn cli(path: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(path).expect("connect to stats socket");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s.write_all(format!("{line}\n").as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// (srv_op_state, srv_admin_state, srv_uweight, srv_iweight) of server `a`.
fn state_of_a(sock: &Path) -> (String, String, String, String) {
    let out = cli(sock, "show servers state lb");
    let line = out
        .lines()
        .find(|l| l.split(' ').nth(3) == Some("a"))
        .unwrap_or_else(|| panic!("no server a in: {out}"));
    let f: Vec<&str> = line.split(' ').collect();
    (f[5].into(), f[6].into(), f[7].into(), f[8].into())
}

fn cfg(sock: &Path, port: u16, a: &NamedServer, b: &NamedServer, agent: u16) -> String {
    cfg_with(sock, port, a, b, agent, "")
}

/// [`cfg`] with `extra` lines in the `listen` section.
fn cfg_with(
    sock: &Path,
    port: u16,
    a: &NamedServer,
    b: &NamedServer,
    agent: u16,
    extra: &str,
) -> String {
    format!(
        "global\n    stats socket {} level admin\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    \
         timeout client 10s\n    timeout server 10s\n\nlisten lb\n    bind 127.0.0.1:{port}\n{extra}    \
         server a {} weight 100 agent-check agent-port {agent} agent-inter 200ms\n    server b {} weight 100\n",
        sock.display(),
        a.addr(),
        b.addr()
    )
}

#[test]
fn agent_answers_drive_state_and_weight_like_haproxy() {
    let a = NamedServer::start("a");
    let b = NamedServer::start("b");
    let agent = Scripted::start(Reply::text("up 100%\n"), false);
    let dir = tempfile::tempdir().expect("tempdir");
    let (rsock, hsock) = (
        dir.path().join("rolelb.sock"),
        dir.path().join("haproxy.sock"),
    );
    let (rport, hport) = (free_port(), free_port());
    let lb = Rolelb::start(&cfg(&rsock, rport, &a, &b, agent.port()));
    let ha = Haproxy::start(&cfg(&hsock, hport, &a, &b, agent.port()));

    let steps: [(&str, Reply); 10] = [
        ("75%", Reply::text("75%\n")),
        ("drain", Reply::text("drain\n")),
        ("ready", Reply::text("ready\n")),
        ("maint", Reply::text("maint\n")),
        ("ready again", Reply::text("ready up 100%\n")),
        ("down", Reply::text("down #stopped by test\n")),
        ("up", Reply::text("up\n")),
        ("garbage", Reply::text("%%$#@ nonsense\n")),
        ("nothing", Reply::Close),
        (
            "50% with role words",
            Reply::text("up 50% #role=primary lag=0\n"),
        ),
    ];
    for (what, reply) in steps {
        agent.set(reply);
        let set_at = Instant::now();
        // Both proxies poll the agent every 200 ms: once it has answered four times since the
        // change, each proxy has read the new answer; then their states must agree.
        let agreed = wait_until(Duration::from_secs(10), || {
            agent.arrivals().iter().filter(|&&t| t > set_at).count() >= 4
                && state_of_a(&rsock) == state_of_a(&hsock)
        });
        let ours = state_of_a(&rsock);
        let theirs = state_of_a(&hsock);
        assert!(
            agreed && ours == theirs,
            "after agent says {what}: rolelb {ours:?} vs HAProxy {theirs:?}"
        );
        // Traffic follows the state: drained, in maintenance or down, `a` takes nothing new.
        let takes_traffic = ours.0 == "2" && ours.1 == "0" && ours.2 != "0";
        let seq: Vec<String> = (0..4)
            .map(|_| who_answers(local(rport)).expect("conn"))
            .collect();
        assert_eq!(
            seq.iter().any(|n| n == "a"),
            takes_traffic,
            "after {what}: {seq:?} with state {ours:?}"
        );
    }
    // The state changes are logged in HAProxy's words, the reason of an UP or DOWN being the
    // agent's answer.
    let ours = server_lines(&lb.stderr_text());
    let theirs = server_lines(&ha.stderr_text());
    assert_eq!(ours, theirs, "rolelb's lines vs HAProxy's");
    assert!(
        ours.iter().any(|l| l.starts_with(
            "Server lb/a is DOWN, reason: Layer7 wrong status, code: 0, info: \"via agent : down (stopped by test)\""
        )),
        "{ours:#?}"
    );
    assert!(
        ours.iter()
            .any(|l| l.starts_with("Server lb/a enters drain state.")),
        "{ours:#?}"
    );
}

/// The `Server lb/a ...` lines of a log, from `Server` on, check durations as `Nms`. Left out:
/// HAProxy's "remains in forced drain mode", which it repeats on any later change while
/// drained (rolelb says it only when the agent moves a server from maintenance to drain), and
/// rolelb's own lines for the weight and maxconn an agent sets (HAProxy logs none).
fn server_lines(log: &str) -> Vec<String> {
    let duration = regex::Regex::new(r"check duration: \d+ms").expect("a regex");
    log.lines()
        .filter_map(|l| l.find("Server lb/a ").map(|i| &l[i..]))
        .filter(|l| !l.contains("remains in forced drain mode"))
        .filter(|l| !l.contains("by the agent."))
        .map(|l| duration.replace_all(l, "check duration: Nms").into_owned())
        .collect()
}

/// The agent columns of server `a` in `show stat`.
fn agent_columns(sock: &Path) -> Vec<(String, String)> {
    let csv = cli(sock, "show stat");
    let row = common::stat_row(&csv, "lb", "a").unwrap_or_else(|| panic!("no server a in: {csv}"));
    [
        "agent_status",
        "agent_code",
        "agent_desc",
        "last_agt",
        "agent_health",
    ]
    .iter()
    .map(|c| (c.to_string(), row.get(*c).cloned().unwrap_or_default()))
    .collect()
}

#[test]
fn agent_results_are_reported_and_logged_as_haproxy_does() {
    let a = NamedServer::start("a");
    let b = NamedServer::start("b");
    let agent = Scripted::start(Reply::text("up\n"), false);
    let dir = tempfile::tempdir().expect("tempdir");
    let (rsock, hsock) = (
        dir.path().join("rolelb.sock"),
        dir.path().join("haproxy.sock"),
    );
    let extra = "    option log-health-checks\n";
    let lb = Rolelb::start(&cfg_with(&rsock, free_port(), &a, &b, agent.port(), extra));
    let ha = Haproxy::start(&cfg_with(&hsock, free_port(), &a, &b, agent.port(), extra));
    let steps = [
        "up\n",
        "75%\n",
        "down\n",
        "hello\n",
        "up foo #desc\n",
        "up 5x%\n",
        "maxconn:abc\n",
        "drain\n",
        "ready\n",
        "",
        "up\n",
    ];
    for text in steps {
        agent.set(if text.is_empty() {
            Reply::Close
        } else {
            Reply::text(text)
        });
        let set_at = Instant::now();
        let agreed = wait_until(Duration::from_secs(10), || {
            agent.arrivals().iter().filter(|&&t| t > set_at).count() >= 4
                && agent_columns(&rsock) == agent_columns(&hsock)
        });
        let (ours, theirs) = (agent_columns(&rsock), agent_columns(&hsock));
        assert!(
            agreed && ours == theirs,
            "after the agent says {text:?}: rolelb {ours:?} vs HAProxy {theirs:?}"
        );
    }
    let agent_lines = |log: &str| -> Vec<String> {
        let duration = regex::Regex::new(r"check duration: \d+ms").expect("a regex");
        log.lines()
            .filter_map(|l| l.find("Agent check for ").map(|i| &l[i..]))
            .map(|l| duration.replace_all(l, "check duration: Nms").into_owned())
            .collect()
    };
    let (ours, theirs) = (
        agent_lines(&lb.stderr_text()),
        agent_lines(&ha.stderr_text()),
    );
    assert_eq!(ours, theirs, "rolelb's agent check lines vs HAProxy's");
    assert!(
        ours.contains(
            &"Agent check for server lb/a failed, reason: Layer7 wrong status, code: 0, \
              info: \"via agent : down\", check duration: Nms, status: 0/1 DOWN."
                .to_string()
        ),
        "{ours:#?}"
    );
    // With the option, the UP/DOWN lines leave out the reason the agent line gave.
    assert_eq!(
        server_lines(&lb.stderr_text()),
        server_lines(&ha.stderr_text())
    );
}
