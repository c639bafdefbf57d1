//! In-process backend servers that the proxies forward to.
//!
//! Every listener speaks the same tiny protocol, so one kind of server can sit behind both
//! `server` lines of the generated config: the client's first byte picks the mode
//! ([`Mode`]), and the rest of the connection is echo, sink, source or an idle hold. The servers run on
//! the bench's own tokio runtime and stop when [`Backends`] is dropped.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Size of the buffers used to move bulk data, on both the backend and the client side.
pub const CHUNK: usize = 64 * 1024;

/// No backend connection lives longer than this, whatever the client does.
const MAX_CONN_LIFETIME: Duration = Duration::from_secs(600);

/// No backend listener accepts more connections than this in one run.
const MAX_ACCEPTS: u64 = 10_000_000;

/// What a backend connection does, chosen by the first byte the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send back every byte received until the client closes.
    Echo,
    /// Read and discard until the client half-closes, then reply with the byte count (u64, big endian).
    Sink,
    /// Send data as fast as possible until the client goes away.
    Source,
    /// Echo the next byte once, then hold the connection open, idle, until the client
    /// closes: the far end of an idle session, with a 16-byte buffer so that the bench's
    /// own memory stays small with thousands of them.
    Hold,
}

impl Mode {
    /// The byte a client sends first to select this mode.
    pub fn byte(self) -> u8 {
        match self {
            Mode::Echo => b'E',
            Mode::Sink => b'S',
            Mode::Source => b'D',
            Mode::Hold => b'H',
        }
    }

    fn from_byte(b: u8) -> Option<Mode> {
        match b {
            b'E' => Some(Mode::Echo),
            b'S' => Some(Mode::Sink),
            b'D' => Some(Mode::Source),
            b'H' => Some(Mode::Hold),
            _ => None,
        }
    }
}

/// The running backend listeners; dropping this stops them.
pub struct Backends {
    /// The addresses the listeners are bound to, one per `server` line.
    pub addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Backends {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds `count` listeners on 127.0.0.1 ephemeral ports and starts serving them.
pub async fn start(count: usize) -> Result<Backends> {
    let mut addrs = Vec::with_capacity(count);
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a backend listener on 127.0.0.1")?;
        addrs.push(listener.local_addr().context("backend listener address")?);
        tasks.push(tokio::spawn(accept_loop(listener)));
    }
    Ok(Backends { addrs, tasks })
}

async fn accept_loop(listener: TcpListener) {
    for _ in 0..MAX_ACCEPTS {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    // A failed backend connection shows up as an error on the client side,
                    // which is where it is counted.
                    let _ = tokio::time::timeout(MAX_CONN_LIFETIME, serve(stream)).await;
                });
            }
            // Out of descriptors or similar: back off briefly rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await?;
    match Mode::from_byte(first[0]) {
        Some(Mode::Echo) => echo(stream).await,
        Some(Mode::Sink) => sink(stream).await,
        Some(Mode::Source) => source(stream).await,
        Some(Mode::Hold) => hold(stream).await,
        None => Ok(()),
    }
}

async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
    }
}

async fn sink(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    stream.write_all(&total.to_be_bytes()).await?;
    stream.shutdown().await
}

async fn hold(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 16];
    stream.read_exact(&mut buf[..1]).await?;
    stream.write_all(&buf[..1]).await?;
    // Anything more the client sends is read and dropped; EOF or an error ends it.
    while stream.read(&mut buf).await? > 0 {}
    Ok(())
}

async fn source(mut stream: TcpStream) -> std::io::Result<()> {
    let buf = vec![0x5au8; CHUNK];
    loop {
        // Ends with an error (reset or broken pipe) once the client closes.
        stream.write_all(&buf).await?;
    }
}
