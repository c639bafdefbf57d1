//! HAProxy's logging options side by side with HAProxy 2.6, same config, same clients, lines
//! compared: `option logasap` (a TCP session's line is sent when its server connection is
//! established, with `+` before the total time and the bytes, and not again at its end; a
//! session that never connects is logged at its end, `+` included), `option dontlog-normal`
//! (no line for a session that ended normally; failures still logged) and
//! `option log-separate-errors` (failures at syslog level `err`, normal sessions at `info`);
//! `log-tag`, global and per proxy (the tag in each line's syslog header), and
//! `log-send-hostname` (the host in the header of the default, rfc3164 and rfc5424 formats).

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::{Haproxy, NamedServer, Rolelb, free_port, open_named, wait_until};

/// The listening ports of one proxy under test.
struct Ports {
    asap: u16,
    asap_dead: u16,
    quiet: u16,
    quiet_dead: u16,
    separate: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            asap: free_port(),
            asap_dead: free_port(),
            quiet: free_port(),
            quiet_dead: free_port(),
            separate: free_port(),
        }
    }
}

fn config(p: &Ports, server: SocketAddr, closed: u16) -> String {
    format!(
        "global\n    log stderr format rfc3164 local0\n\n\
         defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 1s\n    \
         timeout client 10s\n    timeout server 10s\n\n\
         listen asap\n    bind 127.0.0.1:{asap}\n    option logasap\n    server s1 {server}\n\n\
         listen asap_dead\n    bind 127.0.0.1:{asap_dead}\n    option logasap\n    retries 1\n    \
         server d1 127.0.0.1:{closed}\n\n\
         listen quiet\n    bind 127.0.0.1:{quiet}\n    option dontlog-normal\n    server s1 {server}\n\n\
         listen quiet_dead\n    bind 127.0.0.1:{quiet_dead}\n    option dontlog-normal\n    \
         option log-separate-errors\n    retries 1\n    server d1 127.0.0.1:{closed}\n\n\
         listen separate\n    bind 127.0.0.1:{separate}\n    option log-separate-errors\n    \
         server s1 {server}\n",
        asap = p.asap,
        asap_dead = p.asap_dead,
        quiet = p.quiet,
        quiet_dead = p.quiet_dead,
        separate = p.separate,
    )
}

/// The session lines in a proxy's stderr (`format rfc3164`: they start with a priority).
fn lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with('<') && l.contains(" [") && l.contains('/'))
        .map(str::to_owned)
        .collect()
}

/// What both proxies must agree on in one line: the priority, then the fields after the
/// accept date, with each timer's digits replaced by `N` (a `+` and a `-1` are kept).
fn comparable(line: &str) -> String {
    let pri = line.split('>').next().unwrap_or("");
    let fields = line.split("] ").nth(1).unwrap_or("");
    let mut parts: Vec<String> = fields.split(' ').map(str::to_owned).collect();
    if let Some(timers) = parts.get_mut(2) {
        *timers = timers
            .split('/')
            .map(|t| {
                let (plus, n) = t.strip_prefix('+').map_or(("", t), |n| ("+", n));
                let n = if n == "-1" { n } else { "N" };
                format!("{plus}{n}")
            })
            .collect::<Vec<_>>()
            .join("/");
    }
    format!("{pri}> {}", parts.join(" "))
}

/// The total time (`%Tt`, after any `+`) of a line.
fn total_time(line: &str) -> i64 {
    let fields = line.split("] ").nth(1).unwrap_or("");
    let timers = fields.split(' ').nth(2).unwrap_or("");
    let tt = timers.split('/').nth(2).unwrap_or("");
    tt.trim_start_matches('+')
        .parse()
        .unwrap_or_else(|_| panic!("no total time in {line}"))
}

/// Runs every client action against one proxy; returns its session lines.
fn run(ports: &Ports, stderr: &dyn Fn() -> String) -> Vec<String> {
    let count = || lines(&stderr()).len();
    let wait_lines = |n: usize, what: &str| {
        assert!(
            wait_until(Duration::from_secs(10), || count() >= n),
            "no log line for {what}; stderr:\n{}",
            stderr()
        );
    };
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    // 1. logasap: the line is there while the session is still open.
    let (_, mut conn) = open_named(addr(ports.asap)).expect("through the logasap proxy");
    wait_lines(1, "a logasap session, before it ends");
    thread::sleep(Duration::from_millis(400));
    conn.write_all(b"abc").expect("write");
    let mut back = [0u8; 3];
    conn.read_exact(&mut back).expect("the echo");
    drop(conn);
    // 2. logasap, the connect fails: logged at the end.
    let mut conn = std::net::TcpStream::connect(addr(ports.asap_dead)).expect("connect");
    let _ = conn.read(&mut [0u8; 16]);
    drop(conn);
    wait_lines(2, "a logasap session whose connect failed");
    // 3. dontlog-normal, a normal session: no line (the next one shows it).
    let (_, conn) = open_named(addr(ports.quiet)).expect("through the dontlog-normal proxy");
    thread::sleep(Duration::from_millis(200));
    drop(conn);
    thread::sleep(Duration::from_millis(300));
    // 4. dontlog-normal with log-separate-errors, the connect fails: logged at `err`.
    let mut conn = std::net::TcpStream::connect(addr(ports.quiet_dead)).expect("connect");
    let _ = conn.read(&mut [0u8; 16]);
    drop(conn);
    wait_lines(3, "a failed session under dontlog-normal");
    // The next session's line counts the active connections (`%ac`): let this one's end be
    // counted first (rolelb writes a line just before it releases the connection).
    thread::sleep(Duration::from_millis(300));
    // 5. log-separate-errors, a normal session: logged at `info`.
    let (_, conn) = open_named(addr(ports.separate)).expect("through the separate proxy");
    drop(conn);
    wait_lines(4, "a normal session under log-separate-errors");
    thread::sleep(Duration::from_millis(300));
    lines(&stderr())
}

#[test]
fn logasap_dontlog_normal_and_log_separate_errors_log_as_haproxy_does() {
    let server = NamedServer::start("s1");
    let closed = free_port();
    let (h_ports, r_ports) = (Ports::new(), Ports::new());
    let h_lines = {
        let haproxy = Haproxy::start(&config(&h_ports, server.addr(), closed));
        run(&h_ports, &|| haproxy.stderr_text())
    };
    let r_lines = {
        let rolelb = Rolelb::start(&config(&r_ports, server.addr(), closed));
        run(&r_ports, &|| rolelb.stderr_text())
    };
    assert_eq!(h_lines.len(), 4, "HAProxy's lines:\n{}", h_lines.join("\n"));
    assert_eq!(r_lines.len(), 4, "rolelb's lines:\n{}", r_lines.join("\n"));
    let (h, r): (Vec<String>, Vec<String>) = (
        h_lines.iter().map(|l| comparable(l)).collect(),
        r_lines.iter().map(|l| comparable(l)).collect(),
    );
    assert_eq!(
        r,
        h,
        "\nrolelb:\n{}\nHAProxy:\n{}",
        r_lines.join("\n"),
        h_lines.join("\n")
    );
    // What the comparison rests on, spelled out for rolelb's lines (local0 = facility 16).
    assert!(r[0].starts_with("<134> asap asap/s1 N/N/+N +"), "{}", r[0]);
    assert!(r[0].contains(" -- 1/1/1/1/0 "), "{}", r[0]);
    assert!(
        total_time(&r_lines[0]) < 300,
        "the logasap line is the connect's, not the session's end: {}",
        r_lines[0]
    );
    assert!(
        r[1].starts_with("<134> asap_dead asap_dead/d1 "),
        "{}",
        r[1]
    );
    assert!(r[1].contains("/+N +0 SC "), "{}", r[1]);
    assert!(
        r[2].starts_with("<131> quiet_dead quiet_dead/d1 "),
        "{}",
        r[2]
    );
    assert!(r[3].starts_with("<134> separate separate/s1 "), "{}", r[3]);
}

/// The tag of an rfc3164 line: the word before `[PID]:`.
fn tag(line: &str) -> &str {
    let head = line.split("]: ").next().unwrap_or("");
    let head = head.rsplit_once('[').map_or("", |(h, _)| h);
    head.rsplit(' ').next().unwrap_or("")
}

#[test]
fn log_tag_names_the_lines_as_in_haproxy() {
    let server = NamedServer::start("s1");
    let run = |start: &dyn Fn(&str) -> Box<dyn Fn() -> String>| {
        let (own, inherited) = (free_port(), free_port());
        let cfg = format!(
            "global\n    log stderr format rfc3164 local0\n    log-tag dbproxy\n\n\
             defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 1s\n    \
             timeout client 10s\n    timeout server 10s\n\n\
             listen own\n    bind 127.0.0.1:{own}\n    log-tag pg-writes\n    server s1 {server}\n\n\
             listen inherited\n    bind 127.0.0.1:{inherited}\n    server s1 {server}\n",
            server = server.addr()
        );
        let stderr = start(&cfg);
        for port in [own, inherited] {
            let (_, conn) =
                open_named(SocketAddr::from(([127, 0, 0, 1], port))).expect("through the proxy");
            drop(conn);
        }
        assert!(
            wait_until(Duration::from_secs(10), || lines(&stderr()).len() >= 2),
            "two session lines; stderr:\n{}",
            stderr()
        );
        let mut tags: Vec<(String, String)> = lines(&stderr())
            .iter()
            .map(|l| {
                let fe = l.split("] ").nth(1).unwrap_or("").split(' ').next();
                (fe.unwrap_or("").to_string(), tag(l).to_string())
            })
            .collect();
        tags.sort();
        tags
    };
    let haproxy = run(&|cfg| {
        let h = Haproxy::start(cfg);
        Box::new(move || h.stderr_text())
    });
    let rolelb = run(&|cfg| {
        let r = Rolelb::start(cfg);
        Box::new(move || r.stderr_text())
    });
    assert_eq!(rolelb, haproxy);
    assert_eq!(
        rolelb,
        vec![
            ("inherited".to_string(), "dbproxy".to_string()),
            ("own".to_string(), "pg-writes".to_string())
        ]
    );
}

#[test]
fn log_tag_without_a_tag_is_refused_at_its_line_as_in_haproxy() {
    for cfg in [
        "global\n    log-tag\n",
        "global\n    log stderr local0\n\nlisten l\n    bind 127.0.0.1:1\n    log-tag\n    server s 127.0.0.1:2\n",
    ] {
        let (h_ok, h_out) = Haproxy::check(cfg);
        let (r_ok, r_out) = Rolelb::check(cfg);
        assert!(!h_ok, "HAProxy accepts {cfg:?}:\n{h_out}");
        assert!(!r_ok, "rolelb accepts {cfg:?}:\n{r_out}");
        assert!(
            h_out.contains("expects a tag") && r_out.contains("expects a tag"),
            "{cfg:?}\nHAProxy: {h_out}\nrolelb: {r_out}"
        );
        let line = if cfg.starts_with("global\n    log-tag") {
            ":2:"
        } else {
            ":6:"
        };
        assert!(r_out.contains(line), "rolelb names the line: {r_out}");
    }
}

/// The syslog header of the first session line of `fe` in `stderr` (what comes before the
/// client's address), with every digit as `9` and the program's own tag as `TAG`.
fn header_shape(stderr: &str, fe: &str) -> Option<String> {
    let line = stderr.lines().find(|l| l.contains(&format!("] {fe} ")))?;
    let header = &line[..line.find("127.0.0.1:")?];
    let shape: String = header
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    Some(shape.replace("haproxy", "TAG").replace("rolelb", "TAG"))
}

#[test]
fn log_send_hostname_puts_the_host_in_the_header_as_in_haproxy() {
    let server = NamedServer::start("s1");
    let run = |start: &dyn Fn(&str) -> Box<dyn Fn() -> String>, format: &str, host: &str| {
        let port = free_port();
        let cfg = format!(
            "global\n    log stderr {format} local0\n    {host}\n\n\
             defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 1s\n    \
             timeout client 10s\n    timeout server 10s\n\n\
             listen hosted\n    bind 127.0.0.1:{port}\n    server s1 {server}\n",
            server = server.addr()
        );
        let stderr = start(&cfg);
        let (_, conn) =
            open_named(SocketAddr::from(([127, 0, 0, 1], port))).expect("through the proxy");
        drop(conn);
        let mut shape = None;
        assert!(
            wait_until(Duration::from_secs(10), || {
                shape = header_shape(&stderr(), "hosted");
                shape.is_some()
            }),
            "no session line; stderr:\n{}",
            stderr()
        );
        shape.unwrap_or_default()
    };
    for format in ["", "format rfc3164", "format rfc5424"] {
        for host in ["", "log-send-hostname dbhost"] {
            let haproxy = run(
                &|cfg| {
                    let h = Haproxy::start(cfg);
                    Box::new(move || h.stderr_text())
                },
                format,
                host,
            );
            let rolelb = run(
                &|cfg| {
                    let r = Rolelb::start(cfg);
                    Box::new(move || r.stderr_text())
                },
                format,
                host,
            );
            assert_eq!(rolelb, haproxy, "'{format}', '{host}'");
            assert_eq!(
                rolelb.contains(" dbhost "),
                !host.is_empty(),
                "'{format}', '{host}': {rolelb:?}"
            );
        }
    }
}
