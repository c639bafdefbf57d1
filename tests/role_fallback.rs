//! Role-aware details that need no database: the read listener falls back to a `backup`
//! server (typically the primary) only while no replica is eligible, and sessions through a
//! role-aware backend carry TCP keepalive and `TCP_USER_TIMEOUT` on both sides so a session to
//! a partitioned node cannot hang forever. Roles come from scripted agents (`role-check agent`).

mod common;
mod lbcfg;
mod scripted;

use std::process::Command;
use std::time::Duration;

use common::{
    NamedServer, Rolelb, fds_of, free_port, open_named, sockopt_int, wait_until, who_answers,
};
use lbcfg::local;
use scripted::{Reply, Scripted};

fn cfg(port: u16, servers: &[(&NamedServer, &Scripted, &str)]) -> String {
    let mut c = format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\n\
         listen reads\n    bind 127.0.0.1:{port}\n    role replica\n    role-check agent\n"
    );
    for (node, agent, opts) in servers {
        c.push_str(&format!(
            "    server {} {} agent-check agent-port {} agent-inter 200ms fall 1 rise 1 {opts}\n",
            node.name(),
            node.addr(),
            agent.port()
        ));
    }
    c
}

#[test]
fn reads_fall_back_to_the_backup_primary_only_while_no_replica_is_eligible() {
    let (r1, p) = (
        NamedServer::start("replica1"),
        NamedServer::start("primary"),
    );
    let r1_agent = Scripted::start(Reply::text("up #role=replica lag=0\n"), false);
    let p_agent = Scripted::start(Reply::text("up #role=primary lag=0\n"), false);
    let port = free_port();
    let _lb = Rolelb::start(&cfg(
        port,
        &[(&r1, &r1_agent, ""), (&p, &p_agent, "backup")],
    ));
    let only = |name: &str| {
        wait_until(Duration::from_secs(3), || {
            (0..4).all(|_| who_answers(local(port)).is_ok_and(|n| n == name))
        })
    };
    assert!(
        only("replica1"),
        "reads go to the replica, not the backup primary"
    );
    r1_agent.set(Reply::text("down #role=replica\n"));
    assert!(
        only("primary"),
        "no replica eligible: the backup primary takes reads"
    );
    r1_agent.set(Reply::text("up #role=replica lag=0\n"));
    assert!(only("replica1"), "replica back: reads leave the primary");
}

/// `ss -tnoie` lines for established TCP sockets with `port` on either side.
fn ss_lines(port: u16) -> String {
    let out = Command::new("ss")
        .args(["-tnoie", "state", "established"])
        .arg(format!("( sport = :{port} or dport = :{port} )"))
        .output()
        .expect("ss (iproute2) not found: run scripts/deps.sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `TCP_USER_TIMEOUT` (ms) of the socket with inode `inode` in process `pid`, read by
/// duplicating the descriptor with `pidfd_getfd` (Linux 5.6+, root or ptrace rights).
fn user_timeout_ms(pid: u32, inode: &str) -> u32 {
    let socket = format!("socket:[{inode}]");
    let fds = fds_of(pid, |target| target == socket);
    let fd = fds
        .first()
        .unwrap_or_else(|| panic!("no fd for socket inode {inode} in rolelb"));
    let ms = sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT);
    u32::try_from(ms).expect("TCP_USER_TIMEOUT is not negative")
}

/// The inodes of rolelb's sockets among `ss` lines: those whose local port is `local_port`
/// (client side) or whose peer port is `peer_port` (server side).
fn inodes(text: &str, local_port: Option<u16>, peer_port: Option<u16>) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let (local, peer) = (f[2], f[3]);
        let ends = |addr: &str, p: Option<u16>| p.is_some_and(|p| addr.ends_with(&format!(":{p}")));
        if (ends(local, local_port) || ends(peer, peer_port))
            && let Some(ino) = f.iter().find_map(|w| w.strip_prefix("ino:"))
        {
            found.push(ino.to_owned());
        }
    }
    found
}

#[test]
fn role_aware_sessions_have_keepalive_and_tcp_user_timeout_on_both_sides() {
    let node = NamedServer::start("replica1");
    let agent = Scripted::start(Reply::text("up #role=replica lag=0\n"), false);
    let port = free_port();
    let lb = Rolelb::start(&cfg(port, &[(&node, &agent, "")]));
    assert!(
        wait_until(Duration::from_secs(3), || who_answers(local(port)).is_ok()),
        "replica becomes eligible"
    );
    let (_, _held) = open_named(local(port)).expect("session");
    // Both of rolelb's sockets for the session show in `ss` with their keepalive timer.
    let listed = |p: u16| ss_lines(p).contains("timer:(keepalive");
    assert!(
        wait_until(Duration::from_secs(5), || listed(port)
            && listed(node.port())),
        "the session's sockets never showed a keepalive timer:\n{}\n{}",
        ss_lines(port),
        ss_lines(node.port())
    );
    // rolelb's client-side socket (local port = the listener) and its server-side socket
    // (peer port = the node).
    let client_side = inodes(&ss_lines(port), Some(port), None);
    let server_side = inodes(&ss_lines(node.port()), None, Some(node.port()));
    for (side, inodes, text) in [
        ("client", &client_side, ss_lines(port)),
        ("server", &server_side, ss_lines(node.port())),
    ] {
        assert!(
            text.contains("timer:(keepalive"),
            "{side} side has no keepalive timer:\n{text}"
        );
        assert!(
            !inodes.is_empty(),
            "no {side}-side socket of rolelb in:\n{text}"
        );
        for ino in inodes {
            assert_eq!(
                user_timeout_ms(lb.pid(), ino),
                30_000,
                "{side} side TCP_USER_TIMEOUT"
            );
        }
    }
}
