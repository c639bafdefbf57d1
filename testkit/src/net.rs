//! Ports and waiting: [`free_port`] hands out 127.0.0.1 ports no other test process holds, [`is_listening`] looks for a listener without connecting, and the `wait_*` helpers
//! poll until something holds or a timeout passes. [`bind_addrs`] reads a config's `bind` lines.

use std::collections::HashMap;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The ports this process handed out, each with its claim (see [`claim`]).
fn handed_out() -> &'static Mutex<HashMap<u16, Claim>> {
    static PORTS: OnceLock<Mutex<HashMap<u16, Claim>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The environment variable that makes [`free_port`] scan from a given port instead of a
/// random one (to repeat a run's ports, or to make two processes meet on purpose).
pub const SCAN_FROM: &str = "ROLELB_TEST_PORT_SCAN_FROM";

/// A machine-wide claim on a port, held until the process exits.
type Claim = std::os::unix::net::UnixListener;

/// Claims `port` for this process among all test processes of the machine: an abstract
/// unix socket named after the port (abstract names belong to the network namespace, so a
/// suite in a chroot and one outside it see each other's; the kernel drops the name when the
/// process exits, even killed). `None` when another live process holds it.
fn claim(port: u16) -> Option<Claim> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("rolelb-test-port-{port}");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    Claim::bind_addr(&addr).ok()
}

/// Ports [`free_port`] chooses from: below Linux's ephemeral range (32768 and up), so the
/// kernel never gives one of them to an outgoing connection between our check and the bind.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// A TCP port on 127.0.0.1 that nothing listens on and that no test process handed out.
///
/// Scans [`PORT_RANGE`] from a random start, skips ports handed out before in this process
/// or claimed by another test process (suites run side by side: several processes of one
/// run, or a run in a chroot beside one outside it), and proves each candidate free by
/// binding it (which also fails when another socket listens on the port's wildcard address).
pub fn free_port() -> u16 {
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let start = match std::env::var(SCAN_FROM)
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
    {
        Some(port) if PORT_RANGE.contains(&port) => port - PORT_RANGE.start,
        _ => (hasher.finish() % u64::from(span)) as u16,
    };
    let mut taken = handed_out().lock().expect("free_port: port set poisoned");
    for i in 0..span {
        let port = PORT_RANGE.start + (start + i) % span;
        if taken.contains_key(&port) {
            continue;
        }
        let Some(claim) = claim(port) else { continue };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port, claim);
            return port;
        }
    }
    panic!("free_port: no free port in {PORT_RANGE:?}");
}

/// True when some socket on this machine is in LISTEN state on `port` (any address, v4 or v6).
///
/// Reads `/proc/net/tcp{,6}` instead of connecting, so checking a proxy's port does not open a
/// session that the proxy would forward to a backend (and move its round-robin on).
pub fn is_listening(port: u16) -> bool {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        let Ok(text) = fs::read_to_string(table) else {
            return false;
        };
        text.lines().skip(1).any(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1).unwrap_or("");
            let state = cols.nth(1).unwrap_or("");
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            state == LISTEN && local_port == Some(port)
        })
    })
}

/// Waits until `addr` accepts a TCP connection; false if `timeout` passes first.
///
/// This opens (and closes) real connections: through a proxy they reach a backend. Use
/// [`wait_listening`] to wait for a proxy's listener without that side effect.
pub fn wait_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until something listens on `port` (see [`is_listening`]); false if `timeout` passes.
pub fn wait_listening(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || is_listening(port))
}

/// Polls `cond` every 50 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The addresses of every `bind` line in an HAProxy-syntax config, as addresses to reach them
/// at (`*`, `0.0.0.0` and an empty host become 127.0.0.1; `::` becomes ::1).
pub fn bind_addrs(cfg: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in cfg.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("bind") {
            continue;
        }
        let Some(list) = words.next() else { continue };
        for item in list.split(',') {
            let Some((host, port)) = item.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let ip = match host {
                "" | "*" | "0.0.0.0" => "127.0.0.1",
                "::" => "::1",
                other => other,
            };
            if let Ok(ip) = ip.parse() {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

/// A listener whose accept queue is full, so a connection to it never completes.
pub struct Blackhole {
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
    port: u16,
}

impl Blackhole {
    /// Starts one on a 127.0.0.1 port.
    pub fn start() -> Blackhole {
        let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
        listener.bind(&addr.into()).expect("bind");
        listener.listen(0).expect("listen");
        let port = listener
            .local_addr()
            .expect("local_addr")
            .as_socket()
            .expect("inet address")
            .port();
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        // Fill the accept queue until a handshake goes unanswered: from then on the kernel
        // drops every SYN to it. The timeout is generous so a slow machine cannot fool it.
        let mut fillers = Vec::new();
        while let Ok(conn) = TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            fillers.push(conn);
            assert!(
                fillers.len() < 64,
                "the blackhole's accept queue never fills"
            );
        }
        Blackhole {
            _listener: listener,
            _fillers: fillers,
            port,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}
