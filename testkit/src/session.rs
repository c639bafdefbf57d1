//! Session state: the one place that decides whether a peer closed a connection.
//!
//! A read that times out means the peer is still there and silent: the session is OPEN. Only an
//! EOF or an error other than a timeout (reset, aborted) means CLOSED. Every test that asks "was
//! this session closed?" goes through these helpers, so none can count a silent, open session as
//! closed. [`refusal_time`] builds on them to time a balancer's "no server" refusal.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How soon [`refusal_time`] must see a refusal for it to count as "at once": far below any
/// `timeout connect` or `timeout queue` the tests use (3 s), loose enough for a shared,
/// loaded 2-core test machine.
pub const REFUSAL_BOUND: Duration = Duration::from_millis(1000);

/// Connects to `addr` and waits (up to 5 s) for the peer to close without a word, as a
/// balancer with no server to offer does; returns how long that took. Err when the peer
/// answered, or kept the connection open (a server on the other side).
pub fn refusal_time(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    match read_session_until(&mut conn, Duration::from_secs(5), true) {
        (Session::Closed, got) if got.is_empty() => Ok(started.elapsed()),
        (_, got) if !got.is_empty() => Err(format!(
            "{addr} answered instead of refusing: {:?}",
            String::from_utf8_lossy(&got)
        )),
        _ => Err(format!(
            "{addr} neither answered nor closed within {:?}",
            started.elapsed()
        )),
    }
}

/// True while the peer of `conn` has not closed it (see [`session_state`]) within a 100 ms read.
/// Whatever the peer sent is consumed.
pub fn still_open(conn: &mut TcpStream) -> bool {
    session_state(conn, Duration::from_millis(100)) == Session::Open
}

/// What the client end of a TCP session sees of its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// The peer has not closed: reads block (or returned data).
    Open,
    /// The peer closed (EOF) or reset the connection.
    Closed,
}

/// Reads `conn` for up to `wait`, keeping whatever arrives, and stops early when the peer
/// closes. Returns the state at the end and the bytes received meanwhile. The stream's read
/// timeout is restored before returning.
pub fn read_session(conn: &mut TcpStream, wait: Duration) -> (Session, Vec<u8>) {
    read_session_until(conn, wait, false)
}

/// [`read_session`], returning as soon as the first bytes arrive when `stop_on_data`.
fn read_session_until(
    conn: &mut TcpStream,
    wait: Duration,
    stop_on_data: bool,
) -> (Session, Vec<u8>) {
    let before = conn.read_timeout().ok().flatten();
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let state = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Session::Open;
        }
        conn.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("setting a read timeout");
        match conn.read(&mut buf) {
            Ok(0) => break Session::Closed,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if stop_on_data {
                    break Session::Open;
                }
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => break Session::Open,
                io::ErrorKind::Interrupted => {}
                _ => break Session::Closed,
            },
        }
    };
    let _ = conn.set_read_timeout(before);
    (state, got)
}

/// The state of `conn` after reading it for up to `wait` (data that arrives is consumed).
pub fn session_state(conn: &mut TcpStream, wait: Duration) -> Session {
    read_session(conn, wait).0
}

/// Waits up to `timeout` for the peer to close `conn`; returns how long that took, or `None`
/// when the session is still open at the deadline.
pub fn wait_closed(conn: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    (session_state(conn, timeout) == Session::Closed).then(|| started.elapsed())
}
