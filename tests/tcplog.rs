//! `option tcplog` and `log-format` side by side with HAProxy 2.6: the same config (two
//! `log stderr` targets, `format raw` and `format rfc3164`), the same client actions, then
//! the lines compared field by field — every session end HAProxy logs in TCP mode (closed by
//! the client or the server, `timeout client`/`timeout server`, a failed connect, no server,
//! a queue timeout), the TCP variables of `log-format`, and the lines matched by the
//! HAPROXYTCP grok pattern log pipelines use. `-c` refuses HTTP-only and unknown variables
//! with FILE:LINE, as HAProxy refuses them; `log stdout`/`log stderr` carry only the line in
//! `format raw`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{Haproxy, Rolelb, free_port, wait_until};
use regex::Regex;

/// A backend that sends `hello\n`, echoes what it gets, and closes its side on `close\n`.
struct Echo {
    addr: SocketAddr,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo");
        let addr = listener.local_addr().expect("echo addr");
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                thread::spawn(move || {
                    if conn.write_all(b"hello\n").is_err() {
                        return;
                    }
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || buf[..n].starts_with(b"close") {
                            break;
                        }
                        if conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = conn.shutdown(Shutdown::Both);
                });
            }
        });
        Echo { addr }
    }
}

/// The listening ports of one proxy under test.
struct Ports {
    normal: u16,
    dead: u16,
    nosrv: u16,
    queue: u16,
    slow: u16,
    custom: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            normal: free_port(),
            dead: free_port(),
            nosrv: free_port(),
            queue: free_port(),
            slow: free_port(),
            custom: free_port(),
        }
    }
}

/// The `log-format` under test: every TCP variable whose value both proxies can agree on.
const CUSTOM_FORMAT: &str = "%ci %fi %f %ft %b %s %si:%sp %bi %B %U %ts %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %Th %ST %ID %{+Q}s %{+Q}o %b %H %{-Q}f %hr|%pid %Ts %ms %% %{+X}si";

fn config(p: &Ports, echo: SocketAddr, closed: u16) -> String {
    format!(
        "global\n    log stderr format raw local0\n    log stderr format rfc3164 local1 info\n\n\
         defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 1s\n    \
         timeout client 2s\n    timeout server 30s\n    timeout queue 1s\n\n\
         frontend fe\n    bind 127.0.0.1:{normal}\n    default_backend be\n\n\
         backend be\n    server s1 {echo}\n\n\
         frontend fe_dead\n    bind 127.0.0.1:{dead}\n    default_backend dead\n\n\
         backend dead\n    retries 1\n    server d1 127.0.0.1:{closed}\n\n\
         frontend fe_nosrv\n    bind 127.0.0.1:{nosrv}\n    default_backend nosrv\n\n\
         backend nosrv\n    server n1 {echo} disabled\n\n\
         frontend fe_queue\n    bind 127.0.0.1:{queue}\n    default_backend q\n\n\
         backend q\n    server q1 {echo} maxconn 1\n\n\
         listen slow\n    bind 127.0.0.1:{slow}\n    timeout client 30s\n    timeout server 1s\n    \
         server s1 {echo}\n\n\
         listen custom\n    bind 127.0.0.1:{custom}\n    log-format \"{CUSTOM_FORMAT}\"\n    \
         server s1 {echo}\n",
        normal = p.normal,
        dead = p.dead,
        nosrv = p.nosrv,
        queue = p.queue,
        slow = p.slow,
        custom = p.custom,
    )
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s
}

fn read_some(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    buf[..n].to_vec()
}

/// The raw log lines (`format raw`) in a proxy's stderr: those that start with an address.
fn raw_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("127.0.0.1"))
        .map(str::to_owned)
        .collect()
}

/// The `format rfc3164` lines: those that start with a priority.
fn syslog_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with('<'))
        .map(str::to_owned)
        .collect()
}

/// Runs every client action against one proxy, waiting for each session's line; returns
/// its stderr.
fn run_scenarios(ports: &Ports, stderr: &dyn Fn() -> String) -> String {
    let lines = || raw_lines(&stderr()).len();
    let wait_lines = |n: usize, what: &str| {
        assert!(
            wait_until(Duration::from_secs(10), || lines() >= n),
            "no log line for {what}; stderr:\n{}",
            stderr()
        );
        // A session is logged before its counts drop (HAProxy decrements them after writing
        // the line, possibly on another thread): the next session starts after that, or a
        // loaded machine shows the ended one in the next line's %ac/%fc.
        std::thread::sleep(Duration::from_millis(200));
    };
    // 1. The client closes after an exchange.
    let mut c = connect(ports.normal);
    assert_eq!(read_some(&mut c), b"hello\n");
    c.write_all(b"abc\n").expect("write");
    assert_eq!(read_some(&mut c), b"abc\n");
    drop(c);
    wait_lines(1, "a session closed by the client");
    // 2. The server closes.
    let mut c = connect(ports.normal);
    assert_eq!(read_some(&mut c), b"hello\n");
    c.write_all(b"close\n").expect("write");
    assert!(read_some(&mut c).is_empty(), "the server closes");
    drop(c);
    wait_lines(2, "a session closed by the server");
    // 3. `timeout client` (2s) expires.
    let mut c = connect(ports.normal);
    assert_eq!(read_some(&mut c), b"hello\n");
    assert!(read_some(&mut c).is_empty(), "closed by timeout client");
    drop(c);
    wait_lines(3, "timeout client");
    // 4. `timeout server` (1s) expires.
    let mut c = connect(ports.slow);
    assert_eq!(read_some(&mut c), b"hello\n");
    assert!(read_some(&mut c).is_empty(), "closed by timeout server");
    drop(c);
    wait_lines(4, "timeout server");
    // 5. The server refuses the connection (one retry).
    let mut c = connect(ports.dead);
    assert!(
        read_some(&mut c).is_empty(),
        "closed after the connect failed"
    );
    drop(c);
    wait_lines(5, "a failed connect");
    // 6. No server is available.
    let mut c = connect(ports.nosrv);
    assert!(read_some(&mut c).is_empty(), "closed: no server");
    drop(c);
    wait_lines(6, "no server");
    // 7. The only slot is taken; a second client waits past `timeout queue` (1s).
    let mut holder = connect(ports.queue);
    assert_eq!(read_some(&mut holder), b"hello\n");
    let mut waiting = connect(ports.queue);
    assert!(read_some(&mut waiting).is_empty(), "closed: queue timeout");
    drop(waiting);
    wait_lines(7, "a queue timeout");
    drop(holder);
    wait_lines(8, "the session that held the slot");
    // 8. `log-format` with the TCP variables.
    let mut c = connect(ports.custom);
    assert_eq!(read_some(&mut c), b"hello\n");
    c.write_all(b"abc\n").expect("write");
    assert_eq!(read_some(&mut c), b"abc\n");
    drop(c);
    wait_lines(9, "the log-format line");
    stderr()
}

/// HAPROXYTCP from logstash-patterns-core (`patterns/legacy/haproxy`), with the grok
/// patterns it uses (`patterns/legacy/grok-patterns`) written out. The `regex` crate has no
/// look-around nor atomic groups: the `(?!<[0-9])`/`(?![0-9])` guards around times and IPv4
/// addresses are left out (every match here is followed by a space, `.` or `:`), `(?>\d\d)`
/// becomes `(?:\d\d)`, and IPv6 is reduced to hexadecimal groups (the tests use IPv4).
fn haproxytcp() -> Regex {
    let month = r"\b(?:[Jj]an(?:uary|uar)?|[Ff]eb(?:ruary|ruar)?|[Mm](?:a|ä)?r(?:ch|z)?|[Aa]pr(?:il)?|[Mm]a(?:y|i)?|[Jj]un(?:e|i)?|[Jj]ul(?:y|i)?|[Aa]ug(?:ust)?|[Ss]ep(?:tember)?|[Oo](?:c|k)?t(?:ober)?|[Nn]ov(?:ember)?|[Dd]e(?:c|z)(?:ember)?)\b";
    let monthday = r"(?:(?:0[1-9])|(?:[12][0-9])|(?:3[01])|[1-9])";
    let monthnum = r"(?:0?[1-9]|1[0-2])";
    let year = r"(?:\d\d){1,2}";
    let hour = r"(?:2[0123]|[01]?[0-9])";
    let minute = r"(?:[0-5][0-9])";
    let second = r"(?:(?:[0-5]?[0-9]|60)(?:[:.,][0-9]+)?)";
    let time = format!(r"{hour}:{minute}(?::{second})");
    let syslogtimestamp = format!(r"{month} +{monthday} {time}");
    let iso8601_tz = format!(r"(?:Z|[+-]{hour}(?::?{minute}))");
    let timestamp_iso8601 =
        format!(r"{year}-{monthnum}-{monthday}[T ]{hour}:?{minute}(?::?{second})?{iso8601_tz}?");
    let ipv4 = r"(?:(?:[0-1]?[0-9]{1,2}|2[0-4][0-9]|25[0-5])[.](?:[0-1]?[0-9]{1,2}|2[0-4][0-9]|25[0-5])[.](?:[0-1]?[0-9]{1,2}|2[0-4][0-9]|25[0-5])[.](?:[0-1]?[0-9]{1,2}|2[0-4][0-9]|25[0-5]))";
    let ipv6 = r"(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}";
    let ip = format!(r"(?:{ipv6}|{ipv4})");
    let hostname =
        r"\b(?:[0-9A-Za-z][0-9A-Za-z-]{0,62})(?:\.(?:[0-9A-Za-z][0-9A-Za-z-]{0,62}))*(?:\.?|\b)";
    let iporhost = format!(r"(?:{ip}|{hostname})");
    let prog = r"[\x21-\x5a\x5c\x5e-\x7e]+";
    let posint = r"\b(?:[1-9][0-9]*)\b";
    let syslogprog = format!(r"(?P<program>{prog})(?:\[(?P<pid>{posint})\])?");
    let int = r"(?:[+-]?(?:[0-9]+))";
    let notspace = r"\S+";
    let haproxytime = format!(r"{hour}:{minute}(?::{second})");
    let haproxydate = format!(r"{monthday}/{month}/{year}:{haproxytime}.{int}");
    let body = format!(
        r"(?P<client_ip>{ip}):(?P<client_port>{int}) \[(?P<accept_date>{haproxydate})\] (?P<frontend_name>{notspace}) (?P<backend_name>{notspace})/(?P<server_name>{notspace}) (?P<time_queue>{int})/(?P<time_backend_connect>{int})/(?P<time_duration>{notspace}) (?P<bytes_read>{notspace}) (?P<termination_state>{notspace}) (?P<actconn>{int})/(?P<feconn>{int})/(?P<beconn>{int})/(?P<srvconn>{int})/(?P<retries>{notspace}) (?P<srv_queue>{int})/(?P<backend_queue>{int})"
    );
    Regex::new(&format!(
        r"(?:(?P<syslog_timestamp>{syslogtimestamp})|(?P<timestamp8601>{timestamp_iso8601})) (?P<syslog_server>{iporhost}) {syslogprog}: {body}"
    ))
    .expect("HAPROXYTCP compiles")
}

/// The fields of HAPROXYTCP's body (from the client address on), anchored: a raw line must
/// be nothing else.
fn haproxytcp_body() -> Regex {
    let full = haproxytcp();
    let pattern = full.as_str();
    let start = pattern.find("(?P<client_ip>").expect("body start");
    Regex::new(&format!("^{}$", &pattern[start..])).expect("body compiles")
}

/// The fields both proxies must print the same (times only as "-1 or not": the two
/// processes do not run at the same instant).
fn comparable(caps: &regex::Captures<'_>) -> Vec<String> {
    let timer = |name: &str| {
        if &caps[name] == "-1" {
            "-1".to_string()
        } else {
            "ms".to_string()
        }
    };
    vec![
        caps["client_ip"].to_string(),
        caps["frontend_name"].to_string(),
        caps["backend_name"].to_string(),
        caps["server_name"].to_string(),
        timer("time_queue"),
        timer("time_backend_connect"),
        caps["bytes_read"].to_string(),
        caps["termination_state"].to_string(),
        caps["actconn"].to_string(),
        caps["feconn"].to_string(),
        caps["beconn"].to_string(),
        caps["srvconn"].to_string(),
        caps["retries"].to_string(),
        caps["srv_queue"].to_string(),
        caps["backend_queue"].to_string(),
    ]
}

/// `dd/Mon/yyyy:hh:mm:ss.mmm`, HAProxy's `%t`.
fn is_accept_date(s: &str) -> bool {
    Regex::new(r"^\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}\.\d{3}$")
        .expect("date regex")
        .is_match(s)
}

#[test]
fn tcplog_lines_match_haproxy_field_by_field_and_the_haproxytcp_pattern() {
    let echo = Echo::start();
    let closed = free_port();
    let h_ports = Ports::new();
    let r_ports = Ports::new();
    let h_log = {
        let haproxy = Haproxy::start(&config(&h_ports, echo.addr, closed));
        run_scenarios(&h_ports, &|| haproxy.stderr_text())
    };
    let r_log = {
        let rolelb = Rolelb::start(&config(&r_ports, echo.addr, closed));
        run_scenarios(&r_ports, &|| rolelb.stderr_text())
    };
    let (h_raw, r_raw) = (raw_lines(&h_log), raw_lines(&r_log));
    assert_eq!(h_raw.len(), 9, "HAProxy's lines:\n{h_log}");
    assert_eq!(r_raw.len(), 9, "rolelb's lines:\n{r_log}");
    let body = haproxytcp_body();
    for (i, (h, r)) in h_raw[..8].iter().zip(&r_raw[..8]).enumerate() {
        let hc = body
            .captures(h)
            .unwrap_or_else(|| panic!("HAPROXYTCP does not match HAProxy's line {h}"));
        let rc = body
            .captures(r)
            .unwrap_or_else(|| panic!("HAPROXYTCP does not match rolelb's line {r}"));
        assert_eq!(
            comparable(&rc),
            comparable(&hc),
            "session {} differs:\n  haproxy: {h}\n  rolelb:  {r}",
            i + 1
        );
        assert!(is_accept_date(&rc["accept_date"]), "{r}");
        // Every timer is an integer; the total time is within a second of HAProxy's.
        let (ht, rt): (i64, i64) = (
            hc["time_duration"].parse().expect("haproxy Tt"),
            rc["time_duration"].parse().expect("rolelb Tt"),
        );
        assert!(
            (ht - rt).abs() < 1000,
            "Tt {rt} vs HAProxy's {ht}:\n{h}\n{r}"
        );
    }
    // What each scenario must show, whatever both print (so the comparison cannot pass on
    // two proxies that both went wrong).
    let states: Vec<String> = r_raw[..8]
        .iter()
        .map(|l| {
            let c = body.captures(l).expect("matched above");
            format!(
                "{}/{} {} {}/{}/{}/{}/{} {}/{}",
                &c["backend_name"],
                &c["server_name"],
                &c["termination_state"],
                &c["actconn"],
                &c["feconn"],
                &c["beconn"],
                &c["srvconn"],
                &c["retries"],
                &c["srv_queue"],
                &c["backend_queue"]
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            "be/s1 -- 1/1/0/0/0 0/0",
            "be/s1 -- 1/1/0/0/0 0/0",
            "be/s1 cD 1/1/0/0/0 0/0",
            "slow/s1 sD 1/1/0/0/0 0/0",
            "dead/d1 SC 1/1/0/0/1 0/0",
            "nosrv/<NOSRV> SC 1/1/0/0/0 0/0",
            "q/<NOSRV> sQ 2/2/1/0/0 0/1",
            "q/q1 -- 1/1/0/0/0 0/0",
        ]
    );
    // The rfc3164 target: the same lines behind a syslog header, as HAPROXYTCP expects them.
    let grok = haproxytcp();
    let (h_sys, r_sys) = (syslog_lines(&h_log), syslog_lines(&r_log));
    assert_eq!(r_sys.len(), h_sys.len(), "rfc3164 lines:\n{r_log}");
    for (h, r) in h_sys[..8].iter().zip(&r_sys[..8]) {
        let hc = grok.captures(h).expect("HAPROXYTCP matches HAProxy's line");
        let rc = grok
            .captures(r)
            .unwrap_or_else(|| panic!("HAPROXYTCP does not match rolelb's line {r}"));
        assert_eq!(comparable(&rc), comparable(&hc), "{h}\n{r}");
        assert_eq!(&rc["syslog_server"], &hc["syslog_server"], "{r}");
        assert_eq!(&r[..5], &h[..5], "priority local1.info: {r}");
        assert!(r.contains(" rolelb["), "{r}");
    }
    // `log-format`: the same text but for the process id, timestamps and addresses' ports.
    let normalize = |line: &str| {
        let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        // %bi: the server connection's local address is 127.0.0.1 for both.
        // %pid is a number, then %Ts and %ms: replaced by their shapes.
        let pid_at = words
            .iter()
            .position(|w| w.starts_with("|"))
            .expect("the %hr| word");
        for (k, w) in words.iter_mut().enumerate().skip(pid_at).take(3) {
            assert!(
                w.trim_start_matches('|')
                    .chars()
                    .all(|c| c.is_ascii_digit()),
                "word {k} of {line}"
            );
            *w = "N".into();
        }
        words.join(" ")
    };
    assert_eq!(normalize(&r_raw[8]), normalize(&h_raw[8]));
    let echo_hex = match echo.addr.ip() {
        std::net::IpAddr::V4(v4) => v4
            .octets()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>(),
        std::net::IpAddr::V6(_) => unreachable!("the echo server is on 127.0.0.1"),
    };
    assert!(
        r_raw[8].ends_with(&format!(" % {echo_hex}")),
        "{}",
        r_raw[8]
    );
}

#[test]
fn log_format_with_http_or_unknown_variables_is_refused_like_haproxy() {
    for (format, reason) in [
        ("%ci %r", "format variable 'r' is reserved for HTTP mode"),
        ("%ci %HM", "format variable 'HM' is reserved for HTTP mode"),
        ("%ci %Zz", "no such format variable 'Zz'"),
    ] {
        let cfg = format!(
            "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n\n\
             listen l\n    bind 127.0.0.1:{}\n    log stderr format raw local0\n    log-format \"{format}\"\n    server s 127.0.0.1:1\n",
            free_port()
        );
        let (h_ok, h_out) = Haproxy::check(&cfg);
        assert!(!h_ok && h_out.contains(reason), "HAProxy: {h_out}");
        let (ok, out) = Rolelb::check(&cfg);
        assert!(!ok, "rolelb -c accepted {format}: {out}");
        assert!(out.contains(":10: failed to parse log-format"), "{out}");
        assert!(out.contains(reason), "{out}");
    }
}

/// `log stderr format raw` prints the line alone, and a `log-format` line reaches the target
/// as soon as the session ends.
#[test]
fn raw_format_prints_only_the_line() {
    let echo = Echo::start();
    let port = free_port();
    let cfg = format!(
        "global\n    log stderr format raw local0\n\ndefaults\n    mode tcp\n    log global\n    \
         timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\n\
         listen l\n    bind 127.0.0.1:{port}\n    log-format \"%f/%s %B %ts\"\n    server s1 {}\n",
        echo.addr
    );
    let lb = Rolelb::start(&cfg);
    let started = Instant::now();
    let mut c = connect(port);
    assert_eq!(read_some(&mut c), b"hello\n");
    drop(c);
    assert!(
        wait_until(Duration::from_secs(5), || lb
            .stderr_text()
            .lines()
            .any(|l| l == "l/s1 6 --")),
        "no line 'l/s1 6 --' alone in {:?} after {:?}",
        lb.stderr_text(),
        started.elapsed()
    );
}

/// `log stdout` writes to standard output (here with `format short`: the level, then the
/// line), and nothing of it to standard error.
#[test]
fn stdout_target_gets_the_line_in_its_format() {
    let echo = Echo::start();
    let port = free_port();
    let cfg = format!(
        "global\n    log stdout format short local0\n\ndefaults\n    mode tcp\n    log global\n    \
         timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\n\
         listen l\n    bind 127.0.0.1:{port}\n    log-format \"%f/%s %B %ts\"\n    server s1 {}\n",
        echo.addr
    );
    let lb = Rolelb::start(&cfg);
    // The harness sends the process's standard output to `stdout.log` beside its config.
    let stdout = lb
        .config_path()
        .parent()
        .expect("the config's directory")
        .join("stdout.log");
    let mut c = connect(port);
    assert_eq!(read_some(&mut c), b"hello\n");
    drop(c);
    let read = || std::fs::read_to_string(&stdout).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(5), || read()
            .lines()
            .any(|l| l == "<6>l/s1 6 --")),
        "no '<6>l/s1 6 --' on stdout: {:?}",
        read()
    );
    assert!(
        !lb.stderr_text().contains("l/s1 6 --"),
        "{}",
        lb.stderr_text()
    );
}
