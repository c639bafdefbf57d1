//! `tune.*`, `uid`/`gid`, `unix-bind` and the old habits (`listen NAME ADDR`, bare `redispatch`) side by
//! side with HAProxy 2.6's `-c`: the same verdict, or a refusal from rolelb that says why where
//! HAProxy silently misreads the value; every rolelb error names FILE:LINE, and the old forms
//! get the modern one in their message. A small `tune.bufsize` carries a large transfer intact
//! in both.

mod common;

use std::path::Path;

use std::io::{Read, Write};
use std::net::SocketAddr;

use common::{
    HAPROXY_BIN, Haproxy, NamedServer, Rolelb, free_port, open_named, require_bin, rolelb_bin,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Both accept; rolelb's output contains this text (a warning), when not empty.
    Valid(&'static str),
    /// Both refuse; rolelb's error contains this text.
    Invalid(&'static str),
    /// HAProxy accepts a value it misreads (or ignores); rolelb refuses with this text.
    RolelbRefuses(&'static str),
}

const PROXY: &str = "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    \
                     timeout server 5s\nlisten l\n    bind 127.0.0.1:15911\n    \
                     server s 127.0.0.1:6432\n";

/// (a line of `global`, verdict).
const GLOBAL_CASES: &[(&str, Verdict)] = &[
    ("tune.bufsize 16384", Verdict::Valid("")),
    ("tune.bufsize 1000", Verdict::Valid("")),
    ("tune.bufsize 352", Verdict::Valid("")),
    ("tune.bufsize 336", Verdict::Invalid("too small")),
    ("tune.bufsize 0", Verdict::Invalid("positive integer")),
    ("tune.bufsize -16", Verdict::Invalid("positive integer")),
    (
        "tune.bufsize 2147483647",
        Verdict::Invalid("positive integer"),
    ),
    // HAProxy reads 16 bytes here (and crashes on it).
    ("tune.bufsize 16k", Verdict::Invalid("plain integer")),
    ("tune.maxaccept 64", Verdict::Valid("")),
    ("tune.maxaccept 0", Verdict::Valid("")),
    ("tune.maxaccept -1", Verdict::Valid("")),
    (
        "tune.maxaccept 3000000000",
        Verdict::Invalid("-1 or an integer"),
    ),
    (
        "tune.maxaccept -5",
        Verdict::RolelbRefuses("-1 or an integer"),
    ),
    ("tune.maxaccept 8x", Verdict::RolelbRefuses("plain integer")),
    ("tune.maxrewrite 1024", Verdict::Valid("'tune.maxrewrite'")),
    (
        "tune.ssl.cachesize 1000",
        Verdict::Valid("'tune.ssl.cachesize'"),
    ),
    ("tune.pipesize 65536", Verdict::Valid("")),
    ("tune.pipesize 0", Verdict::Valid("")),
    // HAProxy reads 64 bytes here; -1 and 2^31+1 it keeps, and the kernel refuses them for
    // every pipe.
    ("tune.pipesize 64k", Verdict::RolelbRefuses("plain integer")),
    ("tune.pipesize -1", Verdict::RolelbRefuses("from 0")),
    ("tune.pipesize 2147483649", Verdict::RolelbRefuses("from 0")),
    ("tune.foo 1", Verdict::Invalid("unknown keyword 'tune.foo'")),
    ("tune.zlib.memlevel 8", Verdict::Invalid("unknown keyword")),
    (
        "tune.chksize 100",
        Verdict::Invalid("tune.bufsize is used instead"),
    ),
    ("tune.maxpollevents", Verdict::Invalid("expects")),
    ("tune.rcvbuf.client 65536", Verdict::Valid("")),
    ("tune.sndbuf.server 65536", Verdict::Valid("")),
    ("tune.rcvbuf.server 0", Verdict::Valid("")),
    // HAProxy reads 256 bytes here, and asks the kernel for -1 (which it caps at its maximum).
    (
        "tune.sndbuf.client 256k",
        Verdict::RolelbRefuses("plain integer"),
    ),
    ("tune.rcvbuf.server -1", Verdict::RolelbRefuses("from 0")),
    ("tune.sndbuf.server", Verdict::Invalid("expects")),
    ("maxconnrate 100", Verdict::Valid("")),
    ("maxsessrate 0", Verdict::Valid("")),
    // HAProxy reads 5 here, and -1 as no limit at all.
    ("maxconnrate 5k", Verdict::RolelbRefuses("expects a number")),
    ("maxsessrate -1", Verdict::RolelbRefuses("expects a number")),
    ("maxsessrate", Verdict::Invalid("expects")),
    ("user nobody", Verdict::Valid("")),
    (
        "user no-such-user-rlbt",
        Verdict::Invalid("cannot find user id for 'no-such-user-rlbt'"),
    ),
    (
        "group no-such-group-rlbt",
        Verdict::Invalid("cannot find group id for 'no-such-group-rlbt'"),
    ),
    ("uid 4242", Verdict::Valid("")),
    ("gid 0", Verdict::Valid("")),
    // HAProxy warns that it is not a number and runs as root.
    ("uid nobody", Verdict::RolelbRefuses("'user NAME'")),
    ("gid staff", Verdict::RolelbRefuses("'group NAME'")),
    (
        "unix-bind prefix /tmp mode 600",
        Verdict::Valid("'unix-bind'"),
    ),
    ("unix-bind", Verdict::Valid("'unix-bind'")),
    (
        "unix-bind user root group root",
        Verdict::Valid("'unix-bind'"),
    ),
    ("unix-bind bogus 1", Verdict::Invalid("only supports")),
    (
        "unix-bind user no-such-user-rlbt",
        Verdict::Invalid("unknown user"),
    ),
];

/// (whole file, the line rolelb's error is at, verdict).
const OLD_HABITS: &[(&str, usize, Verdict)] = &[
    (
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    \
         timeout server 5s\nlisten l 127.0.0.1:15912\n    server s 127.0.0.1:6432\n",
        6,
        Verdict::Invalid("write 'listen l' and, on the next line, 'bind 127.0.0.1:15912'"),
    ),
    (
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    \
         timeout server 5s\nlisten l\n    bind 127.0.0.1:15913\n    redispatch\n    \
         server s 127.0.0.1:6432\n",
        8,
        Verdict::Invalid("use 'option redispatch'"),
    ),
    (
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    \
         timeout server 5s\nlisten l\n    bind 127.0.0.1:15913\n    redisp\n    \
         server s 127.0.0.1:6432\n",
        8,
        Verdict::Invalid("use 'option redispatch'"),
    ),
];

fn check(bin: &Path, file: &Path) -> (bool, String) {
    common::check_file(bin, file, |_| {})
}

/// Checks `text` with both programs; a failure description, if any.
fn compare(dir: &Path, i: usize, text: &str, line: usize, verdict: Verdict) -> Option<String> {
    let file = dir.join(format!("case{i}.cfg"));
    std::fs::write(&file, text).expect("write the case");
    let (ha_ok, ha_text) = check(&require_bin(HAPROXY_BIN), &file);
    let (lb_ok, lb_text) = check(&rolelb_bin(), &file);
    let (want_ha, want_lb, needle) = match verdict {
        Verdict::Valid(n) => (true, true, n),
        Verdict::Invalid(n) => (false, false, n),
        Verdict::RolelbRefuses(n) => (true, false, n),
    };
    let at = format!("{}:{line}: ", file.display());
    let well_said = lb_text.contains(needle) && (lb_ok || lb_text.contains(&at));
    if ha_ok == want_ha && lb_ok == want_lb && well_said && !lb_text.contains("panicked") {
        return None;
    }
    Some(format!(
        "{text}({verdict:?}, rolelb at {at}): haproxy {ha_ok}, rolelb {lb_ok}\n--- haproxy:\n{ha_text}\n--- rolelb:\n{lb_text}"
    ))
}

#[test]
fn tune_and_unix_bind_get_haproxys_verdict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let failures: Vec<String> = GLOBAL_CASES
        .iter()
        .enumerate()
        .filter_map(|(i, (line, verdict))| {
            compare(
                dir.path(),
                i,
                &format!("global\n    {line}\n{PROXY}"),
                2,
                *verdict,
            )
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn old_listen_syntax_and_redispatch_are_refused_with_the_modern_form() {
    let dir = tempfile::tempdir().expect("temp dir");
    let failures: Vec<String> = OLD_HABITS
        .iter()
        .enumerate()
        .filter_map(|(i, (text, line, verdict))| compare(dir.path(), i, text, *line, *verdict))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Sends `data` through `addr` to an echo server and returns what comes back.
fn echo_through(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let (name, conn) = open_named(addr).expect("connect through the proxy");
    assert_eq!(name, "E");
    let mut writer = conn.try_clone().expect("clone");
    let sent = data.to_vec();
    let send = std::thread::spawn(move || writer.write_all(&sent).expect("send"));
    let mut back = vec![0u8; data.len()];
    let mut reader = conn;
    reader.read_exact(&mut back).expect("echo");
    send.join().expect("sender");
    back
}

#[test]
fn a_small_tune_bufsize_carries_a_large_transfer_intact() {
    let echo = NamedServer::start("E");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let cfg = |port: u16| {
        format!(
            "global\n    tune.bufsize 352\n    tune.maxaccept 1\n{}",
            PROXY
                .replace("127.0.0.1:15911", &format!("127.0.0.1:{port}"))
                .replace("127.0.0.1:6432", &echo.addr().to_string())
        )
    };
    let port = free_port();
    let haproxy = Haproxy::start(&cfg(port));
    assert!(echo_through(SocketAddr::from(([127, 0, 0, 1], port)), &data) == data);
    drop(haproxy);
    let port = free_port();
    let rolelb = Rolelb::start(&cfg(port));
    assert!(echo_through(SocketAddr::from(([127, 0, 0, 1], port)), &data) == data);
    drop(rolelb);
}
