//! Clients that leave while their session waits for a server, side by side with HAProxy 2.6
//! on the same config, with and without `option abortonclose`:
//! - in the queue: a client that closes having sent nothing leaves it (`CQ`); one that sent
//!   bytes before closing keeps its place and the server later gets the bytes and the close,
//!   unless the backend has `option abortonclose`, which drops it too;
//! - while connecting (a server that never answers the handshake): with `option
//!   abortonclose` a client that closes ends the attempt at once (`CC`); without it the
//!   connect runs to `timeout connect`.
//!
//! What is compared is what the server saw (the connections it got, with their bytes) and
//! how soon each client's connection was closed.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Blackhole, Haproxy, Rolelb, free_port, wait_until};

/// A server that records, for each connection, what it received until the client's close.
struct Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let record = record.clone();
                thread::spawn(move || {
                    let idx = {
                        let mut seen = record.lock().expect("lock");
                        seen.push(String::new());
                        seen.len() - 1
                    };
                    let mut buf = [0u8; 256];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        record.lock().expect("lock")[idx].push_str(&text);
                    }
                    record.lock().expect("lock")[idx].push_str("<close>");
                });
            }
        });
        Recorder { port, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

fn config(port: u16, server_port: u16, abortonclose: bool) -> String {
    let option = if abortonclose {
        "    option abortonclose\n"
    } else {
        ""
    };
    format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 20s\n    \
         timeout server 20s\n    timeout queue 20s\n    retries 0\n\
         listen l\n    bind 127.0.0.1:{port}\n{option}    \
         server s 127.0.0.1:{server_port} maxconn 1\n"
    )
}

fn start(proxy: &str, cfg: &str) -> Box<dyn std::any::Any> {
    if proxy == "haproxy" {
        Box::new(Haproxy::start(cfg))
    } else {
        Box::new(Rolelb::start(cfg))
    }
}

/// Whether the proxy closed `conn` (a read gives EOF or an error) within `within`.
fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    conn.set_read_timeout(Some(within)).expect("timeout");
    let mut byte = [0u8; 1];
    !matches!(conn.read(&mut byte), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// One client holds the server's one slot; a second waits and closes having sent nothing, a
/// third waits and closes after sending `C`; then the first leaves. What the server saw,
/// and whether the second and third were closed while waiting.
fn queue_scenario(proxy: &str, abortonclose: bool) -> (Vec<String>, bool, bool) {
    let server = Recorder::start();
    let port = free_port();
    let _running = start(proxy, &config(port, server.port, abortonclose));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut first = TcpStream::connect(addr).expect("connect");
    first.write_all(b"A").expect("write");
    assert!(
        wait_until(Duration::from_secs(5), || server.seen().first()
            == Some(&"A".to_string())),
        "{proxy}: the first client never reached the server"
    );
    let mut silent = TcpStream::connect(addr).expect("connect");
    let mut talker = TcpStream::connect(addr).expect("connect");
    talker.write_all(b"C").expect("write");
    thread::sleep(Duration::from_millis(200));
    silent.shutdown(Shutdown::Write).expect("FIN");
    talker.shutdown(Shutdown::Write).expect("FIN");
    let silent_closed = closed_within(&mut silent, Duration::from_millis(800));
    let talker_closed = closed_within(&mut talker, Duration::from_millis(300));
    drop(first);
    thread::sleep(Duration::from_millis(800));
    (server.seen(), silent_closed, talker_closed)
}

#[test]
fn a_client_that_leaves_the_queue_is_dropped_as_haproxy_drops_it() {
    for abortonclose in [false, true] {
        let haproxy = queue_scenario("haproxy", abortonclose);
        let rolelb = queue_scenario("rolelb", abortonclose);
        assert_eq!(
            rolelb, haproxy,
            "abortonclose {abortonclose}: rolelb vs HAProxy"
        );
        let (seen, silent_closed, talker_closed) = rolelb;
        assert!(silent_closed, "a silent client that closed left the queue");
        if abortonclose {
            assert_eq!(seen, ["A<close>"], "the talker was dropped too");
            assert!(talker_closed);
        } else {
            assert_eq!(seen, ["A<close>", "C<close>"], "the talker kept its place");
            assert!(!talker_closed);
        }
    }
}

/// A client connects to a server that never answers the handshake, sends `x` and closes:
/// how soon the proxy closes it.
fn connect_scenario(proxy: &str, abortonclose: bool) -> bool {
    let hole = Blackhole::start();
    let port = free_port();
    let _running = start(proxy, &config(port, hole.port(), abortonclose));
    let mut client = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect");
    thread::sleep(Duration::from_millis(200));
    client.write_all(b"x").expect("write");
    client.shutdown(Shutdown::Write).expect("FIN");
    let started = Instant::now();
    let closed = closed_within(&mut client, Duration::from_millis(1000));
    assert!(started.elapsed() < Duration::from_secs(2));
    closed
}

#[test]
fn abortonclose_ends_a_connect_the_client_left() {
    for abortonclose in [false, true] {
        let haproxy = connect_scenario("haproxy", abortonclose);
        let rolelb = connect_scenario("rolelb", abortonclose);
        assert_eq!(
            rolelb, haproxy,
            "abortonclose {abortonclose}: rolelb vs HAProxy"
        );
        assert_eq!(
            rolelb, abortonclose,
            "closed at once only with abortonclose"
        );
    }
}
