//! Environment variables in haproxy.cfg, side by side with HAProxy 2.6: the `-c` verdicts of
//! a table of cases (inside and outside quotes, set, unset, empty, `${VAR-default}`,
//! `${VAR[*]}`, pseudo-variables, malformed names, escaped `$`, in `bind`, `server`, keyword
//! arguments, `log` targets), then the values they give, seen through which backend answers
//! on which port with the same config text and environment in both programs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{HAPROXY_BIN, NamedServer, Proc, free_port, require_bin, rolelb_bin, who_answers};
use nix::sys::signal::Signal;

/// Variables every case runs with; `RLBT_UNSET*` are removed from the environment.
const ENV: &[(&str, &str)] = &[
    ("RLBT_PORT", "15901"),
    ("RLBT_HOST", "127.0.0.1"),
    ("RLBT_SPORT", "6432"),
    ("RLBT_EMPTY", ""),
    ("RLBT_OPTS", "check inter 2s"),
    ("RLBT_T", "5s"),
    ("RLBT_MAXC", "100"),
];
const UNSET: &[&str] = &["RLBT_UNSET", "RLBT_UNSET2"];

const HEADER: &str = "global\ndefaults\n    mode tcp\n    timeout connect 1s\n    \
                      timeout client 5s\n    timeout server 5s\nlisten l\n";
/// The first line of a case's body in the file.
const BODY_LINE: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Both programs accept the file.
    Valid,
    /// Both refuse it.
    Invalid,
    /// HAProxy accepts a value it silently misreads; rolelb refuses it, saying this.
    RolelbRefuses(&'static str),
}

/// (what, body lines after `listen l`, verdict).
const CASES: &[(&str, &str, Verdict)] = &[
    (
        "unquoted variable in bind (address expansion)",
        "bind :$RLBT_PORT\nserver s 127.0.0.1:6432",
        Verdict::Valid,
    ),
    (
        "double-quoted variable in bind",
        "bind \":$RLBT_PORT\"\nserver s 127.0.0.1:6432",
        Verdict::Valid,
    ),
    (
        "single-quoted variable in bind: addresses expand whatever the quoting",
        "bind ':${RLBT_PORT}'\nserver s 127.0.0.1:6432",
        Verdict::Valid,
    ),
    (
        "unset variable in bind",
        "bind \":${RLBT_UNSET}\"\nserver s 127.0.0.1:6432",
        Verdict::Invalid,
    ),
    (
        "bind address that expands to nothing",
        "bind \"${RLBT_UNSET}\"\nserver s 127.0.0.1:6432",
        Verdict::Invalid,
    ),
    (
        "default of an unset variable, in double quotes",
        "bind \":${RLBT_UNSET-15902}\"\nserver s 127.0.0.1:6432",
        Verdict::Valid,
    ),
    (
        "default outside quotes: the address expansion has no defaults",
        "bind :${RLBT_UNSET-15902}\nserver s 127.0.0.1:6432",
        Verdict::Invalid,
    ),
    (
        "default does not replace an empty variable",
        "bind :15903\nserver s \"${RLBT_EMPTY-127.0.0.1:6432}\"",
        Verdict::Invalid,
    ),
    (
        "unquoted variables in a server address",
        "bind :15903\nserver s ${RLBT_HOST}:$RLBT_SPORT",
        Verdict::Valid,
    ),
    (
        "server address that expands to nothing",
        "bind :15903\nserver s $RLBT_UNSET",
        Verdict::Invalid,
    ),
    (
        "empty word ends the line",
        "bind :15903\nserver s 127.0.0.1:6432 \"$RLBT_EMPTY\" bogus-keyword",
        Verdict::Valid,
    ),
    (
        "${VAR[*]} makes one word per part",
        "bind :15903\nserver s 127.0.0.1:6432 \"${RLBT_OPTS[*]}\"",
        Verdict::Valid,
    ),
    (
        "${VAR} stays one word",
        "bind :15903\nserver s 127.0.0.1:6432 \"${RLBT_OPTS}\"",
        Verdict::Invalid,
    ),
    (
        "unquoted variable in a duration",
        "bind :15903\ntimeout connect $RLBT_T\nserver s 127.0.0.1:6432",
        Verdict::Invalid,
    ),
    (
        "quoted variable in a duration",
        "bind :15903\ntimeout connect \"$RLBT_T\"\nserver s 127.0.0.1:6432",
        Verdict::Valid,
    ),
    (
        "unquoted variable in maxconn (HAProxy reads 0)",
        "bind :15903\nmaxconn $RLBT_MAXC\nserver s 127.0.0.1:6432",
        Verdict::RolelbRefuses("maxconn"),
    ),
    (
        "quoted variable in maxconn",
        "bind :15903\nmaxconn \"$RLBT_MAXC\"\nserver s 127.0.0.1:6432",
        Verdict::Valid,
    ),
    (
        "name starting with a digit",
        "bind :15903\nserver s \"$1\"",
        Verdict::Invalid,
    ),
    ("$$", "bind :15903\nserver s \"$$\"", Verdict::Invalid),
    (
        "unmatched brace",
        "bind :15903\nserver s \"${RLBT_HOST\"",
        Verdict::Invalid,
    ),
    (
        "bad word expansion",
        "bind :15903\nserver s 127.0.0.1:6432 \"${RLBT_OPTS[x]}\"",
        Verdict::Invalid,
    ),
    (
        "pseudo-variable .LINE",
        "bind :15903\nserver \"s${.LINE}\" 127.0.0.1:6432",
        Verdict::Valid,
    ),
    (
        "unknown pseudo-variable",
        "bind :15903\nserver \"s${.NOPE}\" 127.0.0.1:6432",
        Verdict::Invalid,
    ),
    (
        "escaped dollar outside quotes keeps its backslash",
        "bind :\\$RLBT_PORT\nserver s 127.0.0.1:6432",
        Verdict::Invalid,
    ),
    (
        "escaped dollar in double quotes, expanded by the address pass",
        "bind \":\\$RLBT_PORT\"\nserver s 127.0.0.1:6432",
        Verdict::Valid,
    ),
    (
        "unquoted variable in a log target",
        "bind :15903\nlog $RLBT_HOST:514 local0\nserver s 127.0.0.1:6432",
        Verdict::Valid,
    ),
    (
        "unquoted variable in 'addr' (an address)",
        "bind :15903\nserver s 127.0.0.1:6432 check addr $RLBT_HOST",
        Verdict::Valid,
    ),
    (
        "unquoted variable in 'agent-addr' (a bare IP, not expanded)",
        "bind :15903\nserver s 127.0.0.1:6432 agent-check agent-port 9999 agent-addr $RLBT_HOST",
        Verdict::Invalid,
    ),
];

/// `BIN -c -f FILE` with the cases' environment: (valid, output).
fn check(bin: &Path, file: &Path) -> (bool, String) {
    common::check_file(bin, file, |cmd| {
        for (k, v) in ENV {
            cmd.env(k, v);
        }
        for k in UNSET {
            cmd.env_remove(k);
        }
    })
}

#[test]
fn environment_cases_get_haproxys_verdict() {
    let haproxy = require_bin(HAPROXY_BIN);
    let rolelb = rolelb_bin();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for (i, (what, body, verdict)) in CASES.iter().enumerate() {
        let file = dir.path().join(format!("case{i}.cfg"));
        std::fs::write(&file, format!("{HEADER}{body}\n")).expect("write the case");
        let (ha_ok, ha_text) = check(&haproxy, &file);
        let (lb_ok, lb_text) = check(&rolelb, &file);
        let want_ha = matches!(verdict, Verdict::Valid | Verdict::RolelbRefuses(_));
        let want_lb = *verdict == Verdict::Valid;
        if ha_ok != want_ha || lb_ok != want_lb {
            failures.push(format!(
                "{what} ({verdict:?}): haproxy {ha_ok}, rolelb {lb_ok}\n--- haproxy:\n{ha_text}\n--- rolelb:\n{lb_text}"
            ));
            continue;
        }
        if !lb_ok {
            // Every error names the file and a line of the case's body.
            let prefix = format!("{}:", file.display());
            let located = lb_text.lines().any(|l| {
                l.strip_prefix(&prefix)
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| n >= BODY_LINE)
            });
            let explained = match verdict {
                Verdict::RolelbRefuses(word) => {
                    lb_text.contains(word) && lb_text.contains("only inside double quotes")
                }
                _ => true,
            };
            if !located || !explained || lb_text.contains("panicked") {
                failures.push(format!(
                    "{what}: rolelb's error is not FILE:LINE:\n{lb_text}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn an_empty_word_is_reported_and_what_follows_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("empty.cfg");
    std::fs::write(
        &file,
        format!("{HEADER}bind :15903\nserver s 127.0.0.1:6432 \"$RLBT_EMPTY\" check\n"),
    )
    .expect("write");
    let (ok, text) = check(&rolelb_bin(), &file);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("{}:9: ", file.display())) && text.contains("'check'"),
        "{text}"
    );
}

/// One program running a config with its own environment, stopped by PID when dropped.
fn start(name: &str, bin: &Path, args: &[&str], file: &Path, env: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(bin);
    cmd.args(args).arg("-f").arg(file).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in UNSET {
        cmd.env_remove(k);
    }
    let log = file.with_extension(format!("{name}.log"));
    Proc::spawn(name, &mut cmd, &log, Signal::SIGTERM)
}

/// Which backend answers on `port`, waiting for the listener.
fn answer(port: u16) -> String {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match who_answers(addr) {
            Ok(name) => return name,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("nothing answers on {addr}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The same text and environment in both programs reach the same servers: unquoted `$VAR`
/// in `bind` and `server` addresses, a default in double quotes, single quotes on an address,
/// `${VAR[*]}` spreading a server line's words.
#[test]
fn environment_values_reach_the_same_servers_as_haproxy() {
    let (a, b, c) = (
        NamedServer::start("A"),
        NamedServer::start("B"),
        NamedServer::start("C"),
    );
    let text = format!(
        "{HEADER}    bind :$RLBT_PORT_A\n    server a ${{RLBT_HOST}}:$RLBT_SPORT_A\n\
         listen two\n    bind \"127.0.0.1:${{RLBT_PORT_B}}\"\n    \
         server b \"127.0.0.1:${{RLBT_UNSET-{}}}\"\n\
         listen three\n    bind '127.0.0.1:$RLBT_PORT_C'\n    server \"${{RLBT_SERVER_C[*]}}\"\n",
        b.addr().port()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("env.cfg");
    std::fs::write(&file, &text).expect("write");
    let run = |name: &str, bin: &Path, args: &[&str]| {
        let ports = [free_port(), free_port(), free_port()];
        let env = vec![
            ("RLBT_HOST", "127.0.0.1".to_string()),
            ("RLBT_PORT_A", ports[0].to_string()),
            ("RLBT_SPORT_A", a.addr().port().to_string()),
            ("RLBT_PORT_B", ports[1].to_string()),
            ("RLBT_PORT_C", ports[2].to_string()),
            ("RLBT_SERVER_C", format!("c  {} weight 10", c.addr())),
        ];
        let proc = start(name, bin, args, &file, &env);
        let answers: Vec<String> = ports.iter().map(|p| answer(*p)).collect();
        drop(proc);
        answers
    };
    let haproxy = run("haproxy", &require_bin(HAPROXY_BIN), &["-db"]);
    let rolelb = run("rolelb", &rolelb_bin(), &[]);
    assert_eq!(haproxy, ["A", "B", "C"]);
    assert_eq!(rolelb, haproxy);
}
