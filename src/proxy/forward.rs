//! The byte copy between a client and its server, both ways, until both sides are done.
//!
//! Half-close is honoured: when one side sends FIN, the other side's write half is shut down
//! and the opposite direction keeps flowing. Inactivity is judged per side as HAProxy does:
//! `timeout client` for the client side, `timeout server` for the server side (reads or
//! writes count as activity; writes not for reading with `option independent-streams`; a
//! write waiting on a side is timed from when it began: see [`deadline`]), replaced by
//! `timeout tunnel` for both when set. A side is timed
//! only while rolelb still reads from it or has data waiting for it: once a client sent its
//! FIN and everything was delivered, nothing waits on the client. Once rolelb has passed a FIN
//! on to a side, that side's limit becomes `timeout client-fin` / `timeout server-fin` when
//! set (HAProxy's half-closed timeouts). Bytes are counted into the given counters as they flow.
//! Each direction holds at most `tune.bufsize` bytes, as HAProxy's channel buffer in TCP mode:
//! one read never takes more, and the next read waits until they are all written.
//!
//! A direction waits for its source to be readable holding nothing, then takes a buffer from
//! its thread's pool (`bufpool`) or, when it splices (`splice`), a pipe, and gives it back
//! once what it read is written: an idle session holds neither.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

use super::bufpool::Buf;
use super::splice::{self, Pipe, SpliceWhen, Streamer};

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
    /// The frontend's `option independent-streams`: writes to the client do not refresh
    /// the client side's read timeout.
    pub client_independent: bool,
    /// The backend's `option independent-streams`: writes to the server do not refresh the
    /// server side's read timeout.
    pub server_independent: bool,
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
    /// Of both, the bytes that went through a pipe (splice).
    pub spliced: u64,
    /// Why it ended.
    pub end: End,
}

/// Milliseconds since `epoch`, for activity stamps shared by both directions.
fn since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Stamps `at` with now.
fn stamp(epoch: Instant, at: &AtomicU64) {
    at.store(since(epoch), Ordering::Relaxed);
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

/// Which way a [`Direction`] carries bytes, and its bits in the session's [`Flags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    ToServer,
    ToClient,
}

/// What each direction of a session is doing, for the other direction and the timeouts.
#[derive(Debug, Default)]
struct Flags(AtomicU8);

impl Flags {
    fn writing_bit(way: Way) -> u8 {
        match way {
            Way::ToServer => 1,
            Way::ToClient => 2,
        }
    }
    fn ended_bit(way: Way) -> u8 {
        Flags::writing_bit(way) << 2
    }
    /// Bytes going `way` wait to be written (the writer's side is then timed even if
    /// rolelb no longer reads from it).
    fn writing(&self, way: Way) -> bool {
        self.0.load(Ordering::Relaxed) & Flags::writing_bit(way) != 0
    }
    fn set_writing(&self, way: Way, on: bool) {
        if on {
            self.0.fetch_or(Flags::writing_bit(way), Ordering::Relaxed);
        } else {
            self.0
                .fetch_and(!Flags::writing_bit(way), Ordering::Relaxed);
        }
    }
    /// Marks `way` as ended (its reader's FIN passed on); true when the other way had
    /// already ended.
    fn end(&self, way: Way) -> bool {
        let other = match way {
            Way::ToServer => Way::ToClient,
            Way::ToClient => Way::ToServer,
        };
        self.0.fetch_or(Flags::ended_bit(way), Ordering::AcqRel) & Flags::ended_bit(other) != 0
    }
}

struct Direction<'a> {
    rd_active: &'a AtomicU64,
    wr_active: &'a AtomicU64,
    /// Both directions' state, shared.
    flags: &'a Flags,
    way: Way,
    bytes: &'a AtomicU64,
    /// Bytes of this session moved through a pipe.
    spliced: &'a AtomicU64,
    counters: &'a [&'a AtomicU64],
}

impl Direction<'_> {
    /// Bytes were just read and now wait to be written: the reader's side was active and
    /// the writer's side is timed from now (HAProxy sets the write timeout when a write
    /// begins); one clock reading stamps both.
    fn read_then_write(&self, epoch: Instant) {
        let now = since(epoch);
        self.rd_active.store(now, Ordering::Relaxed);
        self.wr_active.store(now, Ordering::Relaxed);
        self.flags.set_writing(self.way, true);
    }

    /// Counts `n` bytes written out, and stamps the writer's side active.
    fn wrote(&self, n: usize, epoch: Instant) {
        stamp(epoch, self.wr_active);
        self.count(n);
    }

    /// Counts `n` bytes written out, without a new stamp: for a write that went out at once,
    /// which [`Direction::read_then_write`] stamped already.
    fn count(&self, n: usize) {
        let n = n as u64;
        self.bytes.fetch_add(n, Ordering::Relaxed);
        for c in self.counters {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// How a session moves its bytes: `tune.bufsize` and when each direction splices.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// `tune.bufsize`: the most one direction holds when copying.
    pub bufsize: usize,
    /// When each direction splices.
    pub splice: splice::Policy,
    /// The backend's `option nolinger`: as in HAProxy, the client's FIN is not passed on
    /// to the server; the session ends there and the server's connection is reset.
    pub server_nolinger: bool,
}

/// The side bytes are read from: waited on for readability, then read without blocking.
trait Source {
    /// Ready when a read would not block (or fails). A poll function, not tokio's
    /// `readable()`: that future carries a waiter node of its own (~170 bytes), which an
    /// idle session would hold for its whole life; this uses the socket's reader slot.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads what is there without waiting; `WouldBlock` when nothing is. A read shorter
    /// than `buf` took everything there was: the source is no longer ready (as HAProxy
    /// takes a short read), so the next wait does not return at once only for a read that
    /// would find nothing.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// The socket, when the source is one (splicing needs it).
    fn socket(&self) -> Option<&TcpStream>;
}

impl Source for ReadHalf<'_> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut short = 0;
        // A `WouldBlock` from the closure clears the readiness tokio saw before the read,
        // not readiness that new bytes raised since.
        let read = self.as_ref().try_io(Interest::READABLE, || {
            let n = ReadHalf::try_read(self, buf)?;
            if n > 0 && n < buf.len() {
                short = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
            other => other,
        }
    }
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

/// The side bytes are written to.
trait Sink: AsyncWrite + Unpin {
    /// The socket, when the sink is one (splicing needs it).
    fn socket(&self) -> Option<&TcpStream>;
}

impl Sink for WriteHalf<'_> {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

/// What one spliced round did.
enum Spliced {
    /// Bytes went through the pipe (or, readiness being stale, none were there).
    Moved,
    /// The source sent its FIN.
    Eof,
    /// No pipe, or these sockets cannot splice: copy instead.
    Copy { for_good: bool },
    /// Reading failed.
    ReadErr,
    /// Writing failed.
    WriteErr,
}

/// One round of splicing `from` → `to` through a lent pipe.
async fn splice_round(
    from: &TcpStream,
    to: &TcpStream,
    d: &Direction<'_>,
    epoch: Instant,
    policy: splice::Policy,
) -> Spliced {
    let Some(mut pipe) = Pipe::take(policy.maxpipes, policy.pipesize) else {
        return Spliced::Copy { for_good: false };
    };
    match pipe.fill(from) {
        Ok(0) => return Spliced::Eof,
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Spliced::Moved,
        Err(e) if splice::unsupported(&e) => return Spliced::Copy { for_good: true },
        Err(_) => return Spliced::ReadErr,
    }
    d.read_then_write(epoch);
    let drained = pipe
        .drain(to, |n| {
            d.spliced.fetch_add(n as u64, Ordering::Relaxed);
            d.wrote(n, epoch);
        })
        .await;
    d.flags.set_writing(d.way, false);
    match drained {
        Ok(()) => Spliced::Moved,
        Err(_) => Spliced::WriteErr,
    }
}

/// What one direction carries from one round to the next.
struct Carry {
    /// HAProxy's fast-streamer detection (`splice-auto`).
    streamer: Streamer,
    /// False once the sockets refused splicing: they are not asked again.
    may_splice: bool,
}

/// Moves bytes `r` → `w` until the reader's FIN (passed on) or an error. Between rounds it
/// waits for readability holding only its own small state; a round's state (buffer, pipe,
/// pending write) is boxed, so an idle session's future does not carry it. (A plain `fn`
/// returning an `async move` block: an `async fn` would store its arguments twice.)
#[allow(clippy::manual_async_fn)]
fn pump<'a, R, W>(
    r: &'a R,
    w: &'a mut W,
    d: Direction<'a>,
    epoch: Instant,
    flow: Flow,
    when: SpliceWhen,
) -> impl Future<Output = DirEnd> + 'a
where
    R: Source,
    W: Sink,
{
    async move {
        let mut carry = Carry {
            streamer: Streamer::default(),
            may_splice: when != SpliceWhen::Never,
        };
        loop {
            if std::future::poll_fn(|cx| r.poll_read_ready(cx))
                .await
                .is_err()
            {
                return DirEnd::ReadErr;
            }
            if let Some(end) = Box::pin(round(r, w, &d, epoch, flow, when, &mut carry)).await {
                return end;
            }
        }
    }
}

/// One round of a readable direction: splice or read once, then write it all out. `None`
/// when the direction carries on.
async fn round<R, W>(
    r: &R,
    w: &mut W,
    d: &Direction<'_>,
    epoch: Instant,
    flow: Flow,
    when: SpliceWhen,
    carry: &mut Carry,
) -> Option<DirEnd>
where
    R: Source,
    W: Sink,
{
    let splicing = carry.may_splice && (when == SpliceWhen::Always || carry.streamer.fast());
    if let (true, Some(from), Some(to)) = (splicing, r.socket(), w.socket()) {
        match splice_round(from, to, d, epoch, flow.splice).await {
            Spliced::Moved => return None,
            Spliced::Eof => {
                pass_fin(w, d, flow).await;
                return Some(DirEnd::Eof);
            }
            Spliced::Copy { for_good } => carry.may_splice &= !for_good,
            Spliced::ReadErr => return Some(DirEnd::ReadErr),
            Spliced::WriteErr => return Some(DirEnd::WriteErr),
        }
    }
    let bufsize = flow.bufsize.max(1);
    // The clock is read for the fast-streamer detection only where it can lead to splicing.
    let now = carry.may_splice.then(Instant::now);
    if let Some(now) = now {
        carry.streamer.before_read(now);
    }
    let mut buf = Buf::take(bufsize);
    let n = match r.try_read(&mut buf) {
        Ok(0) => {
            drop(buf);
            // Half-close: pass the FIN on; the other direction carries on.
            pass_fin(w, d, flow).await;
            return Some(DirEnd::Eof);
        }
        Ok(n) => n,
        // Readiness was stale: wait again, holding nothing.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
        Err(_) => return Some(DirEnd::ReadErr),
    };
    if let Some(now) = now {
        carry.streamer.after_read(n, bufsize, now);
    }
    d.read_then_write(epoch);
    // Written piece by piece so that each piece that goes out counts as activity: a slow
    // reader that keeps taking bytes is not timed out (HAProxy refreshes the write timeout
    // on every partial write).
    let mut off = 0;
    // Whether a write had to wait: else everything went out with the read's stamp.
    let mut waited = false;
    let written = loop {
        if off == n {
            break Ok(());
        }
        let piece = std::future::poll_fn(|cx| {
            let poll = Pin::new(&mut *w).poll_write(cx, &buf[off..n]);
            waited |= poll.is_pending();
            poll
        });
        match piece.await {
            Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(k) => {
                off += k;
                if off < n {
                    stamp(epoch, d.wr_active);
                }
            }
            Err(e) => break Err(e),
        }
    };
    d.flags.set_writing(d.way, false);
    drop(buf);
    if written.is_err() {
        return Some(DirEnd::WriteErr);
    }
    if waited {
        d.wrote(n, epoch);
    } else {
        d.count(n);
    }
    None
}

/// Passes the reader's FIN on to `w` (`shutdown` of its writing side), unless the other way
/// has ended already: the session is then over and closing both sockets right after sends
/// the FIN, as HAProxy closes without a `shutdown` once both sides are done (every byte the
/// other side sent was read, so the close is a FIN, not a reset).
/// With the backend's `option nolinger` a client's FIN ends the session instead (see
/// [`Flow::server_nolinger`]).
async fn pass_fin<W: Sink>(w: &mut W, d: &Direction<'_>, flow: Flow) {
    let silent = flow.server_nolinger && d.way == Way::ToServer;
    if !d.flags.end(d.way) && !silent {
        let _ = w.shutdown().await;
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

/// When a side times out, as HAProxy times it: while rolelb reads from it, `limit` after it
/// was last read from — or last written to, unless `independent` (`option
/// independent-streams`); while bytes wait for it, `limit` after the write began or last
/// made progress. `None` when nothing waits on it.
fn deadline(
    epoch: Instant,
    limit: Option<Duration>,
    side: Side,
    rd: &AtomicU64,
    wr: &AtomicU64,
    independent: bool,
) -> Option<Instant> {
    let limit = limit?;
    let (rd, wr) = (rd.load(Ordering::Relaxed), wr.load(Ordering::Relaxed));
    let read_base = side
        .reading
        .then(|| if independent { rd } else { rd.max(wr) });
    let write_base = side.writing.then_some(wr);
    let base = match (read_base, write_base) {
        (Some(r), Some(w)) => r.min(w),
        (r, w) => r.or(w)?,
    };
    Some(epoch + Duration::from_millis(base) + limit)
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
/// (`tune.bufsize`) or splices as `flow` says.
#[allow(clippy::manual_async_fn)]
pub fn forward<'a>(
    client: &'a mut TcpStream,
    server: &'a mut TcpStream,
    timeouts: Timeouts,
    counters: Counters<'a>,
    flow: Flow,
    kill: impl Future<Output = ()> + 'a,
) -> impl Future<Output = Outcome> + 'a {
    // An `async move` block rather than an `async fn`, which would store its arguments twice
    // in every session's future.
    async move {
        let epoch = Instant::now();
        // When each side was last read from, and last written to (or a write to it began).
        let (client_rd, client_wr) = (AtomicU64::new(0), AtomicU64::new(0));
        let (server_rd, server_wr) = (AtomicU64::new(0), AtomicU64::new(0));
        let bytes_in = AtomicU64::new(0);
        let bytes_out = AtomicU64::new(0);
        let flags = Flags::default();
        let spliced = AtomicU64::new(0);

        let (cr, mut cw) = client.split();
        let (sr, mut sw) = server.split();
        let c2s = pump(
            &cr,
            &mut sw,
            Direction {
                rd_active: &client_rd,
                wr_active: &server_wr,
                flags: &flags,
                way: Way::ToServer,
                bytes: &bytes_in,
                spliced: &spliced,
                counters: counters.to_server,
            },
            epoch,
            flow,
            flow.splice.request,
        );
        let s2c = pump(
            &sr,
            &mut cw,
            Direction {
                rd_active: &server_rd,
                wr_active: &client_wr,
                flags: &flags,
                way: Way::ToClient,
                bytes: &bytes_out,
                spliced: &spliced,
                counters: counters.to_client,
            },
            epoch,
            flow,
            flow.splice.response,
        );
        // One timer for the session's life, moved to each new deadline: a later deadline (the
        // usual move) only updates it, and it is registered with the runtime once.
        let timer = tokio::time::sleep_until(epoch);
        tokio::pin!(c2s, s2c, kill, timer);
        let mut c2s_done = false;
        let mut s2c_done = false;
        let mut first = true;

        let end = loop {
            if c2s_done && s2c_done {
                break End::Closed;
            }
            let client = Side {
                reading: !c2s_done,
                writing: flags.writing(Way::ToClient),
                fin_sent: s2c_done,
            };
            let server = Side {
                reading: !s2c_done,
                writing: flags.writing(Way::ToServer),
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
            // The first pass begins with the session: its clock reading serves.
            let now = if first { epoch } else { Instant::now() };
            first = false;
            let client_deadline = deadline(
                epoch,
                client_limit,
                client,
                &client_rd,
                &client_wr,
                timeouts.client_independent,
            );
            let server_deadline = deadline(
                epoch,
                server_limit,
                server,
                &server_rd,
                &server_wr,
                timeouts.server_independent,
            );
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
            if let Some(at) = next {
                timer.as_mut().reset(at);
            }
            tokio::select! {
                biased;
                r = &mut c2s, if !c2s_done => match r {
                    DirEnd::Eof if flow.server_nolinger => break End::Closed,
                    DirEnd::Eof => c2s_done = true,
                    DirEnd::ReadErr => break End::ClientError,
                    DirEnd::WriteErr => break End::ServerError,
                },
                r = &mut s2c, if !s2c_done => match r {
                    DirEnd::Eof => s2c_done = true,
                    DirEnd::ReadErr => break End::ServerError,
                    DirEnd::WriteErr => break End::ClientError,
                },
                _ = &mut timer, if next.is_some() => {}
                _ = &mut kill => break End::Killed,
            }
        };
        Outcome {
            bytes_in: bytes_in.load(Ordering::Relaxed),
            bytes_out: bytes_out.load(Ordering::Relaxed),
            spliced: spliced.load(Ordering::Relaxed),
            end,
        }
    }
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
