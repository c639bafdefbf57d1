//! TCP-mode rules side by side with HAProxy 2.6: the same config (`acl` lines, `-f FILE`,
//! anonymous `{ ... }` ACLs, `tcp-request connection|content accept|reject` with `if`,
//! `unless`, `!`, `||`, conditional `use_backend` on `nbsrv(B)` and `srv_is_up(B/S)`), the same
//! clients (bound to different 127.0.0.X source addresses, on several listeners, with and
//! without a PROXY header) and the same observables: which server answers, whether the
//! connection is closed without a byte, the session log line, and servers taken out through
//! the runtime socket. `-c` compares what each accepts: rolelb refuses HTTP fetches with
//! FILE:LINE where HAProxy in TCP mode accepts them or warns they never match.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Haproxy, NamedServer, Rolelb, free_port, stat_row, stats_cli, wait_until};
use socket2::{Domain, Socket, Type};

/// What a client sees: the name of the server that answered, or how the connection ended
/// without a byte (`closed` by a FIN, `reset` by a RST).
fn outcome(src: Ipv4Addr, to: SocketAddr, header: Option<&str>) -> String {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(src.into(), 0).into())
        .unwrap_or_else(|e| panic!("binding {src}: {e}"));
    // A reset may already be pending when the connect completes.
    match socket.connect_timeout(&to.into(), Duration::from_secs(3)) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => return "reset".into(),
        other => other.unwrap_or_else(|e| panic!("connecting from {src} to {to}: {e}")),
    }
    let mut conn: TcpStream = socket.into();
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    if let Some(h) = header {
        conn.write_all(h.as_bytes())
            .expect("sending the PROXY header");
    }
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match conn.read(&mut byte) {
            Ok(0) if line.is_empty() => return "closed".into(),
            Ok(0) => return format!("partial {}", String::from_utf8_lossy(&line)),
            Ok(_) if byte[0] == b'\n' => return String::from_utf8_lossy(&line).into_owned(),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return "reset".into(),
            Err(e) => return format!("error {:?}", e.kind()),
        }
    }
}

/// One proxy of a pair: its listening ports and its admin socket.
struct Side {
    name: &'static str,
    ports: [u16; 3],
    socket: PathBuf,
    /// Where `/metrics` answers (rolelb's `admin bind`, HAProxy's Prometheus exporter).
    metrics: u16,
}

impl Side {
    fn new(name: &'static str, dir: &Path) -> Side {
        Side {
            name,
            ports: [free_port(), free_port(), free_port()],
            socket: dir.join(format!("{name}.sock")),
            metrics: free_port(),
        }
    }

    /// The `global` section and the section serving `/metrics` on this side.
    fn global_with_metrics(&self) -> (String, String) {
        let global = global(self);
        if self.name == "rolelb" {
            let admin = format!("\n    admin bind 127.0.0.1:{}\n\n", self.metrics);
            (
                format!("{}{admin}", global.trim_end_matches('\n')),
                String::new(),
            )
        } else {
            let prom = format!(
                "frontend prom\n    mode http\n    bind 127.0.0.1:{}\n    \
                 http-request use-service prometheus-exporter if {{ path /metrics }}\n\n",
                self.metrics
            );
            (global, prom)
        }
    }

    /// The value of the `/metrics` sample `name{proxy="PROXY"}`.
    fn metric(&self, name: &str, proxy: &str) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.metrics));
        let (_, _, body) =
            common::http_request(addr, "GET", "/metrics", &[], "", Duration::from_secs(10)).ok()?;
        let series = format!("{name}{{proxy=\"{proxy}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(str::to_owned)
    }

    fn addr(&self, listener: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[listener]))
    }

    /// `disable|enable server B/S`, then waits until `show stat` agrees.
    fn set_server(&self, verb: &str, backend: &str, server: &str) {
        let reply = stats_cli(&self.socket, &format!("{verb} server {backend}/{server}"));
        assert!(reply.trim().is_empty(), "{}: {reply}", self.name);
        let maint = verb == "disable";
        assert!(
            wait_until(Duration::from_secs(5), || {
                let csv = stats_cli(&self.socket, "show stat");
                stat_row(&csv, backend, server)
                    .is_some_and(|row| row.get("status").is_some_and(|s| (s == "MAINT") == maint))
            }),
            "{}: {backend}/{server} not {verb}d",
            self.name
        );
    }
}

/// rolelb and HAProxy running the config `make` writes for each side.
struct Pair {
    sides: [Side; 2],
    rolelb: Rolelb,
    haproxy: Haproxy,
    _dir: tempfile::TempDir,
}

impl Pair {
    fn start(make: impl Fn(&Side, &Path) -> String) -> Pair {
        let dir = tempfile::tempdir().expect("temp dir");
        let sides = [
            Side::new("rolelb", dir.path()),
            Side::new("haproxy", dir.path()),
        ];
        let rolelb = Rolelb::start(&make(&sides[0], dir.path()));
        let haproxy = Haproxy::start(&make(&sides[1], dir.path()));
        Pair {
            sides,
            rolelb,
            haproxy,
            _dir: dir,
        }
    }

    /// The outcome of the same client on both; they must agree. Returns HAProxy's.
    fn both(&self, src: [u8; 4], listener: usize, header: Option<&str>) -> String {
        let src = Ipv4Addr::from(src);
        let [ours, theirs] = [&self.sides[0], &self.sides[1]].map(|side| {
            let header = header.map(|h| h.replace("DPORT", &side.ports[listener].to_string()));
            outcome(src, side.addr(listener), header.as_deref())
        });
        assert_eq!(
            ours, theirs,
            "client {src} on listener {listener}: rolelb (left) and HAProxy (right) differ"
        );
        theirs
    }

    /// The `TCPLOG` lines each wrote so far, sorted.
    fn log_lines(&self) -> [Vec<String>; 2] {
        [self.rolelb.stderr_text(), self.haproxy.stderr_text()].map(|text| {
            let mut lines: Vec<String> = text
                .lines()
                .filter_map(|l| l.find("TCPLOG ").map(|i| l[i..].to_string()))
                .collect();
            lines.sort();
            lines
        })
    }
}

const DEFAULTS: &str = "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    \
                        timeout server 30s\n\n";

fn global(side: &Side) -> String {
    format!(
        "global\n    maxconn 4096\n    stats socket {} level admin\n    log stderr format raw local0\n\n",
        side.socket.display()
    )
}

#[test]
fn connection_and_content_rules_accept_and_reject_as_haproxy() {
    let a = NamedServer::start("a");
    let pair = Pair::start(|side, dir| {
        let list = dir.join("blocked.lst");
        std::fs::write(&list, "# blocked clients\n127.0.0.2\r\n\n \t127.0.1.0/24\n")
            .expect("writing the pattern file");
        let (global, metrics) = side.global_with_metrics();
        format!(
            "{global}{DEFAULTS}{metrics}frontend fe\n    bind 127.0.0.1:{}\n    bind 127.0.0.1:{}\n    \
             bind 127.0.0.1:{} accept-proxy\n    log global\n    \
             log-format \"TCPLOG %ci %ft %b %s %ts\"\n    \
             acl blocked src -f {}\n    acl on_admin dst_port {}\n    \
             tcp-request inspect-delay 2s\n    \
             tcp-request connection reject if blocked !on_admin\n    \
             tcp-request connection accept if {{ src 127.0.0.4 }} || {{ src -m str 127.0.0.5 }}\n    \
             tcp-request connection reject if {{ src 10.0.0.0/8 }}\n    \
             tcp-request connection reject unless {{ src 127.0.0.0/255.255.255.248 }} on_admin || {{ src 127.0.0.1 }}\n    \
             tcp-request content reject if {{ src 10.1.0.0/16 }} {{ dst_port ge 1024 }}\n    \
             tcp-request content accept\n    \
             tcp-request content reject\n    \
             default_backend b\n\nbackend b\n    server a {}\n",
            side.ports[0],
            side.ports[1],
            side.ports[2],
            list.display(),
            side.ports[1],
            a.addr(),
        )
    });
    let mut seen = Vec::new();
    for (src, listener) in [
        ([127, 0, 0, 1], 0),
        ([127, 0, 0, 2], 0),
        ([127, 0, 0, 2], 1),
        ([127, 0, 0, 3], 0),
        ([127, 0, 0, 3], 1),
        ([127, 0, 0, 4], 0),
        ([127, 0, 0, 5], 0),
        ([127, 0, 0, 9], 1),
        ([127, 0, 1, 5], 0),
        ([127, 0, 1, 5], 1),
    ] {
        seen.push(pair.both(src, listener, None));
    }
    // Connection rules see the TCP peer (127.0.0.1), content rules the PROXY header's client.
    for client in ["10.1.2.3", "10.2.0.1"] {
        let header = format!("PROXY TCP4 {client} 127.0.0.1 4000 DPORT\r\n");
        seen.push(pair.both([127, 0, 0, 1], 2, Some(&header)));
    }
    let served = |s: &String| s == "a";
    assert_eq!(
        seen.iter()
            .map(|s| if served(s) { "a" } else { "x" })
            .collect::<String>(),
        "axaxaaaxxxxa",
        "{seen:?}"
    );
    // A connection rule resets at once; a content rule closes (FIN), both without a byte.
    assert_eq!((seen[1].as_str(), seen[10].as_str()), ("reset", "closed"));
    // Both must have logged the same sessions, the content-rejected one included.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let [ours, theirs] = pair.log_lines();
            ours.len() >= 7 && ours == theirs
        }),
        "log lines differ: {:?}",
        pair.log_lines()
    );
    let [ours, _] = pair.log_lines();
    assert!(
        ours.iter().any(|l| l == "TCPLOG 10.1.2.3 fe fe <NOSRV> PR"),
        "{ours:?}"
    );
    // Connection rejects count in `dcon` (and are no session), content rejects in `dreq`.
    let denied = |side: &Side| {
        let row =
            stat_row(&stats_cli(&side.socket, "show stat"), "fe", "FRONTEND").unwrap_or_default();
        ["dcon", "dreq", "dses", "dresp", "stot", "conn_tot"]
            .map(|c| row.get(c).cloned().unwrap_or_default())
    };
    let count = |kind: &str| seen.iter().filter(|s| *s == kind).count();
    let resets = count("reset");
    // A connection a connection rule rejects never becomes a session (`stot`).
    let want = [
        resets.to_string(),
        count("closed").to_string(),
        "0".into(),
        "0".into(),
        (seen.len() - resets).to_string(),
        seen.len().to_string(),
    ];
    assert!(
        wait_until(Duration::from_secs(5), || {
            pair.sides.iter().all(|side| denied(side) == want)
        }),
        "dcon dreq dses dresp stot conn_tot: want {want:?}, rolelb {:?}, haproxy {:?}",
        denied(&pair.sides[0]),
        denied(&pair.sides[1])
    );
    // And the Prometheus families that carry them.
    for side in &pair.sides {
        let got = [
            "haproxy_frontend_denied_connections_total",
            "haproxy_frontend_requests_denied_total",
            "haproxy_frontend_denied_sessions_total",
        ]
        .map(|name| side.metric(name, "fe").unwrap_or_default());
        assert_eq!(got[..], want[..3], "{}: /metrics", side.name);
        let sessions = side.metric("haproxy_frontend_sessions_total", "fe");
        assert_eq!(sessions.as_ref(), Some(&want[4]), "{}: sessions", side.name);
    }
}

fn failover_config(
    side: &Side,
    a1: &NamedServer,
    a2: &NamedServer,
    b: &NamedServer,
    c: &NamedServer,
) -> String {
    format!(
        "{}{DEFAULTS}frontend fe\n    bind 127.0.0.1:{}\n    \
         acl b1_down nbsrv(b1) eq 0\n    \
         use_backend b3 if b1_down !{{ srv_is_up(b2/b) }}\n    \
         use_backend b2 if b1_down\n    \
         default_backend b1\n\n\
         backend b1\n    balance first\n    server a1 {}\n    server a2 {}\n\n\
         backend b2\n    server b {}\n\n\
         backend b3\n    server c {}\n",
        global(side),
        side.ports[0],
        a1.addr(),
        a2.addr(),
        b.addr(),
        c.addr(),
    )
}

#[test]
fn use_backend_fails_over_on_nbsrv_and_srv_is_up_as_haproxy() {
    let a1 = NamedServer::start("a1");
    let a2 = NamedServer::start("a2");
    let b = NamedServer::start("b");
    let c = NamedServer::start("c");
    let pair = Pair::start(|side, _| failover_config(side, &a1, &a2, &b, &c));
    let step = |change: Option<(&str, &str, &str)>| {
        if let Some((verb, backend, server)) = change {
            for side in &pair.sides {
                side.set_server(verb, backend, server);
            }
        }
        pair.both([127, 0, 0, 1], 0, None)
    };
    let got = [
        step(None),
        step(Some(("disable", "b1", "a1"))),
        step(Some(("disable", "b1", "a2"))),
        step(Some(("disable", "b2", "b"))),
        step(Some(("enable", "b2", "b"))),
        step(Some(("enable", "b1", "a2"))),
    ];
    assert_eq!(got, ["a1", "a2", "b", "c", "b", "a2"]);
}

#[test]
fn http_fetches_are_refused_with_file_and_line() {
    let port = free_port();
    let cases = [
        (
            "acl h hdr(host) -i example.com\n    use_backend b if h",
            ":9: 'hdr(host)' is an HTTP fetch (it reads HTTP request headers)",
        ),
        (
            "tcp-request connection reject if { path /x }",
            ":9: 'path' is an HTTP fetch (it reads the HTTP request URI)",
        ),
        (
            "tcp-request content reject if { req.len gt 0 }",
            ":9: 'req.len' is not supported",
        ),
    ];
    for (rule, expected) in cases {
        let cfg = format!(
            "{DEFAULTS}frontend fe\n    bind 127.0.0.1:{port}\n    {rule}\n    default_backend b\n\n\
             backend b\n    server s 127.0.0.1:1\n"
        );
        let (valid, out) = Rolelb::check(&cfg);
        assert!(!valid && out.contains(expected), "{rule}: {out}");
        // HAProxy accepts them in TCP mode (HTTP fetches on raw content), at most warning
        // that a connection rule can never match.
        let (valid, out) = Haproxy::check(&cfg);
        assert!(valid, "haproxy on {rule}: {out}");
    }
    // A rule after use_backend: both warn that it still runs first.
    let cfg = format!(
        "{DEFAULTS}frontend fe\n    bind 127.0.0.1:{port}\n    use_backend b if {{ src 10.0.0.1 }}\n    \
         tcp-request connection reject if {{ src 10.0.0.2 }}\n    default_backend b\n\n\
         backend b\n    server s 127.0.0.1:1\n"
    );
    for (valid, out) in [Rolelb::check(&cfg), Haproxy::check(&cfg)] {
        assert!(
            valid
                && out.contains(":10")
                && out.contains(
                    "a 'tcp-request' rule placed after a 'use_backend' rule will still be processed before"
                ),
            "{out}"
        );
    }
}

#[test]
fn pattern_files_are_read_as_haproxy_reads_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let cfg_for = |content: &str| {
        let list = dir.path().join("list.lst");
        std::fs::write(&list, content).expect("writing the pattern file");
        format!(
            "{DEFAULTS}frontend fe\n    bind 127.0.0.1:{port}\n    acl l src -f {}\n    \
             tcp-request connection reject if l\n    default_backend b\n\n\
             backend b\n    server s 127.0.0.1:1\n",
            list.display()
        )
    };
    // Comments in the first column, leading blanks and CRLF are fine for both.
    let cfg = cfg_for("# clients\n\t 10.0.0.0/8\r\n\n192.0.2.1\n");
    for (valid, out) in [Rolelb::check(&cfg), Haproxy::check(&cfg)] {
        assert!(valid, "{out}");
    }
    // A trailing blank is part of the pattern, and a '#' after a blank is not a comment.
    for content in ["10.0.0.0/8 \n", " # not a comment\n"] {
        let cfg = cfg_for(content);
        let (valid, out) = Haproxy::check(&cfg);
        assert!(
            !valid && out.contains("at line 1 of file"),
            "haproxy: {out}"
        );
        let (valid, out) = Rolelb::check(&cfg);
        assert!(
            !valid && out.contains(":9: ") && out.contains("at line 1 of file"),
            "{content:?}: {out}"
        );
    }
}
