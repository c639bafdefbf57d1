//! `option nolinger`, side by side with HAProxy 2.6 on the same config: in a frontend, the
//! client's connection is closed with a reset (HAProxy sets `SO_LINGER` 0 on the listener,
//! which accepted connections inherit); in a backend, a client's FIN is not passed on: the
//! session ends and the server's connection is reset. Without it both close with FINs.

mod common;
mod lbcfg;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::{Haproxy, Rolelb, free_port};
use lbcfg::local;

/// How a read loop ended: what came, then `EOF` (a FIN) or `reset`.
fn drain(conn: &mut TcpStream) -> String {
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return format!("{:?} then EOF", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return format!("{:?} then reset", String::from_utf8_lossy(&got));
            }
            Err(e) => return format!("{:?} then {e}", String::from_utf8_lossy(&got)),
        }
    }
}

/// Through `proxy` ("rolelb" or "haproxy") with `fe_opt` in the frontend and `be_opt` in the
/// backend: the client sends `ping` and half-closes; the server reads to the end, answers
/// `pong` and closes. Returns what the server saw, then what the client saw.
fn exchange(proxy: &str, fe_opt: &str, be_opt: &str) -> (String, String) {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let addr = server.local_addr().expect("server address");
    let port = free_port();
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    {fe_opt}\n    default_backend be\n\
         backend be\n    {be_opt}\n    server s {addr}\n"
    );
    let _guard: Box<dyn std::any::Any> = match proxy {
        "haproxy" => Box::new(Haproxy::start(&cfg)),
        _ => Box::new(Rolelb::start(&cfg)),
    };
    let served = thread::spawn(move || {
        let (mut conn, _) = server.accept().expect("accept");
        let saw = drain(&mut conn);
        let _ = conn.write_all(b"pong");
        // Let the answer leave before the close.
        thread::sleep(Duration::from_millis(100));
        saw
    });
    let mut client = TcpStream::connect(local(port)).expect("connect");
    client.write_all(b"ping").expect("send");
    client.shutdown(Shutdown::Write).expect("half-close");
    let client_saw = drain(&mut client);
    (served.join().expect("the server thread"), client_saw)
}

#[test]
fn nolinger_resets_as_in_haproxy_on_either_side() {
    for (fe_opt, be_opt, server_saw, client_saw) in [
        ("", "", "\"ping\" then EOF", "\"pong\" then EOF"),
        (
            "option nolinger",
            "",
            "\"ping\" then EOF",
            "\"pong\" then reset",
        ),
        (
            "",
            "option nolinger",
            "\"ping\" then reset",
            "\"\" then EOF",
        ),
    ] {
        let theirs = exchange("haproxy", fe_opt, be_opt);
        let ours = exchange("rolelb", fe_opt, be_opt);
        assert_eq!(
            ours, theirs,
            "frontend '{fe_opt}', backend '{be_opt}': rolelb (server saw, client saw) against HAProxy's"
        );
        assert_eq!(
            ours,
            (server_saw.to_string(), client_saw.to_string()),
            "frontend '{fe_opt}', backend '{be_opt}'"
        );
    }
}
