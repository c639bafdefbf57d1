//! Server options that shape traffic: `send-proxy` / `send-proxy-v2` (the PROXY header the
//! server receives, byte for byte the same as HAProxy 2.6 sends) and `slowstart`; and the
//! `id` values `haproxy -c` refuses (what ids do is in `balancing.rs` and `runtime_socket.rs`).

mod common;
mod lbcfg;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{Haproxy, NamedServer, Rolelb, free_port, wait_until, who_answers};
use lbcfg::{Srv, listen, local};

/// The PROXY header a backend receives when a client connects through `proxy` (either
/// "rolelb" or "haproxy") with server option `opt`: v1 up to CRLF, v2 its 28 bytes for IPv4.
/// Returns the header, the client's source port and the frontend's port.
fn header_via(proxy: &str, opt: &str) -> (Vec<u8>, u16, u16) {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free_port();
    let cfg = listen(
        port,
        "balance roundrobin",
        &[Srv {
            name: "s",
            addr: backend.local_addr().expect("addr"),
            opts: opt,
        }],
    );
    let _guard: Box<dyn std::any::Any> = match proxy {
        "haproxy" => Box::new(Haproxy::start(&cfg)),
        _ => Box::new(Rolelb::start(&cfg)),
    };
    let mut client = TcpStream::connect(local(port)).expect("connect");
    let sport = client.local_addr().expect("local").port();
    client.write_all(b"x").expect("write");
    let (mut conn, _) = backend.accept().expect("accept");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut header = Vec::new();
    let mut byte = [0u8; 1];
    while conn.read(&mut byte).expect("read header") == 1 {
        header.push(byte[0]);
        let v1_done = opt == "send-proxy" && header.ends_with(b"\r\n");
        if v1_done || (opt == "send-proxy-v2" && header.len() == 28) {
            break;
        }
    }
    (header, sport, port)
}

#[test]
fn send_proxy_v1_and_v2_headers_match_haproxy_byte_for_byte() {
    for opt in ["send-proxy", "send-proxy-v2"] {
        let (ours, our_sport, our_port) = header_via("rolelb", opt);
        let (theirs, their_sport, their_port) = header_via("haproxy", opt);
        // Identical once each run's own client and frontend ports are set aside.
        let normalize = |h: &[u8], sport: u16, dport: u16| -> Vec<u8> {
            if opt == "send-proxy" {
                String::from_utf8_lossy(h)
                    .replacen(&format!(" {sport} {dport}\r\n"), " SPORT DPORT\r\n", 1)
                    .into_bytes()
            } else {
                let mut h = h.to_vec();
                h[24..28].copy_from_slice(&[0, 0, 0, 0]);
                h
            }
        };
        assert_eq!(
            normalize(&ours, our_sport, our_port),
            normalize(&theirs, their_sport, their_port),
            "{opt}: rolelb sent {ours:?}, HAProxy sent {theirs:?}"
        );
        if opt == "send-proxy-v2" {
            assert_eq!(u16::from_be_bytes([ours[24], ours[25]]), our_sport);
            assert_eq!(u16::from_be_bytes([ours[26], ours[27]]), our_port);
        } else {
            assert!(ours.ends_with(format!(" {our_sport} {our_port}\r\n").as_bytes()));
        }
    }
}

#[test]
fn slowstart_ramps_a_returning_server_up_gradually() {
    let a = NamedServer::start("a");
    let b = NamedServer::start("b");
    let port = free_port();
    let servers = |b_opts: &'static str| {
        vec![
            Srv::of(&a, "weight 100"),
            Srv {
                name: "b",
                addr: b.addr(),
                opts: b_opts,
            },
        ]
    };
    let lb = Rolelb::start(&listen(
        port,
        "balance roundrobin",
        &servers("weight 100 slowstart 4s disabled"),
    ));
    assert_eq!(who_answers(local(port)).expect("a serves"), "a");
    lb.rewrite_config(&listen(
        port,
        "balance roundrobin",
        &servers("weight 100 slowstart 4s"),
    ));
    lb.reload();
    assert!(lb.wait_for_log("configuration reloaded", Duration::from_secs(5)));
    let share_of_b = |n: usize| {
        let mut c: HashMap<String, usize> = HashMap::new();
        for _ in 0..n {
            *c.entry(who_answers(local(port)).expect("conn"))
                .or_default() += 1;
        }
        c.get("b").copied().unwrap_or(0) as f64 / n as f64
    };
    let early = share_of_b(40);
    assert!(
        early < 0.2,
        "b just came back: share {early} should be small"
    );
    assert!(
        wait_until(Duration::from_secs(10), || share_of_b(40) >= 0.45),
        "b reaches its full weight after slowstart"
    );
}

#[test]
fn bad_server_ids_are_refused_with_their_line_as_haproxy_refuses_them() {
    let cfg = |servers: &str| {
        format!(
            "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    \
             timeout server 1s\n\nlisten lb\n    bind 127.0.0.1:{}\n{servers}",
            free_port()
        )
    };
    let good = cfg("    server a 127.0.0.1:1 id 2\n    server b 127.0.0.1:2\n");
    assert!(Haproxy::check(&good).0, "HAProxy refuses ids 2 and auto");
    let (ok, text) = Rolelb::check(&good);
    assert!(ok && !text.contains("WARNING"), "{text}");
    for (servers, line, why) in [
        (
            "    server a 127.0.0.1:1 id 2\n    server b 127.0.0.1:2 id 2\n",
            10,
            "custom id 2 already used at",
        ),
        (
            "    server a 127.0.0.1:1 id 0\n",
            9,
            "custom id has to be > 0",
        ),
        (
            "    default-server id 3\n    server a 127.0.0.1:1\n",
            9,
            "not accepted in default-server",
        ),
    ] {
        // HAProxy 2.6 alerts on all three, but still calls the file valid after the
        // `default-server` alert (and then ignores that id): rolelb refuses it.
        let (valid, theirs) = Haproxy::check(&cfg(servers));
        assert!(theirs.contains(why), "HAProxy: {theirs}");
        assert_eq!(
            valid,
            servers.contains("default-server"),
            "HAProxy: {theirs}"
        );
        let (valid, ours) = Rolelb::check(&cfg(servers));
        assert!(!valid, "{servers}: {ours}");
        assert!(
            ours.contains(&format!(".cfg:{line}: ")) && ours.contains(why),
            "{servers}: {ours}"
        );
    }
}
