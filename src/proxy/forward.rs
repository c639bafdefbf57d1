//! The byte copy between a client and its server, both ways, until both sides are done.
//!
//! Half-close is honoured: when one side sends FIN, the other side's write half is shut down
//! and the opposite direction keeps flowing. Inactivity is judged per side as HAProxy does:
//! `timeout client` for the client side, `timeout server` for the server side (reads or
//! writes count as activity), replaced by `timeout tunnel` for both when set. A side is timed
//! only while rolelb still reads from it or has data waiting for it: once a client sent its
//! FIN and everything was delivered, nothing waits on the client. Once rolelb has passed a FIN
//! on to a side, that side's limit becomes `timeout client-fin` / `timeout server-fin` when
//! set (HAProxy's half-closed timeouts). Bytes are counted into the given counters as they flow.
//! Each direction holds at most `tune.bufsize` bytes, as HAProxy's channel buffer in TCP mode:
//! one read never takes more, and the next read waits until they are all written.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle timeouts of one session.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    /// `timeout client`.
    pub client: Option<Duration>,
    /// `timeout server`.
    pub server: Option<Duration>,
    /// `timeout client-fin`.
    pub client_fin: Option<Duration>,
    /// `timeout server-fin`.
    pub server_fin: Option<Duration>,
    /// `timeout tunnel`.
    pub tunnel: Option<Duration>,
}

/// Counters a session adds its bytes to as they flow.
pub struct Counters<'a> {
    /// Client → server byte counters (frontend, server, ...).
    pub to_server: &'a [&'a AtomicU64],
    /// Server → client byte counters.
    pub to_client: &'a [&'a AtomicU64],
}

/// How a forwarded session ended, in HAProxy's termination-state letters where they exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed normally (`--`).
    Closed,
    /// The client side was idle too long (`cD`).
    ClientTimeout,
    /// The server side was idle too long (`sD`).
    ServerTimeout,
    /// The client reset or failed (`CD`).
    ClientError,
    /// The server reset or failed (`SD`).
    ServerError,
    /// rolelb closed it (shutdown-sessions, role loss or hard stop) (`KD`).
    Killed,
}

impl End {
    /// HAProxy's two-letter termination state.
    pub fn code(self) -> &'static str {
        match self {
            End::Closed => "--",
            End::ClientTimeout => "cD",
            End::ServerTimeout => "sD",
            End::ClientError => "CD",
            End::ServerError => "SD",
            End::Killed => "KD",
        }
    }
}

/// The outcome of [`forward`].
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Bytes copied client → server.
    pub bytes_in: u64,
    /// Bytes copied server → client.
    pub bytes_out: u64,
    /// Why it ended.
    pub end: End,
}

/// Milliseconds since `epoch`, for activity stamps shared by both directions.
fn stamp(epoch: Instant, at: &AtomicU64) {
    let ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    at.store(ms, Ordering::Relaxed);
}

/// Why one direction stopped.
enum DirEnd {
    /// The reader sent FIN and the writer was shut down.
    Eof,
    /// Reading failed.
    ReadErr,
    /// Writing failed.
    WriteErr,
}

struct Direction<'a> {
    rd_active: &'a AtomicU64,
    wr_active: &'a AtomicU64,
    /// Set while bytes wait to be written (the writer's side is then timed even if rolelb
    /// no longer reads from it).
    writing: &'a AtomicBool,
    bytes: &'a AtomicU64,
    counters: &'a [&'a AtomicU64],
}

async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    d: Direction<'_>,
    epoch: Instant,
    bufsize: usize,
) -> DirEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; bufsize.max(1)];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => {
                // Half-close: pass the FIN on; the other direction carries on.
                let _ = w.shutdown().await;
                return DirEnd::Eof;
            }
            Ok(n) => n,
            Err(_) => return DirEnd::ReadErr,
        };
        stamp(epoch, d.rd_active);
        d.writing.store(true, Ordering::Relaxed);
        let written = w.write_all(&buf[..n]).await;
        d.writing.store(false, Ordering::Relaxed);
        if written.is_err() {
            return DirEnd::WriteErr;
        }
        stamp(epoch, d.wr_active);
        let n = n as u64;
        d.bytes.fetch_add(n, Ordering::Relaxed);
        for c in d.counters {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The idle limit of one side: its half-closed timeout once rolelb passed a FIN on to it,
/// else `tunnel` or its normal timeout.
fn side_limit(
    normal: Option<Duration>,
    fin: Option<Duration>,
    tunnel: Option<Duration>,
    side: Side,
) -> Option<Duration> {
    match fin {
        Some(f) if side.fin_sent => Some(f),
        _ => tunnel.or(normal),
    }
}

/// How long an untimed side (see [`Side::timed`]) may go unlooked-at: a write toward it may
/// block meanwhile, and its timeout then runs from the last activity.
const UNTIMED_RECHECK: Duration = Duration::from_secs(1);

/// Where one side of a session stands.
#[derive(Debug, Clone, Copy)]
struct Side {
    /// rolelb still reads from it (it has not sent its FIN).
    reading: bool,
    /// Bytes wait to be written to it.
    writing: bool,
    /// rolelb has shut its write half toward it.
    fin_sent: bool,
}

impl Side {
    /// Whether anything waits on this side: as HAProxy, a side is only timed while rolelb
    /// reads from it or has bytes for it.
    fn timed(self) -> bool {
        self.reading || self.writing
    }
}

/// Copies bytes both ways between `client` and `server` until both directions end, a side
/// idles past its timeout, or `kill` completes; each direction holds at most `bufsize` bytes
/// (`tune.bufsize`).
pub async fn forward(
    client: &mut TcpStream,
    server: &mut TcpStream,
    timeouts: Timeouts,
    counters: Counters<'_>,
    bufsize: usize,
    kill: impl Future<Output = ()>,
) -> Outcome {
    let epoch = Instant::now();
    let client_active = AtomicU64::new(0);
    let server_active = AtomicU64::new(0);
    let bytes_in = AtomicU64::new(0);
    let bytes_out = AtomicU64::new(0);
    let writing_to_server = AtomicBool::new(false);
    let writing_to_client = AtomicBool::new(false);

    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let c2s = pump(
        &mut cr,
        &mut sw,
        Direction {
            rd_active: &client_active,
            wr_active: &server_active,
            writing: &writing_to_server,
            bytes: &bytes_in,
            counters: counters.to_server,
        },
        epoch,
        bufsize,
    );
    let s2c = pump(
        &mut sr,
        &mut cw,
        Direction {
            rd_active: &server_active,
            wr_active: &client_active,
            writing: &writing_to_client,
            bytes: &bytes_out,
            counters: counters.to_client,
        },
        epoch,
        bufsize,
    );
    tokio::pin!(c2s, s2c, kill);
    let mut c2s_done = false;
    let mut s2c_done = false;

    let end = loop {
        if c2s_done && s2c_done {
            break End::Closed;
        }
        let client = Side {
            reading: !c2s_done,
            writing: writing_to_client.load(Ordering::Relaxed),
            fin_sent: s2c_done,
        };
        let server = Side {
            reading: !s2c_done,
            writing: writing_to_server.load(Ordering::Relaxed),
            fin_sent: c2s_done,
        };
        let client_limit = side_limit(
            timeouts.client,
            timeouts.client_fin,
            timeouts.tunnel,
            client,
        );
        let server_limit = side_limit(
            timeouts.server,
            timeouts.server_fin,
            timeouts.tunnel,
            server,
        );
        let now = Instant::now();
        let deadline_of = |limit: Option<Duration>, active: &AtomicU64, side: Side| {
            limit
                .filter(|_| side.timed())
                .map(|l| epoch + Duration::from_millis(active.load(Ordering::Relaxed)) + l)
        };
        let client_deadline = deadline_of(client_limit, &client_active, client);
        let server_deadline = deadline_of(server_limit, &server_active, server);
        // An untimed side with a limit is looked at again later, in case a write to it blocks.
        let recheck = |limit: Option<Duration>, side: Side| {
            limit
                .filter(|_| !side.timed())
                .map(|l| now + l.min(UNTIMED_RECHECK))
        };
        let next = [
            client_deadline,
            server_deadline,
            recheck(client_limit, client),
            recheck(server_limit, server),
        ]
        .into_iter()
        .flatten()
        .min();
        if client_deadline.is_some_and(|d| d <= now) {
            break End::ClientTimeout;
        }
        if server_deadline.is_some_and(|d| d <= now) {
            break End::ServerTimeout;
        }
        let timer = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut c2s, if !c2s_done => match r {
                DirEnd::Eof => c2s_done = true,
                DirEnd::ReadErr => break End::ClientError,
                DirEnd::WriteErr => break End::ServerError,
            },
            r = &mut s2c, if !s2c_done => match r {
                DirEnd::Eof => s2c_done = true,
                DirEnd::ReadErr => break End::ServerError,
                DirEnd::WriteErr => break End::ClientError,
            },
            _ = timer => {}
            _ = &mut kill => break End::Killed,
        }
    };
    Outcome {
        bytes_in: bytes_in.load(Ordering::Relaxed),
        bytes_out: bytes_out.load(Ordering::Relaxed),
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    /// client_peer <-> [client | proxy | server] <-> server_peer
    async fn setup(t: Timeouts) -> (TcpStream, TcpStream, tokio::task::JoinHandle<Outcome>) {
        let (client_peer, mut client) = pair().await;
        let (mut server, server_peer) = pair().await;
        let task = tokio::spawn(async move {
            forward(
                &mut client,
                &mut server,
                t,
                Counters {
                    to_server: &[],
                    to_client: &[],
                },
                crate::config::DEFAULT_BUFSIZE,
                std::future::pending(),
            )
            .await
        });
        (client_peer, server_peer, task)
    }

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_flowing() {
        let (mut c, mut s, task) = setup(Timeouts::default()).await;
        c.write_all(b"query").await.expect("write");
        c.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read to FIN");
        assert_eq!(got, b"query");
        // The server still answers after the client's FIN.
        s.write_all(b"answer").await.expect("write");
        drop(s);
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"answer");
        let out = task.await.expect("join");
        assert_eq!(out.end, End::Closed);
        assert_eq!((out.bytes_in, out.bytes_out), (5, 6));
    }

    #[tokio::test]
    async fn idle_client_side_hits_timeout_client() {
        let t = Timeouts {
            client: Some(Duration::from_millis(150)),
            server: Some(Duration::from_secs(10)),
            ..Timeouts::default()
        };
        let (_c, _s, task) = setup(t).await;
        let started = std::time::Instant::now();
        let out = task.await.expect("join");
        assert_eq!(out.end, End::ClientTimeout);
        assert!(started.elapsed() >= Duration::from_millis(140));
    }

    #[tokio::test]
    async fn tunnel_timeout_replaces_client_and_server_timeouts() {
        // The gaps below are the test's input, not waits for a condition: each idle gap is
        // twice `timeout client`/`timeout server` and far below `timeout tunnel`, so a loaded
        // machine that stretches a gap cannot reach the tunnel timeout.
        let t = Timeouts {
            client: Some(Duration::from_millis(50)),
            server: Some(Duration::from_millis(50)),
            tunnel: Some(Duration::from_secs(3)),
            ..Timeouts::default()
        };
        let (mut c, mut s, task) = setup(t).await;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.write_all(b"x").await.expect("write");
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.expect("read");
        }
        assert!(!task.is_finished());
        let idle = std::time::Instant::now();
        let out = task.await.expect("join");
        assert_eq!(out.end, End::ClientTimeout);
        assert_eq!(out.bytes_in, 3);
        // Ended by the tunnel timeout: never before it.
        assert!(idle.elapsed() >= Duration::from_millis(2900));
    }

    #[tokio::test]
    async fn client_fin_timeout_applies_once_the_servers_fin_reached_the_client() {
        let t = Timeouts {
            client: Some(Duration::from_secs(10)),
            server: Some(Duration::from_secs(10)),
            client_fin: Some(Duration::from_millis(100)),
            ..Timeouts::default()
        };
        let (_c, mut s, task) = setup(t).await;
        s.shutdown().await.expect("shutdown");
        // A deadline between client-fin (100 ms) and timeout client (10 s), wide enough for
        // a loaded machine.
        let out = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("ends by client-fin, long before timeout client")
            .expect("join");
        assert_eq!(out.end, End::ClientTimeout);
    }

    #[tokio::test]
    async fn server_fin_timeout_applies_once_the_clients_fin_reached_the_server() {
        let t = Timeouts {
            client: Some(Duration::from_secs(10)),
            server: Some(Duration::from_secs(10)),
            server_fin: Some(Duration::from_millis(100)),
            ..Timeouts::default()
        };
        let (mut c, _s, task) = setup(t).await;
        c.shutdown().await.expect("shutdown");
        let out = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("ends by server-fin, long before timeout server")
            .expect("join");
        assert_eq!(out.end, End::ServerTimeout);
    }

    #[tokio::test]
    async fn a_client_that_sent_its_fin_is_not_timed_as_in_haproxy() {
        let t = Timeouts {
            client: Some(Duration::from_millis(100)),
            server: Some(Duration::from_millis(600)),
            ..Timeouts::default()
        };
        let (mut c, _s, task) = setup(t).await;
        c.shutdown().await.expect("shutdown");
        let started = std::time::Instant::now();
        let out = task.await.expect("join");
        // Nothing is read from the client any more: the server side ends it.
        assert_eq!(out.end, End::ServerTimeout);
        assert!(started.elapsed() >= Duration::from_millis(500));
    }

    /// Records the size of every write it is given.
    struct Recorder(Vec<usize>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.push(buf.len());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_direction_never_holds_more_than_tune_bufsize() {
        for bufsize in [16, 1008, crate::config::DEFAULT_BUFSIZE] {
            let data = vec![7u8; 100_000];
            let mut reader: &[u8] = &data;
            let mut writer = Recorder(Vec::new());
            let (a, b, c, w) = (
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicBool::new(false),
            );
            let d = Direction {
                rd_active: &a,
                wr_active: &b,
                writing: &w,
                bytes: &c,
                counters: &[],
            };
            let end = pump(&mut reader, &mut writer, d, Instant::now(), bufsize).await;
            assert!(matches!(end, DirEnd::Eof));
            assert_eq!(c.load(Ordering::Relaxed), 100_000);
            assert_eq!(writer.0.iter().max().copied(), Some(bufsize), "{bufsize}");
            assert_eq!(writer.0.len(), 100_000usize.div_ceil(bufsize), "{bufsize}");
        }
    }
}
