//! The configs people actually run (`tests/configs/real-world/*.cfg`, each written in the
//! style of a public project's shipped haproxy.cfg) under HAProxy 2.6 and rolelb: both accept
//! each file with `-c`, then each runs it in turn, with the same environment pointing its
//! servers at stand-in backends on the same ports, and the same clients (from 127.0.0.X
//! sources) must reach the same servers in the same order.
//!
//! The files name every address through environment variables (`"${PG1}"`, `bind
//! :"${PORT}"`), so the text checked is the text in the repository. Each file has one [`Case`]
//! here saying what each variable stands for, the server states to wait for (so health checks
//! have settled the same way before any client connects) and the clients to send.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::{
    HAPROXY_BIN, NamedServer, Proc, command, free_port, is_listening, require_bin, rolelb_bin,
    stat_row, stats_cli, wait_until,
};
use nix::sys::signal::Signal;
use socket2::{Domain, Socket, Type};

/// What one environment variable of a config stands for.
#[derive(Clone, Copy)]
enum Env {
    /// A free port for a `bind` line.
    Port,
    /// `127.0.0.1:PORT` of the stand-in server of that name.
    Server(&'static str),
    /// `127.0.0.1`, the host of every stand-in.
    Host,
    /// The port of the stand-in server of that name.
    PortOf(&'static str),
    /// The port of an HTTP check responder answering 200 to these paths, 503 to others (a
    /// Patroni REST API, a clustercheck script).
    Http(&'static [&'static str]),
    /// The port of a responder that sends a MySQL server's greeting and an OK packet.
    Mysql,
    /// The path of the runtime socket, in the run's own directory.
    Socket,
    /// This text.
    Text(&'static str),
}

/// One config of the corpus and how to run it.
struct Case {
    file: &'static str,
    env: &'static [(&'static str, Env)],
    /// `(proxy, server, status)` as `show stat` must show them before clients connect.
    settled: &'static [(&'static str, &'static str, &'static str)],
    /// `(port variable, source 127.0.0.X)`, in order; every connection stays open until the
    /// last one has its answer, so `leastconn` sees them all.
    clients: &'static [(&'static str, u8)],
}

/// The check interval the tests give the configs that read `CHECK_INTER`.
const FAST_CHECKS: (&str, Env) = ("CHECK_INTER", Env::Text("200ms"));

const CASES: &[Case] = &[
    Case {
        file: "patroni.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("STATS_PORT", Env::Port),
            ("PRIMARY_PORT", Env::Port),
            ("REPLICA_PORT", Env::Port),
            ("PG1", Env::Server("pg1")),
            ("PG2", Env::Server("pg2")),
            ("PG3", Env::Server("pg3")),
            ("PG1_API", Env::Http(&["/primary", "/read-write"])),
            ("PG2_API", Env::Http(&["/replica", "/read-only"])),
            ("PG3_API", Env::Http(&["/replica", "/read-only"])),
            FAST_CHECKS,
        ],
        settled: &[
            ("primary", "postgresql_1", "UP"),
            ("primary", "postgresql_2", "DOWN"),
            ("primary", "postgresql_3", "DOWN"),
            ("replicas", "postgresql_1", "DOWN"),
            ("replicas", "postgresql_2", "UP"),
            ("replicas", "postgresql_3", "UP"),
        ],
        clients: &[
            ("PRIMARY_PORT", 2),
            ("REPLICA_PORT", 2),
            ("REPLICA_PORT", 3),
            ("PRIMARY_PORT", 3),
            ("REPLICA_PORT", 4),
            ("REPLICA_PORT", 5),
            ("PRIMARY_PORT", 4),
        ],
    },
    Case {
        file: "pgbouncer.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("PGBOUNCER_PORT", Env::Port),
            ("PGB1", Env::Server("pgbouncer1")),
            ("PGB2", Env::Server("pgbouncer2")),
            FAST_CHECKS,
        ],
        settled: &[
            ("pgbouncers", "pgbouncer1", "UP"),
            ("pgbouncers", "pgbouncer2", "UP"),
        ],
        clients: &[
            ("PGBOUNCER_PORT", 2),
            ("PGBOUNCER_PORT", 3),
            ("PGBOUNCER_PORT", 4),
            ("PGBOUNCER_PORT", 5),
            ("PGBOUNCER_PORT", 6),
        ],
    },
    Case {
        file: "galera.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("WRITER_PORT", Env::Port),
            ("READER_PORT", Env::Port),
            ("NODE1", Env::Server("node1")),
            ("NODE2", Env::Server("node2")),
            ("NODE3", Env::Server("node3")),
            ("NODE1_CHECK", Env::Mysql),
            ("NODE2_CHECK", Env::Mysql),
            ("NODE3_CHECK", Env::Mysql),
            FAST_CHECKS,
        ],
        settled: &[
            ("pxc-writer", "node1", "UP"),
            ("pxc-writer", "node2", "UP"),
            ("pxc-writer", "node3", "UP"),
            ("pxc-reader", "node1", "UP"),
            ("pxc-reader", "node2", "UP"),
            ("pxc-reader", "node3", "UP"),
        ],
        clients: &[
            ("WRITER_PORT", 2),
            ("WRITER_PORT", 3),
            ("WRITER_PORT", 4),
            ("READER_PORT", 2),
            ("READER_PORT", 3),
            ("READER_PORT", 4),
            ("READER_PORT", 5),
            ("WRITER_PORT", 5),
        ],
    },
    Case {
        file: "mysql-replicas.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("WRITE_PORT", Env::Port),
            ("READ_PORT", Env::Port),
            ("PRIMARY", Env::Server("primary")),
            ("REPLICA1", Env::Server("replica1")),
            ("REPLICA2", Env::Server("replica2")),
            ("REPLICA3", Env::Server("replica3")),
            FAST_CHECKS,
        ],
        settled: &[
            ("mysql_replicas", "mysql-replica1", "UP"),
            ("mysql_replicas", "mysql-replica2", "UP"),
            ("mysql_replicas", "mysql-replica3", "UP"),
            ("mysql_primary", "mysql-primary", "UP"),
        ],
        clients: &[
            ("WRITE_PORT", 2),
            ("READ_PORT", 2),
            ("READ_PORT", 3),
            ("READ_PORT", 4),
            ("READ_PORT", 5),
            ("READ_PORT", 6),
            ("WRITE_PORT", 3),
            ("READ_PORT", 7),
        ],
    },
    Case {
        file: "container-env.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("PORT", Env::Port),
            ("DB_HOST", Env::Host),
            ("DB_PORT", Env::PortOf("managed-db")),
            FAST_CHECKS,
        ],
        settled: &[("db", "db", "UP")],
        clients: &[("PORT", 2), ("PORT", 3)],
    },
];

/// The corpus directory.
fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/real-world")
}

/// The case for `file`.
fn case(file: &str) -> &'static Case {
    CASES
        .iter()
        .find(|c| c.file == file)
        .unwrap_or_else(|| panic!("no case for {file}"))
}

/// What a [`CheckResponder`] speaks.
#[derive(Clone, Copy)]
enum Speaks {
    /// HTTP: 200 for these paths, 503 for any other.
    Http(&'static [&'static str]),
    /// MySQL: the greeting, then an OK packet once the client's login arrives.
    Mysql,
}

/// A tiny health-check peer on a port of its own: answers one check per connection.
struct CheckResponder {
    port: u16,
    stopping: Arc<AtomicBool>,
}

impl CheckResponder {
    fn start(speaks: Speaks) -> CheckResponder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("check responder: bind");
        let port = listener.local_addr().expect("check responder: addr").port();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                thread::spawn(move || match speaks {
                    Speaks::Http(ok_paths) => answer_http(conn, ok_paths),
                    Speaks::Mysql => answer_mysql(conn),
                });
            }
        });
        CheckResponder { port, stopping }
    }
}

impl Drop for CheckResponder {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one request head and answers by its path.
fn answer_http(mut conn: TcpStream, ok_paths: &[&str]) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("");
    let status = if ok_paths.contains(&path) {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    let _ = conn.write_all(
        format!("HTTP/1.0 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let _ = conn.shutdown(Shutdown::Write);
    let _ = conn.read(&mut buf);
}

/// Sends a MySQL server's greeting, reads the login packet (if any), answers OK.
fn answer_mysql(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
    if conn.write_all(&mysql_greeting()).is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    if !matches!(conn.read(&mut buf), Ok(n) if n > 0) {
        return;
    }
    let _ = conn.write_all(&[7, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0]);
    let _ = conn.shutdown(Shutdown::Write);
    let _ = conn.read(&mut buf);
}

/// A MySQL server's greeting packet (protocol 10).
fn mysql_greeting() -> Vec<u8> {
    let mut hs = vec![0x0a];
    hs.extend_from_slice(b"10.11.6-MariaDB\0");
    hs.extend_from_slice(&7u32.to_le_bytes());
    hs.extend_from_slice(b"abcdefgh\0");
    hs.extend_from_slice(&[0xfe, 0xf7, 0x21, 0x02, 0x00, 0xff, 0x81, 0x15]);
    hs.extend_from_slice(&[0; 10]);
    hs.extend_from_slice(b"ijklmnopqrst\0");
    hs.extend_from_slice(b"mysql_native_password\0");
    let len = hs.len() as u32;
    let mut out = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, 0];
    out.extend_from_slice(&hs);
    out
}

/// Starts a responder, keeps it in `checks`, and gives its port as a variable's value.
fn responder(checks: &mut Vec<CheckResponder>, speaks: Speaks) -> String {
    let c = CheckResponder::start(speaks);
    let port = c.port.to_string();
    checks.push(c);
    port
}

/// Stand-in backends and the environment a case runs with (ports shared by both runs).
struct Stage {
    env: BTreeMap<String, String>,
    _servers: Vec<NamedServer>,
    _checks: Vec<CheckResponder>,
    _dir: tempfile::TempDir,
}

impl Stage {
    fn new(case: &Case) -> Stage {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut servers: Vec<NamedServer> = Vec::new();
        let mut checks = Vec::new();
        let mut env = BTreeMap::new();
        let server = |name: &str, servers: &mut Vec<NamedServer>| -> SocketAddr {
            if let Some(s) = servers.iter().find(|s| s.name() == name) {
                return s.addr();
            }
            let s = NamedServer::start(name);
            let addr = s.addr();
            servers.push(s);
            addr
        };
        for (name, what) in case.env {
            let value = match *what {
                Env::Port => free_port().to_string(),
                Env::Server(s) => server(s, &mut servers).to_string(),
                Env::Host => "127.0.0.1".to_string(),
                Env::PortOf(s) => server(s, &mut servers).port().to_string(),
                Env::Http(paths) => responder(&mut checks, Speaks::Http(paths)),
                Env::Mysql => responder(&mut checks, Speaks::Mysql),
                // Each run gets its own socket (set in `run`); this one is for `-c`.
                Env::Socket => dir.path().join("check.sock").display().to_string(),
                Env::Text(t) => t.to_string(),
            };
            env.insert(name.to_string(), value);
        }
        Stage {
            env,
            _servers: servers,
            _checks: checks,
            _dir: dir,
        }
    }
}

/// `BIN -c -f FILE` with `env`: (valid, output).
fn check(bin: &Path, file: &Path, env: &BTreeMap<String, String>) -> (bool, String) {
    let out = Command::new(bin)
        .args(["-c", "-f"])
        .arg(file)
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Connects from 127.0.0.`from` to `port` and reads the server's name (`-` on a close);
/// returns it with the open connection.
fn connect_from(port: u16, from: u8) -> (String, Option<TcpStream>) {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, from), 0)).into())
        .expect("bind the client address");
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    if s.connect(&to.into()).is_err() {
        return ("refused".to_string(), None);
    }
    let mut conn: TcpStream = s.into();
    conn.set_read_timeout(Some(Duration::from_secs(8)))
        .expect("read timeout");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = conn.read(&mut byte) {
        if byte[0] == b'\n' {
            break;
        }
        got.push(byte[0]);
    }
    let name = String::from_utf8_lossy(&got).into_owned();
    if name.is_empty() {
        ("-".to_string(), None)
    } else {
        (name, Some(conn))
    }
}

/// Runs `which` ("haproxy" or "rolelb") on the case's file; returns what each client reached.
fn run(which: &str, case: &Case, stage: &Stage) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("admin.sock");
    let mut env = stage.env.clone();
    for (name, what) in case.env {
        if matches!(what, Env::Socket) {
            env.insert(name.to_string(), sock.display().to_string());
        }
    }
    let (bin, args): (PathBuf, &[&str]) = match which {
        "haproxy" => (require_bin(HAPROXY_BIN), &["-db"]),
        _ => (rolelb_bin(), &[]),
    };
    let mut cmd = command(&bin, false, dir.path());
    cmd.args(args)
        .arg("-f")
        .arg(corpus_dir().join(case.file))
        .envs(&env);
    let log = dir.path().join("log");
    let mut proc = Proc::spawn(which, &mut cmd, &log, Signal::SIGTERM);
    for (name, what) in case.env {
        if matches!(what, Env::Port) {
            let port: u16 = env[*name].parse().expect("a port");
            proc.wait_ready(&format!("waiting for {name}={port}"), || is_listening(port));
        }
    }
    proc.wait_ready("waiting for the runtime socket", || sock.exists());
    let mut last = String::new();
    let settled = wait_until(Duration::from_secs(20), || {
        last = stats_cli(&sock, "show stat");
        case.settled.iter().all(|(px, sv, want)| {
            stat_row(&last, px, sv)
                .and_then(|r| r.get("status").cloned())
                .is_some_and(|s| s == *want)
        })
    });
    assert!(
        settled,
        "{which} on {}: servers never reached {:?}:\n{last}",
        case.file, case.settled
    );
    let mut held = Vec::new();
    let mut out = Vec::new();
    for (port_var, from) in case.clients {
        let port: u16 = env[*port_var].parse().expect("a port");
        let (name, conn) = connect_from(port, *from);
        out.push(format!("{port_var} from 127.0.0.{from} -> {name}"));
        held.extend(conn);
    }
    drop(held);
    proc.stop();
    out
}

/// Both accept the case's file, and the same clients reach the same servers under both.
fn same_routes(file: &str) -> Vec<String> {
    let case = case(file);
    let stage = Stage::new(case);
    let path = corpus_dir().join(file);
    for bin in [require_bin(HAPROXY_BIN), rolelb_bin()] {
        let (ok, text) = check(&bin, &path, &stage.env);
        assert!(ok, "{} -c refuses {file}:\n{text}", bin.display());
    }
    let haproxy = run("haproxy", case, &stage);
    let rolelb = run("rolelb", case, &stage);
    assert_eq!(
        rolelb, haproxy,
        "{file}: rolelb (left) and HAProxy 2.6 (right) sent clients to different servers"
    );
    rolelb
}

#[test]
fn every_config_of_the_corpus_has_a_case_and_names_its_model() {
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("reading the corpus directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".cfg"))
        .collect();
    files.sort();
    for f in &files {
        case(f);
        let text = std::fs::read_to_string(corpus_dir().join(f)).expect("reading a config");
        assert!(
            text.starts_with("# In the style of "),
            "{f} must open with the project it imitates"
        );
    }
    assert_eq!(files.len(), CASES.len(), "{files:?}");
}

#[test]
fn patroni_writes_reach_the_primary_and_reads_the_replicas() {
    let t = same_routes("patroni.cfg");
    for line in &t {
        let on_primary = line.starts_with("PRIMARY_PORT");
        assert_eq!(line.ends_with("-> pg1"), on_primary, "{t:#?}");
    }
}

#[test]
fn pgbouncer_pair_takes_clients_in_turn() {
    let t = same_routes("pgbouncer.cfg");
    assert!(t.iter().any(|l| l.ends_with("pgbouncer2")), "{t:#?}");
}

#[test]
fn galera_writer_sticks_to_one_node() {
    let t = same_routes("galera.cfg");
    let writers: Vec<&String> = t.iter().filter(|l| l.starts_with("WRITER")).collect();
    assert!(
        writers.iter().all(|l| l.ends_with("-> node1")),
        "{writers:#?}"
    );
}

#[test]
fn mysql_reads_spread_by_leastconn() {
    let t = same_routes("mysql-replicas.cfg");
    assert!(t[0].ends_with("-> primary"), "{t:#?}");
}

#[test]
fn container_env_reaches_the_database_from_the_environment() {
    let t = same_routes("container-env.cfg");
    assert!(t.iter().all(|l| l.ends_with("-> managed-db")), "{t:#?}");
}
