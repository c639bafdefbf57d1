//! `SIGHUP` reloads under load: sessions to servers that stay survive, new connections keep
//! being accepted, listeners come and go, and a broken config changes nothing. Also the soft
//! stop (`SIGTERM`/`SIGUSR1`) and `hard-stop-after`.

mod common;
mod lbcfg;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{NamedServer, Rolelb, free_port, open_named, wait_closed, wait_until, who_answers};
use lbcfg::local;
use nix::sys::signal::Signal;

fn cfg(
    main_port: u16,
    servers: &[&NamedServer],
    extra_port: Option<u16>,
    stop_after: &str,
) -> String {
    let mut c = format!(
        "global\n    maxconn 4096\n{stop_after}\ndefaults\n    mode tcp\n    timeout connect 2s\n    \
         timeout client 60s\n    timeout server 60s\n\nlisten main\n    bind 127.0.0.1:{main_port}\n    \
         balance roundrobin\n"
    );
    for s in servers {
        c.push_str(&format!("    server {} {}\n", s.name(), s.addr()));
    }
    if let Some(p) = extra_port {
        c.push_str(&format!(
            "\nlisten extra\n    bind 127.0.0.1:{p}\n    server s1 {}\n",
            servers[0].addr()
        ));
    }
    c
}

fn echo_ok(conn: &mut TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(3))).is_ok()
        && conn.write_all(b"ping").is_ok()
        && {
            let mut b = [0u8; 4];
            conn.read_exact(&mut b).is_ok() && &b == b"ping"
        }
}

fn reloads_done(lb: &Rolelb) -> usize {
    lb.stderr_text().matches("configuration reloaded").count()
}

#[test]
fn twenty_reloads_under_load_break_no_session_and_refuse_no_connection() {
    let s1 = NamedServer::start("s1");
    let s2 = NamedServer::start("s2");
    let s3 = NamedServer::start("s3");
    let (port, extra) = (free_port(), free_port());
    let lb = Rolelb::start(&cfg(port, &[&s1, &s2], None, ""));

    let mut held: Vec<(String, TcpStream)> = (0..200)
        .map(|i| open_named(local(port)).unwrap_or_else(|e| panic!("held connection {i}: {e}")))
        .collect();
    for (name, conn) in held.iter_mut() {
        assert!(
            echo_ok(conn),
            "held connection to {name} echoes before the reloads"
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let churn: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match who_answers(local(port)) {
                        Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();

    for i in 0..20 {
        // Odd reloads add s3 and the extra listener; even ones remove them again.
        let text = if i % 2 == 0 {
            cfg(port, &[&s1, &s2, &s3], Some(extra), "")
        } else {
            cfg(port, &[&s1, &s2], None, "")
        };
        lb.rewrite_config(&text);
        lb.reload();
        assert!(
            wait_until(Duration::from_secs(5), || reloads_done(&lb) == i + 1),
            "reload {i} did not complete: {}",
            lb.stderr_text()
        );
        if i % 2 == 0 {
            assert_eq!(
                who_answers(local(extra)).expect("new listener serves"),
                "s1"
            );
        } else {
            assert!(
                TcpStream::connect(local(extra)).is_err(),
                "removed listener is closed"
            );
        }
        // Pacing: the churn threads get connections in between reloads.
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    for t in churn {
        t.join().expect("churn thread");
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "new connections refused during reloads"
    );
    assert!(
        ok.load(Ordering::SeqCst) > 100,
        "churn made {} connections",
        ok.load(Ordering::SeqCst)
    );
    for (name, conn) in held.iter_mut() {
        assert!(
            echo_ok(conn),
            "held connection to {name} broken by a reload"
        );
    }
    assert_eq!(
        s1.open() + s2.open(),
        200,
        "all 200 held sessions still open on the servers"
    );
}

#[test]
fn a_broken_config_on_reload_changes_nothing_and_logs_every_error() {
    let s1 = NamedServer::start("s1");
    let port = free_port();
    let lb = Rolelb::start(&cfg(port, &[&s1], None, ""));
    let (_, mut held) = open_named(local(port)).expect("open");
    lb.rewrite_config(&format!(
        "{}    bogus-keyword 1\n    server s2 127.0.0.1:notaport\n",
        cfg(port, &[&s1], None, "")
    ));
    lb.reload();
    assert!(
        lb.wait_for_log("proxy.cfg:15", Duration::from_secs(5)),
        "{}",
        lb.stderr_text()
    );
    let log = lb.stderr_text();
    assert!(
        log.contains("proxy.cfg:14: unknown keyword 'bogus-keyword'"),
        "first error names FILE:LINE: {log}"
    );
    assert!(
        log.contains("proxy.cfg:15: server port"),
        "second error names FILE:LINE: {log}"
    );
    assert!(echo_ok(&mut held), "existing session untouched");
    assert_eq!(who_answers(local(port)).expect("still serving"), "s1");
}

#[test]
fn sigterm_stops_accepting_and_waits_for_sessions_to_end() {
    let s1 = NamedServer::start("s1");
    let port = free_port();
    let mut lb = Rolelb::start(&cfg(port, &[&s1], None, ""));
    let (_, mut held) = open_named(local(port)).expect("open");
    lb.signal(Signal::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(3), || TcpStream::connect(local(port))
            .is_err()),
        "listener closed on SIGTERM"
    );
    assert!(
        echo_ok(&mut held),
        "existing session keeps working during the soft stop"
    );
    assert!(lb.exited().is_none(), "rolelb waits for the open session");
    drop(held);
    assert!(
        wait_until(Duration::from_secs(5), || lb.exited().is_some()),
        "exits once sessions end"
    );
}

#[test]
fn hard_stop_after_closes_sessions_that_outlive_it() {
    let s1 = NamedServer::start("s1");
    let port = free_port();
    let mut lb = Rolelb::start(
        &cfg(port, &[&s1], None, "    hard-stop-after 1s\n").replace(
            "    balance roundrobin\n",
            "    balance roundrobin\n    option tcplog\n",
        ),
    );
    let (_, mut held) = open_named(local(port)).expect("open");
    let started = Instant::now();
    lb.signal(Signal::SIGUSR1);
    let closed = wait_closed(&mut held, Duration::from_secs(5));
    let took = started.elapsed();
    assert!(
        closed.is_some(),
        "session still open {took:?} after SIGUSR1"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "session closed {took:?} after SIGUSR1 (hard-stop-after 1s)"
    );
    assert!(
        wait_until(Duration::from_secs(5), || lb.exited().is_some()),
        "exits by hard-stop-after"
    );
    // The process exiting would close the socket anyway: the session's tcplog line, written by
    // rolelb before it exited, shows that rolelb itself killed it (`KD`).
    let log = lb.stderr_text();
    assert!(
        log.lines()
            .any(|l| l.contains(" main main/s1 ") && l.contains(" KD ")),
        "no tcplog line with KD (killed by rolelb) for the held session: {log}"
    );
}
