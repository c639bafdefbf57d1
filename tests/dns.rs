//! Server addresses from DNS at run time (`resolvers` sections), against a real DNS server:
//! dnsmasq on an ephemeral port answers from a hosts file the test rewrites. A name's new
//! address moves new connections within `hold valid` plus one resolution while every open
//! session stays; with the name server gone the last address serves until `hold timeout`,
//! then the server is MAINT (resolution). Side by side with HAProxy 2.6 on the same config
//! and the same dnsmasq: the same server answers before and after a change and while DNS is
//! down, and the `server-template` slots (A/AAAA and SRV records) are filled or MAINT
//! (resolution) alike in `show stat`, `show servers state` and `/metrics`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Dnsmasq, Haproxy, NamedServer, Rolelb, free_port, http_request, open_named, stat_row,
    stats_cli, wait_until, who_answers,
};

/// The database name's servers: `a` at 127.0.0.2, `b` at 127.0.0.3 (same port), and `o`, the
/// server of another name, at 127.0.0.4.
struct Servers {
    port: u16,
    other_port: u16,
    _a: NamedServer,
    _b: NamedServer,
    _o: NamedServer,
}

impl Servers {
    fn start() -> Servers {
        let port = free_port();
        let other_port = free_port();
        Servers {
            port,
            other_port,
            _a: NamedServer::start_on("a", SocketAddr::from(([127, 0, 0, 2], port))),
            _b: NamedServer::start_on("b", SocketAddr::from(([127, 0, 0, 3], port))),
            _o: NamedServer::start_on("o", SocketAddr::from(([127, 0, 0, 4], other_port))),
        }
    }
}

/// The frontends of one proxy under test and its stats socket.
struct Proxy {
    db: SocketAddr,
    other: SocketAddr,
    tpl: SocketAddr,
    sock: PathBuf,
}

impl Proxy {
    fn new(dir: &Path, tag: &str) -> Proxy {
        let at = |p| SocketAddr::from(([127, 0, 0, 1], p));
        Proxy {
            db: at(free_port()),
            other: at(free_port()),
            tpl: at(free_port()),
            sock: dir.join(format!("{tag}.sock")),
        }
    }

    /// The configuration both rolelb and HAProxy run: `db.test` for `listen db`,
    /// `other.test` for `listen other`, three checked template slots for `tpl.test`.
    fn config(&self, dns: &Dnsmasq, servers: &Servers, resolvers_extra: &str) -> String {
        self.config_with(dns, servers, resolvers_extra, "", "")
    }

    /// [`Proxy::config`] with lines added to `global` and sections at the end (where each
    /// of rolelb and HAProxy serves `/metrics`).
    fn config_with(
        &self,
        dns: &Dnsmasq,
        servers: &Servers,
        resolvers_extra: &str,
        global_extra: &str,
        tail: &str,
    ) -> String {
        format!(
            "global\n    stats socket {sock} level admin\n{global_extra}\n\
             resolvers test\n    nameserver dns1 127.0.0.1:{dns}\n    hold valid 1s\n{resolvers_extra}\n\
             defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\n\
             listen db\n    bind {db}\n    server s1 db.test:{port} resolvers test init-addr none resolve-prefer ipv4\n\n\
             listen other\n    bind {other}\n    server o1 other.test:{other_port} resolvers test init-addr none\n\n\
             listen tpl\n    bind {tpl}\n    server-template t 3 tpl.test:{port} resolvers test init-addr none check inter 500ms\n\n{tail}",
            sock = self.sock.display(),
            dns = dns.port(),
            db = self.db,
            other = self.other,
            tpl = self.tpl,
            port = servers.port,
            other_port = servers.other_port,
        )
    }

    /// `show stat`'s status of `px/sv`.
    fn status(&self, px: &str, sv: &str) -> String {
        let csv = stats_cli(&self.sock, "show stat");
        stat_row(&csv, px, sv)
            .and_then(|r| r.get("status").cloned())
            .unwrap_or_default()
    }

    /// The template slots as `show stat` shows them, sorted: the status, and the address of
    /// those that are not in maintenance (which slot takes which record is not compared).
    fn slots(&self) -> Vec<String> {
        template_slots(&self.sock, "tpl", "t", false)
    }
}

/// The servers PREFIX1..PREFIX3 of `px` as `show stat` shows them, sorted: the status, and
/// for those not in maintenance the address (and `weight`).
fn template_slots(sock: &Path, px: &str, prefix: &str, weight: bool) -> Vec<String> {
    let csv = stats_cli(sock, "show stat");
    let mut slots: Vec<String> = (1..=3)
        .map(|i| {
            let row = stat_row(&csv, px, &format!("{prefix}{i}")).unwrap_or_default();
            let field = |k: &str| row.get(k).cloned().unwrap_or_default();
            let status = field("status");
            match (status.starts_with("MAINT"), weight) {
                (true, _) => status,
                (false, false) => format!("{status} {}", field("addr")),
                (false, true) => format!("{status} {} weight {}", field("addr"), field("weight")),
            }
        })
        .collect();
    slots.sort();
    slots
}

/// Columns of `show servers state BACKEND` for `server`: its address, fqdn, port, SRV name.
fn state_row(sock: &Path, backend: &str, server: &str) -> Vec<String> {
    let text = stats_cli(sock, &format!("show servers state {backend}"));
    let mut lines = text.lines().skip(1);
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(' ')
        .collect();
    let row: Vec<&str> = lines
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(3) == Some(&server))
        .unwrap_or_default();
    ["srv_addr", "srv_fqdn", "srv_port", "srvrecord"]
        .iter()
        .map(|c| {
            let i = header.iter().position(|h| h == c);
            i.and_then(|i| row.get(i)).unwrap_or(&"?").to_string()
        })
        .collect()
}

/// How many `tpl` servers `/metrics` at `addr` shows in each state (`haproxy_server_status`
/// samples of value 1), sorted.
fn tpl_metrics(addr: SocketAddr) -> Vec<String> {
    let text = http_request(addr, "GET", "/metrics", &[], "", Duration::from_secs(5))
        .map(|(_, _, body)| body)
        .unwrap_or_default();
    let mut states: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("haproxy_server_status{") && l.contains("proxy=\"tpl\""))
        .filter(|l| l.ends_with(" 1"))
        .filter_map(|l| Some(l.split("state=\"").nth(1)?.split('"').next()?.to_owned()))
        .collect();
    states.sort();
    states
}

/// Whether a session opened earlier still echoes.
fn echoes(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 5];
    conn.write_all(b"ping\n").is_ok() && conn.read_exact(&mut buf).is_ok() && &buf == b"ping\n"
}

const HOSTS: &str =
    "127.0.0.2 db.test\n127.0.0.4 other.test\n127.0.0.2 tpl.test\n127.0.0.3 tpl.test\n";
const HOSTS_CHANGED: &str = "127.0.0.3 db.test\n127.0.0.4 other.test\n127.0.0.3 tpl.test\n";

/// `hold valid 1s` + one resolution (`timeout resolve 1s`), and margin for a loaded machine.
const MOVE_BOUND: Duration = Duration::from_secs(2 + 4);

#[test]
fn a_new_address_moves_new_connections_and_open_sessions_stay() {
    let dns = Dnsmasq::start(HOSTS);
    let servers = Servers::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let px = Proxy::new(dir.path(), "lb");
    let lb = Rolelb::start(&px.config(&dns, &servers, ""));
    assert!(
        wait_until(Duration::from_secs(10), || who_answers(px.db)
            .is_ok_and(|n| n == "a")),
        "db.test never reached a: {}",
        lb.stderr_text()
    );
    let (name, mut to_other) = open_named(px.other).expect("a session through 'other'");
    assert_eq!(name, "o");
    let (name, mut to_a) = open_named(px.db).expect("a session to a");
    assert_eq!(name, "a");

    dns.set_hosts(HOSTS_CHANGED);
    let changed = Instant::now();
    assert!(
        wait_until(MOVE_BOUND, || who_answers(px.db).is_ok_and(|n| n == "b")),
        "new connections did not move to b within {MOVE_BOUND:?}: {}",
        lb.stderr_text()
    );
    eprintln!("moved after {:?}", changed.elapsed());
    assert_eq!(px.status("db", "s1"), "no check");
    // The swap closed nothing: neither the session to the other name's server nor the one
    // to the old address.
    assert!(echoes(&mut to_other), "the session to o was closed");
    assert!(echoes(&mut to_a), "the session to a was closed");
    assert_eq!(who_answers(px.other).expect("other"), "o");

    // A reload starts from what DNS said: the server stays at b, no session is closed.
    let mark = lb.log_mark();
    lb.reload();
    assert!(
        lb.wait_for_log_since(mark, "configuration reloaded", Duration::from_secs(10)),
        "no reload: {}",
        lb.stderr_text()
    );
    assert_eq!(who_answers(px.db).expect("db after the reload"), "b");
    assert_eq!(px.status("db", "s1"), "no check");
    assert!(
        echoes(&mut to_other) && echoes(&mut to_a),
        "the reload closed a session"
    );
}

#[test]
fn with_the_name_server_gone_the_last_address_serves_until_hold_timeout() {
    let mut dns = Dnsmasq::start(HOSTS);
    let servers = Servers::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let ours = Proxy::new(dir.path(), "lb");
    let theirs = Proxy::new(dir.path(), "haproxy");
    let extra = "    hold timeout 6s\n    timeout retry 500ms\n";
    let lb = Rolelb::start(&ours.config(&dns, &servers, extra));
    let hap = Haproxy::start(&theirs.config(&dns, &servers, extra));
    for (px, log) in [(&ours, lb.stderr_text()), (&theirs, hap.stderr_text())] {
        assert!(
            wait_until(Duration::from_secs(10), || who_answers(px.db)
                .is_ok_and(|n| n == "a")),
            "db.test never reached a: {log}"
        );
    }
    dns.stop();
    let stopped = Instant::now();
    // Several resolutions fail meanwhile; the addresses stay, in both.
    std::thread::sleep(Duration::from_secs(2));
    for px in [&ours, &theirs] {
        assert_eq!(who_answers(px.db).expect("db while DNS is down"), "a");
        assert_eq!(who_answers(px.other).expect("other while DNS is down"), "o");
        assert_eq!(px.status("db", "s1"), "no check");
    }
    // Past `hold timeout`: MAINT (resolution), and new connections are refused.
    for (px, who) in [(&ours, "rolelb"), (&theirs, "haproxy")] {
        assert!(
            wait_until(Duration::from_secs(15), || px.status("db", "s1")
                == "MAINT (resolution)"),
            "{who}: s1 never went to MAINT (resolution): {}",
            px.status("db", "s1")
        );
        let after = stopped.elapsed();
        eprintln!("{who}: MAINT (resolution) after {after:?}");
        assert!(
            after >= Duration::from_secs(5),
            "{who}: MAINT came before hold timeout: {after:?}"
        );
        assert!(
            who_answers(px.db).is_err(),
            "{who}: a MAINT server took a connection"
        );
    }
    assert_eq!(ours.slots(), theirs.slots());
}

#[test]
fn haproxy_and_rolelb_follow_the_same_dns_changes() {
    let dns = Dnsmasq::start(HOSTS);
    let servers = Servers::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let ours = Proxy::new(dir.path(), "lb");
    let theirs = Proxy::new(dir.path(), "haproxy");
    let at = |p| SocketAddr::from(([127, 0, 0, 1], p));
    let (ours_metrics, theirs_metrics) = (at(free_port()), at(free_port()));
    let lb = Rolelb::start(&ours.config_with(
        &dns,
        &servers,
        "",
        &format!("    admin bind {ours_metrics}\n"),
        "",
    ));
    let hap = Haproxy::start(&theirs.config_with(
        &dns,
        &servers,
        "",
        "",
        &format!(
            "frontend prom\n    mode http\n    bind {theirs_metrics}\n    http-request use-service prometheus-exporter if {{ path /metrics }}\n"
        ),
    ));
    let two_slots = |p: &Proxy| {
        p.slots()
            == [
                "MAINT (resolution)".to_owned(),
                format!("UP 127.0.0.2:{}", servers.port),
                format!("UP 127.0.0.3:{}", servers.port),
            ]
    };
    for (p, log) in [(&ours, lb.stderr_text()), (&theirs, hap.stderr_text())] {
        assert!(
            wait_until(Duration::from_secs(10), || who_answers(p.db)
                .is_ok_and(|n| n == "a")
                && two_slots(p)),
            "before the change: db {:?}, slots {:?}\n{log}",
            who_answers(p.db),
            p.slots()
        );
    }
    assert_eq!(ours.slots(), theirs.slots());
    assert_eq!(tpl_metrics(ours_metrics), ["MAINT", "UP", "UP"]);
    assert_eq!(tpl_metrics(ours_metrics), tpl_metrics(theirs_metrics));

    dns.set_hosts(HOSTS_CHANGED);
    let one_slot = |p: &Proxy| {
        p.slots()
            == [
                "MAINT (resolution)".to_owned(),
                "MAINT (resolution)".to_owned(),
                format!("UP 127.0.0.3:{}", servers.port),
            ]
    };
    for (p, who) in [(&ours, "rolelb"), (&theirs, "haproxy")] {
        assert!(
            wait_until(MOVE_BOUND, || who_answers(p.db).is_ok_and(|n| n == "b")
                && one_slot(p)),
            "{who} after the change: db {:?}, slots {:?}",
            who_answers(p.db),
            p.slots()
        );
    }
    assert_eq!(ours.slots(), theirs.slots());
    assert_eq!(ours.status("db", "s1"), theirs.status("db", "s1"));
    assert_eq!(
        state_row(&ours.sock, "db", "s1"),
        state_row(&theirs.sock, "db", "s1")
    );
    assert_eq!(state_row(&ours.sock, "db", "s1")[1], "db.test");
    assert_eq!(tpl_metrics(ours_metrics), ["MAINT", "MAINT", "UP"]);
    assert_eq!(tpl_metrics(ours_metrics), tpl_metrics(theirs_metrics));
    assert_eq!(who_answers(ours.tpl).expect("tpl"), "b");
    assert_eq!(who_answers(theirs.tpl).expect("tpl"), "b");
}

/// `--srv-host` options: `_db._tcp.srv.test` → each (target, port, weight).
fn srv_records(records: &[(&str, u16, u16)]) -> Vec<String> {
    records
        .iter()
        .map(|(target, port, weight)| {
            format!("--srv-host=_db._tcp.srv.test,{target},{port},0,{weight}")
        })
        .collect()
}

/// A `listen srv` of three template slots filled from `_db._tcp.srv.test`.
fn srv_config(sock: &Path, bind: SocketAddr, dns: &Dnsmasq) -> String {
    format!(
        "global\n    stats socket {sock} level admin\n\n\
         resolvers test\n    nameserver dns1 127.0.0.1:{dns}\n    hold valid 1s\n\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\n\
         listen srv\n    bind {bind}\n    server-template s 3 _db._tcp.srv.test resolvers test init-addr none\n",
        sock = sock.display(),
        dns = dns.port(),
    )
}

#[test]
fn haproxy_and_rolelb_fill_template_slots_from_srv_records_alike() {
    let servers = Servers::start();
    let p = servers.port;
    let hosts = "127.0.0.2 db1.test\n127.0.0.3 db2.test\n";
    let mut dns = Dnsmasq::start_with(
        hosts,
        &srv_records(&[("db1.test", p, 512), ("db2.test", p, 1024)]),
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let (ours_sock, theirs_sock) = (dir.path().join("lb.sock"), dir.path().join("haproxy.sock"));
    let (ours_addr, theirs_addr) = (at(free_port()), at(free_port()));
    let lb = Rolelb::start(&srv_config(&ours_sock, ours_addr, &dns));
    let hap = Haproxy::start(&srv_config(&theirs_sock, theirs_addr, &dns));
    let slots = |sock: &Path| template_slots(sock, "srv", "s", true);
    // Weights are HAProxy's (w + 255) / 256 of the records' 512 and 1024.
    let before = [
        "MAINT (resolution)".to_owned(),
        format!("no check 127.0.0.2:{p} weight 2"),
        format!("no check 127.0.0.3:{p} weight 4"),
    ];
    for (sock, log) in [
        (&ours_sock, lb.stderr_text()),
        (&theirs_sock, hap.stderr_text()),
    ] {
        assert!(
            wait_until(Duration::from_secs(10), || slots(sock) == before),
            "before the change: {:?}\n{log}",
            slots(sock)
        );
    }
    for addr in [ours_addr, theirs_addr] {
        let who = who_answers(addr).expect("a slot answers");
        assert!(who == "a" || who == "b", "{who}");
    }

    // db1's record goes, db2's weight changes.
    dns.restart_with(&srv_records(&[("db2.test", p, 2048)]));
    let after = [
        "MAINT (resolution)".to_owned(),
        "MAINT (resolution)".to_owned(),
        format!("no check 127.0.0.3:{p} weight 8"),
    ];
    for (sock, who) in [(&ours_sock, "rolelb"), (&theirs_sock, "haproxy")] {
        assert!(
            wait_until(MOVE_BOUND, || slots(sock) == after),
            "{who} after the change: {:?}",
            slots(sock)
        );
    }
    assert_eq!(slots(&ours_sock), slots(&theirs_sock));
    assert_eq!(who_answers(ours_addr).expect("rolelb"), "b");
    assert_eq!(who_answers(theirs_addr).expect("haproxy"), "b");
}
