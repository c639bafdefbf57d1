//! The connections of the HTTP listeners (admin API and stats pages): the accept loop, the cap
//! of [`MAX_CONNECTIONS`] per listener and the idle timeout, so idle or slow clients cannot
//! starve `/healthz` or the API. A connection idle for [`HEADER_TIMEOUT`] (before its first
//! request head is complete, or between two requests) is closed; at the cap, the connection
//! idle the longest is closed to admit a new one, so only a cap full of requests being served
//! makes a newcomer wait. Requests themselves are answered by `http::handle`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::http::{Ctx, handle};
use crate::logging::Throttle;

/// Connections served at once per listener; at the cap the one idle the longest is closed to
/// admit a new one.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request's headers, and the longest a connection stays idle
/// before its first request or between two.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// No connection lives longer than this (keep-alive included).
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(300);

/// `idle_since` of a connection while a request is being served.
const BUSY: u64 = u64::MAX;
/// Pause after a failed `accept`.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// `accept` failed on an HTTP listener, all of them together.
static ACCEPT_FAILED: Throttle = Throttle::new();

/// One served connection, as its listener's cap sees it.
#[derive(Debug)]
struct ConnEntry {
    /// When the connection last went idle (milliseconds since [`Conns::epoch`]), or [`BUSY`].
    idle_since: AtomicU64,
    /// Cancelled to close the connection.
    close: CancellationToken,
}

/// The connections of one listener: the cap and the choice of whom to close at it.
#[derive(Debug)]
struct Conns {
    epoch: Instant,
    open: Mutex<HashMap<u64, Arc<ConnEntry>>>,
    next_id: AtomicU64,
    /// Woken when a connection ends.
    freed: Notify,
}

/// A connection's place among its listener's; leaving it (on drop) makes room.
struct Admitted {
    conns: Arc<Conns>,
    id: u64,
    entry: Arc<ConnEntry>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conns.lock().remove(&self.id);
        self.conns.freed.notify_waiters();
    }
}

/// Marks a connection busy while one request is served; idle again on drop.
struct Busy {
    conns: Arc<Conns>,
    entry: Arc<ConnEntry>,
}

impl Busy {
    fn enter(conns: &Arc<Conns>, entry: &Arc<ConnEntry>) -> Busy {
        entry.idle_since.store(BUSY, Ordering::Release);
        Busy {
            conns: conns.clone(),
            entry: entry.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.entry
            .idle_since
            .store(self.conns.now_ms(), Ordering::Release);
    }
}

impl Conns {
    fn new() -> Conns {
        Conns {
            epoch: Instant::now(),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            freed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(BUSY - 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnEntry>>> {
        // The map stays consistent even if a holder panicked: every change is one call.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more connection: below the cap at once; at the cap by closing the
    /// connection idle the longest. `None` while every connection is serving a request.
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.lock();
        let live = open.values().filter(|e| !e.close.is_cancelled()).count();
        if live >= MAX_CONNECTIONS {
            let oldest_idle = open
                .values()
                .filter(|e| !e.close.is_cancelled())
                .filter(|e| e.idle_since.load(Ordering::Acquire) != BUSY)
                .min_by_key(|e| e.idle_since.load(Ordering::Acquire))?;
            oldest_idle.close.cancel();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(ConnEntry {
            idle_since: AtomicU64::new(self.now_ms()),
            close: CancellationToken::new(),
        });
        open.insert(id, entry.clone());
        Some(Admitted {
            conns: self.clone(),
            id,
            entry,
        })
    }

    /// Returns once `entry` has been idle for [`HEADER_TIMEOUT`].
    async fn idle_expired(&self, entry: &ConnEntry) {
        let limit = u64::try_from(HEADER_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        loop {
            let since = entry.idle_since.load(Ordering::Acquire);
            let left = if since == BUSY {
                limit
            } else {
                let idle = self.now_ms().saturating_sub(since);
                if idle >= limit {
                    return;
                }
                limit - idle
            };
            tokio::time::sleep(Duration::from_millis(left)).await;
        }
    }
}

/// Accepts on `listener` until `stop`, serving each connection within the cap.
pub(super) async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, stop: CancellationToken) {
    let conns = Arc::new(Conns::new());
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if let Some(n) = ACCEPT_FAILED.hit() {
                    tracing::error!(
                        "HTTP: accept failed: {e} [{n} occurrences since the last such line]"
                    );
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let admitted = loop {
            let freed = conns.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(a) = conns.admit() {
                break a;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = &mut freed => {}
            }
        };
        tokio::spawn(serve_connection(
            stream,
            admitted,
            ctx.clone(),
            stop.clone(),
        ));
        // Let the new connection read its request (and so count as busy) before the next
        // accept can pick it as the idle one to close: under a flood of reconnecting idle
        // clients a real request is otherwise closed before it is read.
        tokio::task::yield_now().await;
    }
}

/// Serves one connection until the client closes, it stays idle too long, it is closed to
/// admit another, it reaches [`MAX_CONNECTION_LIFE`], or the listener stops.
async fn serve_connection(
    stream: TcpStream,
    admitted: Admitted,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
) {
    let (conns, entry) = (admitted.conns.clone(), admitted.entry.clone());
    let peer = stream.peer_addr().ok();
    let service = {
        let (conns, entry) = (conns.clone(), entry.clone());
        service_fn(move |req| {
            let ctx = ctx.clone();
            let busy = Busy::enter(&conns, &entry);
            async move {
                let resp = handle(&ctx, req, peer).await;
                drop(busy);
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(
            TokioIo::new(Progress {
                stream,
                conns: conns.clone(),
                entry: entry.clone(),
            }),
            service,
        );
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!("HTTP connection ended: {e}");
            }
        }
        _ = conns.idle_expired(&entry) => {}
        _ = entry.close.cancelled() => {}
        _ = tokio::time::sleep(MAX_CONNECTION_LIFE) => {}
        _ = stop.cancelled() => {}
    }
    drop(admitted);
}

/// A connection's socket that counts the response bytes it writes as activity: a client
/// reading a large answer slowly is not idle (a request head trickling in still is).
struct Progress {
    stream: TcpStream,
    conns: Arc<Conns>,
    entry: Arc<ConnEntry>,
}

impl tokio::io::AsyncRead for Progress {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Progress {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            // `fetch_max` leaves a busy connection (`BUSY` is the largest value) busy.
            let now = self.conns.now_ms();
            self.entry.idle_since.fetch_max(now, Ordering::AcqRel);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
