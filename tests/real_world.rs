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

#[path = "real_world/cases.rs"]
mod cases;
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use cases::{CASES, Case, Env, Speaks};
use common::{
    HAPROXY_BIN, NamedServer, Proc, command, free_port, is_listening, require_bin, rolelb_bin,
    stat_row, stats_cli, wait_until,
};
use nix::sys::signal::Signal;
use socket2::{Domain, Socket, Type};

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
                    Speaks::Https(ok_paths) => answer_https(conn, ok_paths),
                    Speaks::Mysql => answer_mysql(conn),
                    Speaks::Banner(text) => answer_banner(conn, text),
                    Speaks::Redis { master } => answer_redis(conn, master),
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
    serve_http(&mut conn, ok_paths);
    let _ = conn.shutdown(Shutdown::Write);
    let _ = conn.read(&mut [0u8; 64]);
}

/// [`answer_http`] inside TLS, with a self-signed certificate made once per test process.
fn answer_https(conn: TcpStream, ok_paths: &[&str]) {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ServerConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("a self-signed certificate");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key)
            .expect("the server certificate");
        Arc::new(config)
    });
    let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
    let Ok(tls) = rustls::ServerConnection::new(Arc::clone(config)) else {
        return;
    };
    let mut stream = rustls::StreamOwned::new(tls, conn);
    serve_http(&mut stream, ok_paths);
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

/// Reads one request head from `conn` and writes the answer for its path.
fn serve_http(conn: &mut (impl Read + Write), ok_paths: &[&str]) {
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
    let _ = conn.flush();
}

/// Writes `text` at once, then closes once the peer has read it.
fn answer_banner(mut conn: TcpStream, text: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = conn.write_all(text.as_bytes());
    let _ = conn.shutdown(Shutdown::Write);
    let mut buf = [0u8; 256];
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

/// Answers RESP commands line by line until QUIT or the peer closes.
fn answer_redis(mut conn: TcpStream, master: bool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
    let mut pending = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            return;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            pending.drain(..end + 2);
            let reply = if line == "ping" {
                "+PONG\r\n".to_string()
            } else if line.starts_with("info") {
                let role = if master { "master" } else { "slave" };
                let body = format!("# Replication\r\nrole:{role}\r\nconnected_slaves:0\r\n");
                format!("${}\r\n{body}\r\n", body.len())
            } else if line == "quit" {
                let _ = conn.write_all(b"+OK\r\n");
                return;
            } else {
                "-ERR unknown command\r\n".to_string()
            };
            if conn.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }
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
    _dns: Vec<common::Dnsmasq>,
    _dir: tempfile::TempDir,
}

impl Stage {
    fn new(case: &Case) -> Stage {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut servers: Vec<NamedServer> = Vec::new();
        let mut checks = Vec::new();
        let mut dns = Vec::new();
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
                Env::Check(speaks) => responder(&mut checks, speaks),
                Env::Dead => format!("127.0.0.1:{}", free_port()),
                // Each run gets its own socket (set in `run`); this one is for `-c`.
                Env::Socket => dir.path().join("check.sock").display().to_string(),
                Env::Text(t) => t.to_string(),
                Env::Dns(names) => {
                    let hosts: String = names.iter().map(|n| format!("127.0.0.1 {n}\n")).collect();
                    let server = common::Dnsmasq::start(&hosts);
                    let addr = format!("127.0.0.1:{}", server.port());
                    dns.push(server);
                    addr
                }
                Env::Script(body) => {
                    use std::os::unix::fs::PermissionsExt;
                    let path = dir.path().join(format!("{name}.sh"));
                    std::fs::write(&path, body).expect("writing the script");
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .expect("making the script executable");
                    path.display().to_string()
                }
            };
            env.insert(name.to_string(), value);
        }
        Stage {
            env,
            _servers: servers,
            _checks: checks,
            _dns: dns,
            _dir: dir,
        }
    }
}

/// `BIN -c -f FILE` with `env`: (valid, output).
fn check(bin: &Path, file: &Path, env: &BTreeMap<String, String>) -> (bool, String) {
    common::check_file(bin, file, |cmd| {
        cmd.envs(env);
    })
}

/// Connects from 127.0.0.`from` to `port` (with `proxy_header`, sends a PROXY v1 header for
/// 10.0.0.`from` first) and reads the server's name (`-` on a close);
/// returns it with the open connection.
fn connect_from(port: u16, from: u8, proxy_header: bool) -> (String, Option<TcpStream>) {
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
    if proxy_header {
        let header = format!("PROXY TCP4 10.0.0.{from} 127.0.0.1 40000 {port}\r\n");
        if conn.write_all(header.as_bytes()).is_err() {
            return ("-".to_string(), None);
        }
    }
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
        let (name, conn) = connect_from(port, *from, case.proxy_header);
        out.push(format!("{port_var} from 127.0.0.{from} -> {name}"));
        held.extend(conn);
    }
    drop(held);
    if let Some((port_var, path, basic)) = case.stats_page {
        let port: u16 = env[port_var].parse().expect("a port");
        out.push(stats_page(port, path, None));
        out.push(stats_page(port, path, Some(basic)));
    }
    proc.stop();
    out
}

/// The status of `GET path` on the stats listener at `port`, with `basic` credentials if given.
fn stats_page(port: u16, path: &str, basic: Option<&str>) -> String {
    let auth = basic.map(|b| format!("Basic {b}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let status = common::http_request(to, "GET", path, &headers, "", Duration::from_secs(5))
        .map(|(status, _, _)| status.to_string())
        .unwrap_or_else(|e| format!("error {e}"));
    let with = if basic.is_some() { "with" } else { "without" };
    format!("stats page {path} {with} credentials -> {status}")
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
    if let Some(gap) = case.known_gap {
        assert_ne!(
            rolelb, haproxy,
            "{file}: rolelb now routes as HAProxy 2.6; the known gap ({gap}) is gone: drop it"
        );
        let servers = |t: &[String]| {
            let mut v: Vec<String> = reached(t).iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(
            servers(&rolelb),
            servers(&haproxy),
            "{file}: beyond the known gap ({gap}), rolelb (left) and HAProxy (right) differ"
        );
        return rolelb;
    }
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
    assert!(files.len() >= 20, "the corpus has {} configs", files.len());
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

/// The servers each client of a transcript reached.
fn reached(t: &[String]) -> Vec<&str> {
    t.iter()
        .map(|l| l.rsplit(" -> ").next().unwrap_or_default())
        .collect()
}

#[test]
fn cockroachdb_skips_the_node_that_is_not_ready() {
    let t = same_routes("cockroachdb.cfg");
    assert!(!reached(&t).contains(&"crdb3"), "{t:#?}");
}

#[test]
fn patroni_reads_fall_back_to_the_primary_when_no_replica_is_up() {
    let t = same_routes("patroni-replica-fallback.cfg");
    assert!(reached(&t).iter().all(|s| *s == "pg1"), "{t:#?}");
}

#[test]
fn tidb_leastconn_spreads_held_connections_and_its_stats_page_asks_for_the_password() {
    let t = same_routes("tidb.cfg");
    assert!(
        t.iter().any(|l| l.ends_with("without credentials -> 401")),
        "{t:#?}"
    );
    assert!(
        t.iter().any(|l| l.ends_with("with credentials -> 200")),
        "{t:#?}"
    );
    for s in ["tidb1", "tidb2", "tidb3"] {
        assert!(reached(&t).contains(&s), "{t:#?}");
    }
}

#[test]
fn stats_userlist_config_balances_its_database() {
    let t = same_routes("stats-userlist.cfg");
    assert_eq!(reached(&t)[..4], ["db1", "db2", "db1", "db2"], "{t:#?}");
    assert!(
        t[4].ends_with("-> 401") && t[5].ends_with("-> 200"),
        "{t:#?}"
    );
}

#[test]
fn acl_allowlist_rejects_other_sources() {
    let t = same_routes("acl-allowlist.cfg");
    assert_eq!(
        reached(&t),
        ["pg1", "pg1", "-", "pg1", "-", "pg1"],
        "{t:#?}"
    );
}

#[test]
fn nbsrv_failover_sends_clients_to_the_standby() {
    let t = same_routes("primary-standby-failover.cfg");
    assert!(reached(&t).iter().all(|s| *s == "standby"), "{t:#?}");
}

#[test]
fn accept_proxy_hashes_the_address_in_the_header() {
    let t = same_routes("nlb-accept-proxy.cfg");
    assert!(!reached(&t).contains(&"-"), "{t:#?}");
}

#[test]
fn source_hash_keeps_a_client_on_its_pooler() {
    let t = same_routes("pgpool-source-hash.cfg");
    let r = reached(&t);
    assert_eq!(r[0], r[11], "{t:#?}");
}

#[test]
fn redispatch_moves_a_refused_connection_to_another_server() {
    let t = same_routes("retries-redispatch.cfg");
    assert!(!reached(&t).contains(&"-"), "{t:#?}");
}

#[test]
fn redis_check_keeps_only_the_master() {
    let t = same_routes("redis-sentinel.cfg");
    assert!(reached(&t).iter().all(|s| *s == "redis2"), "{t:#?}");
}

#[test]
fn clustercheck_one_node_backend_uses_the_first_node() {
    let t = same_routes("pxc-clustercheck.cfg");
    assert!(!reached(&t).contains(&"c3"), "{t:#?}");
}

#[test]
fn clustercontrol_tcp_check_reads_the_mysqlchk_line() {
    let t = same_routes("clustercontrol-mysqlchk.cfg");
    assert!(!reached(&t).contains(&"galera3"), "{t:#?}");
}

#[test]
fn yugabyte_takes_clients_round_robin() {
    let t = same_routes("yugabyte-ysql.cfg");
    assert_eq!(reached(&t)[..3], ["yb0", "yb1", "yb2"], "{t:#?}");
}

/// Weighted leastconn: the same servers in the same order as HAProxy.
#[test]
fn vtgate_weighted_leastconn_gives_the_heavier_gate_its_share() {
    let t = same_routes("vitess-vtgate.cfg");
    let a = reached(&t).iter().filter(|s| **s == "vtgate-a").count();
    assert!(a >= 3, "{t:#?}");
}

#[test]
fn sidecar_names_servers_from_the_environment() {
    let t = same_routes("kubernetes-sidecar.cfg");
    assert!(reached(&t).iter().all(|s| *s == "pg-primary"), "{t:#?}");
}

#[test]
fn galera_balance_first_keeps_writers_on_the_first_node() {
    let t = same_routes("mariadb-galera-first.cfg");
    assert!(reached(&t).iter().all(|s| *s == "galera1"), "{t:#?}");
}

#[test]
fn patroni_checks_over_https_route_writes_and_reads() {
    let t = same_routes("patroni-https-api.cfg");
    for line in &t {
        let want = if line.starts_with("PRIMARY_PORT") {
            "pg1"
        } else {
            "pg2"
        };
        assert!(line.ends_with(&format!("-> {want}")), "{t:#?}");
    }
}

#[test]
fn an_external_check_script_takes_its_failing_node_out() {
    let t = same_routes("pgsql-external-check.cfg");
    let servers = reached(&t);
    assert!(!servers.contains(&"pg2"), "{t:#?}");
    assert!(
        servers.contains(&"pg1") && servers.contains(&"pg3"),
        "{t:#?}"
    );
}

#[test]
fn server_template_slots_fill_from_dns() {
    let t = same_routes("fly-dns-template.cfg");
    assert!(reached(&t).iter().all(|s| *s == "pg-app"), "{t:#?}");
}
