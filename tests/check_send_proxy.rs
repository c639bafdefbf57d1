//! Health checks of a server with `send-proxy`/`send-proxy-v2` send a PROXY header first,
//! side by side with HAProxy 2.6 on the same config (a server that requires the header, such
//! as another balancer's `accept-proxy` or MariaDB's `proxy_protocol_networks`, is otherwise
//! never seen UP): v1 announces the check connection itself, v2 is a `LOCAL` header; a check
//! sent to another `port` sends none unless `check-send-proxy` asks for it. The server here
//! records the first bytes of the first check connection, answers `OK` and closes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Haproxy, Rolelb, free_port};

/// A server that records what the first connection sends within 300 ms (up to a reset or
/// its end), answering `OK\n` once it has read something or the time is up.
fn first_bytes_server() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(300)));
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            // A header line or a v2 header has come whole: answer.
            if got.ends_with(b"\r\n") || got.len() >= 16 {
                break;
            }
        }
        let _ = conn.write_all(b"OK\n");
        let _ = tx.send(got);
        // Keep the listener open (later checks wait in its backlog) until the test ends.
        thread::sleep(Duration::from_secs(5));
    });
    (addr, rx)
}

/// What `proxy` sends first on a check of a server at `server` with `server_opts`; v1 lines
/// have the check's own (ephemeral) source port replaced by `SPORT`, and the checked port by
/// `DPORT`.
fn first_check_bytes(proxy: &str, check: &str, server_opts: &str) -> String {
    let (addr, first) = first_bytes_server();
    let (server_addr, opts) = if server_opts.contains("port OTHER") {
        // The check goes to `addr`, the traffic to a port nothing listens on.
        let traffic = SocketAddr::from(([127, 0, 0, 1], free_port()));
        (
            traffic,
            server_opts.replace("OTHER", &addr.port().to_string()),
        )
    } else {
        (addr, server_opts.to_owned())
    };
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 10s\n    \
         timeout server 10s\n\nlisten l\n    bind 127.0.0.1:{}\n{check}    server s {server_addr} \
         check inter 200ms {opts}\n",
        free_port()
    );
    let _proxy: Box<dyn std::any::Any> = match proxy {
        "haproxy" => Box::new(Haproxy::start(&cfg)),
        _ => Box::new(Rolelb::start(&cfg)),
    };
    let got = first
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{proxy}: no check reached the server"));
    let text = String::from_utf8_lossy(&got).into_owned();
    match text.strip_prefix("PROXY TCP4 ") {
        Some(rest) => {
            let mut fields: Vec<&str> = rest.split(' ').collect();
            let checked = addr.port().to_string();
            if fields.len() == 4 {
                fields[2] = "SPORT";
                // The server's own port: the header announces the check connection.
                if fields[3].trim_end() == checked {
                    fields[3] = "DPORT\r\n";
                }
            }
            format!("PROXY TCP4 {}", fields.join(" "))
        }
        None => format!("{got:?}"),
    }
}

#[test]
fn checks_send_the_proxy_header_as_haproxy_does() {
    let tcp_check = "    option tcp-check\n    tcp-check expect string OK\n";
    for (check, server_opts) in [
        (tcp_check, "send-proxy"),
        (tcp_check, "send-proxy-v2"),
        ("", "send-proxy"),
        (tcp_check, ""),
        (tcp_check, "send-proxy port OTHER"),
        (tcp_check, "send-proxy check-send-proxy port OTHER"),
        (tcp_check, "send-proxy-v2 check-send-proxy port OTHER"),
        (tcp_check, "check-send-proxy"),
    ] {
        let theirs = first_check_bytes("haproxy", check, server_opts);
        let ours = first_check_bytes("rolelb", check, server_opts);
        assert_eq!(
            ours,
            theirs,
            "check {:?}, server '{server_opts}': what the check sent first, rolelb vs HAProxy",
            check.trim()
        );
        let header = !server_opts.is_empty() && server_opts != "send-proxy port OTHER";
        assert_eq!(
            ours.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 SPORT DPORT")
                || ours.starts_with("[13, 10, 13, 10, 0, 13, 10, 81, 85, 73, 84, 10, 32, 0, 0, 0]"),
            header,
            "check {:?}, server '{server_opts}': {ours}",
            check.trim()
        );
    }
}

/// rolelb's `role-check pgsql` connects where the health check would, so it sends the header
/// too (HAProxy has no role checks to compare with).
#[test]
fn a_pgsql_role_check_sends_the_proxy_header_first() {
    let (addr, first) = first_bytes_server();
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 10s\n    \
         timeout server 10s\n\nlisten l\n    bind 127.0.0.1:{}\n    role primary\n    \
         role-check pgsql user postgres\n    server s {addr} send-proxy inter 200ms\n",
        free_port()
    );
    let _lb = Rolelb::start(&cfg);
    let got = first
        .recv_timeout(Duration::from_secs(10))
        .expect("the role check reached the server");
    let header = "PROXY TCP4 127.0.0.1 127.0.0.1 ";
    let text = String::from_utf8_lossy(&got);
    let line = text.split("\r\n").next().unwrap_or_default();
    assert!(
        text.starts_with(header)
            && text.contains("\r\n")
            && line.ends_with(&format!(" {}", addr.port())),
        "the role check sent {text:?} first"
    );
}
