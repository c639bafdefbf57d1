//! Edge values of every numeric keyword, run side by side under HAProxy 2.6 and rolelb.
//!
//! Each row of the table is one keyword at one value (0, 1, the maximum, one past it, with
//! and without units). Both `haproxy -c` and `rolelb -c` judge the config; when both accept
//! it, both run it on their own ports in front of their own test servers, and a probe records
//! what a client sees (open or closed after a while, which server answers, whether a second
//! client waits). The two must agree. Where HAProxy accepts a value rolelb cannot honour
//! exactly, the row says so and rolelb must refuse it with `FILE:LINE` and the reason.
//!
//! Longer than most files on purpose: it is one table (about 150 rows) with the probes and
//! test servers it needs; split, the table would no longer read as one.
//!
//! Rows run in parallel; every timing is a window of [`WINDOW`] against timeouts of 1 ms or
//! 300 ms on one side and "never" (0, or about 24 days) on the other, so the verdicts hold on
//! a loaded machine.
//!
//! Longer than 700 lines on purpose: one table of rows with its runner; the rows are data.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Blackhole, Haproxy, NamedServer, Rolelb, free_port, open_named, who_answers};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a probe watches a connection: far above the 300 ms timeouts, far below "never".
const WINDOW: Duration = Duration::from_millis(700);
/// How long a probe waits for the server's banner before calling the session bannerless.
const BANNER_WAIT: Duration = Duration::from_secs(5);

/// How many rows run at once (each starts two proxies and a few test servers).
const PARALLEL: usize = 10;

/// What a row's client does once both proxies run its config.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// Only `-c` is compared (what the value changes is not visible to a client in a test).
    CheckOnly,
    /// Reads the banner, then idles: `open` or `closed` after [`WINDOW`].
    Idle,
    /// Connects through to a server that never completes the handshake.
    Blackhole,
    /// Connects through to a port that refuses connections.
    Refused,
    /// A first client holds a session to `a`; what do the next N-1 clients see?
    Crowd(usize),
    /// 16 clients in turn over `a` and `b`: how many reach `a`.
    Share,
    /// After a second of health checks on `a` (a dead port), who answers (`b` is a backup).
    Checked,
    /// An open session, then a soft stop (SIGUSR1): `open` or `closed` after [`WINDOW`].
    SoftStop,
    /// Through to `hold` (never closes): the client half-closes, is the session closed?
    ClientCloses,
    /// Through to `fin` (half-closes after its banner); the client stays idle: is the session
    /// closed?
    ServerCloses,
}

/// One row: a keyword at a value, the config lines around it, and the probe.
struct Row {
    keyword: &'static str,
    value: &'static str,
    global: String,
    defaults: String,
    listen: String,
    probe: Probe,
    /// HAProxy accepts the value but rolelb refuses it on purpose; the error must contain this.
    refused_because: Option<&'static str>,
}

fn row(keyword: &'static str, value: &'static str, probe: Probe) -> Row {
    Row {
        keyword,
        value,
        global: String::new(),
        defaults: String::new(),
        listen: "server a 127.0.0.1:{a}".into(),
        probe,
        refused_because: None,
    }
}

impl Row {
    fn global(mut self, lines: String) -> Row {
        self.global = lines;
        self
    }
    fn defaults(mut self, lines: String) -> Row {
        self.defaults = lines;
        self
    }
    fn listen(mut self, lines: String) -> Row {
        self.listen = lines;
        self
    }
    fn refused(mut self, because: &'static str) -> Row {
        self.refused_because = Some(because);
        self
    }

    /// The config for one run; `{port}`, `{a}`, `{b}`, `{dead}`, `{hole}` are that run's ports.
    fn config(&self, env: &Env) -> String {
        let text = format!(
            "global\n    {}\ndefaults\n    mode tcp\n    {}\nlisten p\n    bind 127.0.0.1:{{port}}\n    {}\n",
            self.global.replace('\n', "\n    "),
            self.defaults.replace('\n', "\n    "),
            self.listen.replace('\n', "\n    "),
        );
        text.replace("{port}", &env.port.to_string())
            .replace("{a}", &env.a.port().to_string())
            .replace("{b}", &env.b.port().to_string())
            .replace("{dead}", &env.dead.to_string())
            .replace(
                "{hole}",
                &env.hole
                    .as_ref()
                    .map_or(env.dead, Blackhole::port)
                    .to_string(),
            )
            .replace("{hold}", &env.hold.port().to_string())
            .replace("{fin}", &env.fin.port().to_string())
    }
}

/// A server that sends a banner and keeps every connection open whatever the client does;
/// with `half_close` it shuts its sending side right after the banner.
struct Holder {
    listener: TcpListener,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Holder {
    fn start(half_close: bool) -> Holder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (accept, kept, stopping) = (
            listener.try_clone().expect("listener clone"),
            conns.clone(),
            stop.clone(),
        );
        thread::spawn(move || {
            for conn in accept.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.write_all(b"h\n");
                if half_close {
                    let _ = conn.shutdown(Shutdown::Write);
                }
                if let Ok(mut kept) = kept.lock() {
                    kept.push(conn);
                }
            }
        });
        Holder {
            listener,
            conns,
            stop,
        }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().expect("local_addr").port()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port()));
        if let Ok(mut conns) = self.conns.lock() {
            conns.clear();
        }
    }
}

/// The servers and ports one proxy run uses.
struct Env {
    port: u16,
    a: NamedServer,
    b: NamedServer,
    dead: u16,
    /// Only for rows whose config names `{hole}` (filling it takes a second).
    hole: Option<Blackhole>,
    hold: Holder,
    fin: Holder,
}

impl Env {
    fn new(with_hole: bool) -> Env {
        Env {
            port: free_port(),
            a: NamedServer::start("a"),
            b: NamedServer::start("b"),
            dead: free_port(),
            hole: with_hole.then(Blackhole::start),
            hold: Holder::start(false),
            fin: Holder::start(true),
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Reads `conn` for up to `window`: `closed` (EOF or reset), `banner NAME`, or `waiting`.
fn watch(conn: &mut TcpStream, window: Duration) -> String {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if conn.set_read_timeout(Some(left)).is_err() {
            return "closed".into();
        }
        match conn.read(&mut buf) {
            Ok(0) => return "closed".into(),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.contains(&b'\n') {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(_) => return "closed".into(),
        }
    }
    match got.split(|b| *b == b'\n').next().filter(|l| !l.is_empty()) {
        Some(line) => format!("banner {}", String::from_utf8_lossy(line)),
        None => "waiting".into(),
    }
}

/// After the banner, only the close matters: `open` or `closed` after `window`.
fn stays_open(conn: &mut TcpStream, window: Duration) -> String {
    match watch(conn, window).as_str() {
        "closed" => "closed".into(),
        _ => "open".into(),
    }
}

/// Watches a session: `closed`, or `open` when, once the server's banner came through (within
/// [`BANNER_WAIT`]: on a loaded machine the connect and the first bytes may take a while; that
/// is not what the row probes), it stays open for [`WINDOW`].
fn idle(conn: &mut TcpStream) -> String {
    match watch(conn, BANNER_WAIT).as_str() {
        "closed" => "closed".into(),
        "waiting" => "open without a banner".into(),
        _ => stays_open(conn, WINDOW),
    }
}

/// After the server's FIN came through and the client idled: can it still send (`open`,
/// half-closed), or did the proxy close the session (`closed`: a write fails, the first one
/// drawing a reset)?
fn writable(conn: &mut TcpStream) -> String {
    for _ in 0..3 {
        if conn.write_all(b"x").is_err() {
            return "closed".into();
        }
        thread::sleep(Duration::from_millis(50));
    }
    "open".into()
}

fn connect_and_watch(addr: SocketAddr) -> String {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(mut conn) => watch(&mut conn, WINDOW),
        Err(e) => format!("connect failed: {}", e.kind()),
    }
}

/// Runs `probe` against a proxy at `env.addr()`; `pid` is the proxy's (for signals).
fn run_probe(probe: Probe, env: &Env, pid: u32) -> String {
    let addr = env.addr();
    match probe {
        Probe::CheckOnly => String::new(),
        // A 1 ms timeout may close the session before or after the banner: both are "closed".
        Probe::Idle => match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut conn) => idle(&mut conn),
            Err(e) => format!("connect failed: {}", e.kind()),
        },
        Probe::Blackhole | Probe::Refused => connect_and_watch(addr),
        Probe::Crowd(n) => {
            let Ok((_, _first)) = open_named(addr) else {
                return "first client not served".into();
            };
            let mut others: Vec<Option<TcpStream>> = (1..n)
                .map(|_| {
                    let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok();
                    thread::sleep(Duration::from_millis(100));
                    conn
                })
                .collect();
            let seen: Vec<String> = others
                .iter_mut()
                .map(|c| match c {
                    Some(conn) => watch(conn, WINDOW),
                    None => "connect failed".into(),
                })
                .collect();
            seen.join(", ")
        }
        Probe::Share => {
            let a = (0..16)
                .filter(|_| who_answers(addr).is_ok_and(|n| n == "a"))
                .count();
            match a {
                0 => "a: none of 16".into(),
                6..=10 => "a: about half of 16".into(),
                15 | 16 => "a: (nearly) all of 16".into(),
                n => format!("a: {n} of 16"),
            }
        }
        Probe::Checked => {
            thread::sleep(Duration::from_secs(1));
            connect_and_watch(addr)
        }
        Probe::ClientCloses => match open_named(addr) {
            Ok((_, mut conn)) => {
                let _ = conn.shutdown(Shutdown::Write);
                stays_open(&mut conn, WINDOW)
            }
            Err(e) => format!("no banner: {}", e.kind()),
        },
        Probe::ServerCloses => match open_named(addr) {
            Ok((_, mut conn)) => {
                thread::sleep(WINDOW);
                writable(&mut conn)
            }
            Err(e) => format!("no banner: {}", e.kind()),
        },
        Probe::SoftStop => match open_named(addr) {
            Ok((_, mut conn)) => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGUSR1);
                stays_open(&mut conn, WINDOW)
            }
            Err(e) => format!("no banner: {}", e.kind()),
        },
    }
}

/// What one row gave.
struct Verdict {
    haproxy_valid: bool,
    rolelb_valid: bool,
    rolelb_output: String,
    haproxy_seen: String,
    rolelb_seen: String,
}

fn run_row(r: &Row) -> Verdict {
    let with_hole = [&r.global, &r.defaults, &r.listen]
        .iter()
        .any(|t| t.contains("{hole}"));
    let check_env = Env::new(false);
    let text = r.config(&check_env);
    let (haproxy_valid, _) = Haproxy::check(&text);
    let (rolelb_valid, rolelb_output) = Rolelb::check(&text);
    drop(check_env);
    let mut verdict = Verdict {
        haproxy_valid,
        rolelb_valid,
        rolelb_output,
        haproxy_seen: String::new(),
        rolelb_seen: String::new(),
    };
    if !(haproxy_valid && rolelb_valid) || matches!(r.probe, Probe::CheckOnly) {
        return verdict;
    }
    let probe = r.probe;
    let haproxy = thread::spawn({
        let env = Env::new(with_hole);
        let text = r.config(&env);
        move || {
            let proxy = Haproxy::start(&text);
            run_probe(probe, &env, proxy.pid())
        }
    });
    let env = Env::new(with_hole);
    let proxy = Rolelb::start(&r.config(&env));
    verdict.rolelb_seen = run_probe(probe, &env, proxy.pid());
    verdict.haproxy_seen = haproxy
        .join()
        .unwrap_or_else(|_| "haproxy probe panicked".into());
    verdict
}

const MAX_MS: &str = "2147483647";
const PAST_MAX_MS: &str = "2147483648";

fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    // Idle timeouts: one side under test, the other never times out.
    for v in [
        "0",
        "0s",
        "1",
        "100us",
        "300ms",
        MAX_MS,
        "24d",
        PAST_MAX_MS,
        "25d",
    ] {
        rows.push(row("timeout client", v, Probe::Idle).defaults(format!("timeout client {v}")));
    }
    for v in ["0", "1", "300ms", MAX_MS, "24d", "25d"] {
        rows.push(row("timeout server", v, Probe::Idle).defaults(format!("timeout server {v}")));
    }
    for v in ["0", "1", "24d", PAST_MAX_MS] {
        rows.push(row("timeout tunnel", v, Probe::Idle).defaults(format!(
            "timeout client 300ms\ntimeout server 300ms\ntimeout tunnel {v}"
        )));
    }
    for v in ["0", "1", "300ms", "24d", "25d"] {
        rows.push(
            row("timeout connect", v, Probe::Blackhole)
                .defaults(format!("timeout connect {v}\nretries 0"))
                .listen("server h 127.0.0.1:{hole}".into()),
        );
    }
    // `timeout queue 0` falls back to `timeout connect`.
    for (connect, v) in [
        ("0", "0"),
        ("300ms", "0"),
        ("0", "1"),
        ("0", "24d"),
        ("0", "25d"),
    ] {
        let keyword = if connect == "0" {
            "timeout queue"
        } else {
            "timeout queue (connect 300ms)"
        };
        rows.push(
            row(keyword, v, Probe::Crowd(2))
                .defaults(format!("timeout connect {connect}\ntimeout queue {v}"))
                .listen("server a 127.0.0.1:{a} maxconn 1".into()),
        );
    }
    // `timeout check` bounds the connect of a check by `timeout connect`; 0 leaves `inter`.
    for v in ["0", "1", "24d", PAST_MAX_MS] {
        rows.push(
            row("timeout check", v, Probe::Checked)
                .defaults(format!("timeout connect 50\nretries 0\ntimeout check {v}"))
                .listen(
                    "server a 127.0.0.1:{hole} check inter 24d fall 1\nserver b 127.0.0.1:{b} backup"
                        .into(),
                ),
        );
    }
    // The fin timeouts: 0 falls back to `timeout client` / `timeout server`.
    // Once a client sent its FIN nothing is read from it: `timeout client` no longer runs.
    rows.push(
        row(
            "timeout client (after the client's FIN)",
            "300ms",
            Probe::ClientCloses,
        )
        .defaults("timeout client 300ms".into())
        .listen("server h 127.0.0.1:{hold}".into()),
    );
    // As HAProxy, each applies to a side once a FIN was passed on to it: client-fin after the
    // server closed, server-fin after the client closed.
    for (keyword, probe, server, other) in [
        ("timeout client-fin", Probe::ServerCloses, "{fin}", "client"),
        (
            "timeout server-fin",
            Probe::ClientCloses,
            "{hold}",
            "server",
        ),
    ] {
        let which = keyword.trim_start_matches("timeout ");
        for (normal, v) in [
            ("0", "0"),
            ("300ms", "0"),
            ("0", "1"),
            ("0", "24d"),
            ("0", PAST_MAX_MS),
        ] {
            let name = if normal == "0" {
                keyword
            } else if other == "client" {
                "timeout client-fin (client 300ms)"
            } else {
                "timeout server-fin (server 300ms)"
            };
            rows.push(
                row(name, v, probe)
                    .defaults(format!("timeout {other} {normal}\ntimeout {which} {v}"))
                    .listen(format!("server h 127.0.0.1:{server}")),
            );
        }
    }
    // retries against a refused port, 100 ms apart.
    for v in ["0", "1", MAX_MS] {
        rows.push(
            row("retries", v, Probe::Refused)
                .defaults(format!("timeout connect 100ms\nretries {v}"))
                .listen("server d 127.0.0.1:{dead}".into()),
        );
    }
    rows.push(
        row("retries", PAST_MAX_MS, Probe::CheckOnly)
            .defaults(format!("retries {PAST_MAX_MS}"))
            .refused("between 0 and 2147483647"),
    );
    // maxconn on the proxy, in global, on the server.
    for v in ["0", "1", MAX_MS] {
        rows.push(
            row("maxconn (listen)", v, Probe::Crowd(2))
                .listen(format!("maxconn {v}\nserver a 127.0.0.1:{{a}}")),
        );
        if v == MAX_MS {
            // HAProxy's int arithmetic overflows on the descriptors this needs; rolelb refuses.
            rows.push(
                row("maxconn (global)", v, Probe::CheckOnly)
                    .global(format!("maxconn {v}"))
                    .refused("more than Linux allows one process"),
            );
        } else {
            rows.push(row("maxconn (global)", v, Probe::Crowd(2)).global(format!("maxconn {v}")));
        }
        rows.push(
            row("server maxconn", v, Probe::Crowd(2))
                .listen(format!("server a 127.0.0.1:{{a}} maxconn {v}")),
        );
    }
    for (keyword, listen) in [
        (
            "maxconn (listen)",
            format!("maxconn {PAST_MAX_MS}\nserver a 127.0.0.1:{{a}}"),
        ),
        (
            "server maxconn",
            format!("server a 127.0.0.1:{{a}} maxconn {PAST_MAX_MS}"),
        ),
        (
            "server maxqueue",
            format!("server a 127.0.0.1:{{a}} maxqueue {PAST_MAX_MS}"),
        ),
    ] {
        rows.push(
            row(keyword, PAST_MAX_MS, Probe::CheckOnly)
                .listen(listen)
                .refused("between 0 and 2147483647"),
        );
    }
    rows.push(
        row("maxconn (global)", PAST_MAX_MS, Probe::CheckOnly)
            .global(format!("maxconn {PAST_MAX_MS}"))
            .refused("between 0 and 2147483647"),
    );
    // fullconn and minconn: a server limit from minconn, with an idle backend, up to maxconn
    // at fullconn sessions (0: a tenth of the frontends' maxconn, the process's default here).
    for v in ["0", "1", "2", MAX_MS] {
        rows.push(row("fullconn", v, Probe::Crowd(3)).listen(format!(
            "fullconn {v}\nserver a 127.0.0.1:{{a}} minconn 1 maxconn 3"
        )));
    }
    for v in ["0", "1", MAX_MS] {
        rows.push(
            row("server minconn", v, Probe::Crowd(2))
                .listen(format!("server a 127.0.0.1:{{a}} minconn {v}")),
        );
    }
    for (keyword, listen) in [
        (
            "fullconn",
            format!("fullconn {PAST_MAX_MS}\nserver a 127.0.0.1:{{a}}"),
        ),
        (
            "server minconn",
            format!("server a 127.0.0.1:{{a}} minconn {PAST_MAX_MS}"),
        ),
    ] {
        rows.push(
            row(keyword, PAST_MAX_MS, Probe::CheckOnly)
                .listen(listen)
                .refused("between 0 and 2147483647"),
        );
    }
    for v in ["0", "1", MAX_MS] {
        rows.push(
            row("server maxqueue", v, Probe::Crowd(3))
                .listen(format!("server a 127.0.0.1:{{a}} maxconn 1 maxqueue {v}")),
        );
    }
    // leastconn queues past a full server's maxqueue in the backend; source refuses.
    for (keyword, balance) in [
        ("server maxqueue (leastconn)", "leastconn"),
        ("server maxqueue (source)", "source"),
    ] {
        rows.push(
            row(keyword, "1", Probe::Crowd(3))
                .defaults(format!("balance {balance}"))
                .listen("server a 127.0.0.1:{a} maxconn 1 maxqueue 1".into()),
        );
    }
    for v in ["0", "1", "256", "257"] {
        rows.push(row("weight", v, Probe::Share).listen(format!(
            "server a 127.0.0.1:{{a}} weight {v}\nserver b 127.0.0.1:{{b}}"
        )));
    }
    // Health checks of a dead server with a backup: is it marked down within a second?
    let checked = |opts: String| {
        format!("server a 127.0.0.1:{{dead}} check {opts}\nserver b 127.0.0.1:{{b}} backup")
    };
    for v in ["0", "1", "100", "24d", "25d"] {
        rows.push(
            row("inter", v, Probe::Checked)
                .defaults("retries 0".into())
                .listen(checked(format!("inter {v} fall 1"))),
        );
    }
    for v in ["0", "1", MAX_MS, PAST_MAX_MS] {
        rows.push(
            row("fall", v, Probe::Checked)
                .defaults("retries 0".into())
                .listen(checked(format!("inter 20 fall {v}"))),
        );
    }
    for v in ["0", "1", "24d"] {
        rows.push(
            row("fastinter", v, Probe::Checked)
                .defaults("retries 0".into())
                .listen(checked(format!("inter 24d fall 2 fastinter {v}"))),
        );
    }
    for (keyword, v) in [
        ("rise", "0"),
        ("rise", "1"),
        ("rise", MAX_MS),
        ("rise", PAST_MAX_MS),
        ("downinter", "0"),
        ("downinter", "1"),
        ("downinter", "24d"),
        ("downinter", "25d"),
        ("port", "0"),
        ("port", "1"),
        ("port", "65535"),
        ("port", "65536"),
    ] {
        let r = row(keyword, v, Probe::CheckOnly)
            .listen(format!("server a 127.0.0.1:{{a}} check {keyword} {v}"));
        // HAProxy stores the number unchecked and the port wraps to 0.
        rows.push(if v == "65536" {
            r.refused("between 1 and 65535")
        } else {
            r
        });
    }
    for v in ["0", "1", "24d", "25d"] {
        rows.push(row("agent-inter", v, Probe::CheckOnly).listen(format!(
            "server a 127.0.0.1:{{a}} agent-check agent-port {{dead}} agent-inter {v}"
        )));
    }
    for v in ["0", "1", "65535", "65536"] {
        rows.push(row("agent-port", v, Probe::CheckOnly).listen(format!(
            "server a 127.0.0.1:{{a}} agent-check agent-port {v}"
        )));
    }
    // slowstart never applies at start: both servers share evenly from the first client.
    for v in ["0", "1", "500ms", "24d", "25d"] {
        rows.push(row("slowstart", v, Probe::Share).listen(format!(
            "server a 127.0.0.1:{{a}} slowstart {v}\nserver b 127.0.0.1:{{b}}"
        )));
    }
    for v in ["0", "1", "24d", "25d"] {
        rows.push(
            row("hard-stop-after", v, Probe::SoftStop).global(format!("hard-stop-after {v}")),
        );
    }
    for v in ["0", "1", "64", "65"] {
        rows.push(row("nbthread", v, Probe::CheckOnly).global(format!("nbthread {v}")));
    }
    for v in ["0", "1", "65535", "65536"] {
        rows.push(
            row("bind port", v, Probe::CheckOnly)
                .listen(format!("bind 127.0.0.1:{v}\nserver a 127.0.0.1:{{a}}")),
        );
        // HAProxy's port 0 reuses the client's destination port; rolelb refuses it.
        let r = row("server address port", v, Probe::CheckOnly)
            .listen(format!("server a 127.0.0.1:{v}"));
        rows.push(if v == "0" {
            r.refused("is not supported: give a fixed port")
        } else {
            r
        });
        rows.push(
            row("tcp-check connect port", v, Probe::CheckOnly).listen(format!(
                "option tcp-check\ntcp-check connect port {v}\nserver a 127.0.0.1:{{a}} check"
            )),
        );
    }
    for v in ["0", "99", "100", "599", "600", "65536"] {
        rows.push(
            row("http-check expect status", v, Probe::CheckOnly).listen(format!(
                "option httpchk GET /\nhttp-check expect status {v}\nserver a 127.0.0.1:{{a}} check"
            )),
        );
    }
    for v in ["0", "600", "777", "7777"] {
        rows.push(
            row("stats socket mode", v, Probe::CheckOnly).global(format!(
                "stats socket /tmp/rolelb-edge-{{port}}.sock mode {v}"
            )),
        );
    }
    for v in ["0", "1", "24d", "25d"] {
        rows.push(row("stats refresh", v, Probe::CheckOnly).listen(format!(
            "server a 127.0.0.1:{{a}}\nlisten stats\n    mode http\n    bind 127.0.0.1:{{dead}}\n    stats enable\n    stats refresh {v}"
        )));
    }
    rows
}

#[test]
fn edge_values_behave_as_in_haproxy() {
    let rows = rows();
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<(usize, Verdict)>> = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().expect("row counter");
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(r) = rows.get(i) else { break };
                    let verdict = run_row(r);
                    results.lock().expect("results").push((i, verdict));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(i, _)| *i);
    let mut table = String::from(
        "| keyword | value | haproxy -c | rolelb -c | HAProxy: client sees | rolelb: client sees |\n|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for (i, v) in &results {
        let r = &rows[*i];
        let ok = |b: bool| if b { "valid" } else { "refused" };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.keyword,
            r.value,
            ok(v.haproxy_valid),
            ok(v.rolelb_valid),
            v.haproxy_seen,
            v.rolelb_seen
        ));
        let what = format!("{} {}", r.keyword, r.value);
        match (v.haproxy_valid, v.rolelb_valid, r.refused_because) {
            (_, false, _) if !v.rolelb_output.contains("check.cfg:") => failures.push(format!(
                "{what}: rolelb's error names no FILE:LINE: {}",
                v.rolelb_output
            )),
            (true, false, Some(because)) if v.rolelb_output.contains(because) => {}
            (true, false, _) => failures.push(format!(
                "{what}: HAProxy accepts it, rolelb refuses it unexpectedly: {}",
                v.rolelb_output
            )),
            (_, true, Some(_)) => {
                failures.push(format!("{what}: rolelb should refuse it and does not"))
            }
            (false, true, None) => {
                failures.push(format!("{what}: HAProxy refuses it, rolelb accepts it"))
            }
            _ => {}
        }
        if v.haproxy_seen != v.rolelb_seen {
            failures.push(format!(
                "{what}: a client sees '{}' through HAProxy but '{}' through rolelb",
                v.haproxy_seen, v.rolelb_seen
            ));
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "{}\n\n{table}", failures.join("\n"));
}
