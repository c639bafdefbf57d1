//! Proxy ids side by side with HAProxy 2.6: the same configs, with proxies that set `id N`
//! and proxies that take automatic ids, the stats socket's internal proxy declared before or
//! after some proxies; the `iid` column of `show stat`, the `be_id` of `show servers state`
//! and the `HAPROXY_PROXY_ID` an external check sees must be HAProxy's, and the configs HAProxy
//! refuses (a reused id, `id` in `defaults`) are refused at the same line.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{Haproxy, NamedServer, Rolelb, free_port, stat_rows, stats_cli, wait_until};

const DEFAULTS: &str = "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n";

/// `(pxname, svname) -> iid,sid` of every `show stat` row, minus the rows of `skip` (the
/// stats listener, which HAProxy lists and rolelb does not).
fn ids(csv: &str, skip: &str) -> BTreeMap<(String, String), String> {
    let field = |row: &std::collections::HashMap<String, String>, name: &str| {
        row.get(name).cloned().unwrap_or_default()
    };
    stat_rows(csv)
        .iter()
        .filter(|row| row.contains_key("sid") && field(row, "pxname") != skip)
        .map(|row| {
            (
                (field(row, "pxname"), field(row, "svname")),
                format!("{},{}", field(row, "iid"), field(row, "sid")),
            )
        })
        .collect()
}

/// `be_id be_name` of every `show servers state` line.
fn servers_state_ids(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(' '))
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// What one balancer shows for `cfg`: the ids of `show stat`, those of `show servers state`,
/// and the `HAPROXY_PROXY_ID` each checked backend's external check was given.
fn observe(which: &str, cfg: &str, sock: &Path, dumps: &Path, checked: &[&str]) -> Observed {
    let _proxy: Box<dyn std::any::Any> = match which {
        "rolelb" => Box::new(Rolelb::start(cfg)),
        _ => Box::new(Haproxy::start(cfg)),
    };
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()
            && stats_cli(sock, "show stat").contains("BACKEND")),
        "{which} did not start"
    );
    let id_file = |be: &str| dumps.join(format!("{be}.id"));
    assert!(
        wait_until(Duration::from_secs(10), || checked.iter().all(|be| {
            fs::read_to_string(id_file(be)).is_ok_and(|t| t.ends_with('\n'))
        })),
        "{which}: external checks did not run"
    );
    let checks = checked
        .iter()
        .map(|be| {
            let id = fs::read_to_string(id_file(be)).unwrap_or_default();
            (be.to_string(), id.trim().to_string())
        })
        .collect();
    let observed = Observed {
        stat: ids(&stats_cli(sock, "show stat"), "stats"),
        servers_state: servers_state_ids(&stats_cli(sock, "show servers state")),
        checks,
    };
    for be in checked {
        let _ = fs::remove_file(id_file(be));
    }
    observed
}

#[derive(Debug, PartialEq)]
struct Observed {
    stat: BTreeMap<(String, String), String>,
    servers_state: Vec<String>,
    checks: BTreeMap<String, String>,
}

/// Runs `proxies` (with `{SOCK_GLOBAL}` replaced by a `global` section holding the stats
/// socket, `{SRV}` by a server address and `{PORT}` by free ports) under both, asserts the
/// same ids, returns rolelb's.
fn side_by_side(proxies: &str, checked: &[&str]) -> Observed {
    let root = tempfile::tempdir().expect("tempdir");
    let server = NamedServer::start("s");
    let script = root.path().join("dump.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$HAPROXY_PROXY_ID\" > {}/\"$HAPROXY_PROXY_NAME.id\"\nexit 0\n",
            root.path().display()
        ),
    )
    .expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut out = Vec::new();
    for which in ["haproxy", "rolelb"] {
        let sock = root.path().join(format!("{which}.sock"));
        let mut cfg = proxies
            .replace(
                "{SOCK_GLOBAL}",
                &format!(
                    "global\n    stats socket {} level admin\n    external-check\n    insecure-fork-wanted\n",
                    sock.display()
                ),
            )
            .replace("{SRV}", &server.addr().to_string())
            .replace("{SCRIPT}", &script.display().to_string());
        while cfg.contains("{PORT}") {
            cfg = cfg.replacen("{PORT}", &free_port().to_string(), 1);
        }
        out.push(observe(which, &cfg, &sock, root.path(), checked));
    }
    let rolelb = out.pop().expect("rolelb");
    let haproxy = out.pop().expect("haproxy");
    assert_eq!(rolelb, haproxy, "rolelb (left) and HAProxy 2.6 (right)");
    rolelb
}

fn iid<'a>(o: &'a Observed, px: &str) -> &'a str {
    o.stat
        .get(&(px.to_string(), "BACKEND".to_string()))
        .or_else(|| o.stat.get(&(px.to_string(), "FRONTEND".to_string())))
        .map(|v| v.split(',').next().unwrap_or_default())
        .unwrap_or_else(|| panic!("no row for {px}: {o:#?}"))
}

#[test]
fn explicit_and_automatic_proxy_ids_are_haproxys() {
    let o = side_by_side(
        &format!(
            "{{SOCK_GLOBAL}}{DEFAULTS}\
             frontend f1\n    bind 127.0.0.1:{{PORT}}\n    default_backend b1\n\
             backend b1\n    id 3\n    option external-check\n    external-check command {{SCRIPT}}\n    server s1 {{SRV}} check inter 500\n\
             listen l1\n    bind 127.0.0.1:{{PORT}}\n    server s1 {{SRV}}\n    server s2 {{SRV}} id 7\n\
             listen stats\n    mode http\n    bind 127.0.0.1:{{PORT}}\n    stats enable\n\
             backend b2\n    id 1\n    option external-check\n    external-check command {{SCRIPT}}\n    server s1 {{SRV}} check inter 500\n\
             backend b3\n    option external-check\n    external-check command {{SCRIPT}}\n    server s1 {{SRV}} check inter 500\n\
             frontend f2\n    id 10\n    bind 127.0.0.1:{{PORT}}\n    default_backend b3\n\
             backend b4\n    server s1 {{SRV}}\n"
        ),
        &["b1", "b2", "b3"],
    );
    // The stats socket's proxy took a step, so f1 is 2; own ids kept; b3 skips nothing but
    // moved past the step b2's own id took.
    assert_eq!(
        [
            iid(&o, "f1"),
            iid(&o, "b1"),
            iid(&o, "l1"),
            iid(&o, "b2"),
            iid(&o, "b3"),
            iid(&o, "f2"),
            iid(&o, "b4")
        ],
        ["2", "3", "4", "1", "7", "10", "9"],
        "{o:#?}"
    );
    assert_eq!(o.checks["b2"], "1", "{o:#?}");
}

#[test]
fn a_global_section_after_proxies_shifts_only_the_ids_after_it() {
    let o = side_by_side(
        &format!(
            "{DEFAULTS}\
             backend b0\n    option external-check\n    external-check command {{SCRIPT}}\n    server s1 {{SRV}} check inter 500\n\
             frontend f1\n    bind 127.0.0.1:{{PORT}}\n    default_backend b0\n\
             {{SOCK_GLOBAL}}\
             backend b1\n    option external-check\n    external-check command {{SCRIPT}}\n    server s1 {{SRV}} check inter 500\n\
             backend b2\n    id 4\n    server s1 {{SRV}}\n\
             backend b3\n    server s1 {{SRV}}\n"
        ),
        &["b0", "b1"],
    );
    assert_eq!(
        [
            iid(&o, "b0"),
            iid(&o, "f1"),
            iid(&o, "b1"),
            iid(&o, "b2"),
            iid(&o, "b3")
        ],
        ["1", "2", "5", "4", "7"],
        "{o:#?}"
    );
}

/// The line numbers `haproxy -c` and `rolelb -c` name for `cfg`, which both must refuse.
fn refused_lines(cfg: &str) -> (Vec<String>, Vec<String>) {
    let (h_ok, h_out) = Haproxy::check(cfg);
    let (r_ok, r_out) = Rolelb::check(cfg);
    assert!(!h_ok && !r_ok, "both must refuse:\n{h_out}\n{r_out}");
    let lines = |out: &str, open: &str, close: char| -> Vec<String> {
        out.lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once(open)?;
                let (_, rest) = rest.split_once(':')?;
                let n: String = rest.chars().take_while(|c| *c != close).collect();
                Some(n)
            })
            .collect()
    };
    (
        lines(&h_out, "parsing [", ']'),
        lines(&r_out, "check.cfg", ':'),
    )
}

#[test]
fn a_reused_id_and_an_id_in_defaults_are_refused_at_their_line_as_in_haproxy() {
    let reused = format!(
        "{DEFAULTS}backend a\n    id 7\n    server s1 127.0.0.1:1\nbackend b\n    id 7\n    server s1 127.0.0.1:1\n"
    );
    let (haproxy, rolelb) = refused_lines(&reused);
    assert_eq!(haproxy, ["10"], "HAProxy's lines");
    assert_eq!(rolelb, haproxy);
    let (_, out) = Rolelb::check(&reused);
    assert!(
        out.contains("backend 'b' reuses id 7 of backend 'a' (declared at"),
        "{out}"
    );

    let in_defaults = format!("{DEFAULTS}    id 4\nbackend a\n    server s1 127.0.0.1:1\n");
    let (haproxy, rolelb) = refused_lines(&in_defaults);
    assert_eq!(haproxy, ["6"], "HAProxy's lines");
    assert_eq!(rolelb, haproxy);

    let zero = format!("{DEFAULTS}backend a\n    id 0\n    server s1 127.0.0.1:1\n");
    let (haproxy, rolelb) = refused_lines(&zero);
    assert_eq!(rolelb, haproxy);
}
