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
    format!(
        "global\n    stats socket {} level admin\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    \
         timeout client 10s\n    timeout server 10s\n\nlisten lb\n    bind 127.0.0.1:{port}\n    \
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
    let _ha = Haproxy::start(&cfg(&hsock, hport, &a, &b, agent.port()));

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
    let log = lb.stderr_text();
    assert!(log.contains("lb/a is DRAIN (set by the agent)"), "{log}");
    assert!(
        log.contains("lb/a is DOWN, reason: Agent reported Down"),
        "{log}"
    );
}
