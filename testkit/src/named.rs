//! [`NamedServer`]: a tiny real TCP backend that says its name and echoes, so a balancing
//! test can see which backend served a client ([`who_answers`], [`open_named`]) and how many
//! sessions each one holds.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// Shared between a [`NamedServer`] and its threads.
#[derive(Default)]
struct NamedState {
    accepted: AtomicUsize,
    open: AtomicUsize,
    stopping: AtomicBool,
    next_id: AtomicU64,
    // Clones of open connections, so stop() can close them.
    conns: Mutex<HashMap<u64, TcpStream>>,
}

/// A tiny real TCP backend: on every connection it writes its name and "\n", then echoes
/// whatever it receives until the client closes. Counts connections, so balancing tests can
/// see which backend served a client and how many sessions each one holds.
pub struct NamedServer {
    name: String,
    addr: SocketAddr,
    state: Arc<NamedState>,
    acceptor: Option<JoinHandle<()>>,
}

impl NamedServer {
    /// Starts a server called `name` on an ephemeral 127.0.0.1 port.
    pub fn start(name: &str) -> NamedServer {
        NamedServer::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts a server called `name` on `addr` (e.g. a port a config already names).
    pub fn start_on(name: &str, addr: SocketAddr) -> NamedServer {
        let listener = TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("NamedServer {name}: bind {addr}: {e}"));
        let addr = listener.local_addr().expect("NamedServer: local_addr");
        let state = Arc::new(NamedState::default());
        let banner = format!("{name}\n");
        let acceptor = {
            let state = Arc::clone(&state);
            thread::spawn(move || accept_loop(listener, banner, state))
        };
        NamedServer {
            name: name.to_string(),
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// The server's name (the first line it sends).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open.
    pub fn open(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every open connection (like a backend going away).
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.state.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so it sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = acceptor.join();
        if let Ok(conns) = self.state.conns.lock() {
            for conn in conns.values() {
                let _ = conn.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for NamedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts until `stopping`; one thread per connection.
fn accept_loop(listener: TcpListener, banner: String, state: Arc<NamedState>) {
    for conn in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        state.open.fetch_add(1, Ordering::SeqCst);
        let id = state.next_id.fetch_add(1, Ordering::SeqCst);
        if let (Ok(clone), Ok(mut conns)) = (conn.try_clone(), state.conns.lock()) {
            conns.insert(id, clone);
        }
        let state = Arc::clone(&state);
        let banner = banner.clone();
        thread::spawn(move || {
            let _ = serve_named(conn, banner.as_bytes());
            if let Ok(mut conns) = state.conns.lock() {
                conns.remove(&id);
            }
            state.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Sends the banner, echoes until EOF, then half-closes.
fn serve_named(mut conn: TcpStream, banner: &[u8]) -> io::Result<()> {
    conn.write_all(banner)?;
    let mut reader = conn.try_clone()?;
    io::copy(&mut reader, &mut conn)?;
    conn.shutdown(Shutdown::Write)
}

/// Connects to `addr` and reads the first line a [`NamedServer`] sends (through any proxy);
/// returns the name and the still-open connection.
pub fn open_named(addr: SocketAddr) -> io::Result<(String, TcpStream)> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        // Byte by byte, so nothing after the newline is consumed from the stream.
        match conn.read(&mut byte)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{addr} closed before sending a name"),
                ));
            }
            _ if byte[0] == b'\n' => break,
            _ => name.push(byte[0]),
        }
    }
    Ok((String::from_utf8_lossy(&name).into_owned(), conn))
}

/// Connects to `addr`, returns the name of the [`NamedServer`] that answered, and closes.
pub fn who_answers(addr: SocketAddr) -> io::Result<String> {
    open_named(addr).map(|(name, _)| name)
}

/// Connects to `addr` from the source address `from` (a 127.0.0.0/8 address, so a proxy sees
/// a client of its own: `balance source`, `stick on src`, ACLs on `src`) and reads the first
/// line (a [`NamedServer`]'s name) or the close; also how long that took. `None` when the
/// connection closed or was reset without a line.
pub fn first_line_from(addr: SocketAddr, from: Ipv4Addr) -> (Option<String>, Duration) {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::V4(SocketAddrV4::new(from, 0)).into())
        .expect("bind the client address");
    let started = Instant::now();
    s.connect(&addr.into()).expect("connect to the proxy");
    let mut conn: TcpStream = s.into();
    conn.set_read_timeout(Some(Duration::from_secs(8)))
        .expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{addr}: neither an answer nor a close: {e}"),
        }
    }
    let waited = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    let answer = text.lines().next().map(str::to_string);
    (answer.filter(|a| !a.is_empty()), waited)
}
