//! Server `maxconn` with the backend queue and `timeout queue`, and connect retries with
//! `option redispatch`, through rolelb against real TCP backends (HAProxy alongside where the
//! outcome is observable the same way).

mod common;
mod lbcfg;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Haproxy, NamedServer, Rolelb, free_port, open_named, refusal_time, who_answers};
use lbcfg::{Srv, listen, local};

/// Connects, reads the server's name, holds the session for `hold`, then closes.
fn client_holding(addr: SocketAddr, hold: Duration) -> Result<String, String> {
    let (name, mut conn) = open_named(addr).map_err(|e| e.to_string())?;
    conn.write_all(b"ping").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).map_err(|e| e.to_string())?;
    // The session's length is the scenario (it keeps the server's only slots busy).
    thread::sleep(hold);
    Ok(name)
}

#[test]
fn server_maxconn_queues_excess_clients_and_serves_them_all() {
    let backend = NamedServer::start("only");
    let port = free_port();
    let lb = Rolelb::start(&listen(
        port,
        "balance roundrobin",
        &[Srv {
            name: "only",
            addr: backend.addr(),
            opts: "maxconn 2",
        }],
    ));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        let backend_open = move || backend.open();
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(backend_open(), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(2));
            }
            backend_open
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..10)
        .map(|_| thread::spawn(move || client_holding(local(port), Duration::from_millis(300))))
        .collect();
    let results: Vec<Result<String, String>> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    done.store(true, Ordering::SeqCst);
    let _backend = sampler.join().expect("sampler");
    for r in &results {
        assert_eq!(
            r.as_deref(),
            Ok("only"),
            "every queued client is served: {results:?}"
        );
    }
    assert!(
        peak.load(Ordering::SeqCst) <= 2,
        "server saw {} at once",
        peak.load(Ordering::SeqCst)
    );
    // Ten 300 ms sessions two at a time take at least five rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "took {:?}",
        started.elapsed()
    );
    drop(lb);
}

#[test]
fn queued_clients_are_refused_after_timeout_queue() {
    let backend = NamedServer::start("only");
    let port = free_port();
    let cfg = listen(
        port,
        "balance roundrobin\ntimeout queue 500ms",
        &[Srv {
            name: "only",
            addr: backend.addr(),
            opts: "maxconn 1",
        }],
    );
    let hp = free_port();
    let lb = Rolelb::start(&cfg);
    let ha = Haproxy::start(&cfg.replace(&format!(":{port}"), &format!(":{hp}")));
    for addr in [local(port), local(hp)] {
        let (_name, _held) = open_named(addr).expect("first client holds the only slot");
        // Closed without a word, after about `timeout queue` (500 ms): not at once, and well
        // before the 5 s after which refusal_time reports the session as still open.
        let waited = refusal_time(addr)
            .unwrap_or_else(|e| panic!("{addr}: the queued client must be closed: {e}"));
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
            "{addr}: closed after {waited:?}, expected about timeout queue (500ms)"
        );
    }
    drop((lb, ha));
}

/// A port where nothing listens (bound then closed).
fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

#[test]
fn connect_failures_are_retried_and_redispatched() {
    let alive = NamedServer::start("alive");
    let dead = dead_addr();
    // `first` always picks `dead` first, so only a redispatch can reach `alive`.
    let servers = [
        Srv {
            name: "dead",
            addr: dead,
            opts: "",
        },
        Srv::of(&alive, ""),
    ];
    let (rp, hp) = (free_port(), free_port());
    let with = "balance first\nretries 2\noption redispatch\ntimeout connect 2s";
    let lb = Rolelb::start(&listen(rp, with, &servers));
    let ha = Haproxy::start(&listen(hp, with, &servers));
    for (who, addr) in [("rolelb", local(rp)), ("haproxy", local(hp))] {
        let started = Instant::now();
        assert_eq!(who_answers(addr).expect("redispatched"), "alive", "{who}");
        // With two servers up and a non-hash balance, both move on the first retry, without
        // the 1 s turn-around (tests/retries.rs covers the other cases).
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "{who}: {:?}",
            started.elapsed()
        );
    }
    let log = lb.stderr_text();
    assert_eq!(
        log.matches("connect failed").count(),
        1,
        "one try on dead, then the redispatch: {log}"
    );
    drop((lb, ha));

    // Without redispatch every retry stays on the dead server and the client is closed.
    let port = free_port();
    let lb = Rolelb::start(&listen(
        port,
        "balance first\nretries 2\ntimeout connect 200ms",
        &servers,
    ));
    if let Err(e) = refusal_time(local(port)) {
        panic!("no server reachable: the client must be closed: {e}");
    }
    assert!(lb.wait_for_log("connect failed", Duration::from_secs(2)));
    assert_eq!(lb.stderr_text().matches("connect failed").count(), 3);
}
