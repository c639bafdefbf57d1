//! Connecting a session to its server: the connect itself (`timeout connect`), then the
//! retries and redispatches of HAProxy 2.6 after a failure (`retries`, `retry-on`, `option
//! redispatch [<interval>]`, the turn-around pause), with the counters they leave (`wretr`,
//! `wredis`, `econ`) and what the session's log line reports (`%rc`, `+` after a
//! redispatch, `%Tw` from the last assignment).
//!
//! The session ([`super::session`]) hands in the slot it picked; this gives back an
//! established stream with the slot it ended on, or why there is none.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client_watch::ClientWatch;
use super::proxy_protocol;
use super::session::{Refused, Slot, Waiting, acquire};
use crate::config::Role;
use crate::config::model::{BufferSizes, Source};
use crate::logging::Throttle;
use crate::table::{
    AdminState, BackendRt, BackendSettings, ConnAddrs, FrontendRt, Health, NoServer, NodeRole,
    ServerLive, ServerRt, TableHandle, in_role_conflict, role_in_force,
};

/// Connects that failed for want of rolelb's own descriptors or memory, all servers together.
static CONNECT_NO_RESOURCES: Throttle = Throttle::new();

/// True when `e` is a shortage of the process's own resources (file descriptors, memory).
fn local_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Connects to `addr`, giving up `timeout` after `started`.
async fn connect(
    addr: SocketAddr,
    started: Instant,
    timeout: Option<Duration>,
    delayed_ack: bool,
    source: Option<&Source>,
) -> std::io::Result<TcpStream> {
    let fut = connect_nonblocking(addr, delayed_ack, source);
    match timeout {
        Some(t) => tokio::time::timeout_at(started + t, fut)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "timeout connect expired")
            })?,
        None => fut.await,
    }
}

/// A non-blocking `connect` that waits for the socket to turn writable. As HAProxy, the
/// error (`SO_ERROR`) is asked of the kernel only when the poller reported one (`EPOLLERR`,
/// `EPOLLHUP`): an established connection costs no `getsockopt`.
///
/// `delayed_ack`: the socket starts in delayed-ACK mode (`TCP_QUICKACK` 0), so the
/// handshake's last ACK leaves with the first bytes written rather than in a packet of its
/// own, as HAProxy opens a connection with bytes to send at once (`option tcp-smart-connect`)
/// and a plain connect health check (which then resets before that ACK).
///
/// `source`: the connection is made from that address (and interface), as HAProxy binds a
/// server connection to its `source`: `SO_REUSEADDR`, and with no port
/// `IP_BIND_ADDRESS_NO_PORT`, so the port is chosen at `connect` and the same address can
/// reach many servers.
pub(crate) async fn connect_nonblocking(
    addr: SocketAddr,
    delayed_ack: bool,
    source: Option<&Source>,
) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    size_buffers(&(&socket).into(), server_buffers());
    if let Some(source) = source {
        bind_source(&socket, source)?;
    }
    if delayed_ack && let Err(e) = socket.set_tcp_quickack(false) {
        tracing::debug!("cannot delay the ACKs of a connection to {addr}: {e}");
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    let ready = stream.ready(tokio::io::Interest::WRITABLE).await?;
    // A refused or reset connect shows as closed for writing; a peer that answered and
    // already closed its side does not, and is a connection like any other.
    if ready.is_write_closed()
        && let Some(e) = stream.take_error()?
    {
        return Err(e);
    }
    Ok(stream)
}

/// `tune.sndbuf.server` and `tune.rcvbuf.server` of the configuration in force, 0 when not
/// set. Process-wide, as in HAProxy: every connection to a server reads them, traffic and
/// checks alike; [`set_server_buffers`] changes them when a configuration takes effect.
static SERVER_BUFFERS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];

/// Makes `sizes` the socket buffer sizes of the connections opened to servers from now on.
pub fn set_server_buffers(sizes: BufferSizes) {
    SERVER_BUFFERS[0].store(sizes.snd, Ordering::Relaxed);
    SERVER_BUFFERS[1].store(sizes.rcv, Ordering::Relaxed);
}

fn server_buffers() -> BufferSizes {
    BufferSizes {
        snd: SERVER_BUFFERS[0].load(Ordering::Relaxed),
        rcv: SERVER_BUFFERS[1].load(Ordering::Relaxed),
    }
}

/// Asks the kernel for the socket buffer sizes `sizes` gives (`SO_SNDBUF`, `SO_RCVBUF`; 0
/// leaves one alone), as HAProxy sets `tune.sndbuf.*`/`tune.rcvbuf.*`. A refusal only costs
/// the size: logged at debug level, as HAProxy ignores it.
pub(crate) fn size_buffers(socket: &socket2::SockRef<'_>, sizes: BufferSizes) {
    if sizes.snd > 0
        && let Err(e) =
            socket.set_send_buffer_size(usize::try_from(sizes.snd).unwrap_or(usize::MAX))
    {
        tracing::debug!("cannot set SO_SNDBUF to {}: {e}", sizes.snd);
    }
    if sizes.rcv > 0
        && let Err(e) =
            socket.set_recv_buffer_size(usize::try_from(sizes.rcv).unwrap_or(usize::MAX))
    {
        tracing::debug!("cannot set SO_RCVBUF to {}: {e}", sizes.rcv);
    }
}

/// Binds a server connection's `socket` to `source` before it connects.
fn bind_source(socket: &socket2::Socket, source: &Source) -> std::io::Result<()> {
    let named = |e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind to source address {}: {e}", source.addr),
        )
    };
    socket.set_reuse_address(true)?;
    if source.addr.port() == 0 {
        let one: libc::c_int = 1;
        let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
            .map_err(std::io::Error::other)?;
        // SAFETY: the socket is open for the call; the kernel reads `len` bytes of `one`.
        // A refusal only costs the early port choice: ignored, as HAProxy ignores it.
        let _ = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(socket),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::from_ref(&one).cast(),
                len,
            )
        };
    }
    if let Some(name) = &source.interface {
        socket.bind_device(Some(name.as_bytes())).map_err(|e| {
            named(std::io::Error::new(
                e.kind(),
                format!("interface {name}: {e}"),
            ))
        })?;
    }
    socket.bind(&source.addr.into()).map_err(named)
}

/// A slot and an established connection to its server.
pub(super) struct Connected {
    pub(super) slot: Slot,
    pub(super) stream: TcpStream,
    pub(super) retries: u32,
    pub(super) redispatched: bool,
    /// When the server was assigned (the last time, after a redispatch): HAProxy's `%Tw`.
    pub(super) assigned_at: Instant,
    pub(super) connect_time: Duration,
    /// When the connection was established.
    pub(super) connected_at: Instant,
    /// Bytes the client sent while the session waited, sent to the server first.
    pub(super) early_bytes: u64,
    /// `%bq`: the session's place in the backend's queue (0 when it did not wait).
    pub(super) queue_pos: u64,
}

impl Connected {
    /// The server it is connected to.
    pub(super) fn server(&self) -> &ServerRt {
        &self.slot.backend.servers[self.slot.idx]
    }
}

/// The bytes a new server connection gets before the forwarding starts: the PROXY header
/// of `send-proxy`/`send-proxy-v2` for the client's `addresses`, then what the client sent
/// while its session waited (`early`), counted as client bytes; how many of those were
/// sent. A close the client sent meanwhile is read again by the forwarder and passed on.
async fn first_bytes(
    fe: &FrontendRt,
    conn: &mut Connected,
    addresses: (SocketAddr, SocketAddr),
    early: Option<Box<ClientWatch>>,
) -> u64 {
    let server = &conn.slot.backend.servers[conn.slot.idx];
    let names = (&conn.slot.backend.name, server.name());
    if let Some(version) = server.config.send_proxy {
        let header = proxy_protocol::header(version, addresses.0, addresses.1);
        if let Err(e) = conn.stream.write_all(&header).await {
            tracing::warn!(backend = %names.0, server = %names.1, "sending the PROXY header failed: {e}");
        }
    }
    let Some(early) = early else {
        return 0;
    };
    match conn.stream.write_all(early.early()).await {
        Ok(()) => {
            let n = early.early().len() as u64;
            for counter in [&fe.live.bytes_in, &server.live.bytes_in] {
                counter.fetch_add(n, Ordering::Relaxed);
            }
            n
        }
        Err(e) => {
            tracing::debug!(backend = %names.0, server = %names.1, "passing on what the client sent while waiting failed: {e}");
            0
        }
    }
}

/// Why no connection was established, with what the log line reports about the attempt.
pub(super) struct Failed {
    pub(super) reason: Refused,
    /// The last server tried, with its address (`None`: none was picked).
    pub(super) server: Option<(String, SocketAddr)>,
    pub(super) retries: u32,
    pub(super) redispatched: bool,
    /// The last attempt ran out of `timeout connect` (`sC` rather than `SC`).
    pub(super) timed_out: bool,
    /// When the last server was assigned, if one was.
    pub(super) assigned_at: Option<Instant>,
}

impl Failed {
    pub(super) fn before_connect(reason: Refused) -> Failed {
        Failed {
            reason,
            server: None,
            retries: 0,
            redispatched: false,
            timed_out: false,
            assigned_at: None,
        }
    }
}

/// Connects to the picked server, retrying as HAProxy 2.6 does (`back_handle_st_cer`):
/// - a failed connect is retried `retries` times (none with `retry-on` without
///   `conn-failure`); `%rc` counts the retries made;
/// - each retry either stays on the server (counted in its `wretr`) or, with `option
///   redispatch`, goes back to the balancer avoiding that server ([`redispatch_now`]);
///   the move is counted in the old server's `wredis`, and a pick that lands on the same
///   server again is a plain retry;
/// - with `role primary`, a server that lost the role is never retried ([`lost_primary`]),
///   also when it lost it during the turn-around;
/// - a connect that was refused (not one that ran out of `timeout connect`, nor a local
///   shortage) waits a turn-around of `min(timeout connect, 1s)` before a retry on the same
///   server, or before a redispatch when at most one active server is up.
///
/// Only the last failure counts in the last server's connection errors (`econ`).
pub(super) async fn connect_with_retries(
    fe: &FrontendRt,
    table: &TableHandle,
    conn: ConnAddrs,
    mut slot: Slot,
    wait: &mut Waiting<'_>,
) -> Result<Connected, Failed> {
    let mut retries: u32 = 0;
    let mut redispatched = false;
    let mut assigned_at = Instant::now();
    loop {
        let settings = slot.backend.settings.clone();
        let server = &slot.backend.servers[slot.idx];
        let started = Instant::now();
        server
            .live
            .traffic
            .counting()
            .connect_attempts
            .fetch_add(1, Ordering::Relaxed);
        let last = (server.name().to_string(), server.config.addr);
        let failed = |reason: Refused, timed_out: bool, retries: u32, redispatched: bool| Failed {
            reason,
            server: Some(last.clone()),
            retries,
            redispatched,
            timed_out,
            assigned_at: Some(assigned_at),
        };
        // HAProxy delays the ACK when bytes wait for the server at connect time: a PROXY
        // header, or what the client sent while the session waited in the queue.
        let delayed_ack =
            settings.smart_connect && (server.config.send_proxy.is_some() || wait.has_early());
        // Made where it is awaited: a future kept in a local would take room twice in the
        // session's future.
        let connecting = || {
            connect(
                server.config.addr,
                started,
                settings.timeout_connect,
                delayed_ack,
                server.config.source.as_ref(),
            )
        };
        // With `option abortonclose` a client that leaves meanwhile ends the attempt (`CC`),
        // as HAProxy's `back_handle_st_con`; without it HAProxy goes on connecting.
        let result = if settings.abortonclose {
            tokio::select! {
                r = connecting() => r,
                () = Box::pin(wait.client_gone(table, true)) => {
                    return Err(failed(Refused::ClientGoneConnecting, false, retries, redispatched));
                }
            }
        } else {
            connecting().await
        };
        // `stot`: HAProxy counts a session on the server once its connect is started (a
        // refusal or a timeout comes later, asynchronously); a shortage of rolelb's own
        // resources means the connect never started.
        if !matches!(&result, Err(e) if local_shortage(e)) {
            server.live.total_sessions.fetch_add(1, Ordering::Relaxed);
            let counters = server.live.traffic.counting();
            counters.tick_session_rate();
            counters.mark_last_session();
            slot.backend.live.traffic.mark_last_session();
        }
        let error = match result {
            Ok(stream) => {
                let now = Instant::now();
                slot.backend.stick_store(conn, slot.idx);
                let mut connected = Connected {
                    slot,
                    stream,
                    retries,
                    redispatched,
                    assigned_at,
                    connect_time: now.duration_since(started),
                    connected_at: now,
                    early_bytes: 0,
                    queue_pos: 0,
                };
                let early = wait.take_early();
                if connected.server().config.send_proxy.is_some() || early.is_some() {
                    connected.early_bytes =
                        first_bytes(fe, &mut connected, wait.addresses, early).await;
                }
                return Ok(connected);
            }
            Err(e) => e,
        };
        // A refusal is worth a pause before trying again; a timeout already waited, and a
        // shortage of rolelb's own resources is retried at once (HAProxy's synchronous errors).
        let refused = if local_shortage(&error) {
            // rolelb's own descriptors or memory ran out: not the server's fault, and
            // under a flood one line a second says it all.
            if let Some(n) = CONNECT_NO_RESOURCES.hit() {
                tracing::error!(
                    backend = %slot.backend.name,
                    server = %server.name(),
                    "cannot open a connection to the server: {error} (check the file \
                     descriptor limit and 'maxconn') [{n} occurrences since the last such line]"
                );
            }
            false
        } else {
            tracing::warn!(
                backend = %slot.backend.name,
                server = %server.name(),
                addr = %server.config.addr,
                attempt = retries + 1,
                "connect failed: {error}"
            );
            error.kind() != std::io::ErrorKind::TimedOut
        };
        if retries >= settings.retries || !settings.retry_on_conn_failure {
            let timed_out = error.kind() == std::io::ErrorKind::TimedOut;
            if !local_shortage(&error) {
                server.live.connect_errors.fetch_add(1, Ordering::Relaxed);
            }
            return Err(failed(
                Refused::ConnectFailed,
                timed_out,
                retries,
                redispatched,
            ));
        }
        retries += 1;
        let current = table.load().current(&slot.backend);
        let active_up = current.active.members.len();
        let redispatch = lost_primary(&current, server)
            || redispatch_now(&settings, retries, running(server), active_up);
        let turn_around = refused && (!redispatch || active_up <= 1);
        let pause = settings
            .timeout_connect
            .unwrap_or(TURN_AROUND)
            .min(TURN_AROUND);
        if !redispatch {
            server
                .live
                .traffic
                .counting()
                .retries
                .fetch_add(1, Ordering::Relaxed);
            if turn_around {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = wait.stop.tripped() => {
                        return Err(failed(Refused::Stopping, false, retries, redispatched));
                    }
                    () = Box::pin(wait.client_gone(table, settings.abortonclose)) => {
                        return Err(failed(Refused::ClientGoneConnecting, false, retries, redispatched));
                    }
                }
            }
            // The role may have moved during the pause: the guard is applied again.
            if !lost_primary(&table.load().current(&slot.backend), server) {
                continue;
            }
        }
        // Back to the balancer: the slot is given up first, as HAProxy releases the server
        // before its turn-around.
        let failed_idx = slot.idx;
        let failed_live = server.live.clone();
        let avoid = settings.redispatch_avoids.then_some(failed_idx);
        drop(slot);
        let lost = |reason| Failed {
            reason,
            server: Some(last.clone()),
            retries,
            redispatched,
            timed_out: false,
            assigned_at: None,
        };
        // A retry that lost the primary during its pause has waited already.
        if turn_around && redispatch {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = wait.stop.tripped() => return Err(lost(Refused::Stopping)),
                () = Box::pin(wait.client_gone(table, settings.abortonclose)) => {
                    return Err(lost(Refused::ClientGoneConnecting));
                }
            }
        }
        slot = reassign(fe, table, conn, avoid, &failed_live, wait)
            .await
            .map_err(lost)?;
        assigned_at = Instant::now();
        let counters = failed_live.traffic.counting();
        if slot.idx == failed_idx && Arc::ptr_eq(&slot.backend.servers[slot.idx].live, &failed_live)
        {
            counters.retries.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.redispatches.fetch_add(1, Ordering::Relaxed);
            redispatched = true;
        }
    }
}

/// HAProxy's turn-around before retrying a refused connect (capped by `timeout connect`).
const TURN_AROUND: Duration = Duration::from_secs(1);

/// Whether retry number `retry` (1 for the first) goes back to the balancer rather than to
/// the same server again (HAProxy's `stream_choose_redispatch`). Only with `option
/// redispatch`, and then when the server is no longer up (`server_up` false), when the
/// interval names this retry (`N > 0`: every Nth; `N < 0`: the retries that are multiples of
/// `retries + 1 + N`, by default the last), or when the pick is not a hash and more than one
/// active server is up, so which one takes the session does not matter.
fn redispatch_now(
    settings: &BackendSettings,
    retry: u32,
    server_up: bool,
    active_up: usize,
) -> bool {
    let Some(after) = settings.redispatch else {
        return false;
    };
    let retry = i64::from(retry);
    let by_count = match after {
        0 => false,
        n if n > 0 => retry % i64::from(n) == 0,
        n => retry
            .checked_rem(i64::from(settings.retries) + 1 + i64::from(n))
            .is_some_and(|r| r == 0),
    };
    !server_up || by_count || (!settings.hashed && active_up > 1)
}

/// With `role primary`, a retry never goes back to a server that is no longer the one
/// primary: the single-writer guard holds for retries too, so such a retry goes through the
/// balancer (which applies the guard) whether or not `option redispatch` is set.
fn lost_primary(backend: &BackendRt, server: &ServerRt) -> bool {
    backend.role == Role::Primary
        && (role_in_force(backend.role_source, &server.live) != NodeRole::Primary
            || in_role_conflict(backend.role_source, &backend.servers))
}

/// HAProxy's running state of a server for a retry: up, and not in maintenance (a server in
/// `drain` still runs).
fn running(server: &ServerRt) -> bool {
    let live = &server.live;
    live.effective_health() == Health::Up && live.effective_admin() != AdminState::Maint
}

/// The server for a redispatched retry, as HAProxy's balancer picks it after a failure:
/// another one than `avoid` when one can take the session now, else `avoid` itself, else the
/// queue like any new session. Stick tables are not read again (HAProxy runs its sticking
/// rules once per session), and `lbtot` counts the choice unless it is `prev`, the server
/// that failed.
async fn reassign(
    fe: &FrontendRt,
    table: &TableHandle,
    conn: ConnAddrs,
    avoid: Option<usize>,
    prev: &Arc<ServerLive>,
    wait: &mut Waiting<'_>,
) -> Result<Slot, Refused> {
    let conn = ConnAddrs {
        stick_rules: 0,
        ..conn
    };
    if avoid.is_some() {
        let backend = table.load().current(&fe.backend);
        match backend.pick_via(Some(conn), avoid, false) {
            Ok((idx, _)) => {
                backend.count_balanced(idx, Some(prev));
                return Ok(Slot { backend, idx });
            }
            Err(NoServer::RoleConflict) => return Err(Refused::RoleConflict),
            Err(NoServer::NoneAvailable | NoServer::AllFull) => {}
        }
    }
    // Boxed: a redispatch is rare, and inline this wait would take room in every
    // session's future.
    Box::pin(acquire(fe, table, conn, Some(prev), wait)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(retries: u32, redispatch: Option<i32>, hashed: bool) -> BackendSettings {
        BackendSettings {
            timeout_connect: None,
            timeout_server: None,
            timeout_server_fin: None,
            timeout_queue: None,
            timeout_tunnel: None,
            retries,
            redispatch,
            retry_on_conn_failure: true,
            hashed,
            redispatch_avoids: true,
            srvtcpka: false,
            nolinger: false,
            independent_streams: false,
            smart_connect: false,
            abortonclose: false,
            splice: crate::config::Splice::default(),
            queue_per_server: hashed,
            stick: None,
        }
    }

    /// Which of retries 1..=retries redispatch (a hashed pick, two servers up).
    fn by_count(retries: u32, after: i32) -> Vec<u32> {
        let s = settings(retries, Some(after), true);
        (1..=retries)
            .filter(|&r| redispatch_now(&s, r, true, 2))
            .collect()
    }

    #[test]
    fn interval_names_the_retries_that_redispatch() {
        assert_eq!(by_count(3, -1), vec![3], "the default: the last retry");
        assert_eq!(by_count(3, -2), vec![2], "the one before the last");
        assert_eq!(by_count(3, -3), vec![1, 2, 3], "retries + 1 + N = 1");
        assert_eq!(by_count(6, -4), vec![3, 6], "multiples of retries + 1 + N");
        assert_eq!(
            by_count(3, -5),
            vec![1, 2, 3],
            "retries + 1 + N = -1: every retry"
        );
        assert_eq!(
            by_count(3, -4),
            Vec::<u32>::new(),
            "0: none (refused by -c)"
        );
        assert_eq!(by_count(4, 1), vec![1, 2, 3, 4]);
        assert_eq!(by_count(4, 2), vec![2, 4]);
        assert_eq!(by_count(4, 5), Vec::<u32>::new());
        assert_eq!(by_count(4, 0), Vec::<u32>::new());
    }

    #[test]
    fn non_hash_balance_redispatches_every_retry_while_another_server_is_up() {
        let s = settings(3, Some(-1), false);
        assert!(redispatch_now(&s, 1, true, 2));
        assert!(
            !redispatch_now(&s, 1, true, 1),
            "one server up: by count only"
        );
        assert!(redispatch_now(&s, 3, true, 1));
        let zero = settings(3, Some(0), false);
        assert!(
            redispatch_now(&zero, 1, true, 2),
            "`option redispatch 0` still moves"
        );
        assert!(!redispatch_now(&zero, 1, true, 1));
    }

    #[test]
    fn a_server_that_went_down_is_left_on_any_retry_only_with_redispatch() {
        let s = settings(3, Some(-1), true);
        assert!(redispatch_now(&s, 1, false, 1));
        assert!(!redispatch_now(&settings(3, None, false), 1, false, 2));
    }
}
