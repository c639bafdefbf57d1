//! The runtime API on `stats socket`, against real HAProxy 2.6: the same config runs in both,
//! `show stat` and `show servers state` are compared, and every command that changes a server
//! is proven on real connections through rolelb (drain, weight, enable/disable, levels,
//! errors, survival across a `SIGHUP` reload, garbage input).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Haproxy, NamedServer, Rolelb, free_port, open_named, stats_cli as cli, who_answers};
use tempfile::TempDir;

/// A backend's servers and its sockets, in a directory of the test's own.
struct Sockets {
    dir: TempDir,
}

impl Sockets {
    fn new() -> Sockets {
        Sockets {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn admin(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn user(&self) -> PathBuf {
        self.dir.path().join("user.sock")
    }

    fn global(&self) -> String {
        format!(
            "global\n    stats socket {} mode 600 level admin\n    stats socket {} level user\n",
            self.admin().display(),
            self.user().display()
        )
    }
}

const DEFAULTS: &str = "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    \
                        timeout server 30s\n";

/// `frontend fe` → `backend be` with `servers` (each line after `server`).
fn config(sockets: &Sockets, port: u16, servers: &[String]) -> String {
    let mut c = format!(
        "{}{DEFAULTS}\nfrontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\n\
         backend be\n    balance roundrobin\n",
        sockets.global()
    );
    for s in servers {
        c.push_str(&format!("    server {s}\n"));
    }
    c
}

/// rolelb in front of NamedServers `a` and `b`.
struct Setup {
    sockets: Sockets,
    lb: Rolelb,
    addr: SocketAddr,
    _a: NamedServer,
    _b: NamedServer,
}

fn two_servers() -> Setup {
    let a = NamedServer::start("a");
    let b = NamedServer::start("b");
    let sockets = Sockets::new();
    let port = free_port();
    let cfg = config(
        &sockets,
        port,
        &[format!("a {}", a.addr()), format!("b {}", b.addr())],
    );
    let lb = Rolelb::start(&cfg);
    Setup {
        sockets,
        lb,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _a: a,
        _b: b,
    }
}

fn names(addr: SocketAddr, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| who_answers(addr).expect("a server answers"))
        .collect()
}

fn echo_ok(conn: &mut TcpStream) -> bool {
    conn.write_all(b"ping").is_ok() && {
        let mut b = [0u8; 4];
        conn.read_exact(&mut b).is_ok() && &b == b"ping"
    }
}

/// The `show servers state` line of `server` split into fields.
fn server_state(path: &Path, server: &str) -> Vec<String> {
    cli(path, "show servers state")
        .lines()
        .map(|l| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[3] == server)
        .unwrap_or_else(|| panic!("no state line for {server}"))
}

#[test]
fn show_stat_and_servers_state_match_haproxy_26() {
    let servers = |ports: &[u16; 4]| {
        vec![
            format!("act 127.0.0.1:{}", ports[0]),
            // Explicit ids; the others take the next free one (act 2, off 4, heavy 6).
            format!("bck 127.0.0.1:{} backup id 1", ports[1]),
            format!("off 127.0.0.1:{} disabled", ports[2]),
            format!("zero 127.0.0.1:{} weight 0 id 9", ports[3]),
            format!("heavy 127.0.0.1:{} weight 7", ports[0]),
        ]
    };
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let ours = Sockets::new();
    let theirs = Sockets::new();
    let mut ours_cfg = config(&ours, free_port(), &servers(&ports));
    let mut theirs_cfg = config(&theirs, free_port(), &servers(&ports));
    for (cfg, port) in [(&mut ours_cfg, free_port()), (&mut theirs_cfg, free_port())] {
        cfg.push_str(&format!(
            "\nlisten li\n    bind 127.0.0.1:{port}\n    server x 127.0.0.1:{}\n",
            ports[0]
        ));
    }
    let _lb = Rolelb::start(&ours_cfg);
    let _hap = Haproxy::start(&theirs_cfg);

    let ours_stat = cli(&ours.admin(), "show stat");
    let theirs_stat = cli(&theirs.admin(), "show stat");
    let header = |s: &str| s.lines().next().unwrap_or_default().to_owned();
    assert_eq!(header(&ours_stat), header(&theirs_stat));
    let columns = header(&theirs_stat).matches(',').count();
    let rows = |s: &str| -> Vec<Vec<String>> {
        s.lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    };
    let (ours_rows, theirs_rows) = (rows(&ours_stat), rows(&theirs_stat));
    let key = |r: &Vec<String>| (r[0].clone(), r[1].clone());
    assert_eq!(
        ours_rows.iter().map(key).collect::<Vec<_>>(),
        theirs_rows.iter().map(key).collect::<Vec<_>>(),
        "same rows in the same order"
    );
    let col = |name: &str| {
        header(&theirs_stat)
            .trim_start_matches("# ")
            .split(',')
            .position(|c| c == name)
            .expect("column")
    };
    for (o, t) in ours_rows.iter().zip(&theirs_rows) {
        assert_eq!(o.len(), t.len(), "columns of {o:?}");
        assert_eq!(o.len() - 1, columns, "one field per column: {o:?}");
        for c in [
            "status", "weight", "act", "bck", "iid", "sid", "type", "mode", "addr",
        ] {
            assert_eq!(o[col(c)], t[col(c)], "{c} of {}/{}", o[0], o[1]);
        }
    }

    let ours_state = cli(&ours.admin(), "show servers state");
    let theirs_state = cli(&theirs.admin(), "show servers state");
    let head = |s: &str| s.lines().take(2).collect::<Vec<_>>().join("\n");
    assert_eq!(head(&ours_state), head(&theirs_state));
    let lines = |s: &str| -> Vec<Vec<String>> {
        s.lines()
            .skip(2)
            .filter(|l| !l.is_empty())
            .map(|l| l.split(' ').map(str::to_owned).collect())
            .collect()
    };
    let (ours_lines, theirs_lines) = (lines(&ours_state), lines(&theirs_state));
    assert_eq!(ours_lines.len(), theirs_lines.len());
    for (o, t) in ours_lines.iter().zip(&theirs_lines) {
        assert_eq!(o.len(), t.len(), "{o:?} vs {t:?}");
        // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight
        // srv_iweight ... bk_f_forced_id srv_f_forced_id srv_fqdn srv_port
        for i in [0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17, 18] {
            assert_eq!(o[i], t[i], "field {i} of {o:?} vs {t:?}");
        }
    }
    // `show stat IID TYPE SID` selects a server by its id.
    let iid = &theirs_rows.iter().find(|r| r[0] == "be").expect("be row")[col("iid")];
    for sid in ["9", "2"] {
        let filter = format!("show stat {iid} 4 {sid}");
        let picked = |s: &str| rows(s).iter().map(key).collect::<Vec<_>>();
        let theirs = picked(&cli(&theirs.admin(), &filter));
        assert_eq!(theirs.len(), 1, "{filter}: {theirs:?}");
        assert_eq!(picked(&cli(&ours.admin(), &filter)), theirs, "{filter}");
    }
    assert_eq!(
        cli(&ours.admin(), "show servers state nope"),
        cli(&theirs.admin(), "show servers state nope")
    );
    assert_eq!(
        cli(&ours.admin(), "show backend"),
        cli(&theirs.admin(), "show backend")
    );
}

#[test]
fn drain_stops_new_connections_keeps_sessions_and_ready_undoes_it() {
    let s = two_servers();
    let admin = s.sockets.admin();
    let mut held = None;
    for _ in 0..4 {
        let (name, conn) = open_named(s.addr).expect("connect");
        if name == "a" {
            held = Some(conn);
            break;
        }
    }
    let mut held = held.expect("a served one of four connections");
    assert_eq!(cli(&admin, "set server be/a state drain"), "\n");
    assert_eq!(names(s.addr, 6), vec!["b"; 6]);
    assert!(
        echo_ok(&mut held),
        "the drained server's session keeps working"
    );
    assert_eq!(server_state(&admin, "a")[6], "8", "srv_admin_state FDRAIN");
    assert!(
        cli(&admin, "show stat").contains("be,a,") && cli(&admin, "show stat").contains(",DRAIN,")
    );
    assert_eq!(cli(&admin, "set server be/a state ready"), "\n");
    assert!(names(s.addr, 4).contains(&"a".to_owned()));
}

#[test]
fn weight_changes_the_distribution() {
    let s = two_servers();
    let admin = s.sockets.admin();
    assert_eq!(cli(&admin, "set server be/a weight 0"), "\n");
    assert_eq!(names(s.addr, 4), vec!["b"; 4]);
    assert_eq!(cli(&admin, "get weight be/a"), "0 (initial 1)\n\n");
    assert_eq!(cli(&admin, "set server be/a weight 3"), "\n");
    let got = names(s.addr, 8);
    let a = got.iter().filter(|n| *n == "a").count();
    assert_eq!(a, 6, "3:1 over 8 connections: {got:?}");
    assert_eq!(server_state(&admin, "a")[7], "3", "srv_uweight");
    assert_eq!(server_state(&admin, "a")[8], "1", "srv_iweight");
    assert_eq!(cli(&admin, "set weight be/a 100%"), "\n");
    assert_eq!(server_state(&admin, "a")[7], "1");
}

#[test]
fn disable_and_enable_server_take_it_out_and_back() {
    let s = two_servers();
    let admin = s.sockets.admin();
    assert_eq!(cli(&admin, "disable server be/a"), "\n");
    assert_eq!(names(s.addr, 4), vec!["b"; 4]);
    assert_eq!(server_state(&admin, "a")[5..7], ["0", "1"]);
    assert_eq!(cli(&admin, "enable server be/a"), "\n");
    assert_eq!(server_state(&admin, "a")[5..7], ["2", "0"]);
    assert!(names(s.addr, 4).contains(&"a".to_owned()));
}

#[test]
fn a_non_admin_socket_refuses_changes() {
    let s = two_servers();
    let user = s.sockets.user();
    for cmd in [
        "set server be/a state maint",
        "set server be/a weight 0",
        "disable server be/a",
        "set weight be/a 0",
    ] {
        assert_eq!(cli(&user, cmd), "Permission denied\n\n", "{cmd}");
    }
    assert!(cli(&user, "show servers state").starts_with("1\n# be_id"));
    assert_eq!(server_state(&user, "a")[5..8], ["2", "0", "1"]);
}

#[test]
fn unknown_servers_and_bad_values_are_refused_and_change_nothing() {
    let s = two_servers();
    let admin = s.sockets.admin();
    let cases = [
        ("set server be/zz state drain", "No such server.\n\n"),
        ("set server nope/a state drain", "No such backend.\n\n"),
        ("set server be state drain", "Require 'backend/server'.\n\n"),
        (
            "set server be/a state sleepy",
            "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n",
        ),
        (
            "set server be/a weight 999",
            "Absolute weight can only be between 0 and 256 inclusive.\n\n",
        ),
        (
            "set server be/a weight 3x",
            "Trailing garbage in weight string\n",
        ),
        ("enable server be/zz", "No such server.\n\n"),
    ];
    for (cmd, want) in cases {
        assert_eq!(cli(&admin, cmd), want, "{cmd}");
    }
    assert_eq!(server_state(&admin, "a")[5..8], ["2", "0", "1"]);
    let got = names(s.addr, 4);
    assert!(got.contains(&"a".to_owned()) && got.contains(&"b".to_owned()));
}

#[test]
fn operator_state_and_weight_survive_a_reload() {
    let s = two_servers();
    let admin = s.sockets.admin();
    assert_eq!(cli(&admin, "set server be/a state maint"), "\n");
    assert_eq!(cli(&admin, "set server be/b weight 5"), "\n");
    s.lb.reload();
    assert!(
        s.lb.wait_for_log("configuration reloaded", Duration::from_secs(10)),
        "{}",
        s.lb.stderr_text()
    );
    assert_eq!(names(s.addr, 4), vec!["b"; 4]);
    assert_eq!(server_state(&admin, "a")[5..7], ["0", "1"]);
    assert_eq!(server_state(&admin, "b")[7], "5");
}

#[test]
fn help_show_info_and_prompt_answer() {
    let s = two_servers();
    let admin = s.sockets.admin();
    let help = cli(&admin, "help");
    assert!(help.starts_with("The following commands are valid at this level:\n"));
    assert!(help.contains("  set server <bk>/<srv> [opts]"));
    let info = cli(&admin, "show info");
    let fields: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(k, _)| k))
        .collect();
    for f in [
        "Name",
        "Version",
        "Pid",
        "Uptime_sec",
        "Maxconn",
        "CurrConns",
        "CumConns",
    ] {
        assert!(fields.contains(&f), "{f} in {info}");
    }
    assert!(info.contains(&format!("Pid: {}\n", s.lb.pid())));
    assert!(cli(&admin, "show info; show backend").ends_with("\n# name\nbe\n\n"));
    assert!(cli(&admin, "frobnicate").starts_with("Unknown command"));

    let mut conn = UnixStream::connect(&admin).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    conn.write_all(b"prompt\nshow backend\nquit\n")
        .expect("write");
    let mut out = String::new();
    conn.read_to_string(&mut out).expect("read");
    assert_eq!(out, "\n> # name\nbe\n\n> ");
}

#[test]
fn garbage_input_does_not_crash_rolelb() {
    let mut s = two_servers();
    let admin = s.sockets.admin();
    let inputs: Vec<Vec<u8>> = vec![
        vec![0xff, 0x00, 0xfe, b'\n'],
        b";;;;;;\n".to_vec(),
        b"set server / state\n".to_vec(),
        b"set server be/a weight -99999999999999999999999999%\n".to_vec(),
        b"set server be/a weight %\n".to_vec(),
        b"show stat x y z w\n".to_vec(),
        vec![b'a'; 100_000],
        b"\n".to_vec(),
        b"\r\n".to_vec(),
    ];
    for input in inputs {
        let mut conn = UnixStream::connect(&admin).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = conn.write_all(&input);
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = conn.read_to_end(&mut out);
    }
    // A client that connects and says nothing does not hold anything up either.
    let _idle = UnixStream::connect(&admin).expect("connect");
    assert!(s.lb.exited().is_none(), "{}", s.lb.stderr_text());
    assert!(cli(&admin, "show info").starts_with("Name: rolelb\n"));
    assert_eq!(server_state(&admin, "a")[5..8], ["2", "0", "1"]);
}

#[test]
fn a_socket_that_cannot_be_bound_stops_startup_naming_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing-dir").join("admin.sock");
    let cfg = format!(
        "global\n    stats socket {} level admin\n{DEFAULTS}\nlisten li\n    bind 127.0.0.1:{}\n    server x 127.0.0.1:1\n",
        path.display(),
        free_port()
    );
    let cfg_path = dir.path().join("bad.cfg");
    std::fs::write(&cfg_path, cfg).expect("write");
    let out = std::process::Command::new(common::rolelb_bin())
        .arg("-f")
        .arg(&cfg_path)
        .output()
        .expect("run rolelb");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!(
            "{}:2: cannot bind stats socket",
            cfg_path.display()
        )),
        "{text}"
    );
}
