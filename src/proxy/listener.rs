//! The accept loop of one bound address, with the process-wide and per-frontend `maxconn`.
//!
//! Each listening socket has one accept loop per data thread (see [`super::threads`]), which
//! starts each session on the thread with fewer sessions, its own on a tie. A loop knows only its address: on every
//! accept it looks up, in the current table, which frontend serves that address, so a reload
//! that keeps the address keeps the socket.
//!
//! As HAProxy's `listener_accept`, a loop waits until its socket has a client, then takes a
//! place under both limits (global and frontend `maxconn`) *before* calling `accept`, with a
//! compare-and-swap, so the limits hold exactly however many threads accept at once; an
//! `accept` that finds nobody (another thread took the client) gives the place back. While a
//! limit is reached the loop stops accepting (clients wait in the kernel's backlog, as with
//! HAProxy) and waits its turn: a connection that ends wakes one waiting loop (first come,
//! first served), the one it frees a place for; a loop that cannot use the place after all
//! passes the wake-up on. The process's file descriptor limit is one of those limits:
//! `maxconn` never goes past what it leaves room for (read again at every accept, so a limit
//! lowered under the process is seen), and an `accept` that still fails for want of
//! descriptors or memory pauses the listener until a connection ends (at most 100 ms, as
//! HAProxy does), logging one line per second with a count.
//! As HAProxy's `tune.maxaccept`, a listener accepts at most that many connections in a row
//! (4 by default) before it lets other tasks run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::session;
use super::threads::DataThreads;
use crate::config::MaxAccept;
use crate::live::KillSwitch;
use crate::logging::Throttle;
use crate::table::{FreqCtr, FrontendLive, FrontendRt, RateMax, RateTicket, TableHandle};

/// How often a listener whose limits are reached re-checks them even without a wake-up
/// (limits can change with a reload).
const LIMIT_RECHECK: Duration = Duration::from_millis(100);
/// Longest pause of a listener after `accept` failed for want of resources (HAProxy's).
const RESOURCE_PAUSE: Duration = Duration::from_millis(100);

/// `accept` failed for want of file descriptors or memory, all listeners together.
static ACCEPT_NO_RESOURCES: Throttle = Throttle::new();
/// Listeners held back by the file descriptor limit rather than by `maxconn`.
static FD_LIMIT_REACHED: Throttle = Throttle::new();
/// `accept` failed for another reason, all listeners together.
static ACCEPT_FAILED: Throttle = Throttle::new();

/// Process-wide connection count against global `maxconn`.
#[derive(Debug, Default)]
pub struct Limits {
    /// Client connections currently open (or being accepted), all frontends together.
    pub conns: AtomicU32,
    /// Client connections ever accepted.
    pub total_conns: AtomicU64,
    /// Connections accepted per second, all frontends together.
    pub conn_rate: RateMax,
    /// Connections per second, for `maxconnrate` (counted only while it is set).
    pub conn_freq: Arc<FreqCtr>,
    /// Sessions per second, for `maxsessrate` (counted only while it is set).
    pub session_freq: Arc<FreqCtr>,
    /// Wakes one listener waiting for room when a connection ends.
    pub freed: Notify,
}

/// What every accept loop shares: the table, the limits, the session tracker and stop tokens.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The current table.
    pub table: TableHandle,
    /// Global connection count.
    pub limits: Arc<Limits>,
    /// Every running session, so a stop can wait for them.
    pub sessions: TaskTracker,
    /// Tripped to close every session at once (hard stop).
    pub hard_stop: Arc<KillSwitch>,
    /// Global `maxconn` when the config sets none (derived from the file limit).
    pub default_maxconn: u32,
    /// Descriptors kept beside client connections (listeners, checks, admin, ...): with two
    /// per connection, the soft file descriptor limit caps every `maxconn`, even one a reload
    /// raises or a limit lowered under the running process.
    pub fd_reserved: u64,
    /// Cancelled when a soft stop begins (the admin API's `/healthz` turns 503).
    pub stopping: CancellationToken,
    /// The data path's threads: every listening address is accepted on each.
    pub threads: DataThreads,
}

/// The connections open on one listening address (the sockets of all its data threads), for
/// `bind ... maxconn`; it lives as long as the address is bound, across reloads.
#[derive(Debug, Default)]
pub struct ListenerLive {
    /// Connections accepted on the address and still open.
    pub conns: AtomicU32,
    /// Wakes one of the address's accept loops waiting for room when one of them ends.
    pub freed: Notify,
}

/// A place under the global, frontend and listener limits, taken before `accept` and held by
/// the connection while it is open; given back on drop, waking one listener that waits for it.
struct ConnGuard {
    limits: Arc<Limits>,
    frontend: Arc<FrontendLive>,
    listener: Arc<ListenerLive>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.limits.conns.fetch_sub(1, Ordering::AcqRel);
        self.frontend.conns.fetch_sub(1, Ordering::AcqRel);
        self.listener.conns.fetch_sub(1, Ordering::AcqRel);
        // One place is free under each limit: one waiting listener can use it.
        self.limits.freed.notify_one();
        self.frontend.conn_freed.notify_one();
        self.listener.freed.notify_one();
    }
}

/// Takes one from `count` if it is below `max`; the count before, or `None` when full.
fn take_place(count: &AtomicU32, max: u32) -> Option<u32> {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
}

/// Which limit stopped a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Global,
    Frontend,
    /// `bind ... maxconn` of the address.
    Listener,
}

/// The limits a listener of `fe` accepts under, as the table in force says now.
struct Maxima {
    /// Global `maxconn` as configured (or derived).
    configured: u32,
    /// Room the file descriptor limit leaves.
    fd_room: u32,
    /// The global limit in force: the smaller of the two.
    global: u32,
    /// The frontend's `maxconn` (the global limit when it sets none).
    frontend: u32,
    /// `maxconn` on the address's `bind` line (no limit of its own when it sets none).
    listener: u32,
}

impl Maxima {
    fn now(shared: &Shared, maxconn: Option<u32>, fe: &FrontendRt, addr: SocketAddr) -> Maxima {
        let configured = maxconn.unwrap_or(shared.default_maxconn);
        let fd_room = fd_room(shared.fd_reserved);
        let global = configured.min(fd_room);
        Maxima {
            configured,
            fd_room,
            global,
            frontend: fe.maxconn.unwrap_or(global),
            listener: fe.bind(addr).and_then(|b| b.maxconn).unwrap_or(u32::MAX),
        }
    }
}

/// Takes a place under both limits for a connection of `fe`, or says which one is reached.
fn try_admit(
    shared: &Shared,
    fe: &FrontendRt,
    max: &Maxima,
    listener: &Arc<ListenerLive>,
) -> Result<(ConnGuard, u32), Full> {
    // The address's own limit first: a place taken there serves no other address.
    if take_place(&listener.conns, max.listener).is_none() {
        return Err(Full::Listener);
    }
    let give_back_listener = || {
        listener.conns.fetch_sub(1, Ordering::AcqRel);
        listener.freed.notify_one();
    };
    if take_place(&shared.limits.conns, max.global).is_none() {
        give_back_listener();
        return Err(Full::Global);
    }
    let Some(before) = take_place(&fe.live.conns, max.frontend) else {
        shared.limits.conns.fetch_sub(1, Ordering::AcqRel);
        // The global place may serve a listener of another frontend.
        shared.limits.freed.notify_one();
        give_back_listener();
        return Err(Full::Frontend);
    };
    let guard = ConnGuard {
        limits: shared.limits.clone(),
        frontend: fe.live.clone(),
        listener: listener.clone(),
    };
    Ok((guard, before + 1))
}

/// A connection's places, taken before it is accepted: under the rate limits, when some
/// are set, and under the global, frontend and listener `maxconn`.
struct Admitted {
    fe: Arc<FrontendRt>,
    guard: ConnGuard,
    /// The frontend's connections with this one.
    open: u32,
    rates: Option<RateTicket>,
}

/// Takes places under the rate limits and the `maxconn` limits for a connection on `addr`,
/// waiting its turn while one is reached; `None` when the listener is told to stop.
/// Re-reads the table on every attempt.
async fn admit(
    shared: &Shared,
    addr: SocketAddr,
    listener: &Arc<ListenerLive>,
    stop: &CancellationToken,
    batch: &mut AcceptBatch,
) -> Option<Admitted> {
    loop {
        let table = shared.table.load();
        batch.max = table.config.global.maxaccept();
        let Some(fe) = table.listeners.get(&addr).cloned() else {
            // The address left the config; control cancels `stop` right after the swap.
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(LIMIT_RECHECK) => continue,
            }
        };
        let max = Maxima::now(shared, table.maxconn, &fe, addr);
        drop(table);
        // As HAProxy: the rate limits first; clients wait in the backlog meanwhile.
        let rates = match reserve_rates(&shared.limits, &fe) {
            Ok(rates) => rates,
            Err(wait) => {
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                batch.waited();
                continue;
            }
        };
        let (limits, fe_live) = (shared.limits.clone(), fe.live.clone());
        let full = match try_admit(shared, &fe, &max, listener) {
            Ok((guard, open)) => {
                return Some(Admitted {
                    fe,
                    guard,
                    open,
                    rates,
                });
            }
            Err(full) => full,
        };
        // Registered before looking again, so a place freed in between wakes this loop.
        let freed = match full {
            Full::Global => limits.freed.notified(),
            Full::Frontend => fe_live.conn_freed.notified(),
            Full::Listener => listener.freed.notified(),
        };
        tokio::pin!(freed);
        freed.as_mut().enable();
        // Dropping `freed` after a wake-up it did not use hands that wake-up on.
        if let Ok((guard, open)) = try_admit(shared, &fe, &max, listener) {
            return Some(Admitted {
                fe,
                guard,
                open,
                rates,
            });
        }
        // Waiting for room: the rate places go back meanwhile.
        drop(rates);
        let open = shared.limits.conns.load(Ordering::Acquire);
        if full == Full::Global
            && open >= max.fd_room
            && max.fd_room < max.configured
            && let Some(n) = FD_LIMIT_REACHED.hit()
        {
            tracing::warn!(
                "maxconn {} does not fit the file descriptor limit: accepting \
                 at most {} connections (2 descriptors each + {} reserved) \
                 [{n} occurrences since the last such line]",
                max.configured,
                max.fd_room,
                shared.fd_reserved
            );
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = &mut freed => {}
            _ = tokio::time::sleep(LIMIT_RECHECK) => {}
        }
        batch.waited();
    }
}

/// Places for a connection of `fe` under the rate limits (`maxsessrate`, `maxconnrate`,
/// `rate-limit sessions`, in the order HAProxy's `listener_accept` checks them), taken
/// before it is accepted; `Ok(None)` when none is set, `Err` with how long to wait when one
/// is reached. A place reserved and not settled counts as used, so the limits hold however
/// many threads accept, and while a session is not counted yet.
fn reserve_rates(limits: &Limits, fe: &FrontendRt) -> Result<Option<RateTicket>, Duration> {
    let rates = fe.rates;
    if rates == crate::table::RateLimits::default() {
        return Ok(None);
    }
    let mut sessions = Vec::with_capacity(2);
    if let Some(n) = rates.global_sessions {
        sessions.push((&limits.session_freq, n));
    }
    let conns = rates.global_conns.map(|n| (&limits.conn_freq, n));
    if let Some(n) = rates.sessions {
        sessions.push((&fe.live.session_freq, n));
    }
    RateTicket::reserve(crate::live::now_ms(), conns, &sessions).map(Some)
}

/// Accepts on `listener` until `stop` is cancelled, spawning one session per connection on
/// the data thread [`DataThreads::pick`] gives (`me` is this loop's thread), or on the runtime
/// this loop runs on without data threads. Must run inside a runtime (it registers the socket
/// with it).
pub async fn accept_loop(
    listener: std::net::TcpListener,
    me: usize,
    addr: SocketAddr,
    live: Arc<ListenerLive>,
    shared: Shared,
    stop: CancellationToken,
) {
    let registered = listener.set_nonblocking(true).and_then(|()| {
        // SAFETY: a `std::net::TcpListener` owns its descriptor: it stays open and the same
        // for as long as the `AsyncFd` holds the listener.
        unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
            .map_err(std::io::Error::from)
    });
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, "cannot watch the listening socket: {e}; this thread does not accept on it");
            return;
        }
    };
    // Set on the listening socket, `TCP_NODELAY` is on in every connection it accepts.
    let nodelay = match socket2::SockRef::from(listener.get_ref()).set_tcp_nodelay(true) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(%addr, "cannot set TCP_NODELAY on the listening socket: {e}");
            false
        }
    };
    let mut batch = AcceptBatch::default();
    'wait: loop {
        // Until a client waits: other work runs meanwhile.
        let mut ready = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.readable() => match r {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::error!(%addr, "waiting for clients failed: {e}");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RESOURCE_PAUSE) => continue 'wait,
                    }
                }
            },
        };
        if !ready.ready().is_readable() {
            ready.clear_ready();
            continue;
        }
        batch.waited();
        loop {
            let Some(Admitted {
                fe,
                guard,
                open,
                mut rates,
            }) = admit(&shared, addr, &live, &stop, &mut batch).await
            else {
                return;
            };
            let accepted = match ready.try_io(|l| accept_nonblocking(l.get_ref())) {
                Ok(r) => r,
                // Nobody waits (any more): give the place back and wait for a client.
                Err(_would_block) => continue 'wait,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    drop(guard);
                    accept_failed(&e, &fe.name, addr, &shared, &stop).await;
                    continue 'wait;
                }
            };
            // The bound address is the local one unless it is a wildcard: no system call
            // for the usual `bind IP:PORT`.
            let local = if addr.ip().is_unspecified() {
                stream.local_addr().unwrap_or(addr)
            } else {
                addr
            };
            shared.limits.total_conns.fetch_add(1, Ordering::Relaxed);
            shared.limits.conn_rate.tick();
            fe.live.max_conns.fetch_max(open, Ordering::Relaxed);
            fe.live.total_conns.fetch_add(1, Ordering::Relaxed);
            fe.live.conn_rate.tick();
            if let Some(rates) = &mut rates {
                rates.accepted();
            }
            let rates = rates.filter(RateTicket::has_sessions).map(Box::new);
            let table = shared.table.clone();
            let hard_stop = shared.hard_stop.clone();
            let placed = shared.threads.pick(me);
            let elsewhere = placed
                .as_ref()
                .filter(|p| p.thread() != me)
                .and_then(|p| shared.threads.handle(p.thread()));
            let client = move |stream| session::Client {
                stream,
                peer,
                local,
                bind: addr,
                nodelay,
                rates,
            };
            // The session's future is the task itself: a block around it would keep a copy
            // of what it was given for the session's whole life.
            if let Some(thread) = elsewhere {
                // Registered with the other thread's poller, by that thread.
                let client = client(session::ClientSocket::Unregistered(stream));
                let session = session::serve(client, (guard, placed), fe, table, hard_stop);
                shared.sessions.spawn_on(session, thread);
            } else {
                let stream = match TcpStream::from_std(stream) {
                    Ok(s) => s,
                    Err(e) => {
                        drop((guard, placed));
                        accept_failed(&e, &fe.name, addr, &shared, &stop).await;
                        continue 'wait;
                    }
                };
                let client = client(session::ClientSocket::Registered(stream));
                let session = session::serve(client, (guard, placed), fe, table, hard_stop);
                shared.sessions.spawn(session);
            }
            if batch.accepted() {
                drop(ready);
                tokio::task::yield_now().await;
                continue 'wait;
            }
        }
    }
}

/// Counts the connections a listener accepted in a row (without waiting for one), for
/// `tune.maxaccept`.
#[derive(Debug)]
struct AcceptBatch {
    max: MaxAccept,
    in_row: u32,
}

impl Default for AcceptBatch {
    fn default() -> Self {
        AcceptBatch {
            max: crate::config::DEFAULT_MAXACCEPT,
            in_row: 0,
        }
    }
}

impl AcceptBatch {
    /// The listener had to wait (for a client or for room), so other work ran meanwhile: a
    /// new row starts.
    fn waited(&mut self) {
        self.in_row = 0;
    }

    /// Records one accepted connection; true when the listener must now let other tasks run.
    fn accepted(&mut self) -> bool {
        self.in_row += 1;
        match self.max {
            MaxAccept::Batch(n) if self.in_row >= n.get() => {
                self.in_row = 0;
                true
            }
            _ => false,
        }
    }
}

/// One `accept4` that hands back the connection already non-blocking and close-on-exec,
/// with its peer's address (as tokio's own listener does): no `fcntl` after it.
fn accept_nonblocking(
    listener: &std::net::TcpListener,
) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let fd = listener.as_raw_fd();
    // SAFETY: `accept4` writes at most `len` bytes of address into the storage socket2 hands
    // us and sets `len` to what it wrote; it returns a new descriptor this function owns.
    let (conn, peer) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            match libc::accept4(
                fd,
                storage.cast(),
                len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            ) {
                -1 => Err(std::io::Error::last_os_error()),
                conn => Ok(conn),
            }
        })?
    };
    // SAFETY: `conn` is a fresh descriptor that nothing else owns.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(conn) };
    let peer = peer
        .as_socket()
        .ok_or_else(|| std::io::Error::other("accepted a connection without an IP address"))?;
    Ok((stream, peer))
}

/// How long the soft file descriptor limit read by [`fd_room`] is trusted: a limit lowered
/// under the running process (`prlimit`) takes effect within this, and accepting does not
/// cost a `getrlimit` per connection.
const FD_ROOM_REFRESH: Duration = Duration::from_millis(100);

/// The client connections the soft file descriptor limit leaves room for (read again at
/// most every [`FD_ROOM_REFRESH`] on each thread).
fn fd_room(reserved: u64) -> u32 {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local! {
        static SOFT_LIMIT: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let soft = SOFT_LIMIT.with(|cached| match cached.get() {
        Some((at, soft)) if now.duration_since(at) < FD_ROOM_REFRESH => Some(soft),
        _ => {
            use nix::sys::resource::{Resource, getrlimit};
            let soft = getrlimit(Resource::RLIMIT_NOFILE)
                .ok()
                .map(|(soft, _)| soft);
            cached.set(soft.map(|soft| (now, soft)));
            soft
        }
    });
    match soft {
        Some(soft) => {
            u32::try_from(soft.saturating_sub(reserved) / crate::fd_limit::PER_CONNECTION)
                .unwrap_or(u32::MAX)
        }
        None => u32::MAX,
    }
}

/// Handles a failed `accept`: a client that gave up is skipped at once; a want of file
/// descriptors or memory pauses this listener until a connection ends (or 100 ms), so it
/// neither spins nor takes descriptors the running sessions need to reach their servers.
async fn accept_failed(
    e: &std::io::Error,
    frontend: &str,
    addr: SocketAddr,
    shared: &Shared,
    stop: &CancellationToken,
) {
    let code = e.raw_os_error().unwrap_or(0);
    if matches!(
        code,
        libc::ECONNABORTED | libc::ECONNRESET | libc::EINTR | libc::EAGAIN | libc::EPROTO
    ) {
        return;
    }
    let freed = shared.limits.freed.notified();
    tokio::pin!(freed);
    freed.as_mut().enable();
    if matches!(
        code,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    ) {
        if let Some(n) = ACCEPT_NO_RESOURCES.hit() {
            let open = shared.limits.conns.load(Ordering::Relaxed);
            tracing::error!(
                %frontend,
                %addr,
                "accept failed: {e}; accepting paused until a connection ends \
                 ({open} open; check the file descriptor limit and 'maxconn') \
                 [{n} occurrences since the last such line]"
            );
        }
    } else if let Some(n) = ACCEPT_FAILED.hit() {
        tracing::error!(%frontend, %addr, "accept failed: {e} [{n} occurrences since the last such line]");
    }
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = &mut freed => {}
        _ = tokio::time::sleep(RESOURCE_PAUSE) => {}
    }
}

/// A connection handed to another data thread could not be registered with its poller
/// (out of memory, or the kernel's limit on watched descriptors): it is closed.
pub(super) fn not_registered(e: &std::io::Error, frontend: &str, addr: SocketAddr) {
    if let Some(n) = ACCEPT_FAILED.hit() {
        tracing::error!(%frontend, %addr, "a connection could not be watched and was closed: {e} [{n} occurrences since the last such line]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::num::NonZeroU32;
    use std::pin::Pin;

    use arc_swap::ArcSwap;

    use crate::table::Registry;

    #[test]
    fn a_batch_ends_after_maxaccept_accepts_in_a_row() {
        let mut batch = AcceptBatch {
            max: MaxAccept::Batch(NonZeroU32::new(3).expect("non-zero")),
            in_row: 0,
        };
        let yields: Vec<bool> = [true, false, false, false, false, true, false, false]
            .into_iter()
            .map(|waited| {
                if waited {
                    batch.waited();
                }
                batch.accepted()
            })
            .collect();
        // A wait starts a new row; the third accept in a row yields.
        assert_eq!(
            yields,
            [false, false, true, false, false, false, false, true]
        );
        let mut unlimited = AcceptBatch {
            max: MaxAccept::Unlimited,
            in_row: 0,
        };
        assert!((0..10_000).all(|_| !unlimited.accepted()));
    }

    /// A `Shared` over a table of two frontends, `a` (with `maxconn 6`) and `b`, under global
    /// `maxconn 10`, with the two frontends.
    fn two_frontends() -> (Shared, Arc<FrontendRt>, Arc<FrontendRt>) {
        let text = "global\n    maxconn 10\ndefaults\n    mode tcp\n    timeout connect 1s\n    \
                    timeout client 5s\n    timeout server 5s\nlisten a\n    bind 127.0.0.1:1\n    \
                    maxconn 6\n    server s 127.0.0.1:1\nlisten b\n    bind 127.0.0.1:2\n    \
                    server s 127.0.0.1:1\n";
        let config =
            crate::config::parse_with_env(&[("t.cfg", text)], &|_| None).expect("valid config");
        let table = crate::table::testing::build(&Arc::new(config), &Registry::default(), 1);
        let fe = |port: u16| {
            table
                .listeners
                .get(&SocketAddr::from(([127, 0, 0, 1], port)))
                .cloned()
                .expect("a listener")
        };
        let (a, b) = (fe(1), fe(2));
        let shared = Shared {
            table: Arc::new(ArcSwap::from_pointee(table)),
            limits: Arc::new(Limits::default()),
            sessions: TaskTracker::new(),
            hard_stop: Arc::new(KillSwitch::new()),
            default_maxconn: 100,
            fd_reserved: 0,
            stopping: CancellationToken::new(),
            threads: DataThreads::default(),
        };
        (shared, a, b)
    }

    /// The limits of [`two_frontends`] for frontend `a` (6) or `b` (none: the global 10).
    fn maxima(frontend: u32) -> Maxima {
        Maxima {
            configured: 10,
            fd_room: u32::MAX,
            global: 10,
            frontend,
            listener: u32::MAX,
        }
    }

    #[test]
    fn a_bind_maxconn_holds_across_threads_and_gives_back_what_another_limit_refused() {
        let (shared, a, b) = two_frontends();
        let address = Arc::new(ListenerLive::default());
        let max = Maxima {
            listener: 3,
            ..maxima(10)
        };
        let held: Vec<ConnGuard> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let (shared, b, address, max) = (&shared, &b, &address, &max);
                    scope.spawn(move || {
                        (0..100)
                            .filter_map(|_| try_admit(shared, b, max, address).ok())
                            .map(|(guard, _)| guard)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("worker"))
                .collect()
        });
        assert_eq!(held.len(), 3);
        assert_eq!(address.conns.load(Ordering::Acquire), 3);
        assert_eq!(
            try_admit(&shared, &b, &max, &address).err(),
            Some(Full::Listener)
        );
        // Frontend `a` is full (6): the address's place taken first is given back.
        let other = Arc::new(ListenerLive::default());
        let full_a: Vec<ConnGuard> = (0..6)
            .map(|_| {
                try_admit(&shared, &a, &maxima(6), &Arc::default())
                    .expect("room")
                    .0
            })
            .collect();
        assert_eq!(
            try_admit(&shared, &a, &maxima(6), &other).err(),
            Some(Full::Frontend)
        );
        assert_eq!(other.conns.load(Ordering::Acquire), 0);
        drop(full_a);
        drop(held);
        assert_eq!(address.conns.load(Ordering::Acquire), 0);
    }

    /// Whether `fut` (an enabled `Notified`) has been woken, without waiting.
    fn woken(fut: Pin<&mut tokio::sync::futures::Notified<'_>>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        fut.poll(&mut cx).is_ready()
    }

    #[test]
    fn places_are_exact_however_many_threads_take_them() {
        let (shared, a, b) = two_frontends();
        let seen: Vec<(u32, Vec<ConnGuard>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|i| {
                    let (shared, fe) = (&shared, if i % 2 == 0 { &a } else { &b });
                    let max = maxima(if i % 2 == 0 { 6 } else { 10 });
                    scope.spawn(move || {
                        let mut held = Vec::new();
                        for _ in 0..2_000 {
                            if let Ok((guard, _)) = try_admit(shared, fe, &max, &Arc::default()) {
                                held.push(guard);
                            }
                        }
                        // Kept open: the counts are read after every thread is done.
                        (shared.limits.conns.load(Ordering::Acquire), held)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .collect()
        });
        assert!(seen.iter().all(|(global, _)| *global <= 10));
        assert_eq!(shared.limits.conns.load(Ordering::Acquire), 10);
        assert!(a.live.conns.load(Ordering::Acquire) <= 6);
        assert_eq!(
            a.live.conns.load(Ordering::Acquire) + b.live.conns.load(Ordering::Acquire),
            10
        );
    }

    #[test]
    fn an_ending_connection_wakes_one_waiting_listener_first_come_first_served() {
        let (shared, _, b) = two_frontends();
        let guards: Vec<ConnGuard> = (0..10)
            .map(|_| {
                try_admit(&shared, &b, &maxima(10), &Arc::default())
                    .expect("room")
                    .0
            })
            .collect();
        assert_eq!(
            try_admit(&shared, &b, &maxima(10), &Arc::default()).err(),
            Some(Full::Global)
        );
        let first = shared.limits.freed.notified();
        let second = shared.limits.freed.notified();
        tokio::pin!(first, second);
        first.as_mut().enable();
        second.as_mut().enable();
        let mut guards = guards.into_iter();
        drop(guards.next());
        assert!(woken(first.as_mut()), "the first waiter is woken");
        assert!(!woken(second.as_mut()), "one place wakes one waiter only");
        drop(guards.next());
        assert!(
            woken(second.as_mut()),
            "the next place wakes the next waiter"
        );
    }

    #[test]
    fn a_listener_that_cannot_use_a_freed_place_hands_it_on() {
        let (shared, a, b) = two_frontends();
        let mut held: Vec<ConnGuard> = (0..6)
            .map(|_| {
                try_admit(&shared, &a, &maxima(6), &Arc::default())
                    .expect("room")
                    .0
            })
            .collect();
        held.extend((0..4).map(|_| {
            try_admit(&shared, &b, &maxima(10), &Arc::default())
                .expect("room")
                .0
        }));
        // A listener of b waits for a global place.
        let waiting_b = shared.limits.freed.notified();
        tokio::pin!(waiting_b);
        waiting_b.as_mut().enable();
        // One of b's connections ends: the wake-up reaches b ...
        drop(held.pop());
        assert!(woken(waiting_b.as_mut()));
        // ... or, had a listener of a (whose frontend is full) been first in line, a takes the
        // place, cannot use it, and must leave it and its wake-up to b.
        let waiting_b = shared.limits.freed.notified();
        tokio::pin!(waiting_b);
        waiting_b.as_mut().enable();
        assert_eq!(
            try_admit(&shared, &a, &maxima(6), &Arc::default()).err(),
            Some(Full::Frontend)
        );
        assert_eq!(
            shared.limits.conns.load(Ordering::Acquire),
            9,
            "a gave the global place back"
        );
        assert!(
            woken(waiting_b.as_mut()),
            "and woke a listener that waits for it"
        );
        assert!(try_admit(&shared, &b, &maxima(10), &Arc::default()).is_ok());
    }

    /// How many connections waiting in the backlog `accept_loop` takes between two turns of
    /// another task, under `global_line` (at most, over the whole run).
    fn largest_accept_run(global_line: &str) -> u64 {
        const CLIENTS: u64 = 12;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = std_listener.local_addr().expect("address");
            let text = format!(
                "global\n    {global_line}\ndefaults\n    mode tcp\n    timeout connect 1s\n    \
                 timeout client 5s\n    timeout server 5s\nlisten db\n    bind {addr}\n    \
                 server a 127.0.0.1:1\n"
            );
            let config = crate::config::parse_with_env(&[("t.cfg", &text)], &|_| None)
                .expect("valid config");
            let table = crate::table::testing::build(&Arc::new(config), &Registry::default(), 1);
            let shared = Shared {
                table: Arc::new(ArcSwap::from_pointee(table)),
                limits: Arc::new(Limits::default()),
                sessions: TaskTracker::new(),
                hard_stop: Arc::new(KillSwitch::new()),
                default_maxconn: 100,
                fd_reserved: 0,
                stopping: CancellationToken::new(),
                threads: DataThreads::default(),
            };
            // Every client is in the backlog before the loop starts.
            let _clients: Vec<std::net::TcpStream> = (0..CLIENTS)
                .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
                .collect();
            let listener = std_listener;
            let stop = CancellationToken::new();
            let limits = shared.limits.clone();
            let accept = tokio::spawn(accept_loop(
                listener,
                0,
                addr,
                Arc::default(),
                shared.clone(),
                stop.clone(),
            ));
            // A task beside the loop that goes straight back to the end of the run queue, while
            // a yielding listener waits for the runtime's next turn: so the listener runs at
            // most once between two turns of this task, and what it sees change between them
            // is what the listener did in one go.
            let observer = tokio::spawn(async move {
                let mut largest = 0;
                let mut last = 0;
                for _ in 0..1_000_000 {
                    let now = limits.total_conns.load(Ordering::Relaxed);
                    largest = largest.max(now - last);
                    last = now;
                    if now == CLIENTS {
                        break;
                    }
                    requeue().await;
                }
                assert_eq!(last, CLIENTS, "every waiting client was accepted");
                largest
            });
            let largest = observer.await.expect("observer");
            stop.cancel();
            shared.hard_stop.trip();
            let _ = accept.await;
            largest
        })
    }

    /// Returns to the end of the run queue at once (`yield_now` waits for the next turn).
    async fn requeue() {
        let mut polled = false;
        std::future::poll_fn(|cx| {
            if polled {
                return std::task::Poll::Ready(());
            }
            polled = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        })
        .await;
    }

    #[test]
    fn tune_maxaccept_bounds_the_accepts_in_a_row() {
        assert_eq!(largest_accept_run("tune.maxaccept 2"), 2);
        assert_eq!(largest_accept_run("tune.maxaccept 1"), 1);
        // The default is HAProxy's 4; -1 takes the whole backlog at once.
        assert_eq!(largest_accept_run("maxconn 100"), 4);
        assert_eq!(largest_accept_run("tune.maxaccept -1"), 12);
    }
}
