//! Stick tables side by side with HAProxy 2.6: the same config run by both, the same clients
//! (bound to 127.0.0.X source addresses) and runtime-socket commands in the same order, and
//! for each proxy the transcript of which server answered each client and what `show table`
//! printed (entry addresses and expiry times left out). The transcripts must be equal, and
//! each test also states the behaviour it is about.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::{Haproxy, NamedServer, Rolelb, free_port, stat_row, stats_cli, wait_until};

/// One thing done to a proxy.
enum Step<'a> {
    /// A client from 127.0.0.N connects and reads the answering server's name.
    Ask(u8),
    /// A runtime-socket command; its reply goes in the transcript.
    Cli(&'a str),
    /// Stops the named server (it refuses connections from then on) and waits until the
    /// proxy's check marks it down.
    Stop(&'a str),
    /// Starts the named server again on its address and waits until it is up.
    Restart(&'a str),
    /// Waits this long.
    Sleep(Duration),
}

/// The config both proxies run.
fn config(
    port: u16,
    sock: &Path,
    lines: &str,
    servers: &[(&str, SocketAddr)],
    opts: &str,
) -> String {
    let mut cfg = format!(
        "global\n    stats socket {} level admin\n\ndefaults\n    mode tcp\n    \
         timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\n\
         listen lb\n    bind 127.0.0.1:{port}\n    balance roundrobin\n",
        sock.display()
    );
    for line in lines.lines() {
        cfg.push_str(&format!("    {}\n", line.trim()));
    }
    for (name, addr) in servers {
        cfg.push_str(&format!("    server {name} {addr} {opts}\n"));
    }
    cfg
}

/// Connects from 127.0.0.`from` and reads the first line (the server's name), `-` when the
/// connection closes without one.
fn ask(addr: SocketAddr, from: u8) -> String {
    common::first_line_from(addr, Ipv4Addr::new(127, 0, 0, from))
        .0
        .unwrap_or_else(|| "-".to_string())
}

/// `show table` text with what differs by nature between two processes masked: the entry's
/// address and the milliseconds left before it expires.
fn masked(reply: &str) -> String {
    reply
        .lines()
        .map(|l| {
            let Some((_, rest)) = l.split_once(": key=") else {
                return l.to_string();
            };
            let words: Vec<String> = rest
                .split(' ')
                .map(|w| match w.split_once('=') {
                    Some(("exp", ms)) if ms != "0" => "exp=N".to_string(),
                    _ => w.to_string(),
                })
                .collect();
            format!("P: key={}", words.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `show stat` says server `sv` of `lb` has status `want` (`UP`, `DOWN`).
fn status_is(sock: &Path, sv: &str, want: &str) -> bool {
    stat_row(&stats_cli(sock, "show stat"), "lb", sv)
        .and_then(|r| r.get("status").cloned())
        .is_some_and(|s| s.starts_with(want))
}

/// Runs `steps` against `which` ("rolelb" or "haproxy") with servers `a` and `b`; returns
/// the transcript.
fn run(which: &str, lines: &str, opts: &str, steps: &[Step<'_>]) -> Vec<String> {
    let mut servers = [NamedServer::start("a"), NamedServer::start("b")];
    let addrs: Vec<(&str, SocketAddr)> = vec![("a", servers[0].addr()), ("b", servers[1].addr())];
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("stats.sock");
    let port = free_port();
    let cfg = config(port, &sock, lines, &addrs, opts);
    let _proxy: Box<dyn std::any::Any> = match which {
        "rolelb" => Box::new(Rolelb::start(&cfg)),
        _ => Box::new(Haproxy::start(&cfg)),
    };
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    // Ready once the runtime socket answers (no probe connection: it would be stored).
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()
            && stats_cli(&sock, "show stat").contains("lb,BACKEND")),
        "{which} did not start"
    );
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Ask(from) => out.push(format!("127.0.0.{from} -> {}", ask(lb, *from))),
            Step::Cli(cmd) => out.push(format!("{cmd}:\n{}", masked(&stats_cli(&sock, cmd)))),
            Step::Stop(name) => {
                let i = usize::from(*name == "b");
                servers[i].stop();
                assert!(
                    wait_until(Duration::from_secs(10), || status_is(&sock, name, "DOWN")),
                    "{which}: {name} not seen down"
                );
            }
            Step::Restart(name) => {
                let i = usize::from(*name == "b");
                let addr = servers[i].addr();
                servers[i] = NamedServer::start_on(name, addr);
                assert!(
                    wait_until(Duration::from_secs(10), || status_is(&sock, name, "UP")),
                    "{which}: {name} not seen up"
                );
            }
            Step::Sleep(d) => std::thread::sleep(*d),
        }
    }
    out
}

/// Runs `steps` on HAProxy and rolelb, asserts equal transcripts, returns rolelb's.
fn side_by_side(lines: &str, opts: &str, steps: &[Step<'_>]) -> Vec<String> {
    let haproxy = run("haproxy", lines, opts, steps);
    let rolelb = run("rolelb", lines, opts, steps);
    assert_eq!(
        rolelb, haproxy,
        "rolelb (left) and HAProxy 2.6 (right) differ with [{lines}]"
    );
    rolelb
}

/// The server that answered step `i` of a transcript.
fn answer(t: &[String], i: usize) -> &str {
    t[i].rsplit(" -> ").next().unwrap_or_default()
}

#[test]
fn single_writer_layout_sends_every_client_to_one_server_until_it_goes_down() {
    use Step::*;
    let t = side_by_side(
        "stick-table type ip size 1\nstick on dst",
        "",
        &[
            Ask(2),
            Ask(3),
            Ask(4),
            Ask(2),
            Cli("show table lb"),
            Cli("disable server lb/a"),
            Ask(5),
            Ask(2),
            Ask(6),
            Cli("enable server lb/a"),
            Ask(7),
            Ask(2),
            Cli("show table lb"),
            Cli("show table"),
        ],
    );
    let first = answer(&t, 0);
    assert!((0..4).all(|i| answer(&t, i) == first), "{t:#?}");
    assert_eq!(first, "a", "{t:#?}");
    // The stuck server went into maintenance: the next client goes elsewhere and sticks
    // there, also once the old one is back.
    assert!(
        [6, 7, 8, 10, 11].iter().all(|&i| answer(&t, i) == "b"),
        "{t:#?}"
    );
    assert!(
        t[12].contains("key=127.0.0.1 use=0 exp=0 server_id=2 server_key=b"),
        "{t:#?}"
    );
    assert!(
        t[13].contains("# table: lb, type: ip, size:1, used:1"),
        "{t:#?}"
    );
}

#[test]
fn a_stuck_server_found_down_by_its_check_is_left_and_not_returned_to() {
    use Step::*;
    let t = side_by_side(
        "stick-table type ip size 1\nstick on dst",
        "check inter 100ms fall 1 rise 1",
        &[
            Ask(2),
            Ask(3),
            Stop("a"),
            Ask(4),
            Ask(2),
            Restart("a"),
            Ask(5),
            Cli("show table lb"),
        ],
    );
    assert_eq!(
        (0..t.len() - 1).map(|i| answer(&t, i)).collect::<Vec<_>>(),
        ["a", "a", "b", "b", "b"],
        "{t:#?}"
    );
}

#[test]
fn stick_on_src_keeps_each_client_on_its_server() {
    use Step::*;
    let t = side_by_side(
        "stick-table type ip size 100 expire 30s\nstick on src",
        "",
        &[
            Ask(2),
            Ask(3),
            Ask(2),
            Ask(2),
            Ask(3),
            Ask(4),
            Ask(4),
            Ask(3),
            Cli("show table lb"),
        ],
    );
    for (a, b) in [(0, 2), (0, 3), (1, 4), (1, 7), (5, 6)] {
        assert_eq!(answer(&t, a), answer(&t, b), "{t:#?}");
    }
    assert_ne!(answer(&t, 0), answer(&t, 1), "{t:#?}");
    assert!(t[8].contains("used:3"), "{t:#?}");
}

#[test]
fn a_full_table_drops_its_oldest_entry_and_entries_expire() {
    use Step::*;
    // Size 2 without expire: each new client's store makes room. HAProxy drops the entry
    // that is first in its expiry queue, which a touch in a later millisecond than the
    // entry's creation may requeue, so which old entry goes depends on timing there; both
    // keep the table at its size with the newest entry in it, and rolelb drops the oldest.
    let steps = [
        Ask(2),
        Ask(3),
        Ask(4),
        Cli("show table lb"),
        Ask(5),
        Cli("show table lb"),
    ];
    let lines = "stick-table type ip size 2\nstick on src";
    for which in ["haproxy", "rolelb"] {
        let t = run(which, lines, "", &steps);
        for (i, newest) in [(3, "127.0.0.4"), (5, "127.0.0.5")] {
            assert!(t[i].contains("size:2, used:2"), "{which}: {t:#?}");
            assert_eq!(t[i].matches(" key=").count(), 2, "{which}: {t:#?}");
            assert!(t[i].contains(&format!("key={newest} ")), "{which}: {t:#?}");
        }
        if which == "rolelb" {
            assert!(t[3].contains("key=127.0.0.3 ") && t[5].contains("key=127.0.0.4 "));
        }
    }
    // With expire, an entry not used for that long is gone.
    let t = side_by_side(
        "stick-table type ip size 10 expire 1s\nstick on src",
        "",
        &[
            Ask(2),
            Cli("show table lb"),
            Sleep(Duration::from_millis(1600)),
            Cli("show table lb"),
        ],
    );
    assert!(t[1].contains("used:1") && t[2].contains("used:0"), "{t:#?}");
}

#[test]
fn store_request_records_without_steering_and_match_steers_without_recording() {
    use Step::*;
    let t = side_by_side(
        "stick-table type ip size 10\nstick store-request src",
        "",
        &[Ask(2), Ask(2), Ask(2), Cli("show table lb")],
    );
    assert_ne!(
        answer(&t, 0),
        answer(&t, 1),
        "store-request alone does not stick: {t:#?}"
    );
    assert!(t[3].contains("key=127.0.0.2"), "{t:#?}");
    let t = side_by_side(
        "stick-table type ip size 10\nstick match src",
        "",
        &[Ask(2), Ask(2), Cli("show table lb")],
    );
    assert_ne!(answer(&t, 0), answer(&t, 1), "{t:#?}");
    assert!(t[2].contains("used:0"), "{t:#?}");
    // Both together act as `stick on src` (round robin alone would alternate).
    let t = side_by_side(
        "stick-table type ip size 10\nstick match src\nstick store-request src",
        "",
        &[Ask(2), Ask(2), Ask(3), Ask(3), Cli("show table lb")],
    );
    assert_eq!(answer(&t, 0), answer(&t, 1), "{t:#?}");
    assert_eq!(answer(&t, 2), answer(&t, 3), "{t:#?}");
}

#[test]
fn every_key_type_prints_its_keys_as_haproxy_does() {
    use Step::*;
    for key in ["ipv6", "integer", "string", "string len 6"] {
        let t = side_by_side(
            &format!("stick-table type {key} size 10\nstick on src"),
            "",
            &[
                Ask(2),
                Ask(2),
                Ask(13),
                Cli("show table lb"),
                Cli("show table"),
                Cli("show table nosuch"),
            ],
        );
        assert_eq!(answer(&t, 0), answer(&t, 1), "{key}: {t:#?}");
        // Six bytes of text make 127.0.0.2 and 127.0.0.13 one key.
        let used = if key == "string len 6" { 1 } else { 2 };
        assert!(t[3].contains(&format!("used:{used}")), "{key}: {t:#?}");
        assert!(t[5].contains("No such table"), "{key}: {t:#?}");
    }
}

#[test]
fn entries_survive_a_reload() {
    let servers = [NamedServer::start("a"), NamedServer::start("b")];
    let addrs = [("a", servers[0].addr()), ("b", servers[1].addr())];
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("stats.sock");
    let port = free_port();
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = config(
        port,
        &sock,
        "stick-table type ip size 1\nstick on dst",
        &addrs,
        "",
    );
    let rolelb = Rolelb::start(&cfg);
    assert!(wait_until(Duration::from_secs(10), || sock.exists()
        && stats_cli(&sock, "show stat").contains("lb,BACKEND")));
    assert_eq!(ask(lb, 2), "a");
    stats_cli(&sock, "disable server lb/a");
    assert_eq!(ask(lb, 2), "b");
    stats_cli(&sock, "enable server lb/a");
    // A reload that changes the table's size keeps its entries.
    let mark = rolelb.log_mark();
    rolelb.rewrite_config(&cfg.replace("size 1", "size 2"));
    rolelb.reload();
    assert!(
        rolelb.wait_for_log_since(mark, "configuration reloaded", Duration::from_secs(10)),
        "{}",
        rolelb.stderr_text()
    );
    assert_eq!(ask(lb, 3), "b", "the entry outlived the reload");
    let shown = stats_cli(&sock, "show table lb");
    assert!(
        shown.contains("size:2, used:1") && shown.contains("server_key=b"),
        "{shown}"
    );
}
