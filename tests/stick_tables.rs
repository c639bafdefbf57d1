//! Stick tables and stick rules side by side with HAProxy 2.6: the same config run by both,
//! the same clients (bound to 127.0.0.X source addresses) and runtime-socket commands in the
//! same order, and for each proxy the transcript of which server answered each client and
//! what `show table` printed (entry addresses and expiry times left out). The transcripts must
//! be equal, and each test also states the behaviour it is about: tables, `if|unless`
//! conditions on rules, rules using another backend's table, `non-stick` servers.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::{Haproxy, NamedServer, Rolelb, free_port, stat_row, stats_cli, wait_until};

/// One thing done to a proxy.
enum Step<'a> {
    /// A client from 127.0.0.N connects and reads the answering server's name.
    Ask(u8),
    /// The same on the proxy's second port (`{PORT2}` in a config of [`run_with`]).
    AskAt2(u8),
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
        "{}listen lb\n    bind 127.0.0.1:{port}\n    balance roundrobin\n",
        head(sock)
    );
    for line in lines.lines() {
        cfg.push_str(&format!("    {}\n", line.trim()));
    }
    for (name, addr) in servers {
        cfg.push_str(&format!("    server {name} {addr} {opts}\n"));
    }
    cfg
}

/// The `global` (with the stats socket) and `defaults` sections of every config.
fn head(sock: &Path) -> String {
    format!(
        "global\n    stats socket {} level admin\n\ndefaults\n    mode tcp\n    \
         timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\n",
        sock.display()
    )
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
                    // Under 100 ms left is a table without `expire` read on another of
                    // HAProxy's threads, whose clock ran a little ahead (each thread keeps
                    // its own `now_ms`): it shows 0 when read on the same thread.
                    Some(("exp", ms)) if ms.parse::<u64>().is_ok_and(|v| v < 100) => {
                        "exp=0".to_string()
                    }
                    Some(("exp", _)) => "exp=N".to_string(),
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

/// Runs `steps` against `which` ("rolelb" or "haproxy") with servers `a` and `b` in
/// `listen lb`; returns the transcript.
fn run(which: &str, lines: &str, opts: &str, steps: &[Step<'_>]) -> Vec<String> {
    run_with(
        which,
        &|ports, sock, addrs| config(ports[0], sock, lines, addrs, opts),
        steps,
    )
}

/// Makes a config from the two ports the proxy listens on, its stats socket, and the
/// addresses of servers `a` and `b`; it must have a `listen lb` on the first port.
type MakeConfig<'a> = &'a dyn Fn([u16; 2], &Path, &[(&str, SocketAddr)]) -> String;

/// Runs `steps` against `which` with servers `a` and `b` and the config `make` writes;
/// returns the transcript.
fn run_with(which: &str, make: MakeConfig<'_>, steps: &[Step<'_>]) -> Vec<String> {
    let mut servers = [NamedServer::start("a"), NamedServer::start("b")];
    let addrs: Vec<(&str, SocketAddr)> = vec![("a", servers[0].addr()), ("b", servers[1].addr())];
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("stats.sock");
    let ports = [free_port(), free_port()];
    let port = ports[0];
    let cfg = make(ports, &sock, &addrs);
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
            Step::AskAt2(from) => {
                let at = SocketAddr::from(([127, 0, 0, 1], ports[1]));
                out.push(format!("127.0.0.{from} -> {}", ask(at, *from)));
            }
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

/// [`side_by_side`] with the config `make` writes.
fn side_by_side_with(make: MakeConfig<'_>, steps: &[Step<'_>]) -> Vec<String> {
    let haproxy = run_with("haproxy", make, steps);
    let rolelb = run_with("rolelb", make, steps);
    assert_eq!(
        rolelb, haproxy,
        "rolelb (left) and HAProxy 2.6 (right) differ"
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

#[test]
fn conditions_decide_which_clients_are_matched_and_stored() {
    use Step::*;
    let t = side_by_side(
        "stick-table type ip size 10\nstick on src if { src 127.0.0.2 } || { src 127.0.0.4 }",
        "",
        &[
            Ask(2),
            Ask(3),
            Ask(2),
            Ask(3),
            Ask(2),
            Ask(4),
            Ask(4),
            Cli("show table lb"),
        ],
    );
    // 127.0.0.3 is balanced every time: round robin alternates around the stuck clients.
    assert_eq!(answer(&t, 0), answer(&t, 2), "{t:#?}");
    assert_eq!(answer(&t, 0), answer(&t, 4), "{t:#?}");
    assert_eq!(answer(&t, 5), answer(&t, 6), "{t:#?}");
    assert_ne!(answer(&t, 1), answer(&t, 3), "{t:#?}");
    assert!(
        t[7].contains("used:2") && !t[7].contains("key=127.0.0.3"),
        "{t:#?}"
    );
    // `unless`, and only the first store rule of a table whose condition holds and that has a
    // key stores: 127.0.0.2 stores its own address, every other client the address it
    // connected to, and a stored destination steers nobody (the match reads `src`).
    let t = side_by_side(
        "stick-table type ip size 10\nstick match src unless { src 127.0.0.3 }\n\
         stick store-request src if { src 127.0.0.2 }\nstick store-request dst\n\
         stick store-request src",
        "",
        &[
            Ask(2),
            Ask(2),
            Ask(3),
            Cli("show table lb"),
            Ask(5),
            Ask(5),
            Cli("show table lb"),
        ],
    );
    assert_eq!(answer(&t, 0), answer(&t, 1), "{t:#?}");
    assert!(
        t[3].contains("key=127.0.0.1 ") && t[3].contains("used:2"),
        "{t:#?}"
    );
    assert_ne!(answer(&t, 4), answer(&t, 5), "{t:#?}");
}

#[test]
fn a_rule_may_use_another_backends_table_whose_entries_name_servers_by_name_then_id() {
    use Step::*;
    // `lb` stores into `shared`'s table; `other` only matches in it, and its servers have
    // other names: an entry names `a` (id 1) or `b` (id 2), which `other` finds by id (its
    // `y` is id 1 and sits where `b` is, its `x` id 2 where `a` is).
    let make = |ports: [u16; 2], sock: &Path, addrs: &[(&str, SocketAddr)]| {
        format!(
            "{}listen lb\n    bind 127.0.0.1:{}\n    balance roundrobin\n    \
             stick on src table shared\n    server a {}\n    server b {}\n\
             backend shared\n    stick-table type ip size 10\n\
             listen other\n    bind 127.0.0.1:{}\n    balance roundrobin\n    \
             stick match src table shared\n    server y {} id 1\n    server x {} id 2\n",
            head(sock),
            ports[0],
            addrs[0].1,
            addrs[1].1,
            ports[1],
            addrs[1].1,
            addrs[0].1,
        )
    };
    let t = side_by_side_with(
        &make,
        &[
            Ask(2),
            Ask(3),
            Ask(2),
            Cli("show table shared"),
            Cli("show table"),
            Cli("show table lb"),
            AskAt2(2),
            AskAt2(2),
            AskAt2(3),
            AskAt2(3),
            AskAt2(6),
            AskAt2(6),
        ],
    );
    assert_eq!(answer(&t, 0), "a", "{t:#?}");
    assert_eq!(answer(&t, 1), "b", "{t:#?}");
    assert_eq!(answer(&t, 2), "a", "{t:#?}");
    assert!(
        t[3].contains("key=127.0.0.2 use=0 exp=0 server_id=1 server_key=a"),
        "{t:#?}"
    );
    assert!(
        t[5].contains("No such table"),
        "lb has no table of its own: {t:#?}"
    );
    // In `other`, a's entry finds id 1 (`y`, at b's address) and b's id 2 (`x`, at a's).
    assert_eq!(
        (6..10).map(|i| answer(&t, i)).collect::<Vec<_>>(),
        ["b", "b", "a", "a"],
        "{t:#?}"
    );
    // A client without an entry is balanced, and `stick match` stores nothing.
    assert_ne!(answer(&t, 10), answer(&t, 11), "{t:#?}");
}

#[test]
fn a_non_stick_server_is_never_stored() {
    use Step::*;
    let make = |ports: [u16; 2], sock: &Path, addrs: &[(&str, SocketAddr)]| {
        format!(
            "{}listen lb\n    bind 127.0.0.1:{}\n    balance roundrobin\n    \
             stick-table type ip size 10\n    stick on src\n    \
             server a {} non-stick\n    server b {}\n",
            head(sock),
            ports[0],
            addrs[0].1,
            addrs[1].1,
        )
    };
    let t = side_by_side_with(
        &make,
        &[
            Ask(2),
            Cli("show table lb"),
            Ask(2),
            Ask(2),
            Ask(3),
            Ask(3),
            Cli("show table lb"),
        ],
    );
    // a takes the first connection but is not stored; b takes the next and is.
    assert_eq!(
        (0..1)
            .chain(2..6)
            .map(|i| answer(&t, i))
            .collect::<Vec<_>>(),
        ["a", "b", "b", "a", "b"],
        "{t:#?}"
    );
    assert!(t[1].contains("used:0"), "{t:#?}");
    assert!(
        t[6].contains("used:2") && !t[6].contains("server_key=a"),
        "{t:#?}"
    );
}
