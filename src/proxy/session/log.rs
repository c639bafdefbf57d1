//! A session's log line: the connection counts HAProxy reads at log time, the line rendered
//! with the frontend's format and sent to its `log` targets; and the lines of sessions that
//! never reached a server (rejected by a rule, refused, no server).

use super::*;

/// Fills the connection counts HAProxy reads at log time, renders the line with the
/// frontend's format and sends it to its `log` targets (see [`emit`]). As in HAProxy,
/// `option dontlog-normal` drops the line of a session that ended without an error, retry
/// or redispatch, and `option log-separate-errors` sends the others at level `err`.
pub(super) fn log_session(
    fe: &FrontendRt,
    table: &TableHandle,
    accepted: &Accepted,
    mut line: SessionLog<'_>,
    backend: &BackendRt,
) {
    let Some(fe_cfg) = accepted.config.frontends.iter().find(|f| f.name == fe.name) else {
        return;
    };
    let Some(format) = &fe_cfg.log_format else {
        return;
    };
    let error = line.is_error();
    if fe.log_options.dontlog_normal && !error {
        return;
    }
    line.asap = fe.log_options.asap;
    line.act_conn = table
        .load()
        .frontends
        .iter()
        .map(|f| u64::from(f.live.conns.load(Ordering::Acquire)))
        .sum();
    line.fe_conn = u64::from(fe.live.conns.load(Ordering::Acquire));
    line.be_conn = u64::from(backend.live.sessions.load(Ordering::Acquire))
        + u64::from(backend.live.queued.load(Ordering::Acquire));
    if format.shows(&[LogVar::LogCounter]) {
        line.log_count = log_line::next_log_count(&fe.name);
    }
    let text = log_line::render(format, &line);
    let level = if error && fe.log_options.separate_errors {
        LOG_ERR
    } else {
        LOG_INFO
    };
    emit(fe_cfg, &accepted.config.global, level, &text);
}

/// Sends a frontend's log line to its `log` targets (`log global` adds the global ones). A
/// frontend without any target writes it to rolelb's own log instead (HAProxy, which warns
/// about this at startup, would drop it).
pub(in crate::proxy) fn emit(
    fe_cfg: &crate::config::Frontend,
    global: &crate::config::Global,
    level: u8,
    text: &str,
) {
    // The proxy's `log-tag`, else the global one, as in HAProxy.
    let tag = fe_cfg
        .log_tag
        .as_deref()
        .or(global.log_tag.as_deref())
        .unwrap_or(crate::logging::DEFAULT_TAG);
    let global_logs: &[_] = if fe_cfg.log_global { &global.logs } else { &[] };
    if fe_cfg.logs.is_empty() && global_logs.is_empty() {
        tracing::info!(target: "rolelb::tcplog", "{text}");
        return;
    }
    let sender = crate::logging::Sender {
        tag,
        host: global.log_send_hostname.as_deref(),
    };
    crate::logging::send(fe_cfg.logs.iter().chain(global_logs), sender, level, text);
}

/// Closes a connection a `tcp-request connection` rule rejected with a reset, as HAProxy
/// does (no lingering data, no TIME_WAIT left behind).
pub(super) fn reset(client: TcpStream) {
    if let Err(e) = SockRef::from(&client).set_linger(Some(Duration::ZERO)) {
        tracing::debug!("cannot set SO_LINGER on a rejected connection: {e}");
    }
    drop(client);
}

/// The log line of a session a `tcp-request content reject` rule closed: no backend was
/// chosen yet, so it names the frontend as its backend, `<NOSRV>`, and ends with `PR`.
pub(super) fn log_rejected(fe: &FrontendRt, table: &TableHandle, accepted: &Accepted) {
    if !fe.tcplog || fe.log_options.dontlognull {
        return;
    }
    let at = Instant::now();
    log_session(
        fe,
        table,
        accepted,
        unserved(accepted, &fe.name, &fe.name, "PR", at),
        &fe.backend,
    );
}

/// The line of a session that reached no server and moved no byte, closed at `at` with
/// `term`; the callers fill in what they know more.
fn unserved<'a>(
    accepted: &Accepted,
    frontend: &'a str,
    backend: &'a str,
    term: &'static str,
    at: Instant,
) -> SessionLog<'a> {
    SessionLog {
        accepted_at: accepted.at_wall,
        client: accepted.peer,
        local: accepted.local,
        frontend,
        backend,
        server: None,
        server_addr: None,
        source_addr: None,
        t_handshake: accepted.t_handshake,
        t_queue: None,
        t_connect: None,
        t_close: accepted.ms(at),
        bytes_in: 0,
        bytes_out: 0,
        term,
        act_conn: 0,
        fe_conn: 0,
        be_conn: 0,
        srv_conn: 0,
        retries: 0,
        redispatched: false,
        srv_queue: 0,
        backend_queue: 0,
        request_id: accepted.request_id,
        log_count: 0,
        asap: false,
    }
}

/// Syslog severity of session lines (`info`, as HAProxy's).
pub(in crate::proxy) const LOG_INFO: u8 = 6;
/// Syslog severity of the lines of sessions that failed, with `option log-separate-errors`.
pub(in crate::proxy) const LOG_ERR: u8 = 3;

pub(super) fn log_refused(
    fe: &FrontendRt,
    table: &TableHandle,
    accepted: &Accepted,
    failed: Failed,
    queue_pos: u64,
    at: Instant,
) {
    let reason = failed.reason;
    if reason == Refused::NoServer {
        fe.backend.live.no_server.fetch_add(1, Ordering::Relaxed);
    }
    if !fe.tcplog {
        // Without a log line per connection, a flood of refusals is one line a second each.
        if let Some(n) = reason.throttle().hit() {
            tracing::warn!(frontend = %fe.name, backend = %fe.backend.name, client = %accepted.peer, "connection refused: {reason:?} [{n} occurrences since the last such line]");
        }
        return;
    }
    // `option dontlognull`: HAProxy skips sessions that received nothing from the client,
    // and rolelb reads nothing from a client it could not connect anywhere.
    if fe.log_options.dontlognull {
        return;
    }
    let backend = table.load().current(&fe.backend);
    let term = match (reason, failed.timed_out) {
        (Refused::ConnectFailed, true) => "sC",
        _ => reason.code(),
    };
    // The queue was reached unless no server could be picked at all.
    let t_queue = match (reason, failed.assigned_at) {
        (Refused::NoServer | Refused::RoleConflict, _) => None,
        (_, Some(assigned)) => Some(accepted.ms(assigned)),
        _ => Some(accepted.ms(at)),
    };
    let (server, server_addr) = match &failed.server {
        Some((name, addr)) => (Some(name.as_str()), Some(*addr)),
        None => (None, None),
    };
    let srv_conn = server
        .and_then(|name| backend.servers.iter().find(|s| s.name() == name))
        .map_or(0, |s| u64::from(s.live.sessions.load(Ordering::Acquire)));
    log_session(
        fe,
        table,
        accepted,
        SessionLog {
            server,
            server_addr,
            t_queue,
            srv_conn,
            retries: failed.retries,
            redispatched: failed.redispatched,
            backend_queue: queue_pos,
            ..unserved(accepted, &fe.name, &backend.name, term, at)
        },
        &backend,
    );
}
