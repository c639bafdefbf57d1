//! `nbthread 2`: two data threads, each with its own event loop, both accepting on every
//! listening socket (an address another program holds is refused), each session served to its end by the thread with fewer sessions when it
//! was accepted. Shown here from outside: both data threads carry sessions, evenly when
//! sessions open one after another, global and frontend `maxconn` hold
//! exactly however the threads race for clients (and a freed place is not lost when the
//! listener it wakes cannot use it), reloads under load refuse nothing, and a soft stop closes
//! the listeners of both threads while their sessions run to their end.

mod common;
mod lbcfg;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::{
    NamedServer, Rolelb, Session, free_port, open_named, read_session, stats_cli, wait_until,
    who_answers,
};
use lbcfg::local;
use nix::sys::signal::Signal;

/// A config with `nbthread 2`, `global_extra` in `global`, and one `listen` section per
/// `(name, port, extra lines)`, each sending to `server`.
fn cfg(global_extra: &str, sections: &[(&str, u16, &str)], server: &NamedServer) -> String {
    let mut c = format!(
        "global\n    nbthread 2\n{global_extra}\ndefaults\n    mode tcp\n    timeout connect 2s\n    \
         timeout client 60s\n    timeout server 60s\n"
    );
    for (name, port, extra) in sections {
        c.push_str(&format!(
            "\nlisten {name}\n    bind 127.0.0.1:{port}\n{extra}\n    server s1 {}\n",
            server.addr()
        ));
    }
    c
}

/// CPU time (user + system, clock ticks) of each of `pid`'s threads called `rolelb-data-*`.
fn data_thread_cpu(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("reading /proc/PID/task");
    for task in tasks {
        let dir = task.expect("a task entry").path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let comm = comm.trim().to_string();
        if !comm.starts_with("rolelb-data-") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).expect("reading a task's stat");
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').expect("stat has (comm)") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields[i - 3].parse::<u64>().expect("a tick count");
        out.push((comm, ticks(14) + ticks(15)));
    }
    out.sort();
    out
}

fn echo_ok(conn: &mut TcpStream, msg: &[u8]) -> bool {
    let mut back = vec![0u8; msg.len()];
    conn.set_read_timeout(Some(Duration::from_secs(5))).is_ok()
        && conn.write_all(msg).is_ok()
        && conn.read_exact(&mut back).is_ok()
        && back == msg
}

#[test]
fn both_data_threads_serve_sessions() {
    let s1 = NamedServer::start("s1");
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("stats.sock");
    let global = format!("    stats socket {} level admin", sock.display());
    let lb = Rolelb::start(&cfg(&global, &[("lb", port, "")], &s1));
    assert!(
        stats_cli(&sock, "show info").contains("Nbthread: 2\n"),
        "show info reports the two data threads"
    );
    let before = data_thread_cpu(lb.pid());
    assert_eq!(
        before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["rolelb-data-0", "rolelb-data-1"],
        "nbthread 2 runs two data threads"
    );
    let used = echo_cpu_by_thread(&lb, port, 16);
    let total: u64 = used.iter().sum();
    for (i, u) in used.iter().enumerate() {
        assert!(
            u * 10 >= total,
            "data thread {i} served a tenth of the traffic or more: {used:?} ticks"
        );
    }
}

/// Opens `n` sessions through `port` one after another, then sends the same echo traffic on
/// each at once: the CPU ticks each data thread spent on it, in thread order.
fn echo_cpu_by_thread(lb: &Rolelb, port: u16, n: usize) -> Vec<u64> {
    // Sessions opened first, then only traffic on them: what each thread does from here is
    // serving the sessions it was given.
    let conns: Vec<TcpStream> = (0..n)
        .map(|i| {
            open_named(local(port))
                .unwrap_or_else(|e| panic!("session {i}: {e}"))
                .1
        })
        .collect();
    let before = data_thread_cpu(lb.pid());
    let workers: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            thread::spawn(move || {
                let msg = [7u8; 64];
                (0..4000).all(|_| echo_ok(&mut conn, &msg))
            })
        })
        .collect();
    for w in workers {
        assert!(w.join().expect("echo worker"), "every message came back");
    }
    let after = data_thread_cpu(lb.pid());
    let used: Vec<u64> = after
        .iter()
        .zip(&before)
        .map(|((_, a), (_, b))| a - b)
        .collect();
    let total: u64 = used.iter().sum();
    assert!(total >= 10, "the echo traffic took CPU: {used:?} ticks");
    used
}

/// As HAProxy's accept queues, the thread that accepts hands a connection to the thread with
/// fewer sessions: four sessions opened one after another (a client's four bulk streams,
/// a pool's first connections) run two on each thread, whichever thread woke to accept them.
#[test]
fn sessions_opened_one_after_another_are_spread_over_the_threads() {
    let s1 = NamedServer::start("s1");
    let port = free_port();
    let lb = Rolelb::start(&cfg("", &[("lb", port, "")], &s1));
    for round in 0..3 {
        let used = echo_cpu_by_thread(&lb, port, 4);
        let total: u64 = used.iter().sum();
        for (i, u) in used.iter().enumerate() {
            assert!(
                u * 100 >= total * 30,
                "round {round}: data thread {i} carried two of the four sessions' traffic \
                 (30% of the CPU or more): {used:?} ticks"
            );
        }
    }
}

/// Connects `n` clients to `port` at once; those served (the server's name arrived) and those
/// left waiting (open and silent).
fn flood(port: u16, n: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let clients: Vec<_> = (0..n)
        .map(|_| {
            thread::spawn(move || {
                let mut conn = TcpStream::connect(local(port)).expect("connect (backlog)");
                let (state, got) = read_session(&mut conn, Duration::from_millis(1500));
                (state, got, conn)
            })
        })
        .collect();
    let (mut served, mut waiting) = (Vec::new(), Vec::new());
    for c in clients {
        match c.join().expect("client") {
            (Session::Open, got, conn) if got == b"s1\n" => served.push(conn),
            (Session::Open, got, conn) if got.is_empty() => waiting.push(conn),
            (state, got, _) => {
                panic!("a client was neither served nor left waiting: {state:?} {got:?}")
            }
        }
    }
    (served, waiting)
}

#[test]
fn global_and_frontend_maxconn_hold_exactly_across_threads() {
    let s1 = NamedServer::start("s1");
    let (a_port, b_port) = (free_port(), free_port());
    // A backlog for all 40 clients: by default, as in HAProxy, it would be each frontend's
    // maxconn, and the kernel would drop the SYNs of clients beyond it (they would connect
    // seconds later, after the counts below).
    let _lb = Rolelb::start(&cfg(
        "    maxconn 10",
        &[
            ("a", a_port, "    maxconn 6\n    backlog 64"),
            ("b", b_port, "    backlog 64"),
        ],
        &s1,
    ));
    // Frontend a first: 20 clients at once, from as many threads, so both data threads race
    // for them; exactly a's maxconn are served.
    let (mut served_a, mut waiting) = flood(a_port, 20);
    assert_eq!(served_a.len(), 6, "frontend a serves exactly its maxconn 6");
    // Then b: exactly what global maxconn 10 leaves.
    let (mut served_b, waiting_b) = flood(b_port, 20);
    assert_eq!(
        served_b.len(),
        4,
        "b gets exactly the rest of global maxconn 10"
    );
    waiting.extend(waiting_b);
    assert_eq!(s1.open(), 10, "the server sees exactly 10 sessions");
    // Places freed on b wake a listener that can use them (a's are still full), and each
    // admits exactly one waiting client.
    drop(served_b.drain(..3));
    assert!(
        wait_until(Duration::from_secs(3), || s1.open() == 10),
        "three waiting clients of b are served once three of b's sessions end (open {})",
        s1.open()
    );
    thread::sleep(Duration::from_millis(300));
    assert_eq!(s1.open(), 10, "and no more than three");
    // A place freed on a goes to a waiting client of a.
    drop(served_a.pop());
    assert!(
        wait_until(Duration::from_secs(3), || s1.open() == 10),
        "a waiting client of a is served once one of a's sessions ends (open {})",
        s1.open()
    );
    thread::sleep(Duration::from_millis(300));
    assert_eq!(s1.open(), 10, "still exactly global maxconn");
    let mut served_now = 0;
    for conn in &mut waiting {
        conn.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 3];
        if conn.read(&mut b).is_ok_and(|n| n > 0) {
            served_now += 1;
        }
    }
    assert_eq!(served_now, 4, "four of the waiting clients were served");
}

#[test]
fn reloads_under_load_refuse_nothing_and_removed_listeners_close() {
    let s1 = NamedServer::start("s1");
    let (port, extra) = (free_port(), free_port());
    let lb = Rolelb::start(&cfg("", &[("main", port, "")], &s1));
    let mut held: Vec<TcpStream> = (0..20)
        .map(|i| {
            open_named(local(port))
                .unwrap_or_else(|e| panic!("held session {i}: {e}"))
                .1
        })
        .collect();
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
    for i in 0..10 {
        let text = if i % 2 == 0 {
            cfg("", &[("main", port, ""), ("extra", extra, "")], &s1)
        } else {
            cfg("", &[("main", port, "")], &s1)
        };
        lb.rewrite_config(&text);
        lb.reload();
        assert!(
            wait_until(Duration::from_secs(5), || {
                lb.stderr_text().matches("configuration reloaded").count() == i + 1
            }),
            "reload {i} did not complete: {}",
            lb.stderr_text()
        );
        if i % 2 == 0 {
            // Several clients, so both threads' loops on the new socket take some.
            for _ in 0..8 {
                assert_eq!(
                    who_answers(local(extra)).expect("new listener serves"),
                    "s1"
                );
            }
        } else {
            assert!(
                TcpStream::connect(local(extra)).is_err(),
                "removed listener is closed (on both threads)"
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    for t in churn {
        t.join().expect("churn thread");
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "connections refused during reloads"
    );
    assert!(ok.load(Ordering::SeqCst) > 50, "the churn made connections");
    for conn in &mut held {
        assert!(echo_ok(conn, b"ping"), "held session broken by a reload");
    }
}

#[test]
fn a_soft_stop_closes_both_threads_listeners_and_lets_sessions_finish() {
    let s1 = NamedServer::start("s1");
    let port = free_port();
    let mut lb = Rolelb::start(&cfg("", &[("lb", port, "")], &s1));
    let mut held: Vec<TcpStream> = (0..12)
        .map(|i| {
            open_named(local(port))
                .unwrap_or_else(|e| panic!("session {i}: {e}"))
                .1
        })
        .collect();
    lb.signal(Signal::SIGUSR1);
    assert!(
        wait_until(Duration::from_secs(3), || TcpStream::connect(local(port))
            .is_err()),
        "the listening socket closes on a soft stop"
    );
    for conn in &mut held {
        assert!(
            echo_ok(conn, b"still"),
            "a session goes on during the soft stop"
        );
    }
    assert!(lb.exited().is_none(), "rolelb waits for its sessions");
    held.clear();
    assert!(
        wait_until(Duration::from_secs(5), || lb.exited().is_some()),
        "rolelb exits once the last session ended"
    );
    assert!(lb.exited().is_some_and(|s| s.success()), "and exits 0");
}

/// Listening sockets on 127.0.0.1:`port` (`/proc/net/tcp`, state LISTEN).
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("reading /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
        })
        .count()
}

#[test]
fn the_threads_share_one_socket_and_a_taken_address_is_refused() {
    let s1 = NamedServer::start("s1");
    let port = free_port();
    // An HAProxy not yet stopped holds the port, with SO_REUSEPORT (its default): rolelb must
    // not join it and take half its clients.
    let haproxy_cfg = format!(
        "global\n    nbthread 2\ndefaults\n    mode tcp\n    timeout connect 2s\n    \
         timeout client 60s\n    timeout server 60s\nlisten old\n    bind 127.0.0.1:{port}\n    \
         server s1 {}\n",
        s1.addr()
    );
    let haproxy = common::Haproxy::start(&haproxy_cfg);
    let lb_cfg = cfg("", &[("lb", port, "")], &s1);
    let (ok, err) = Rolelb::start_refused(&lb_cfg);
    assert!(
        !ok && err.contains("cannot bind") && err.contains(&port.to_string()),
        "rolelb must refuse an address HAProxy listens on: {err}"
    );
    drop(haproxy);
    assert!(
        wait_until(Duration::from_secs(5), || listening_sockets(port) == 0),
        "HAProxy's socket closes"
    );
    let lb = Rolelb::start(&lb_cfg);
    assert_eq!(
        listening_sockets(port),
        1,
        "one listening socket for both data threads"
    );
    // A second rolelb on the same config is refused too, and takes nothing from the first.
    let (ok, err) = Rolelb::start_refused(&lb_cfg);
    assert!(
        !ok && err.contains("cannot bind"),
        "a second rolelb must refuse the address: {err}"
    );
    assert_eq!(listening_sockets(port), 1);
    // Every client is served, whichever thread accepts it.
    for i in 0..40 {
        let (name, _conn) = open_named(local(port)).unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(name, "s1", "client {i}");
    }
    drop(lb);
}
