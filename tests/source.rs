//! `source ADDR` in a backend and `server ... source ADDR`, side by side with HAProxy 2.6:
//! the servers see their connections, traffic and health checks alike, come from the
//! configured address (a server's own `source` wins over its backend's).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{Haproxy, Rolelb, free_port, wait_until};

/// A server that answers every connection with the peer's address and a newline, and
/// records the peers it saw.
struct PeerEcho {
    port: u16,
    peers: Arc<Mutex<Vec<IpAddr>>>,
}

impl PeerEcho {
    fn start() -> PeerEcho {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Ok(peer) = conn.peer_addr() else { continue };
                seen.lock().expect("peers").push(peer.ip());
                let _ = conn.write_all(format!("{}\n", peer.ip()).as_bytes());
                // Held until the other side closes (checks send a line and reset).
                thread::spawn(move || {
                    let mut sink = [0u8; 64];
                    while conn.read(&mut sink).is_ok_and(|n| n > 0) {}
                });
            }
        });
        PeerEcho { port, peers }
    }

    fn peers(&self) -> Vec<IpAddr> {
        self.peers.lock().expect("peers").clone()
    }
}

/// What a client of `port` is told its server saw as the connection's source.
fn seen_through(port: u16) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while conn.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn config(p: u16, q: u16, s1: u16, s2: u16) -> String {
    format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         listen a\n    bind 127.0.0.1:{p}\n    source 127.0.0.2\n    option tcp-check\n    \
         tcp-check send ping\\r\\n\n    server s 127.0.0.1:{s1} check inter 200ms\n\
         listen b\n    bind 127.0.0.1:{q}\n    source 127.0.0.2\n    option tcp-check\n    \
         tcp-check send ping\\r\\n\n    server s 127.0.0.1:{s2} source 127.0.0.3 check inter 200ms\n"
    )
}

#[test]
fn traffic_and_checks_come_from_the_source_address_as_in_haproxy() {
    let mut seen = Vec::new();
    for proxy in ["haproxy", "rolelb"] {
        let (s1, s2) = (PeerEcho::start(), PeerEcho::start());
        let (p, q) = (free_port(), free_port());
        let cfg = config(p, q, s1.port, s2.port);
        let running: Box<dyn std::any::Any> = match proxy {
            "haproxy" => Box::new(Haproxy::start(&cfg)),
            _ => Box::new(Rolelb::start(&cfg)),
        };
        // The checks (one every 200 ms once started; HAProxy spreads the first ones over
        // `inter`) reach both servers. Generous: a loaded machine delays a proxy's start.
        assert!(
            wait_until(Duration::from_secs(15), || s1.peers().len() >= 2
                && s2.peers().len() >= 2),
            "{proxy}: health checks did not reach the servers within 15 s: s1 saw {:?}, s2 {:?}",
            s1.peers(),
            s2.peers()
        );
        let traffic = (seen_through(p), seen_through(q));
        let distinct = |peers: Vec<IpAddr>| {
            let mut v: Vec<String> = peers.iter().map(ToString::to_string).collect();
            v.sort();
            v.dedup();
            v.join(",")
        };
        seen.push(format!(
            "traffic {traffic:?}, all connections to s1 from {}, to s2 from {}",
            distinct(s1.peers()),
            distinct(s2.peers())
        ));
        drop(running);
    }
    assert_eq!(seen[1], seen[0], "rolelb vs HAProxy");
    assert_eq!(
        seen[1],
        "traffic (\"127.0.0.2\", \"127.0.0.3\"), all connections to s1 from 127.0.0.2, to s2 from 127.0.0.3"
    );
}

#[test]
fn what_rolelb_cannot_honour_in_source_is_refused_at_its_line() {
    for (line, why) in [
        ("source 127.0.0.2 usesrc clientip", "usesrc"),
        ("source 127.0.0.2:1025-2000", "port range"),
        ("source nosuchhost", "invalid source address"),
        ("source 127.0.0.2 bogus", "unexpected 'bogus'"),
    ] {
        let cfg = format!(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    \
             timeout server 10s\nlisten a\n    bind 127.0.0.1:{}\n    {line}\n    \
             server s 127.0.0.1:9\n",
            free_port()
        );
        let (ok, text) = Rolelb::check(&cfg);
        assert!(
            !ok && text.contains(".cfg:8:") && text.contains(why),
            "'{line}': {text}"
        );
    }
}
