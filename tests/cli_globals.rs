//! The `global` keywords that shape the stats socket and what it reports, side by side with
//! HAProxy 2.6 on the same config: `node` and `description` in `show info`, `stats timeout`
//! (an idle session is closed) and `stats maxconn` (sessions beyond it wait in the backlog
//! until one ends), and the values both refuse.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Haproxy, NamedServer, Rolelb, free_port, stats_cli};

/// A proxy running `global_lines` with a stats socket, in a directory of its own.
struct Running {
    _proxy: Box<dyn std::any::Any>,
    _dir: tempfile::TempDir,
    sock: PathBuf,
}

fn start(proxy: &str, global_lines: &str, server: &NamedServer) -> Running {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sock = dir.path().join("stats.sock");
    let cfg = format!(
        "global\n    stats socket {} level admin\n{global_lines}\ndefaults\n    mode tcp\n    \
         timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n\nlisten l\n    \
         bind 127.0.0.1:{}\n    server s {}\n",
        sock.display(),
        free_port(),
        server.addr()
    );
    let proxy: Box<dyn std::any::Any> = match proxy {
        "haproxy" => Box::new(Haproxy::start(&cfg)),
        _ => Box::new(Rolelb::start(&cfg)),
    };
    Running {
        _proxy: proxy,
        _dir: dir,
        sock,
    }
}

/// The `node` and `description` lines of `show info` (`-` when absent).
fn node_lines(sock: &Path) -> (String, String) {
    let info = stats_cli(sock, "show info");
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or("-")
            .to_owned()
    };
    (field("node"), field("description"))
}

#[test]
fn node_and_description_show_in_show_info_as_in_haproxy() {
    let server = NamedServer::start("s");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the host name")
        .trim()
        .to_owned();
    for (global, want) in [
        ("", (host.as_str(), "-")),
        (
            "    node db-lb_1.east\n    description writes for   the  pg cluster\n",
            ("db-lb_1.east", "writes for the pg cluster"),
        ),
    ] {
        let theirs = node_lines(&start("haproxy", global, &server).sock);
        let ours = node_lines(&start("rolelb", global, &server).sock);
        assert_eq!(ours, theirs, "{global:?}: rolelb vs HAProxy");
        assert_eq!(ours, (want.0.to_owned(), want.1.to_owned()), "{global:?}");
    }
}

/// Opens an interactive session (`prompt`) and reads its first prompt.
fn interactive(sock: &Path) -> UnixStream {
    let mut conn = UnixStream::connect(sock).expect("connect to the stats socket");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    conn.write_all(b"prompt\n").expect("prompt");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"> ") {
        let n = conn.read(&mut byte).expect("the first prompt");
        assert_eq!(n, 1, "closed before the prompt: {got:?}");
        got.push(byte[0]);
    }
    conn
}

/// How long a session stays open (up to `limit`) when it sends nothing (`interactive`:
/// after `prompt`, else from the start).
fn idle_lifetime(sock: &Path, limit: Duration, interactive_mode: bool) -> Duration {
    let mut conn = if interactive_mode {
        interactive(sock)
    } else {
        UnixStream::connect(sock).expect("connect to the stats socket")
    };
    conn.set_read_timeout(Some(limit)).expect("read timeout");
    let started = Instant::now();
    let _ = conn.read(&mut [0u8; 16]);
    started.elapsed()
}

/// A session that sends nothing is closed after `stats timeout` by both. An interactive
/// session (`prompt`) left idle is closed by rolelb too; HAProxy 2.6.12 is not consistent
/// there (in a run of eight, three were closed after 400 ms and five still open after 6 s),
/// so that case is not compared.
#[test]
fn stats_timeout_closes_an_idle_session_as_in_haproxy() {
    let server = NamedServer::start("s");
    for proxy in ["haproxy", "rolelb"] {
        let quick = start(proxy, "    stats timeout 400ms\n", &server);
        let lived = idle_lifetime(&quick.sock, Duration::from_secs(5), false);
        assert!(
            (Duration::from_millis(300)..Duration::from_millis(1500)).contains(&lived),
            "{proxy}: stats timeout 400ms closed an idle session after {lived:?}"
        );
        if proxy == "rolelb" {
            let lived = idle_lifetime(&quick.sock, Duration::from_secs(5), true);
            assert!(
                (Duration::from_millis(300)..Duration::from_millis(1500)).contains(&lived),
                "rolelb: stats timeout 400ms closed an idle interactive session after {lived:?}"
            );
        }
        let default = start(proxy, "", &server);
        let lived = idle_lifetime(&default.sock, Duration::from_secs(2), false);
        assert!(
            lived >= Duration::from_millis(1900),
            "{proxy}: the default (10 s) closed an idle session after {lived:?}"
        );
    }
}

#[test]
fn stats_maxconn_queues_sessions_beyond_it_as_in_haproxy() {
    let server = NamedServer::start("s");
    for proxy in ["haproxy", "rolelb"] {
        let running = start(proxy, "    stats maxconn 2\n", &server);
        let first = interactive(&running.sock);
        let _second = interactive(&running.sock);
        // A third is connected (the backlog) but not served while two sessions run.
        let mut third = UnixStream::connect(&running.sock).expect("connect a third");
        third
            .set_read_timeout(Some(Duration::from_millis(700)))
            .expect("read timeout");
        third.write_all(b"show info\n").expect("ask");
        let mut buf = [0u8; 64];
        let early = third.read(&mut buf);
        assert!(
            early.is_err(),
            "{proxy}: a third session was served beyond stats maxconn 2: {early:?}"
        );
        // Once one ends, it is.
        drop(first);
        third
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut answer = String::new();
        third.read_to_string(&mut answer).expect("the answer");
        assert!(answer.starts_with("Name: "), "{proxy}: {answer:?}");
    }
}

#[test]
fn stats_maxconn_is_shared_by_every_stats_socket_without_starving_one() {
    let server = NamedServer::start("s");
    for proxy in ["haproxy", "rolelb"] {
        // Two sockets, each idle until asked: a session limit they share must not keep one
        // waiting for a client of the other.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (one, two) = (dir.path().join("one.sock"), dir.path().join("two.sock"));
        let cfg = format!(
            "global\n    stats socket {} level admin\n    stats socket {} level admin\n    \
             stats maxconn 1\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    \
             timeout client 10s\n    timeout server 10s\n\nlisten l\n    bind 127.0.0.1:{}\n    \
             server s {}\n",
            one.display(),
            two.display(),
            free_port(),
            server.addr()
        );
        let _proxy: Box<dyn std::any::Any> = match proxy {
            "haproxy" => Box::new(Haproxy::start(&cfg)),
            _ => Box::new(Rolelb::start(&cfg)),
        };
        for round in 0..3 {
            for sock in [&one, &two] {
                let started = Instant::now();
                let info = stats_cli(sock, "show info");
                assert!(
                    info.starts_with("Name: ") && started.elapsed() < Duration::from_secs(2),
                    "{proxy}, round {round}, {}: {info:?} after {:?}",
                    sock.display(),
                    started.elapsed()
                );
            }
        }
    }
}

#[test]
fn bad_values_are_refused_by_both() {
    for line in [
        "node bad!name",
        "node",
        "description",
        "stats timeout 0",
        "stats timeout 5x",
        "stats maxconn 0",
        "stats maxconn -3",
    ] {
        let cfg = format!(
            "global\n    {line}\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    \
             timeout client 1s\n    timeout server 1s\n\nlisten l\n    bind 127.0.0.1:1\n    \
             server s 127.0.0.1:2\n"
        );
        let (h_ok, h_out) = Haproxy::check(&cfg);
        let (r_ok, r_out) = Rolelb::check(&cfg);
        assert!(!h_ok, "HAProxy accepts {line:?}:\n{h_out}");
        assert!(!r_ok, "rolelb accepts {line:?}:\n{r_out}");
        assert!(
            r_out.lines().any(|l| l.contains(":2:")),
            "rolelb names the line of {line:?}:\n{r_out}"
        );
    }
}
