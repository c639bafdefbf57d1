//! The socket options of a `bind` line — `backlog`, `mss` (positive and negative), `tcp-ut`,
//! `interface`, `v4v6`, `v6only`, `transparent` — and its `maxconn`, side by side with
//! HAProxy 2.6 on the same config. Each proxy's listening socket (and a connection it accepted) is taken from the
//! running process (`pidfd_getfd`, as root) and its options read with `getsockopt`, so what
//! is compared is what the kernel applies, not what either program says it set. Also: the
//! `-c` verdicts on `id` and `nice`, and a reload that changes an option only a new socket
//! can take, which rolelb refuses (keeping its socket) while `backlog` changes in place.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{
    Haproxy, NamedServer, Rolelb, free_port, sockets_of, sockets_to, sockopt_int, wait_until,
};

/// Starts `proxy` ("rolelb" or "haproxy") on `cfg`, with its pid; dropped to stop it.
fn start(proxy: &str, cfg: &str) -> (Box<dyn std::any::Any>, u32) {
    match proxy {
        "haproxy" => {
            let p = Haproxy::start(cfg);
            let pid = p.pid();
            (Box::new(p), pid)
        }
        _ => {
            let p = Rolelb::start(cfg);
            let pid = p.pid();
            (Box::new(p), pid)
        }
    }
}

fn config(port_line: &str, fe_lines: &str, server: &NamedServer) -> String {
    format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend fe\n    {port_line}\n{fe_lines}    default_backend be\n\
         backend be\n    server s {}\n",
        server.addr()
    )
}

/// The listen backlogs of the socket(s) on `port`, as `ss -lnt` shows them (Send-Q), each
/// value once (rolelb has one socket per data thread, HAProxy 2.6 one in all).
fn backlog(port: u16) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args(["-Hlnt", &format!("sport = :{port}")])
        .output()
        .expect("running ss (iproute2: run scripts/deps.sh)");
    let mut values: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    values.sort();
    values.dedup();
    values
}

/// What one proxy's listening socket on `port` shows: backlog, TCP_MAXSEG,
/// TCP_USER_TIMEOUT, the bound device, and (IPv6) IPV6_V6ONLY and IPV6_TRANSPARENT.
fn listener_view(pid: u32, port: u16) -> String {
    let socks = sockets_of(pid, port, "0A");
    assert!(
        !socks.is_empty(),
        "no listening socket of {pid} on port {port}"
    );
    let fd = &socks[0];
    let device = socket2::SockRef::from(fd)
        .device()
        .ok()
        .flatten()
        .map(|d| String::from_utf8_lossy(&d).into_owned());
    let ipv6 = socket2::SockRef::from(fd)
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .is_some_and(|a| a.is_ipv6());
    let v6 = if ipv6 {
        format!(
            " v6only={} transparent={}",
            sockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
            sockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT)
        )
    } else {
        String::new()
    };
    format!(
        "backlog={:?} maxseg={} user_timeout={} device={device:?}{v6}",
        backlog(port),
        sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG),
        sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
    )
}

/// The MSS, user timeout and Nagle setting of the connection `pid` accepted from a client on
/// `port`, and the Nagle setting of its connection to the server on `server_port`.
fn accepted_view(pid: u32, port: u16, server_port: u16) -> String {
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut name = [0u8; 2];
    client.read_exact(&mut name).expect("the server's name");
    let socks = sockets_of(pid, port, "01");
    assert_eq!(socks.len(), 1, "one accepted connection of {pid} on {port}");
    let to_server = sockets_to(pid, server_port);
    assert_eq!(to_server.len(), 1, "one server connection of {pid}");
    format!(
        "maxseg={} user_timeout={} nodelay={} server_nodelay={}",
        sockopt_int(&socks[0], libc::IPPROTO_TCP, libc::TCP_MAXSEG),
        sockopt_int(&socks[0], libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
        sockopt_int(&socks[0], libc::IPPROTO_TCP, libc::TCP_NODELAY),
        sockopt_int(&to_server[0], libc::IPPROTO_TCP, libc::TCP_NODELAY),
    )
}

/// Runs `cfg(port)` under both proxies; what `view(pid, port)` shows of each.
fn side_by_side(
    cfg: impl Fn(u16) -> String,
    view: impl Fn(u32, u16) -> String,
) -> (String, String) {
    let mut out = Vec::new();
    for proxy in ["haproxy", "rolelb"] {
        let port = free_port();
        let (running, pid) = start(proxy, &cfg(port));
        out.push(view(pid, port));
        drop(running);
    }
    (out.remove(0), out.remove(0))
}

#[test]
fn listening_socket_options_are_those_haproxy_sets() {
    let s = NamedServer::start("s1");
    let cases = [
        ("", ""),
        ("backlog 77 mss 1200 tcp-ut 1500ms", ""),
        ("tcp-ut 2s backlog 0", ""),
        ("", "    maxconn 300\n"),
        ("backlog 50", "    maxconn 300\n"),
        ("maxconn 50", "    maxconn 300\n"),
        ("", "    backlog 200\n    maxconn 300\n"),
        ("backlog 30", "    backlog 200\n"),
        ("maxconn 50", "    backlog 200\n"),
        ("interface lo", ""),
    ];
    for (opts, fe) in cases {
        let (haproxy, rolelb) = side_by_side(
            |port| config(&format!("bind 127.0.0.1:{port} {opts}"), fe, &s),
            listener_view,
        );
        assert_eq!(
            rolelb, haproxy,
            "bind ... {opts} / {fe:?}: rolelb vs HAProxy"
        );
    }
}

/// Also: Nagle is off on both connections of a session, as HAProxy turns it off on each
/// (rolelb sets `TCP_NODELAY` on the listening socket, and the accepted connection inherits it).
#[test]
fn accepted_connections_inherit_tcp_ut_and_a_negative_mss_lowers_theirs() {
    let s = NamedServer::start("s1");
    let server_port = s.addr().port();
    let accepted_view = |pid, port| accepted_view(pid, port, server_port);
    for opts in ["", "mss -100", "tcp-ut 3s", "mss 1000"] {
        let (haproxy, rolelb) = side_by_side(
            |port| config(&format!("bind 127.0.0.1:{port} {opts}"), "", &s),
            accepted_view,
        );
        assert_eq!(rolelb, haproxy, "bind ... {opts}: rolelb vs HAProxy");
        assert!(rolelb.ends_with("nodelay=1 server_nodelay=1"), "{rolelb}");
    }
    // `tcp-ut` reached the accepted connection. (A negative `mss` is set on it by both, but
    // Linux keeps the MSS it computed at the handshake until it next recomputes it, and
    // reports that one: the two read the same whether it was set or not.)
    let (_, inherited) = side_by_side(
        |port| config(&format!("bind 127.0.0.1:{port} tcp-ut 3s"), "", &s),
        accepted_view,
    );
    assert!(inherited.contains("user_timeout=3000 "), "{inherited}");
}

/// Whether a client reaches `port` over IPv4.
fn ipv4_reaches(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

#[test]
fn v4v6_v6only_and_transparent_bind_as_in_haproxy() {
    let s = NamedServer::start("s1");
    for opts in ["v6only", "v4v6", "v4v6 v6only", ""] {
        let mut seen = Vec::new();
        for proxy in ["haproxy", "rolelb"] {
            let port = free_port();
            let (running, pid) = start(proxy, &config(&format!("bind :::{port} {opts}"), "", &s));
            seen.push(format!(
                "{} ipv4={}",
                listener_view(pid, port),
                ipv4_reaches(port)
            ));
            drop(running);
        }
        assert_eq!(seen[1], seen[0], "bind :::PORT {opts}: rolelb vs HAProxy");
    }
    // `::2` is no address of this host: only `transparent` binds it, in both.
    let (haproxy, rolelb) = side_by_side(
        |port| config(&format!("bind [::2]:{port} transparent"), "", &s),
        listener_view,
    );
    assert_eq!(rolelb, haproxy, "bind [::2]:PORT transparent");
    assert!(rolelb.contains("transparent=1"), "{rolelb}");
    let port = free_port();
    let cfg = config(&format!("bind [::2]:{port}"), "", &s);
    let (ok, text) = Rolelb::start_refused(&cfg);
    assert!(
        !ok && text.contains("cannot bind") && text.contains(&port.to_string()),
        "without transparent, a foreign address is refused: {text}"
    );
}

#[test]
fn id_and_nice_are_checked_as_haproxy_checks_them() {
    let cases = [
        ("bind 127.0.0.1:{p} id 3", true),
        ("bind 127.0.0.1:{p},127.0.0.1:{q} id 3", false),
        (
            "bind 127.0.0.1:{p} id 3\n    bind 127.0.0.1:{q} id 3",
            false,
        ),
        ("bind 127.0.0.1:{p} id 0", false),
        ("bind 127.0.0.1:{p} id x", false),
        ("bind 127.0.0.1:{p} nice 10", true),
        ("bind 127.0.0.1:{p} nice -1024", true),
        ("bind 127.0.0.1:{p} nice 2000", false),
        ("bind 127.0.0.1:{p} mss 0", false),
        ("bind 127.0.0.1:{p} mss 70000", false),
        ("bind 127.0.0.1:{p} mss -1460", true),
        ("bind 127.0.0.1:{p} backlog -1", false),
        ("bind 127.0.0.1:{p} tcp-ut 25d", false),
        ("bind 127.0.0.1:{p} interface", false),
    ];
    let s = NamedServer::start("s1");
    for (line, valid) in cases {
        let line = line
            .replace("{p}", &free_port().to_string())
            .replace("{q}", &free_port().to_string());
        let cfg = config(&line, "", &s);
        let (h_ok, h_text) = Haproxy::check(&cfg);
        let (r_ok, r_text) = Rolelb::check(&cfg);
        assert_eq!(h_ok, valid, "HAProxy on '{line}': {h_text}");
        assert_eq!(r_ok, valid, "rolelb on '{line}': {r_text}");
        if !valid {
            assert!(
                r_text.lines().any(|l| l.contains(".cfg:")),
                "rolelb's refusal names FILE:LINE: {r_text}"
            );
        }
    }
}

#[test]
fn a_reload_changes_the_backlog_in_place_and_refuses_what_needs_a_new_socket() {
    let s = NamedServer::start("s1");
    let port = free_port();
    let lb = Rolelb::start(&config(
        &format!("bind 127.0.0.1:{port} backlog 40"),
        "",
        &s,
    ));
    let all = |n: &str| {
        let b = backlog(port);
        !b.is_empty() && b.iter().all(|x| x == n)
    };
    assert!(all("40"), "{:?}", backlog(port));
    let reload = |line: &str| {
        let mark = lb.log_mark();
        lb.rewrite_config(&config(line, "", &s));
        lb.reload();
        mark
    };
    let mark = reload(&format!("bind 127.0.0.1:{port} backlog 60"));
    assert!(
        lb.wait_for_log_since(mark, "configuration reloaded", Duration::from_secs(5)),
        "{}",
        lb.stderr_text()
    );
    assert!(
        all("60"),
        "the same sockets, their backlog changed: {:?}",
        backlog(port)
    );
    let mark = reload(&format!("bind 127.0.0.1:{port} backlog 60 interface lo"));
    assert!(
        lb.wait_for_log_since(mark, "needs a restart", Duration::from_secs(5)),
        "{}",
        lb.stderr_text()
    );
    assert!(
        all("60"),
        "the sockets stay as they were: {:?}",
        backlog(port)
    );
    assert!(
        wait_until(Duration::from_secs(2), || ipv4_reaches(port)),
        "and serves"
    );
}

/// Opens `n` clients to `port` at once; those the server greeted within 1 s (served) and the
/// others (left waiting in the backlog), all kept open.
fn flood(port: u16, n: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let clients: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let (mut served, mut waiting) = (Vec::new(), Vec::new());
    for mut c in clients {
        c.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut name = [0u8; 3];
        if c.read_exact(&mut name).is_ok() {
            served.push(c);
        } else {
            waiting.push(c);
        }
    }
    (served, waiting)
}

#[test]
fn bind_maxconn_limits_each_address_of_the_line_as_in_haproxy() {
    let s = NamedServer::start("s1");
    let mut seen = Vec::new();
    for proxy in ["haproxy", "rolelb"] {
        let (p, q) = (free_port(), free_port());
        let cfg = config(
            &format!("bind 127.0.0.1:{p},127.0.0.1:{q} maxconn 2"),
            "",
            &s,
        );
        let (running, _) = start(proxy, &cfg);
        let (mut on_p, waiting_p) = flood(p, 4);
        let (on_q, waiting_q) = flood(q, 3);
        // A connection that ends lets one waiting client in.
        on_p.pop();
        let mut late = waiting_p;
        let mut name = [0u8; 3];
        let let_in = late
            .iter_mut()
            .map(|c| {
                c.set_read_timeout(Some(Duration::from_secs(2))).is_ok()
                    && c.read_exact(&mut name).is_ok()
            })
            .filter(|&got| got)
            .count();
        seen.push(format!(
            "served on p {}, waiting {}; on q {}, waiting {}; let in after one ended: {let_in}",
            on_p.len() + 1,
            late.len(),
            on_q.len(),
            waiting_q.len()
        ));
        drop(running);
    }
    assert_eq!(seen[1], seen[0], "rolelb vs HAProxy");
    assert_eq!(
        seen[1],
        "served on p 2, waiting 2; on q 2, waiting 1; let in after one ended: 1"
    );
}
