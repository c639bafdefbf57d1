//! Process-level settings honoured as HAProxy does: `user`/`group` and `uid`/`gid`
//! (privileges dropped after binding), `pidfile`, `nbthread`, `log` to a syslog endpoint with
//! `option tcplog`, and frontend `maxconn` (stop accepting while full).

mod common;
mod lbcfg;

use std::io::Read;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::{
    NamedServer, Rolelb, Session, free_port, open_named, read_session, wait_until, who_answers,
};
use lbcfg::local;

fn cfg(global: &str, port: u16, server: &NamedServer, frontend_extra: &str) -> String {
    format!(
        "global\n{global}\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    \
         timeout server 30s\n\nlisten lb\n    bind 127.0.0.1:{port}\n{frontend_extra}\n    server s1 {}\n",
        server.addr()
    )
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

#[test]
fn user_and_group_drop_privileges_after_binding_and_pidfile_is_written() {
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("getpwnam")
        .expect("user nobody exists");
    let s1 = NamedServer::start("s1");
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("rolelb.pid");
    let global = format!("    user nobody\n    pidfile {}\n", pidfile.display());
    let lb = Rolelb::start(&cfg(&global, port, &s1, ""));
    assert_eq!(
        who_answers(local(port)).expect("serves after dropping privileges"),
        "s1"
    );
    let uid = status_field(lb.pid(), "Uid:");
    let want = nobody.uid.to_string();
    assert!(
        uid.split_whitespace().all(|u| u == want),
        "real/effective/saved uid should all be nobody ({want}): {uid}"
    );
    let gid = status_field(lb.pid(), "Gid:");
    assert!(
        gid.split_whitespace().all(|g| g == nobody.gid.to_string()),
        "{gid}"
    );
    let written = std::fs::read_to_string(&pidfile).expect("pidfile written");
    assert_eq!(written.trim(), lb.pid().to_string());
}

#[test]
fn uid_and_gid_drop_privileges_to_numeric_ids_as_in_haproxy() {
    // Ids the user database does not know: taken as they are, by both.
    let global = "    uid 4242\n    gid 4343\n";
    let s1 = NamedServer::start("s1");
    let identity = |pid: u32| {
        ["Uid:", "Gid:", "Groups:"]
            .map(|f| format!("{f} {}", status_field(pid, f)))
            .join("; ")
    };
    let port = free_port();
    let haproxy = common::Haproxy::start(&cfg(global, port, &s1, ""));
    assert_eq!(who_answers(local(port)).expect("HAProxy serves"), "s1");
    let want = identity(haproxy.pid());
    drop(haproxy);
    assert_eq!(
        want, "Uid: 4242\t4242\t4242\t4242; Gid: 4343\t4343\t4343\t4343; Groups: ",
        "HAProxy's identity"
    );
    let port = free_port();
    let lb = Rolelb::start(&cfg(global, port, &s1, ""));
    assert_eq!(who_answers(local(port)).expect("rolelb serves"), "s1");
    assert_eq!(identity(lb.pid()), want, "rolelb vs HAProxy");
    // `uid` and `user` set the same thing: the second one is reported and the first kept.
    let (ok, out) = Rolelb::check(&cfg("    uid 4242\n    user nobody\n", port, &s1, ""));
    assert!(ok && out.contains("user/uid already specified"), "{out}");
    // HAProxy warns about a uid that is not a number and runs as root: rolelb refuses it.
    let (ok, out) = Rolelb::check(&cfg("    uid nobody\n", port, &s1, ""));
    assert!(
        !ok && out.contains(":2: ") && out.contains("'user NAME'"),
        "{out}"
    );
}

#[test]
fn nbthread_sets_the_number_of_threads_that_run_the_proxy() {
    let s1 = NamedServer::start("s1");
    let threads = |n: u32| {
        let port = free_port();
        let lb = Rolelb::start(&cfg(&format!("    nbthread {n}\n"), port, &s1, ""));
        assert_eq!(who_answers(local(port)).expect("serves"), "s1");
        status_field(lb.pid(), "Threads:")
            .parse::<u32>()
            .expect("thread count")
    };
    assert_eq!(threads(1), 1, "nbthread 1: one thread, as HAProxy");
    assert_eq!(
        threads(4),
        5,
        "nbthread 4: four workers beside the main thread"
    );
}

#[test]
fn tcplog_lines_go_to_a_syslog_log_target() {
    let syslog = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    syslog
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let s1 = NamedServer::start("s1");
    let port = free_port();
    let global = format!("    log {} local0\n", syslog.local_addr().expect("addr"));
    let _lb = Rolelb::start(&cfg(&global, port, &s1, "    option tcplog"));
    assert_eq!(who_answers(local(port)).expect("serves"), "s1");
    let mut buf = [0u8; 2048];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        let Ok(n) = syslog.recv(&mut buf) else { break };
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.contains("lb/s1") {
            // local0 (16) * 8 + info (6) = 134.
            assert!(line.starts_with("<134>"), "{line}");
            return;
        }
        seen.push(line);
    }
    panic!("no tcplog datagram for lb/s1; got {seen:?}");
}

#[test]
fn frontend_maxconn_stops_accepting_until_a_connection_ends() {
    let s1 = NamedServer::start("s1");
    let port = free_port();
    let _lb = Rolelb::start(&cfg("", port, &s1, "    maxconn 2"));
    let first = open_named(local(port)).expect("first");
    let _second = open_named(local(port)).expect("second");
    // The kernel completes the handshake, but rolelb does not accept a third while full.
    let mut third = TcpStream::connect(local(port)).expect("backlog");
    // Waiting means open and silent: not served, and not closed either.
    let (state, got) = read_session(&mut third, Duration::from_millis(500));
    assert_eq!(
        (state, got.as_slice()),
        (Session::Open, &b""[..]),
        "third must wait while maxconn 2 is reached"
    );
    let mut b = [0u8; 3];
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    assert!(
        wait_until(Duration::from_secs(3), || third.read_exact(&mut b).is_ok()),
        "third is served once a slot frees"
    );
    assert_eq!(&b, b"s1\n");
}
