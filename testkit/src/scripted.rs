//! A real TCP server whose answer the test switches at run time, recording when each
//! connection arrived: the peer for health-check, HTTP-check and agent-check scenarios.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the server does with each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Write these bytes, then close.
    Bytes(Vec<u8>),
    /// Wait this long, then write these bytes and close (a slow server).
    Late(Duration, Vec<u8>),
    /// Accept and say nothing until the client gives up (a hung server).
    Silent,
    /// Close at once without a word.
    Close,
}

impl Reply {
    /// A text reply.
    pub fn text(s: &str) -> Reply {
        Reply::Bytes(s.as_bytes().to_vec())
    }

    /// An HTTP/1.0 response with `status`, closing after it.
    pub fn http(status: u16, reason: &str, body: &str) -> Reply {
        Reply::text(&format!(
            "HTTP/1.0 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }
}

struct State {
    reply: Mutex<Reply>,
    arrivals: Mutex<Vec<Instant>>,
    read_request: bool,
    stopping: AtomicBool,
}

/// The scripted server; stops (and frees its port) on drop.
pub struct Scripted {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl Scripted {
    /// Starts on an ephemeral 127.0.0.1 port. With `read_request`, it first reads the
    /// client's request up to an empty line (HTTP) before answering.
    pub fn start(reply: Reply, read_request: bool) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("scripted: bind");
        let addr = listener.local_addr().expect("scripted: addr");
        let state = Arc::new(State {
            reply: Mutex::new(reply),
            arrivals: Mutex::new(Vec::new()),
            read_request,
            stopping: AtomicBool::new(false),
        });
        let st = state.clone();
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(mut a) = st.arrivals.lock() {
                    a.push(Instant::now());
                }
                let st = st.clone();
                thread::spawn(move || serve(conn, &st));
            }
        });
        Scripted {
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// Address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Changes the answer for the next connections.
    pub fn set(&self, reply: Reply) {
        if let Ok(mut r) = self.state.reply.lock() {
            *r = reply;
        }
    }

    /// When each connection arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.state
            .arrivals
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }
}

fn serve(mut conn: TcpStream, st: &State) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    if st.read_request {
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 64 * 1024 {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
    }
    let reply = st.reply.lock().map(|r| r.clone()).unwrap_or(Reply::Close);
    if let Reply::Late(delay, _) = &reply {
        // The delay is the scenario (a slow answer), not a wait for a condition.
        thread::sleep(*delay);
    }
    match reply {
        Reply::Bytes(b) | Reply::Late(_, b) => {
            let _ = conn.write_all(&b);
            let _ = conn.shutdown(Shutdown::Write);
            // Let the client read and close first, as real servers do.
            drain(&mut conn);
        }
        Reply::Silent => {
            drain(&mut conn);
            if !st.stopping.load(Ordering::SeqCst) {
                // A hung server: the silence is the scenario, not a wait.
                thread::sleep(Duration::from_secs(5));
            }
        }
        Reply::Close => {}
    }
}

/// Reads until the peer closes (or the read timeout passes).
fn drain(conn: &mut TcpStream) {
    let mut sink = [0u8; 256];
    loop {
        match conn.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => return,
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

/// Gaps between consecutive arrivals after `from`.
pub fn gaps_after(arrivals: &[Instant], from: Instant) -> Vec<Duration> {
    let after: Vec<Instant> = arrivals.iter().copied().filter(|t| *t >= from).collect();
    after.windows(2).map(|w| w[1] - w[0]).collect()
}
