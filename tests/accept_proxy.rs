//! `bind ... accept-proxy` side by side with HAProxy 2.6: the same config (`balance source`
//! over two servers, `send-proxy` and `send-proxy-v2` to a server that reports the header it
//! received, `option dontlognull`, `log stderr format raw`), the same client bytes (v1
//! `TCP4`/`TCP6`/`UNKNOWN`, v2 `PROXY`/`LOCAL` with TLVs, HAProxy's lenient v1 readings,
//! malformed, truncated, silent and closed clients), and the same observables: which server a
//! connection reaches, the header that server receives, whether the client is closed, and
//! the log line (`%ci:%cp %fi:%fp` from the header, or HAProxy's refusal line naming the
//! frontend and listener).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{Haproxy, NamedServer, Rolelb, free_port, wait_until};
use ppp::v2::{Builder, Command, Protocol, Type, Version};
use regex::Regex;
use rolelb::config::ProxyProtocol;
use rolelb::proxy::proxy_protocol;
use socket2::{Domain, Socket};

/// A server that reads the PROXY header rolelb or HAProxy sends, answers one line
/// describing it (`PROXY TCP4 ...` for v1, `v2 COMMAND ADDRESSES` for v2), then echoes.
struct Recorder {
    addr: SocketAddr,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let addr = listener.local_addr().expect("recorder addr");
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                thread::spawn(move || record(conn));
            }
        });
        Recorder { addr }
    }
}

fn record(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(line) = read_header(&mut conn) else {
        return;
    };
    if conn.write_all(format!("{line}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 || conn.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = conn.shutdown(Shutdown::Both);
}

/// Reads exactly one PROXY header and describes it.
fn read_header(conn: &mut TcpStream) -> Option<String> {
    let mut head = [0u8; 16];
    conn.read_exact(&mut head[..6]).ok()?;
    if &head[..6] == b"PROXY " {
        let mut line = head[..6].to_vec();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            conn.read_exact(&mut byte).ok()?;
            line.push(byte[0]);
        }
        return Some(String::from_utf8_lossy(&line[..line.len() - 2]).into_owned());
    }
    conn.read_exact(&mut head[6..]).ok()?;
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    let mut header = head.to_vec();
    header.resize(16 + len, 0);
    conn.read_exact(&mut header[16..]).ok()?;
    Some(match ppp::v2::Header::try_from(header.as_slice()) {
        Ok(h) => format!("v2 {:?} {:?}", h.command, h.addresses),
        Err(e) => format!("v2 unreadable: {e:?}"),
    })
}

/// The listening ports of one proxy under test.
struct Ports {
    hashed: u16,
    plain: u16,
    relay: u16,
    plain2: u16,
    relay2: u16,
    quiet: u16,
    direct: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            hashed: free_port(),
            plain: free_port(),
            relay: free_port(),
            plain2: free_port(),
            relay2: free_port(),
            quiet: free_port(),
            direct: free_port(),
        }
    }

    fn all(&self) -> [u16; 7] {
        [
            self.hashed,
            self.plain,
            self.relay,
            self.plain2,
            self.relay2,
            self.quiet,
            self.direct,
        ]
    }
}

const FORMAT: &str = "%ci:%cp %fi:%fp %ft %b/%s";

fn config(p: &Ports, a: SocketAddr, b: SocketAddr, rec: SocketAddr) -> String {
    format!(
        "global\n    log stderr format raw local0\n\n\
         defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 2s\n    \
         timeout client 2s\n    timeout server 30s\n\n\
         listen hashed\n    bind 127.0.0.1:{hashed} accept-proxy\n    log-format \"{FORMAT}\"\n    \
         balance source\n    server a {a}\n    server b {b}\n\n\
         listen direct\n    bind 127.0.0.1:{direct}\n    balance source\n    server a {a}\n    \
         server b {b}\n\n\
         listen relay\n    bind 127.0.0.1:{plain}\n    bind 127.0.0.1:{relay} accept-proxy name pp\n    \
         log-format \"{FORMAT}\"\n    server rec {rec} send-proxy\n\n\
         listen relay2\n    bind 127.0.0.1:{plain2}\n    bind 127.0.0.1:{relay2} accept-proxy\n    \
         log-format \"{FORMAT}\"\n    server rec {rec} send-proxy-v2\n\n\
         listen quiet\n    bind 127.0.0.1:{quiet} accept-proxy\n    option dontlognull\n    \
         server rec {rec} send-proxy\n",
        hashed = p.hashed,
        plain = p.plain,
        relay = p.relay,
        plain2 = p.plain2,
        relay2 = p.relay2,
        quiet = p.quiet,
        direct = p.direct,
    )
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn v1(src: &str, dst: &str) -> Vec<u8> {
    proxy_protocol::header(ProxyProtocol::V1, addr(src), addr(dst))
}

fn v2(src: &str, dst: &str) -> Vec<u8> {
    proxy_protocol::header(ProxyProtocol::V2, addr(src), addr(dst))
}

/// A v2 header with TLVs (NOOP, AUTHORITY, a custom type), as a real load balancer sends.
fn v2_with_tlvs(src: &str, dst: &str) -> Vec<u8> {
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (addr(src), addr(dst)),
    )
    .write_tlv(Type::NoOp, &[0u8; 7])
    .expect("noop tlv")
    .write_tlv(Type::Authority, b"db.example.org")
    .expect("authority tlv")
    .write_tlv(0xe0u8, b"custom")
    .expect("custom tlv")
    .build()
    .expect("v2 header")
}

/// A raw v2 header: version/command, family, body.
fn v2_raw(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(ver_cmd);
    h.push(fam);
    h.extend_from_slice(&u16::try_from(body.len()).expect("short body").to_be_bytes());
    h.extend_from_slice(body);
    h
}

/// 10.0.0.1:1234 -> 10.0.0.2:5432, then a CRC32C TLV with a wrong checksum.
fn v2_bad_crc() -> Vec<u8> {
    let mut body = vec![10, 0, 0, 1, 10, 0, 0, 2, 0x04, 0xd2, 0x15, 0x38];
    body.extend_from_slice(&[0x03, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]);
    v2_raw(0x21, 0x11, &body)
}

/// What the client does on one connection.
#[derive(Clone, Copy)]
enum Act {
    /// Write these bytes at once, read the reply, close.
    Send(&'static str, fn() -> Vec<u8>),
    /// Write these bytes and wait, without closing, until the proxy acts.
    SendAndWait(&'static str, fn() -> Vec<u8>),
    /// Connect and close the writing side at once.
    CloseAtOnce(&'static str),
}

impl Act {
    fn name(&self) -> &'static str {
        match self {
            Act::Send(n, _) | Act::SendAndWait(n, _) | Act::CloseAtOnce(n) => n,
        }
    }
}

/// What one connection showed.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// The first line the server sent back (its name, or the header it received), or
    /// `closed` when the proxy closed the connection without one.
    reply: String,
    /// The payload sent after the header came back (it was forwarded, not eaten).
    payload_echoed: bool,
    /// The log line, normalized (`-` when none came).
    log: String,
}

const PAYLOAD: &[u8] = b"hello-after-header\n";

/// Runs `act` against `port`; `lines` counts the log lines so far and `last` returns the
/// newest one. `expect_line` false: wait a moment and make sure none comes.
fn run(
    port: u16,
    act: Act,
    lines: &dyn Fn() -> Vec<String>,
    ports: &Ports,
    expect_line: bool,
) -> Outcome {
    let before = lines().len();
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let sport = conn.local_addr().expect("client addr").port();
    let mut with_payload = false;
    match act {
        Act::Send(_, bytes) => {
            let mut data = bytes();
            data.extend_from_slice(PAYLOAD);
            with_payload = true;
            let _ = conn.write_all(&data);
        }
        Act::SendAndWait(_, bytes) => {
            let _ = conn.write_all(&bytes());
        }
        Act::CloseAtOnce(_) => {
            let _ = conn.shutdown(Shutdown::Write);
        }
    }
    let received = read_reply(&mut conn, with_payload);
    drop(conn);
    let (reply, payload_echoed) = match received {
        None => ("closed".to_string(), false),
        Some(text) => {
            let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
            (
                first.to_string(),
                rest.as_bytes() == PAYLOAD && with_payload,
            )
        }
    };
    let log = if expect_line {
        assert!(
            wait_until(Duration::from_secs(10), || lines().len() > before),
            "no log line for '{}'",
            act.name()
        );
        lines()[before].clone()
    } else {
        thread::sleep(Duration::from_millis(1500));
        assert_eq!(lines().len(), before, "a line for '{}'", act.name());
        "-".to_string()
    };
    let normalize = |s: &str| normalize(s, sport, ports);
    Outcome {
        reply: normalize(&reply),
        payload_echoed,
        log: normalize(&log),
    }
}

/// Reads the reply: the first line, and the echoed payload when one was sent. `None` when
/// the proxy closed (or reset) the connection before a line.
fn read_reply(conn: &mut TcpStream, with_payload: bool) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let done = match got.iter().position(|&b| b == b'\n') {
            Some(i) => !with_payload || got[i + 1..].ends_with(PAYLOAD),
            None => false,
        };
        if done {
            break;
        }
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the reply: {e} (got {got:?})"),
        }
    }
    (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned())
}

/// Sets aside what differs between two runs: the accept date, the client's own port and the
/// proxy's own ports.
fn normalize(s: &str, sport: u16, ports: &Ports) -> String {
    let date = Regex::new(r"\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}\.\d{3}\]").expect("re");
    let mut s = date.replace_all(s, "[DATE]").into_owned();
    s = s.replace(&sport.to_string(), "CPORT");
    for (i, port) in ports.all().iter().enumerate() {
        s = s.replace(&port.to_string(), &format!("PORT{i}"));
    }
    s
}

/// The proxy's log lines (`format raw` on stderr): those that start with `ADDRESS:PORT `.
fn log_lines(stderr: &str) -> Vec<String> {
    let re = Regex::new(r"^[0-9a-fA-F.:]+:\d+ ").expect("re");
    stderr
        .lines()
        .filter(|l| re.is_match(l))
        .map(str::to_owned)
        .collect()
}

/// The listeners the scenarios connect to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum On {
    /// `relay`'s `accept-proxy name pp` bind (`send-proxy` to the recorder).
    Relay,
    /// `relay2`'s second bind, `accept-proxy` (`send-proxy-v2`).
    Relay2,
    /// `relay`'s first bind, without `accept-proxy`.
    Plain,
    /// `quiet`: `accept-proxy` with `option dontlognull`.
    Quiet,
}

impl On {
    fn port(self, p: &Ports) -> u16 {
        match self {
            On::Relay => p.relay,
            On::Relay2 => p.relay2,
            On::Plain => p.plain,
            On::Quiet => p.quiet,
        }
    }
}

fn send(name: &'static str, bytes: fn() -> Vec<u8>) -> Act {
    Act::Send(name, bytes)
}

fn send_and_wait(name: &'static str, bytes: fn() -> Vec<u8>) -> Act {
    Act::SendAndWait(name, bytes)
}

#[rustfmt::skip]
fn relay_cases() -> Vec<(On, Act)> {
    use On::*;
    vec![
        (Relay, send("v1 TCP4", || v1("192.0.2.10:1111", "198.51.100.20:5432"))),
        (Relay, send("v1 TCP6", || v1("[2001:db8::10]:2222", "[2001:db8::20]:6432"))),
        (Relay, send("v1 UNKNOWN", || b"PROXY UNKNOWN\r\n".to_vec())),
        (Relay, send("v2 TCP4", || v2("192.0.2.11:3333", "198.51.100.21:5433"))),
        (Relay, send("v2 TCP6 with TLVs", || v2_with_tlvs("[2001:db8::11]:4444", "[2001:db8::21]:6433"))),
        (Relay, send("v2 LOCAL", || v2_raw(0x20, 0x00, &[]))),
        (Relay2, send("v1 TCP4, send-proxy-v2", || v1("192.0.2.12:1212", "198.51.100.22:5434"))),
        (Relay2, send("v2 TCP6, send-proxy-v2", || v2("[2001:db8::12]:1313", "[2001:db8::22]:6434"))),
        (Relay2, send("v2 LOCAL, send-proxy-v2", || v2_raw(0x20, 0x11, &[1; 12]))),
        (Relay, send("v1 TCP4 short address, port over 65535", || b"PROXY TCP4 10.1.2 10.0.0.1 70000 5\r\n".to_vec())),
        (Relay, send("v1 TCP4 octet over 255", || b"PROXY TCP4 1.2.1300.4 1.0.300.1  2\r\n".to_vec())),
        (Relay, send("v1 TCP6 trailing words", || b"PROXY TCP6 ::1 ::2 7 8 more words\r\n".to_vec())),
        (Plain, send("no header on a plain bind", Vec::new)),
        (Relay, send("v1 UNKNOWN with addresses", || b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n".to_vec())),
        (Relay, send("v1 bad port", || b"PROXY TCP4 1.2.3.4 5.6.7.8 x 2\r\n".to_vec())),
        (Relay, send("v1 LF only", || b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\n".to_vec())),
        (Relay, send("v1 TCP6 bad address", || b"PROXY TCP6 ::g ::2 1 2\r\n".to_vec())),
        (Relay, send("HTTP instead of a header", || b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec())),
        (Relay, send_and_wait("short garbage", || b"hello\n".to_vec())),
        (Relay, send_and_wait("v1 cut short", || b"PROXY TCP4 192.0.2.1".to_vec())),
        (Relay2, send_and_wait("v2 cut short", || v2("[::1]:1", "[::2]:2")[..30].to_vec())),
        (Relay2, send("v2 bad CRC32C", v2_bad_crc)),
        (Relay2, send("v2 version 1", || v2_raw(0x11, 0x11, &[1; 12]))),
        (Relay2, send("v2 command 2", || v2_raw(0x22, 0x11, &[1; 12]))),
        (Relay2, send("v2 PROXY UNSPEC", || v2_raw(0x21, 0x00, &[]))),
        (Relay2, send("v2 TCP4 too short", || v2_raw(0x21, 0x11, &[1; 11]))),
        (Relay, Act::CloseAtOnce("closed before a header")),
        (Quiet, Act::CloseAtOnce("closed before a header, dontlognull")),
        (Quiet, send_and_wait("v1 cut short, dontlognull", || b"PROXY TCP6 ::1".to_vec())),
        (Relay, send("v1 TCP4 after the failures", || v1("192.0.2.13:1414", "198.51.100.23:5435"))),
    ]
}

fn run_relay_cases(ports: &Ports, stderr: &dyn Fn() -> String) -> Vec<(String, Outcome)> {
    let lines = || log_lines(&stderr());
    relay_cases()
        .into_iter()
        .map(|(on, act)| {
            // `option dontlognull` drops the line of a client that sent nothing.
            let logged = !(on == On::Quiet && matches!(act, Act::CloseAtOnce(_)));
            let outcome = run(on.port(ports), act, &lines, ports, logged);
            (act.name().to_string(), outcome)
        })
        .collect()
}

fn servers() -> (NamedServer, NamedServer, Recorder) {
    (
        NamedServer::start("a"),
        NamedServer::start("b"),
        Recorder::start(),
    )
}

#[test]
fn accepted_and_refused_headers_match_haproxy() {
    let (a, b, rec) = servers();
    let (h_ports, r_ports) = (Ports::new(), Ports::new());
    let theirs = {
        let haproxy = Haproxy::start(&config(&h_ports, a.addr(), b.addr(), rec.addr));
        run_relay_cases(&h_ports, &|| haproxy.stderr_text())
    };
    let ours = {
        let rolelb = Rolelb::start(&config(&r_ports, a.addr(), b.addr(), rec.addr));
        run_relay_cases(&r_ports, &|| rolelb.stderr_text())
    };
    for ((name, o), (_, h)) in ours.iter().zip(&theirs) {
        assert_eq!(
            o, h,
            "'{name}': rolelb (left) differs from HAProxy 2.6 (right)"
        );
    }
    // What the comparison covers, spelled out for the main cases.
    let get = |name: &str| &ours.iter().find(|(n, _)| n == name).expect("case").1;
    let v1 = get("v1 TCP4");
    assert_eq!(v1.reply, "PROXY TCP4 192.0.2.10 198.51.100.20 1111 5432");
    assert!(v1.payload_echoed);
    assert_eq!(v1.log, "192.0.2.10:1111 198.51.100.20:5432 relay relay/rec");
    let local = get("v2 LOCAL");
    assert_eq!(local.reply, "PROXY TCP4 127.0.0.1 127.0.0.1 CPORT PORT2");
    assert_eq!(local.log, "127.0.0.1:CPORT 127.0.0.1:PORT2 relay relay/rec");
    let bad = get("v1 bad port");
    assert_eq!(bad.reply, "closed");
    assert_eq!(
        bad.log,
        "127.0.0.1:CPORT [DATE] relay/pp: Received an invalid PROXY protocol header"
    );
    assert_eq!(
        get("v2 cut short").log,
        "127.0.0.1:CPORT [DATE] relay2/2: Truncated PROXY protocol header received"
    );
    assert_eq!(
        get("v2 bad CRC32C").log,
        "10.0.0.1:1234 [DATE] relay2/2: Received an invalid PROXY protocol header"
    );
    assert!(get("v1 TCP4 after the failures").payload_echoed);
}

/// The server that answers a connection to `port` from `src` (any of 127.0.0.0/8), after
/// sending `header` (if not empty).
fn served_from(src: Ipv4Addr, port: u16, header: &[u8]) -> String {
    let sock = Socket::new(Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())
        .expect("bind source");
    sock.connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)).into(),
        Duration::from_secs(3),
    )
    .expect("connect");
    let mut conn: TcpStream = sock.into();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(header).expect("write header");
    read_reply(&mut conn, false)
        .unwrap_or_else(|| "closed".into())
        .trim_end()
        .to_string()
}

/// For each client address: the server a direct connection from it reaches, and the servers
/// two connections from 127.0.0.1 reach with a v1 and a v2 header carrying it.
fn source_picks(ports: &Ports, sources: &[Ipv4Addr]) -> Vec<(String, String, String)> {
    let local = Ipv4Addr::LOCALHOST;
    sources
        .iter()
        .enumerate()
        .map(|(i, &ip)| {
            let src = SocketAddr::new(IpAddr::V4(ip), 1000 + i as u16);
            let dst = addr("192.0.2.1:5432");
            let via = |version| {
                served_from(
                    local,
                    ports.hashed,
                    &proxy_protocol::header(version, src, dst),
                )
            };
            (
                served_from(ip, ports.direct, &[]),
                via(ProxyProtocol::V1),
                via(ProxyProtocol::V2),
            )
        })
        .collect()
}

/// `balance source` picks from the header's address, just as for a client connecting from
/// that address: checked on HAProxy and on rolelb alike. (Which server an address maps to is
/// each one's own hash; rolelb's is not HAProxy's, see `balance/source.rs`.)
#[test]
fn balance_source_hashes_the_address_the_header_carries() {
    let (a, b, rec) = servers();
    let sources: Vec<Ipv4Addr> = (1..=16u8)
        .map(|i| Ipv4Addr::new(127, 0, i, i * 3))
        .collect();
    let (h_ports, r_ports) = (Ports::new(), Ports::new());
    let theirs = {
        let _haproxy = Haproxy::start(&config(&h_ports, a.addr(), b.addr(), rec.addr));
        source_picks(&h_ports, &sources)
    };
    let ours = {
        let _rolelb = Rolelb::start(&config(&r_ports, a.addr(), b.addr(), rec.addr));
        source_picks(&r_ports, &sources)
    };
    for (who, picks) in [("HAProxy", &theirs), ("rolelb", &ours)] {
        for (src, (direct, v1, v2)) in sources.iter().zip(picks) {
            assert!(
                direct == v1 && direct == v2,
                "{who}, client {src}: direct to {direct}, with a v1 header to {v1}, v2 to {v2}"
            );
        }
        let names: Vec<&str> = picks.iter().map(|p| p.0.as_str()).collect();
        assert!(
            names.contains(&"a") && names.contains(&"b"),
            "{who}: both servers take clients: {names:?}"
        );
    }
}

/// A client that sends nothing is closed when `timeout client` (2 s) expires, with HAProxy's
/// line; meanwhile the listener serves others.
fn silent_client(port: u16, ports: &Ports, stderr: &dyn Fn() -> String) -> (Duration, String) {
    let lines = || log_lines(&stderr());
    let before = lines().len();
    let started = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let sport = silent.local_addr().expect("addr").port();
    // Served while the silent one waits.
    let mut other = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    other
        .write_all(&v1("192.0.2.99:999", "192.0.2.1:5432"))
        .expect("write");
    let reply = read_reply(&mut other, false).expect("served while another client is silent");
    assert!(reply.starts_with("PROXY TCP4 192.0.2.99 "), "{reply}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    drop(other);
    assert!(
        read_reply(&mut silent, false).is_none(),
        "the silent client is closed"
    );
    let waited = started.elapsed();
    assert!(
        wait_until(Duration::from_secs(5), || lines().len() >= before + 2),
        "two lines"
    );
    let line = lines()
        .into_iter()
        .skip(before)
        .find(|l| l.contains("Timeout"))
        .expect("the timeout line");
    (waited, normalize(&line, sport, ports))
}

#[test]
fn a_silent_client_is_closed_at_timeout_client_while_others_are_served() {
    let (a, b, rec) = servers();
    let (h_ports, r_ports) = (Ports::new(), Ports::new());
    let (h_wait, h_line) = {
        let haproxy = Haproxy::start(&config(&h_ports, a.addr(), b.addr(), rec.addr));
        silent_client(h_ports.relay, &h_ports, &|| haproxy.stderr_text())
    };
    let (r_wait, r_line) = {
        let rolelb = Rolelb::start(&config(&r_ports, a.addr(), b.addr(), rec.addr));
        silent_client(r_ports.relay, &r_ports, &|| rolelb.stderr_text())
    };
    assert_eq!(r_line, h_line);
    assert_eq!(
        r_line,
        "127.0.0.1:CPORT [DATE] relay/pp: Timeout while waiting for PROXY protocol header"
    );
    for wait in [h_wait, r_wait] {
        assert!(
            wait >= Duration::from_millis(1800) && wait < Duration::from_secs(4),
            "closed after {wait:?} (HAProxy {h_wait:?}, rolelb {r_wait:?}); timeout client is 2s"
        );
    }
}

#[test]
fn accept_proxy_is_valid_on_tcp_binds_and_refused_on_a_stats_page() {
    let port = free_port();
    let ok = format!(
        "defaults\n    mode tcp\n    timeout client 1s\n\nlisten l\n    \
         bind 127.0.0.1:{port} accept-proxy name pp\n    server s 127.0.0.1:1\n"
    );
    for (valid, out) in [Rolelb::check(&ok), Haproxy::check(&ok)] {
        assert!(valid, "{out}");
    }
    let stats = format!(
        "listen st\n    mode http\n    bind 127.0.0.1:{port} accept-proxy\n    stats enable\n"
    );
    let (valid, out) = Rolelb::check(&stats);
    assert!(!valid, "{out}");
    assert!(
        out.contains(":3: bind option 'accept-proxy' is not supported on stats listener 'st'"),
        "{out}"
    );
    let expect = format!(
        "defaults\n    mode tcp\n\nlisten l\n    bind 127.0.0.1:{port}\n    \
         tcp-request connection expect-proxy layer4\n    server s 127.0.0.1:1\n"
    );
    let (valid, out) = Rolelb::check(&expect);
    assert!(!valid, "{out}");
    assert!(
        out.contains(":6: 'tcp-request connection expect-proxy' is not supported"),
        "{out}"
    );
}
