//! `option independent-streams` side by side with HAProxy 2.6: a server streams to a client
//! that sends nothing. By default writes to the client refresh its read timeout, so the
//! stream outlives `timeout client`; with the option only the client's own bytes do, and the
//! silent client times out at `timeout client` while data still flows to it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{Haproxy, Rolelb, free_port};

/// Bytes the server streams, one every [`EVERY`].
const BYTES: usize = 15;
const EVERY: Duration = Duration::from_millis(100);

/// A server that streams [`BYTES`] bytes to each connection, one every [`EVERY`], then
/// closes; it stops early when its peer closes (as a database does on a client's EOF).
fn streaming_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let port = listener.local_addr().expect("its address").port();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(EVERY));
                let mut buf = [0u8; 64];
                for _ in 0..BYTES {
                    if conn.write_all(b"x").is_err() {
                        return;
                    }
                    match conn.read(&mut buf) {
                        Ok(0) => return,
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        _ => {}
                    }
                }
            });
        }
    });
    port
}

fn config(plain: u16, indep: u16, server: u16) -> String {
    format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 500ms\n    timeout server 10s\n\
         listen plain\n    bind 127.0.0.1:{plain}\n    server s 127.0.0.1:{server}\n\
         listen indep\n    bind 127.0.0.1:{indep}\n    option independent-streams\n    server s 127.0.0.1:{server}\n"
    )
}

/// Connects to `port`, sends nothing, reads until the end: bytes received and when the
/// connection ended.
fn silent_client(port: u16) -> (usize, Duration) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    (got.len(), started.elapsed())
}

#[test]
fn a_silent_client_times_out_while_data_flows_to_it_only_with_independent_streams() {
    let server = streaming_server();
    let (hplain, hindep, rplain, rindep) = (free_port(), free_port(), free_port(), free_port());
    let haproxy = Haproxy::start(&config(hplain, hindep, server));
    let rolelb = Rolelb::start(&config(rplain, rindep, server));
    let (plain, indep) = thread::scope(|s| {
        let runs = [hplain, rplain, hindep, rindep].map(|p| s.spawn(move || silent_client(p)));
        let [hp, rp, hi, ri] = runs.map(|r| r.join().expect("a client"));
        ((hp, rp), (hi, ri))
    });
    let report = || {
        format!(
            "plain: HAProxy {:?}, rolelb {:?}; independent-streams: HAProxy {:?}, rolelb {:?}\nrolelb:\n{}",
            plain.0,
            plain.1,
            indep.0,
            indep.1,
            rolelb.stderr_text()
        )
    };
    // Default: the whole stream arrives, long past `timeout client`.
    for (who, (bytes, took)) in [("HAProxy", plain.0), ("rolelb", plain.1)] {
        assert_eq!(bytes, BYTES, "{who}, plain\n{}", report());
        assert!(
            took >= Duration::from_millis(1300),
            "{who}, plain\n{}",
            report()
        );
    }
    // independent-streams: cut at `timeout client`, a few bytes in.
    for (who, (bytes, took)) in [("HAProxy", indep.0), ("rolelb", indep.1)] {
        assert!((2..=8).contains(&bytes), "{who}, independent\n{}", report());
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(1200),
            "{who}, independent\n{}",
            report()
        );
    }
    drop(haproxy);
}
