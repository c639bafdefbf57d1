//! `tune.rcvbuf.client`, `tune.sndbuf.client`, `tune.rcvbuf.server` and `tune.sndbuf.server`
//! side by side with HAProxy 2.6 on the same config: a session's two connections are taken
//! from each running proxy (`pidfd_getfd`, as root) and their `SO_RCVBUF` / `SO_SNDBUF` read
//! back, so what is compared is what the kernel applies. Also: a reload that changes the
//! sizes applies them to the connections that follow.

mod common;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use common::{
    Haproxy, NamedServer, Rolelb, free_port, open_named, sockets_of, sockets_to, sockopt_int,
    wait_until,
};

fn config(global: &str, port: u16, server: &NamedServer) -> String {
    format!(
        "global\n{global}\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         listen fe\n    bind 127.0.0.1:{port}\n    server s {}\n",
        server.addr()
    )
}

/// `SO_SNDBUF` and `SO_RCVBUF` of one socket.
fn sizes(fd: &OwnedFd) -> (i32, i32) {
    (
        sockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF),
        sockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF),
    )
}

/// The buffer sizes of a session through the proxy `pid` listening on `port`: its connection
/// from the client, then its connection to the server on `server_port`.
fn session_view(pid: u32, port: u16, server_port: u16) -> String {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (name, _client) = open_named(addr).expect("a session through the proxy");
    assert_eq!(name, "s");
    let accepted = sockets_of(pid, port, "01");
    assert_eq!(
        accepted.len(),
        1,
        "one accepted connection of {pid} on {port}"
    );
    let to_server = sockets_to(pid, server_port);
    assert_eq!(to_server.len(), 1, "one server connection of {pid}");
    let (csnd, crcv) = sizes(&accepted[0]);
    let (ssnd, srcv) = sizes(&to_server[0]);
    format!("client snd={csnd} rcv={crcv}; server snd={ssnd} rcv={srcv}")
}

/// What a session through each proxy shows with `global` lines: (HAProxy, rolelb).
fn side_by_side(global: &str, server: &NamedServer) -> (String, String) {
    let mut out = Vec::new();
    for proxy in ["haproxy", "rolelb"] {
        let port = free_port();
        let cfg = config(global, port, server);
        let view = if proxy == "haproxy" {
            let p = Haproxy::start(&cfg);
            session_view(p.pid(), port, server.port())
        } else {
            let p = Rolelb::start(&cfg);
            session_view(p.pid(), port, server.port())
        };
        out.push(view);
    }
    (out.remove(0), out.remove(0))
}

/// The kernel's ceiling on a size asked with `SO_RCVBUF` (`net.core.rmem_max`).
fn rmem_max() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("/proc/sys/net/core/rmem_max")
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn socket_buffer_sizes_reach_both_connections_of_a_session_as_in_haproxy() {
    let s = NamedServer::start("s");
    // Nothing set: the kernel's defaults on both sides, for both proxies.
    let (haproxy, rolelb) = side_by_side("    maxconn 100\n", &s);
    assert_eq!(rolelb, haproxy, "no tune.*buf.*: rolelb vs HAProxy");

    // Each side and direction its own size: the kernel doubles what it is asked for.
    let global = "    tune.sndbuf.client 16384\n    tune.rcvbuf.client 24576\n    \
                  tune.sndbuf.server 32768\n    tune.rcvbuf.server 40960\n";
    let (haproxy, rolelb) = side_by_side(global, &s);
    assert_eq!(rolelb, haproxy, "{global}: rolelb vs HAProxy");
    assert_eq!(
        rolelb,
        "client snd=32768 rcv=49152; server snd=65536 rcv=81920"
    );

    // One side only; the other keeps the kernel's.
    let global = "    tune.rcvbuf.server 8192\n";
    let (haproxy, rolelb) = side_by_side(global, &s);
    assert_eq!(rolelb, haproxy, "{global}: rolelb vs HAProxy");
    assert!(rolelb.ends_with(" rcv=16384"), "{rolelb}");

    // Above `net.core.rmem_max` the kernel caps it, for both.
    let over = rmem_max().saturating_add(4096);
    let global = format!("    tune.rcvbuf.client {over}\n");
    let (haproxy, rolelb) = side_by_side(&global, &s);
    assert_eq!(rolelb, haproxy, "{global}: rolelb vs HAProxy");
    assert!(
        rolelb.contains(&format!("rcv={};", rmem_max().saturating_mul(2))),
        "{rolelb}"
    );
}

#[test]
fn a_reload_gives_the_new_sizes_to_the_sessions_that_follow() {
    let s = NamedServer::start("s");
    let port = free_port();
    let before = "    tune.sndbuf.server 16384\n    tune.rcvbuf.client 16384\n";
    let rb = Rolelb::start(&config(before, port, &s));
    let first = session_view(rb.pid(), port, s.port());
    assert!(first.contains("rcv=32768;"), "{first}");
    assert!(first.contains("server snd=32768 "), "{first}");

    let after = "    tune.sndbuf.server 24576\n    tune.rcvbuf.client 24576\n";
    let mark = rb.log_mark();
    rb.rewrite_config(&config(after, port, &s));
    rb.reload();
    assert!(
        rb.wait_for_log_since(mark, "configuration reloaded", Duration::from_secs(10)),
        "no reload in the log: {}",
        rb.stderr_text()
    );
    // The first session is closed (its client dropped): wait until it is gone.
    assert!(wait_until(Duration::from_secs(5), || sockets_to(
        rb.pid(),
        s.port()
    )
    .is_empty()));
    let second = session_view(rb.pid(), port, s.port());
    assert!(second.contains("rcv=49152;"), "{second}");
    assert!(second.contains("server snd=49152 "), "{second}");
}
