//! `option external-check` side by side with HAProxy 2.6: the same config runs under both,
//! with scripts this test writes into a temporary directory. The arguments and the whole
//! environment the script sees are the same (a `listen` gives its first `bind`, a `backend`
//! `NOT_USED`; `HAPROXY_SERVER_CURCONN` follows held sessions); a script that exits 0 iff a
//! file exists moves the server DOWN and UP at the same steps with the same `check_status`
//! and `check_code` in `show stat`; a script that sleeps past the limit is `PROCTOUT`, its
//! process group is killed and no zombie is left; a program that does not exist is
//! `PROCERR` 255 in both. `-c` refuses what HAProxy refuses, and rolelb also refuses a
//! config without `insecure-fork-wanted` (HAProxy only warns, then cannot fork).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Haproxy, NamedServer, Rolelb, free_port, stat_row, stats_cli, wait_until};

const GLOBAL: &str = "    external-check\n    insecure-fork-wanted\n";
const DEFAULTS: &str = "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n";

fn write_script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}")).expect("writing the script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The test's proxies after a `global` with a stats socket, and a frontend in front of `bk`
/// (rolelb needs something to listen on).
fn config(sock: &Path, proxies: &str) -> String {
    format!(
        "global\n    stats socket {} level admin\n{GLOBAL}\n{DEFAULTS}\n{proxies}\n\
         frontend fe\n    bind 127.0.0.1:{}\n    default_backend bk\n",
        sock.display(),
        free_port()
    )
}

/// One balancer (rolelb or HAProxy) with its own stats socket and script directory.
struct Side {
    name: &'static str,
    dir: PathBuf,
    sock: PathBuf,
}

impl Side {
    fn new(name: &'static str, root: &Path) -> Side {
        let dir = root.join(name);
        fs::create_dir_all(&dir).expect("script dir");
        Side {
            name,
            sock: dir.join("stats.sock"),
            dir,
        }
    }

    fn row(&self, px: &str, sv: &str) -> BTreeMap<String, String> {
        assert!(
            wait_until(Duration::from_secs(10), || self.sock.exists()),
            "{}: no stats socket at {}",
            self.name,
            self.sock.display()
        );
        let csv = stats_cli(&self.sock, "show stat");
        stat_row(&csv, px, sv)
            .unwrap_or_else(|| panic!("{}: no row {px}/{sv} in:\n{csv}", self.name))
            .into_iter()
            .collect()
    }

    /// `status`, `check_status`, `check_code` and `chkdown` of `px`/`sv`.
    fn check_state(&self, px: &str, sv: &str) -> [String; 4] {
        let r = self.row(px, sv);
        ["status", "check_status", "check_code", "chkdown"].map(|k| r[k].clone())
    }
}

/// Waits until both sides show `want` (status, check_status) for `px`/`sv`, then returns
/// both full check states, which must be equal.
fn both_reach(sides: &[&Side; 2], px: &str, sv: &str, want: (&str, &str), step: &str) {
    for side in sides {
        let reached = wait_until(Duration::from_secs(10), || {
            let s = side.check_state(px, sv);
            s[0] == want.0 && s[1] == want.1
        });
        assert!(
            reached,
            "{step}: {} never showed {want:?} for {px}/{sv}: {:?}",
            side.name,
            side.check_state(px, sv)
        );
    }
    assert_eq!(
        sides[0].check_state(px, sv),
        sides[1].check_state(px, sv),
        "{step}: rolelb vs HAProxy (status, check_status, check_code, chkdown) of {px}/{sv}"
    );
}

/// The dump the script wrote for `px`/`sv`: its arguments, then its environment sorted, minus
/// what the shell adds itself (`PWD`, which follows each balancer's own directory).
fn read_dump(dir: &Path, px: &str, sv: &str) -> Option<String> {
    let text = fs::read_to_string(dir.join(format!("{px}.{sv}.dump"))).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with("PWD="))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Writes the script's arguments and environment to DIR/PROXY.SERVER.dump (full paths: the
/// backend gives it HAProxy's default, empty `PATH`).
const DUMP: &str = "out=\"DIR/$HAPROXY_PROXY_NAME.$HAPROXY_SERVER_NAME\"\n\
                    { echo \"args: $*\"; /usr/bin/env | /usr/bin/sort; } > \"$out.tmp\"\n\
                    /usr/bin/mv \"$out.tmp\" \"$out.dump\"\n\
                    exit 0\n";

#[test]
fn script_sees_haproxys_arguments_and_environment() {
    let a = NamedServer::start("a");
    let b = NamedServer::start("b");
    let root = tempfile::tempdir().expect("tempdir");
    let mk = |side: Side, port: u16| {
        let script = side.dir.join("dump.sh");
        write_script(
            &script,
            &DUMP.replace("DIR", &side.dir.display().to_string()),
        );
        let proxies = format!(
            "listen lst\n    bind 127.0.0.1:{port}\n    bind 127.0.0.1:{second}\n    option external-check\n    \
             external-check path \"/usr/bin:/bin\"\n    external-check command {script}\n    \
             server a {a} check inter 200ms maxconn 7 id 5\n\n\
             backend bk\n    option external-check\n    external-check command {script}\n    \
             server first {b} check inter 200ms\n    server b {b} check inter 200ms\n",
            second = free_port(),
            script = script.display(),
            a = a.addr(),
            b = b.addr(),
        );
        let cfg = config(&side.sock, &proxies);
        (side, cfg)
    };
    let (rport, hport) = (free_port(), free_port());
    let (rs, rcfg) = mk(Side::new("rolelb", root.path()), rport);
    let (hs, hcfg) = mk(Side::new("haproxy", root.path()), hport);
    let _lb = Rolelb::start(&rcfg);
    let _ha = Haproxy::start(&hcfg);

    for (px, sv) in [("lst", "a"), ("bk", "b")] {
        let mut dumps = Vec::new();
        for side in [&rs, &hs] {
            let mut dump = None;
            wait_until(Duration::from_secs(10), || {
                dump = read_dump(&side.dir, px, sv);
                dump.is_some()
            });
            let dump =
                dump.unwrap_or_else(|| panic!("{}: the script never ran for {px}/{sv}", side.name));
            dumps.push(
                dump.replace(&rport.to_string(), "PORT")
                    .replace(&hport.to_string(), "PORT"),
            );
        }
        assert_eq!(dumps[0], dumps[1], "{px}/{sv}: rolelb's dump vs HAProxy's");
    }
    let lst = read_dump(&rs.dir, "lst", "a").expect("dump");
    assert!(
        lst.starts_with(&format!("args: 127.0.0.1 {rport} ")),
        "{lst}"
    );
    let bk = read_dump(&rs.dir, "bk", "b").expect("dump");
    assert!(bk.starts_with("args: NOT_USED NOT_USED 127.0.0.1 "), "{bk}");
    assert!(
        bk.lines().any(|l| l == "HAPROXY_PROXY_ADDR=") && bk.lines().any(|l| l == "PATH="),
        "{bk}"
    );

    // A session held through each balancer shows in the next check's HAPROXY_SERVER_CURCONN.
    let _held = [
        TcpStream::connect(("127.0.0.1", rport)).expect("connect via rolelb"),
        TcpStream::connect(("127.0.0.1", hport)).expect("connect via HAProxy"),
    ];
    let mut dumps = Vec::new();
    for side in [&rs, &hs] {
        let mut dump = String::new();
        let seen = wait_until(Duration::from_secs(10), || {
            dump = read_dump(&side.dir, "lst", "a").unwrap_or_default();
            dump.contains("HAPROXY_SERVER_CURCONN=1")
        });
        assert!(seen, "{}: CURCONN never 1: {dump}", side.name);
        dumps.push(
            dump.replace(&rport.to_string(), "PORT")
                .replace(&hport.to_string(), "PORT"),
        );
    }
    assert_eq!(dumps[0], dumps[1], "with one session held");
}

#[test]
fn exit_status_moves_the_server_down_and_up_like_haproxy() {
    let a = NamedServer::start("a");
    let root = tempfile::tempdir().expect("tempdir");
    let flag = root.path().join("flag");
    let script = root.path().join("flag.sh");
    write_script(&script, &format!("[ -e {} ]\n", flag.display()));
    let missing = root.path().join("no-such-check");
    let sides = [
        Side::new("rolelb", root.path()),
        Side::new("haproxy", root.path()),
    ];
    let cfg = |side: &Side| {
        let proxies = format!(
            "backend bk\n    option external-check\n    external-check command {}\n    \
             server a {} check inter 200ms rise 2 fall 2\n\n\
             backend gone\n    option external-check\n    external-check command {}\n    \
             server a {} check inter 200ms rise 1 fall 1\n",
            script.display(),
            a.addr(),
            missing.display(),
            a.addr()
        );
        config(&side.sock, &proxies)
    };
    let lb = Rolelb::start(&cfg(&sides[0]));
    let _ha = Haproxy::start(&cfg(&sides[1]));
    let both = [&sides[0], &sides[1]];

    both_reach(&both, "bk", "a", ("DOWN", "PROCERR"), "no flag");
    fs::write(&flag, "").expect("flag");
    both_reach(&both, "bk", "a", ("UP", "PROCOK"), "flag created");
    fs::remove_file(&flag).expect("flag");
    both_reach(&both, "bk", "a", ("DOWN", "PROCERR"), "flag removed");
    fs::write(&flag, "").expect("flag");
    both_reach(&both, "bk", "a", ("UP", "PROCOK"), "flag created again");
    assert_eq!(
        sides[0].check_state("bk", "a")[3],
        "2",
        "two DOWN transitions"
    );

    // A program that cannot run is a failed check (HAProxy's child exits 255), logged with
    // its path by rolelb.
    both_reach(&both, "gone", "a", ("DOWN", "PROCERR"), "missing program");
    assert_eq!(sides[0].check_state("gone", "a")[2], "255");
    assert!(
        lb.wait_for_log(&missing.display().to_string(), Duration::from_secs(5)),
        "rolelb does not name the missing program: {}",
        lb.stderr_text()
    );
}

/// Processes whose command line is exactly `words`.
fn processes_running(words: &[&str]) -> usize {
    let want: Vec<u8> = words
        .iter()
        .flat_map(|w| [w.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
                .count()
        })
        .unwrap_or(0)
}

/// Zombie children of `pid`.
fn zombies_of(pid: u32) -> usize {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| fs::read_to_string(e.path().join("status")).ok())
                .filter(|s| {
                    s.lines().any(|l| l == format!("PPid:\t{pid}"))
                        && s.lines().any(|l| l.starts_with("State:\tZ"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_script_past_its_time_is_proctout_and_killed_with_its_children() {
    let a = NamedServer::start("a");
    let root = tempfile::tempdir().expect("tempdir");
    let sides = [
        Side::new("rolelb", root.path()),
        Side::new("haproxy", root.path()),
    ];
    // The limit is `timeout connect` (300ms) since `timeout check` is set and it is shorter
    // than `inter`. Each side's script sleeps for its own length, so their children can be told
    // apart.
    let cfg = |side: &Side, sleep: &str| {
        let script = side.dir.join("slow.sh");
        write_script(&script, &format!("sleep {sleep}\nexit 0\n"));
        let proxies = format!(
            "backend bk\n    timeout connect 300ms\n    timeout check 5s\n    option external-check\n    \
             external-check path \"/usr/bin:/bin\"\n    external-check command {}\n    \
             server a {} check inter 1s rise 1 fall 1\n",
            script.display(),
            a.addr()
        );
        config(&side.sock, &proxies)
    };
    let lb = Rolelb::start(&cfg(&sides[0], "37"));
    let _ha = Haproxy::start(&cfg(&sides[1], "38"));
    let both = [&sides[0], &sides[1]];
    both_reach(&both, "bk", "a", ("DOWN", "PROCTOUT"), "slow script");
    let row = sides[0].row("bk", "a");
    let took: u64 = row["check_duration"].parse().expect("check_duration");
    assert!(
        (300..2000).contains(&took),
        "rolelb waited {took}ms for a 300ms limit"
    );
    // Let a few checks time out: at most the running one's `sleep` is left, and no zombie.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        wait_until(Duration::from_secs(3), || processes_running(&[
            "sleep", "37"
        ]) <= 1),
        "rolelb left {} 'sleep 37' behind",
        processes_running(&["sleep", "37"])
    );
    assert!(
        wait_until(Duration::from_secs(3), || zombies_of(lb.pid()) == 0),
        "rolelb has {} zombie children",
        zombies_of(lb.pid())
    );
}

/// `-c` verdicts: both refuse, or rolelb refuses where HAProxy only warns. rolelb's error
/// names the line.
#[test]
fn config_rules_match_haproxy() {
    let base = |global: &str, proxy: &str| {
        format!(
            "global\n{global}{DEFAULTS}backend bk\n{proxy}    server s 127.0.0.1:6432 check\n\
             frontend fe\n    bind 127.0.0.1:6999\n    default_backend bk\n"
        )
    };
    let both = "    external-check\n    insecure-fork-wanted\n";
    let opt = "    option external-check\n";
    let cmd = "    external-check command /bin/true\n";
    // (global, proxy lines, HAProxy accepts, rolelb accepts, rolelb's text, its line).
    let cases: &[(&str, String, bool, bool, &str, usize)] = &[
        (both, format!("{opt}{cmd}"), true, true, "", 0),
        (
            "    insecure-fork-wanted\n",
            format!("{opt}{cmd}"),
            false,
            false,
            "needs 'external-check' in the 'global' section",
            9,
        ),
        (
            "    external-check\n",
            format!("{opt}{cmd}"),
            true,
            false,
            "needs 'insecure-fork-wanted'",
            9,
        ),
        (
            both,
            opt.to_string(),
            false,
            false,
            "needs an 'external-check command'",
            10,
        ),
        (
            both,
            format!("{opt}    external-check command true\n"),
            false,
            false,
            "does not have a leading '/'",
            11,
        ),
        (
            both,
            format!("{opt}    external-check command true\n    external-check path /bin\n"),
            true,
            true,
            "",
            0,
        ),
        (both, cmd.to_string(), true, true, "will be ignored", 10),
        (
            both,
            format!("{opt}    external-check foo /bin/true\n"),
            false,
            false,
            "only supports 'command' and 'path'",
            11,
        ),
        (
            both,
            format!("{opt}    external-check command\n"),
            false,
            false,
            "expects a value after 'command'",
            11,
        ),
        (
            both,
            format!("    option external-check now\n{cmd}"),
            false,
            false,
            "unexpected argument 'now'",
            10,
        ),
    ];
    for (global, proxy, ha_ok, lb_ok, text, line) in cases {
        let cfg = base(global, proxy);
        let (ha, ha_out) = Haproxy::check(&cfg);
        let (lb, lb_out) = Rolelb::check(&cfg);
        assert_eq!(ha, *ha_ok, "HAProxy on:\n{cfg}\n{ha_out}");
        assert_eq!(lb, *lb_ok, "rolelb on:\n{cfg}\n{lb_out}");
        if !text.is_empty() {
            assert!(lb_out.contains(text), "rolelb on:\n{cfg}\nsays: {lb_out}");
            assert!(
                lb_out.contains(&format!(".cfg:{line}: ")),
                "rolelb's message does not name line {line}:\n{cfg}\n{lb_out}"
            );
        }
    }
}
