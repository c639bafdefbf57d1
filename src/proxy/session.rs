//! One client session: read the client's PROXY header on an `accept-proxy` listener
//! (`accept_proxy`), pick a server (queueing while all are full), connect with retries and
//! redispatch, send the PROXY header when asked, forward bytes, log one line (`option tcplog`
//! or `log-format`, rendered by `log_line`) to the frontend's `log` targets. The frontend's
//! `tcp-request` and `use_backend` rules run at the start of [`serve`] (evaluated by `rules`).
//!
//! The session's log lines (and the reset of a rejected connection) are in `session/log.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::accept_proxy::{self, Addresses, Incoming};
use super::client_watch::ClientWatch;
use super::connect::{Connected, Failed, connect_with_retries, size_buffers};
use super::forward::{self, Counters, End, Timeouts};
use super::log_line::{self, SessionLog};
use super::rules::{self, Conn};
use super::splice;
use crate::config::acl::TcpAction;
use crate::config::{BufferSizes, Config, LogVar, Role};
use crate::live::{KillSwitch, RateTicket};
use crate::logging::Throttle;
use crate::table::{
    BackendLive, BackendRt, ConnAddrs, FrontendRt, NoServer, ServerLive, TableHandle, Via,
};

mod log;
pub(super) use log::{LOG_ERR, LOG_INFO, emit};
use log::{log_refused, log_rejected, log_session, reset};

/// Keepalive probes on sockets with `option clitcpka` / `option srvtcpka`.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Sessions through a backend with a `role` detect a partitioned peer in about half a minute:
/// keepalive probes after 10 s of silence, every 5 s, 3 of them, and unacknowledged data
/// given up after `TCP_USER_TIMEOUT`.
const ROLE_KEEPALIVE: (Duration, Duration, u32) =
    (Duration::from_secs(10), Duration::from_secs(5), 3);
/// `TCP_USER_TIMEOUT` on sessions through a backend with a `role`.
const ROLE_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// How a session that never reached a server ended, in HAProxy's termination letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// No server eligible (`SC` with `<NOSRV>`).
    NoServer,
    /// Several servers of a `role primary` backend report primary (`SC`, refused at once).
    RoleConflict,
    /// Waited in the queue past `timeout queue` (`sQ`).
    QueueTimeout,
    /// The queue was full (`sQ`).
    QueueFull,
    /// Every connection attempt failed (`SC`).
    ConnectFailed,
    /// rolelb stopped while the session waited (`KQ`).
    Stopping,
    /// The client left while the session waited in the queue (`CQ`).
    ClientGoneQueued,
    /// The client left while its server connection was being made, with `option
    /// abortonclose` (`CC`).
    ClientGoneConnecting,
}

impl Refused {
    fn code(self) -> &'static str {
        match self {
            Refused::NoServer | Refused::RoleConflict | Refused::ConnectFailed => "SC",
            Refused::QueueTimeout | Refused::QueueFull => "sQ",
            Refused::Stopping => "KQ",
            Refused::ClientGoneQueued => "CQ",
            Refused::ClientGoneConnecting => "CC",
        }
    }
}

/// A server slot held by the session; given back on drop, waking one queued connection.
pub(super) struct Slot {
    pub(super) backend: Arc<BackendRt>,
    pub(super) idx: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.backend.release(self.idx);
    }
}

/// What a session carries while it waits for a server (queue, connect, turn-around): the
/// stop switch, its client and what was seen of it, and its place in the queue for `%bq`.
pub(super) struct Waiting<'a> {
    pub(super) stop: &'a KillSwitch,
    pub(super) client: &'a TcpStream,
    /// The client's address and the one it reached (or those its PROXY header gave), for
    /// a `send-proxy` header to the server.
    pub(super) addresses: (SocketAddr, SocketAddr),
    /// Made when the session first waits (most never do); boxed, so the room it takes in
    /// every session's future is one pointer.
    watch: Option<Box<ClientWatch>>,
    pub(super) queue_pos: u64,
}

impl<'a> Waiting<'a> {
    pub(super) fn new(
        stop: &'a KillSwitch,
        client: &'a TcpStream,
        addresses: (SocketAddr, SocketAddr),
    ) -> Waiting<'a> {
        Waiting {
            stop,
            client,
            addresses,
            watch: None,
            queue_pos: 0,
        }
    }

    /// Completes when the client is gone as HAProxy judges a waiting one (see
    /// [`ClientWatch::gone`]); what it sends meanwhile is kept, up to `table`'s
    /// `tune.bufsize`.
    pub(super) async fn client_gone(&mut self, table: &TableHandle, abortonclose: bool) {
        let watch = self.watch.get_or_insert_with(|| {
            Box::new(ClientWatch::new(table.load().config.global.bufsize()))
        });
        watch.gone(self.client, abortonclose).await;
    }

    /// What the client sent while the session waited, if anything; taken out.
    pub(super) fn take_early(&mut self) -> Option<Box<ClientWatch>> {
        self.watch.take().filter(|w| !w.early().is_empty())
    }

    /// Whether the client sent something while the session waited.
    pub(super) fn has_early(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| !w.early().is_empty())
    }
}

/// Waits for a slot on a server of the frontend's backend. The backend is looked up in the
/// current table on every attempt, so a swap while queued is seen. A server the balancer
/// chooses counts in `lbtot` unless the session had it before (`prev`, after a redispatch)
/// or waited in the backend's queue for it (HAProxy hands a queued session its server
/// without balancing; with `balance source` it was chosen, by hash, before it queued).
pub(super) async fn acquire(
    fe: &FrontendRt,
    table: &TableHandle,
    conn: ConnAddrs,
    prev: Option<&Arc<ServerLive>>,
    wait: &mut Waiting<'_>,
) -> Result<Slot, Refused> {
    let mut deadline: Option<Instant> = None;
    let mut queued: Option<Arc<BackendLive>> = None;
    // One pick: a slot or a refusal, or the backend back when every server is full.
    let pick =
        |backend: Arc<BackendRt>, queued: bool| match backend.pick_via(Some(conn), None, queued) {
            Ok((idx, via)) => {
                if via == Via::Balance && (!queued || backend.settings.queue_per_server) {
                    backend.count_balanced(idx, prev);
                }
                Ok(Ok(Slot { backend, idx }))
            }
            Err(NoServer::NoneAvailable) => Ok(Err(Refused::NoServer)),
            Err(NoServer::RoleConflict) => Ok(Err(Refused::RoleConflict)),
            Err(NoServer::AllFull) => Err(backend),
        };
    let result = loop {
        // Most sessions find a slot at once and never touch the backend's wake-up list.
        let backend = match pick(table.load().current(&fe.backend), queued.is_some()) {
            Ok(done) => break done,
            Err(full) => full,
        };
        // Every server is full: listen for a freed slot, then look again before waiting, so
        // a slot freed in between is not missed.
        let live = backend.live.clone();
        let freed = live.slot_freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        let backend = match pick(backend, queued.is_some()) {
            Ok(done) => break done,
            Err(full) => full,
        };
        // As HAProxy: when every server is full the client waits in the backend's queue, which
        // has no limit except with `balance source` (see `BackendRt::queue_limit`).
        if queued.is_none() {
            if backend
                .queue_limit()
                .is_some_and(|limit| backend.live.queued.load(Ordering::Acquire) >= limit)
            {
                break Err(Refused::QueueFull);
            }
            let waiting = backend.live.queued.fetch_add(1, Ordering::AcqRel) + 1;
            // `%bq`: HAProxy counts the sessions served from the queue while this one waited,
            // plus one; with one FIFO queue that is its place in the queue when it joined.
            wait.queue_pos += u64::from(waiting);
            backend
                .live
                .max_queued
                .fetch_max(waiting, Ordering::Relaxed);
            queued = Some(backend.live.clone());
            deadline = backend.settings.timeout_queue.map(|t| Instant::now() + t);
        }
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // As HAProxy (`back_may_abort_req`): a client that resets, or closes having sent
        // nothing (or with `option abortonclose`), leaves the queue.
        let abortonclose = backend.settings.abortonclose;
        tokio::select! {
            _ = &mut freed => {}
            _ = timer => break Err(Refused::QueueTimeout),
            _ = wait.stop.tripped() => break Err(Refused::Stopping),
            () = Box::pin(wait.client_gone(table, abortonclose)) => {
                break Err(Refused::ClientGoneQueued);
            }
        }
    };
    if let Some(live) = queued {
        live.queued.fetch_sub(1, Ordering::AcqRel);
    }
    result
}

/// Waits for a server slot for a session of `fe` and connects to it (with the retries and
/// redispatches of [`connect_with_retries`]); else why not, with the session's place in the
/// queue. One future for the whole wait: what it keeps takes no room in the session's
/// future while it forwards.
async fn reach_server(
    fe: &FrontendRt,
    table: &TableHandle,
    addrs: ConnAddrs,
    wait: &mut Waiting<'_>,
) -> Result<Connected, (Failed, u64)> {
    let slot = match acquire(fe, table, addrs, None, wait).await {
        Ok(slot) => slot,
        Err(reason) => return Err((Failed::before_connect(reason), wait.queue_pos)),
    };
    match connect_with_retries(fe, table, addrs, slot, wait).await {
        Ok(mut conn) => {
            conn.queue_pos = wait.queue_pos;
            Ok(conn)
        }
        Err(failed) => Err((failed, wait.queue_pos)),
    }
}

/// Counts a session that got no server connection in the backend's `econ` (HAProxy's
/// `failed_conns`: no server, the queue's timeout or limit, the last connect failed), which
/// is more than its servers' sum; a stopping process counts nothing.
fn count_failed(fe: &FrontendRt, reason: Refused) {
    if !matches!(
        reason,
        Refused::Stopping | Refused::ClientGoneQueued | Refused::ClientGoneConnecting
    ) {
        fe.backend
            .live
            .connect_errors
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// `option nolinger`: closing the socket resets the connection (`SO_LINGER` on with 0 s), as
/// HAProxy sets it on a frontend's listeners (inherited by what they accept) and on a
/// backend's server connections.
fn no_linger(stream: &TcpStream) {
    if let Err(e) = SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!("cannot set SO_LINGER: {e}");
    }
}

/// A negative `mss N` on the `bind` line: the accepted connection's MSS lowered by `by`, as
/// HAProxy does for each connection it accepts.
fn lower_mss(stream: &TcpStream, by: u32) {
    let sock = SockRef::from(stream);
    match sock.tcp_mss() {
        Ok(mss) if mss > by => {
            if let Err(e) = sock.set_tcp_mss(mss - by) {
                tracing::debug!("cannot lower the MSS from {mss} by {by}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("cannot read the MSS: {e}"),
    }
}

/// Enables TCP keepalive: HAProxy's plain form for `option clitcpka`/`srvtcpka`, or the
/// tighter role-aware form with `TCP_USER_TIMEOUT` (see [`ROLE_KEEPALIVE`]).
fn set_keepalive(stream: &TcpStream, role_aware: bool) {
    let sock = SockRef::from(stream);
    let ka = if role_aware {
        let (idle, interval, probes) = ROLE_KEEPALIVE;
        if let Err(e) = sock.set_tcp_user_timeout(Some(ROLE_USER_TIMEOUT)) {
            tracing::debug!("cannot set TCP_USER_TIMEOUT: {e}");
        }
        TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(probes)
    } else {
        TcpKeepalive::new().with_time(KEEPALIVE_IDLE)
    };
    if let Err(e) = sock.set_tcp_keepalive(&ka) {
        tracing::debug!("cannot enable TCP keepalive: {e}");
    }
}

/// Refused connections logged without `option tcplog`, one throttle per [`Refused`] reason.
static REFUSED: [Throttle; 8] = [const { Throttle::new() }; 8];

impl Refused {
    /// The throttle of this reason's log line.
    fn throttle(self) -> &'static Throttle {
        let i = match self {
            Refused::NoServer => 0,
            Refused::RoleConflict => 1,
            Refused::QueueTimeout => 2,
            Refused::QueueFull => 3,
            Refused::ConnectFailed => 4,
            Refused::Stopping => 5,
            Refused::ClientGoneQueued => 6,
            Refused::ClientGoneConnecting => 7,
        };
        &REFUSED[i]
    }
}

/// The idle timeouts of a session through `fe` to `backend`.
fn timeouts(fe: &FrontendRt, backend: &BackendRt) -> Timeouts {
    Timeouts {
        client: fe.timeout_client,
        server: backend.settings.timeout_server,
        client_fin: fe.timeout_client_fin,
        server_fin: backend.settings.timeout_server_fin,
        tunnel: backend.settings.timeout_tunnel,
        client_independent: fe.independent_streams,
        server_independent: backend.settings.independent_streams,
    }
}

/// How a session through `fe` to `backend` moves its bytes: `tune.bufsize` and splicing (the
/// pipe cap is [`crate::config::Config::maxpipes`] whenever this session may splice, without
/// looking at every proxy).
fn flow(table: &TableHandle, fe: &FrontendRt, backend: &BackendRt) -> forward::Flow {
    let global = &table.load().config.global;
    forward::Flow {
        bufsize: global.bufsize(),
        splice: splice::Policy::new(
            fe.splice,
            backend.settings.splice,
            global.maxpipes(),
            global.tune_pipesize.unwrap_or(0),
        ),
        server_nolinger: backend.settings.nolinger,
    }
}

/// Completes when the session's server is told to close its sessions (shutdown-sessions,
/// role loss) or rolelb stops hard.
async fn killed(server_kill: &KillSwitch, stop: &KillSwitch) {
    tokio::select! {
        biased;
        _ = server_kill.tripped() => {}
        _ = stop.tripped() => {}
    }
}

/// What a session's log line needs from its start: when and from where it came.
struct Accepted {
    at: Instant,
    at_wall: SystemTime,
    /// The client: the connection's peer, or the address its PROXY header carries.
    peer: SocketAddr,
    /// Where it connected to: the connection's, or the header's destination.
    local: SocketAddr,
    /// Milliseconds spent reading the PROXY header (`%Th`).
    t_handshake: i64,
    request_id: u64,
    /// The configuration of the table the session was accepted with (its log format and
    /// `log` targets).
    config: Arc<Config>,
}

impl Accepted {
    /// Milliseconds since the accept, as HAProxy's timers count them.
    fn ms(&self, at: Instant) -> i64 {
        i64::try_from(at.duration_since(self.at).as_millis()).unwrap_or(i64::MAX)
    }
}

/// A client's socket: registered with the poller of the thread that accepted it, or to be
/// registered by the data thread that serves it.
pub enum ClientSocket {
    Registered(TcpStream),
    Unregistered(std::net::TcpStream),
}

/// A connection as its listener accepted it.
pub struct Client {
    pub stream: ClientSocket,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The listening address (of the frontend) it came in on.
    pub bind: SocketAddr,
    /// `TCP_NODELAY` is on already: the listening socket had it, and Linux passes it on to
    /// the connections it accepts (one system call less per connection).
    pub nodelay: bool,
    /// The session rates it counts in once it passes the `tcp-request connection` rules
    /// (`rate-limit sessions`, `maxsessrate`); `None` when no limit counts sessions.
    pub rates: Option<Box<RateTicket>>,
}

/// Serves one client connection accepted on a listening address of `fe` to its end, holding
/// `held` (the connection's places under the limits) until then.
///
/// A plain `fn` returning an `async move` block: an `async fn` would store its arguments twice
/// in the future every session keeps for its whole life. It is the session's task as it is
/// (no block around it), for the same reason.
#[allow(clippy::manual_async_fn)]
pub fn serve<H: Send + 'static>(
    client: Client,
    held: H,
    fe: Arc<FrontendRt>,
    table: TableHandle,
    stop: Arc<KillSwitch>,
) -> impl Future<Output = ()> {
    async move {
        let Client {
            stream,
            peer,
            local,
            bind,
            nodelay,
            rates,
        } = client;
        let mut client = match stream {
            ClientSocket::Registered(stream) => stream,
            ClientSocket::Unregistered(stream) => match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => return super::listener::not_registered(&e, &fe.name, bind),
            },
        };
        let mut accepted = Accepted {
            at: Instant::now(),
            at_wall: SystemTime::now(),
            peer,
            local,
            t_handshake: 0,
            request_id: log_line::next_request_id(),
            config: table.load().config.clone(),
        };
        if !nodelay {
            let _ = client.set_nodelay(true);
        }
        if fe.nolinger {
            no_linger(&client);
        }
        let buffers = accepted.config.global.client_buffers;
        if buffers != BufferSizes::default() {
            size_buffers(&SockRef::from(&client), buffers);
        }
        let listener = fe.bind(bind);
        if let Some(lower) = listener.map(|l| l.lower_mss).filter(|&n| n > 0) {
            lower_mss(&client, lower);
        }
        // `tcp-request connection` rules see the connection itself, before any PROXY header.
        if !fe.tcp_request_connection.is_empty() {
            let current = table.load();
            let conn = Conn {
                src: peer,
                dst: local,
                table: &current,
            };
            if rules::connection_verdict(&fe, &conn) == TcpAction::Reject {
                fe.live.denied_conns.fetch_add(1, Ordering::Relaxed);
                return reset(client);
            }
        }
        // A session for the rate limits from here on, as HAProxy counts its `maxsessrate`
        // (a refused connection was not one; its ticket is given back unused).
        if let Some(rates) = rates {
            rates.count();
        }
        if let Some(bind) = listener.filter(|b| b.accept_proxy) {
            let incoming = Incoming {
                fe: &fe,
                bind,
                config: &accepted.config,
                at: accepted.at_wall,
                addresses: Addresses {
                    client: peer,
                    local,
                },
            };
            let received = tokio::select! {
                addresses = accept_proxy::handshake(&mut client, &incoming) => addresses,
                _ = stop.tripped() => None,
            };
            let Some(addresses) = received else { return };
            accepted.peer = addresses.client;
            accepted.local = addresses.local;
            accepted.t_handshake = accepted.ms(Instant::now());
        }
        // A session from here on, as HAProxy counts them (its `session_count_new`).
        fe.live.total_sessions.fetch_add(1, Ordering::Relaxed);
        // From here on the client is who the PROXY header said, if there was one.
        let (peer, local) = (accepted.peer, accepted.local);
        let (fe, stick_rules) = {
            let current = table.load();
            let conn = Conn {
                src: peer,
                dst: local,
                table: &current,
            };
            if rules::content_verdict(&fe, &conn) == TcpAction::Reject {
                // As HAProxy: a content reject closes normally (FIN); only connection rules reset.
                fe.live.denied_reqs.fetch_add(1, Ordering::Relaxed);
                log_rejected(&fe, &table, &accepted);
                return;
            }
            let fe = rules::route(&fe, &conn).clone();
            let stick_rules = rules::stick_rules_holding(&fe.backend, &conn);
            (fe, stick_rules)
        };
        // The backend counts every session routed to it (HAProxy's `stream_set_backend`), also
        // one no server takes.
        fe.backend
            .live
            .total_sessions
            .fetch_add(1, Ordering::Relaxed);
        fe.backend.live.traffic.tick_session_rate();
        let role_aware = fe.backend.role != Role::Any;
        if fe.clitcpka || role_aware {
            set_keepalive(&client, role_aware);
        }
        let addrs = ConnAddrs {
            src: peer.ip(),
            dst: local.ip(),
            stick_rules,
        };
        // In a block of its own: what the wait needs takes no room in the session's future
        // while it forwards.
        let mut conn = match reach_server(
            &fe,
            &table,
            addrs,
            &mut Waiting::new(&stop, &client, (peer, local)),
        )
        .await
        {
            Ok(conn) => conn,
            Err((failed, queue_pos)) => {
                let at = Instant::now();
                count_failed(&fe, failed.reason);
                return log_refused(&fe, &table, &accepted, failed, queue_pos, at);
            }
        };
        let queue_pos = conn.queue_pos;
        let connected_at = conn.connected_at;
        let queued_until = conn.assigned_at;
        let queue_time = queued_until.duration_since(accepted.at);
        let backend = conn.slot.backend.clone();
        let server = &backend.servers[conn.slot.idx];
        for traffic in [server.live.traffic.counting(), &backend.live.traffic] {
            traffic.record_start(queue_time, conn.connect_time);
        }
        let role_aware = backend.role != Role::Any;
        if backend.settings.srvtcpka || role_aware {
            set_keepalive(&conn.stream, role_aware);
        }
        if backend.settings.nolinger {
            no_linger(&conn.stream);
        }
        let source_addr = if fe.log_shows_source {
            conn.stream.local_addr().ok()
        } else {
            None
        };
        // The line of a session, from what is known when it ends (`at`, with what it moved).
        let line = |at: Instant, bytes_in: u64, bytes_out: u64, term: &'static str| SessionLog {
            accepted_at: accepted.at_wall,
            client: peer,
            local,
            frontend: &fe.name,
            backend: &backend.name,
            server: Some(server.name()),
            server_addr: Some(server.config.addr),
            source_addr,
            t_handshake: accepted.t_handshake,
            t_queue: Some(accepted.ms(queued_until)),
            t_connect: Some(accepted.ms(connected_at)),
            t_close: accepted.ms(at),
            bytes_in,
            bytes_out,
            term,
            act_conn: 0,
            fe_conn: 0,
            be_conn: 0,
            srv_conn: u64::from(server.live.sessions.load(Ordering::Acquire)),
            retries: conn.retries,
            redispatched: conn.redispatched,
            srv_queue: 0,
            backend_queue: queue_pos,
            request_id: accepted.request_id,
            log_count: 0,
            asap: false,
        };
        // `option logasap`: HAProxy logs a TCP session once its server connection is
        // established (the total time is the connect's, nothing moved yet) and not at its end.
        let logged_asap = fe.tcplog && fe.log_options.asap;
        if logged_asap {
            log_session(
                &fe,
                &table,
                &accepted,
                line(connected_at, 0, 0, "--"),
                &backend,
            );
        }
        let server_kill = server.live.kill_switch();
        // The forwarder's arguments are built in the call itself: a value kept in a local here
        // would take room in every session's future beside its copy in the forwarder's.
        let outcome = forward::forward(
            &mut client,
            &mut conn.stream,
            timeouts(&fe, &backend),
            Counters {
                to_server: &[&fe.live.bytes_in, &server.live.bytes_in],
                to_client: &[&fe.live.bytes_out, &server.live.bytes_out],
            },
            flow(&table, &fe, &backend),
            killed(&server_kill, &stop),
        )
        .await;
        let closed_at = Instant::now();
        let total_time = closed_at.duration_since(accepted.at);
        for traffic in [server.live.traffic.counting(), &backend.live.traffic] {
            traffic.record_end(total_time);
            match outcome.end {
                End::ClientError => traffic.client_aborts.fetch_add(1, Ordering::Relaxed),
                End::ServerError => traffic.server_aborts.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        if outcome.end == End::Killed {
            tracing::debug!(backend = %backend.name, server = %server.name(), "session closed by rolelb");
        }
        // As in HAProxy, the server and backend no longer count this session when it is logged;
        // the process and the frontend still do.
        drop(conn.stream);
        drop(conn.slot);
        let bytes_in = outcome.bytes_in + conn.early_bytes;
        if !fe.tcplog || logged_asap || (fe.log_options.dontlognull && bytes_in == 0) {
            return;
        }
        log_session(
            &fe,
            &table,
            &accepted,
            line(closed_at, bytes_in, outcome.bytes_out, outcome.end.code()),
            &backend,
        );
        // Given back once the session is over (on every other way out too).
        drop(held);
    }
}
