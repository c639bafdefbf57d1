//! `option tcp-smart-accept`, `option tcp-smart-connect` and `bind ... defer-accept`, side by
//! side with HAProxy 2.6 on the same config. What they change is which TCP segments a proxy
//! sends, so the test counts the segments that reach its own sockets (`TCP_INFO`'s
//! `tcpi_segs_in`, read at a point where every segment that precedes it has arrived):
//! - smart-accept: the client's request is acknowledged together with the answer, not by a
//!   bare ACK first (the client receives one segment fewer);
//! - smart-connect with `send-proxy`: the handshake's last ACK leaves with the PROXY header
//!   (the server receives one segment fewer); without bytes to send at once it changes
//!   nothing;
//! - defer-accept: a client that sends nothing is accepted only after about a second, so a
//!   server that speaks first greets it that late; a client that sends at once is not held.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use common::{Haproxy, Rolelb, free_port};
use lbcfg::local;

mod lbcfg;

/// Segments the socket received so far (`TCP_INFO`).
fn segs_in(sock: &impl AsRawFd) -> u32 {
    // SAFETY: `tcp_info` is plain data: all zeros is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>())
        .expect("tcp_info's size fits socklen_t");
    // SAFETY: the descriptor is open for the call; the kernel writes at most `len` bytes
    // into `info`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in
}

/// Starts `proxy` ("rolelb" or "haproxy") on `cfg`; dropped to stop it.
fn start(proxy: &str, cfg: &str) -> Box<dyn std::any::Any> {
    match proxy {
        "haproxy" => Box::new(Haproxy::start(cfg)),
        _ => Box::new(Rolelb::start(cfg)),
    }
}

fn config(port: u16, fe_lines: &str, bind_opts: &str, be_lines: &str, server: &str) -> String {
    format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend fe\n    bind 127.0.0.1:{port} {bind_opts}\n{fe_lines}    default_backend be\n\
         backend be\n{be_lines}    server s {server}\n"
    )
}

/// Reads exactly `n` bytes.
fn read_n(conn: &mut TcpStream, n: usize) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut got = vec![0u8; n];
    conn.read_exact(&mut got).expect("reading the answer");
    got
}

/// Through `proxy` with `fe_lines` in the frontend: the client sends `ping`, the server
/// answers `pong` at once; the segments the client received by the time it has `pong`.
fn client_segments(proxy: &str, fe_lines: &str) -> u32 {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let addr = server.local_addr().expect("server address");
    let port = free_port();
    let _proxy = start(proxy, &config(port, fe_lines, "", "", &addr.to_string()));
    fewest(|| ping_pong_segments(port, &server))
}

/// The fewest segments of three tries: a late answer (a loaded machine) can only add a
/// segment (the delayed ACK's timer fires first), never spare one.
fn fewest(mut segments: impl FnMut() -> u32) -> u32 {
    (0..3).map(|_| segments()).min().unwrap_or(u32::MAX)
}

/// One client through the proxy on `port` to `server`: `ping`, then `pong` from the server at
/// once; the segments the client received by the time it has `pong`.
fn ping_pong_segments(port: u16, server: &TcpListener) -> u32 {
    let server = server.try_clone().expect("the server's socket");
    let served = thread::spawn(move || {
        let (mut conn, _) = server.accept().expect("accept");
        read_n(&mut conn, 4);
        conn.write_all(b"pong").expect("answer");
        // Until the client is done.
        let _ = conn.read(&mut [0u8; 16]);
    });
    let mut client = TcpStream::connect(local(port)).expect("connect");
    client.write_all(b"ping").expect("send");
    assert_eq!(read_n(&mut client, 4), b"pong");
    let segments = segs_in(&client);
    drop(client);
    served.join().expect("the server thread");
    segments
}

#[test]
fn a_listener_kept_across_a_reload_takes_the_new_options() {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let addr = server.local_addr().expect("server address").to_string();
    let port = free_port();
    let lb = Rolelb::start(&config(port, "", "", "", &addr));
    let plain = fewest(|| ping_pong_segments(port, &server));
    let mut reloads = 0;
    let mut reload = |cfg: String| {
        lb.rewrite_config(&cfg);
        lb.reload();
        reloads += 1;
        assert!(
            common::wait_until(Duration::from_secs(5), || {
                lb.stderr_text().matches("configuration reloaded").count() == reloads
            }),
            "the reload did not complete: {}",
            lb.stderr_text()
        );
    };
    // A reload refused (a new address cannot be bound) changes nothing, options included.
    let taken = TcpListener::bind("127.0.0.1:0").expect("an address in use");
    let taken = taken.local_addr().expect("its address");
    let refused = config(port, "    option tcp-smart-accept\n", "", "", &addr).replace(
        "default_backend",
        &format!("bind {taken}\n    default_backend"),
    );
    let mark = lb.log_mark();
    lb.rewrite_config(&refused);
    lb.reload();
    assert!(
        lb.wait_for_log_since(mark, "cannot bind", Duration::from_secs(5)),
        "the reload was not refused: {}",
        lb.stderr_text()
    );
    let unchanged = fewest(|| ping_pong_segments(port, &server));
    reload(config(port, "    option tcp-smart-accept\n", "", "", &addr));
    let smart = fewest(|| ping_pong_segments(port, &server));
    reload(config(port, "", "", "", &addr));
    let again = fewest(|| ping_pong_segments(port, &server));
    assert_eq!(
        (unchanged, smart + 1, again),
        (plain, plain, plain),
        "segments the client received: after a refused reload that adds the option, with the \
         option added by a reload, after it was removed"
    );
}

/// Through `proxy` with `be_lines` in the backend and `server_opts` on the server line: the
/// segments the server received by the time it has read the PROXY header (`send-proxy`) or,
/// without one, the client's `ping`.
fn server_segments(proxy: &str, be_lines: &str, server_opts: &str) -> u32 {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let addr = server.local_addr().expect("server address");
    let port = free_port();
    let _proxy = start(
        proxy,
        &config(port, "", "", be_lines, &format!("{addr} {server_opts}")),
    );
    let with_header = server_opts.contains("send-proxy");
    let served = thread::spawn(move || {
        let (mut conn, _) = server.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        // A v1 header is one line; without one, the client's 4 bytes.
        while !(if with_header {
            got.ends_with(b"\r\n")
        } else {
            got.len() == 4
        }) {
            let n = conn.read(&mut byte).expect("reading what the proxy sent");
            assert_eq!(n, 1, "the proxy closed early after {got:?}");
            got.push(byte[0]);
        }
        let segments = segs_in(&conn);
        let _ = conn.write_all(b"pong");
        let _ = conn.read(&mut [0u8; 16]);
        segments
    });
    let mut client = TcpStream::connect(local(port)).expect("connect");
    // A server that reads a header waits for it alone: the client sends after the answer.
    if !with_header {
        client.write_all(b"ping").expect("send");
    }
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let _ = client.read(&mut [0u8; 16]);
    drop(client);
    served.join().expect("the server thread")
}

#[test]
fn smart_accept_acknowledges_the_request_with_the_answer_as_haproxy_does() {
    let mut seen = Vec::new();
    for fe_lines in ["", "    option tcp-smart-accept\n"] {
        let theirs = client_segments("haproxy", fe_lines);
        let ours = client_segments("rolelb", fe_lines);
        assert_eq!(
            ours, theirs,
            "frontend {fe_lines:?}: segments the client received through rolelb vs HAProxy"
        );
        seen.push(ours);
    }
    assert_eq!(
        seen[1] + 1,
        seen[0],
        "tcp-smart-accept spares the bare ACK of the request: {seen:?}"
    );
}

#[test]
fn smart_connect_sends_the_handshake_ack_with_the_proxy_header_as_haproxy_does() {
    let mut seen = Vec::new();
    for (be_lines, server_opts) in [
        ("", "send-proxy"),
        ("    option tcp-smart-connect\n", "send-proxy"),
        ("", ""),
        ("    option tcp-smart-connect\n", ""),
    ] {
        let theirs = fewest(|| server_segments("haproxy", be_lines, server_opts));
        let ours = fewest(|| server_segments("rolelb", be_lines, server_opts));
        assert_eq!(
            ours, theirs,
            "backend {be_lines:?}, server '{server_opts}': segments the server received through rolelb vs HAProxy"
        );
        seen.push(ours);
    }
    assert_eq!(
        seen[1] + 1,
        seen[0],
        "with send-proxy, tcp-smart-connect spares the handshake's bare ACK: {seen:?}"
    );
    assert_eq!(
        seen[3], seen[2],
        "with nothing to send at connect time, tcp-smart-connect changes nothing: {seen:?}"
    );
}

/// Through `proxy` with `bind_opts`: a server that greets first; how long a client waits for
/// the greeting when it sends nothing, and when it sends at once.
fn greeting_delays(proxy: &str, bind_opts: &str) -> (Duration, Duration) {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let addr: SocketAddr = server.local_addr().expect("server address");
    let port = free_port();
    let _proxy = start(proxy, &config(port, "", bind_opts, "", &addr.to_string()));
    let served = thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = server.accept().expect("accept");
            conn.write_all(b"hello").expect("greet");
            thread::spawn(move || {
                let _ = conn.read(&mut [0u8; 16]);
            });
        }
    });
    let mut waits = Vec::new();
    for send_first in [false, true] {
        let started = Instant::now();
        let mut client = TcpStream::connect(local(port)).expect("connect");
        if send_first {
            client.write_all(b"hi").expect("send");
        }
        assert_eq!(read_n(&mut client, 5), b"hello");
        waits.push(started.elapsed());
    }
    served.join().expect("the server thread");
    (waits[0], waits[1])
}

#[test]
fn defer_accept_holds_a_silent_client_about_a_second_as_haproxy_does() {
    for (proxy, bind_opts) in [
        ("haproxy", ""),
        ("rolelb", ""),
        ("haproxy", "defer-accept"),
        ("rolelb", "defer-accept"),
    ] {
        let (silent, talking) = greeting_delays(proxy, bind_opts);
        assert!(
            talking < Duration::from_millis(500),
            "{proxy} '{bind_opts}': a client that sends at once waited {talking:?}"
        );
        if bind_opts.is_empty() {
            assert!(
                silent < Duration::from_millis(500),
                "{proxy} without defer-accept: a silent client waited {silent:?}"
            );
        } else {
            // TCP_DEFER_ACCEPT of 1 s: the kernel accepts once it retransmits its SYN-ACK.
            assert!(
                (Duration::from_millis(800)..Duration::from_secs(4)).contains(&silent),
                "{proxy} with defer-accept: a silent client waited {silent:?}"
            );
        }
    }
}
