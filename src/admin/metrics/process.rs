//! `haproxy_process_*`: the process-wide families, in HAProxy's exporter's order.

use std::sync::atomic::Ordering;

use super::{Env, Out, V};
use crate::admin::view;
use crate::proxy::splice;
use crate::table::Table;

pub(super) fn families(env: &Env, table: &Table, out: &mut Out) {
    let maxconn = view::maxconn(table, env.default_maxconn);
    let fds = view::max_fds();
    let conns = env.limits.conns.load(Ordering::Relaxed);
    let total = env.limits.total_conns.load(Ordering::Relaxed);
    let rate = &env.limits.conn_rate;
    let bytes_out = view::bytes_out(table);
    let (tasks, run_queue) = tokio::runtime::Handle::try_current().map_or((0, 0), |h| {
        let m = h.metrics();
        (m.num_alive_tasks(), m.global_queue_depth())
    });
    let start = view::start_time_secs(env.started_wall);
    let listeners = table.listeners.len();
    let max_pipes = match table.config.maxpipes() {
        usize::MAX => 0,
        n => n as u64,
    };
    let families: Vec<(&str, &str, &str, V)> = vec![
        (
            "nbthread",
            "gauge",
            "Number of started threads (global.nbthread)",
            env.nbthread.into(),
        ),
        (
            "nbproc",
            "gauge",
            "Number of started worker processes (historical, always 1)",
            V::N(1),
        ),
        (
            "relative_process_id",
            "gauge",
            "Relative worker process number (1)",
            V::N(1),
        ),
        (
            "uptime_seconds",
            "gauge",
            "How long ago this worker process was started (seconds)",
            env.started.elapsed().as_secs().into(),
        ),
        (
            "pool_failures_total",
            "counter",
            "Number of failed pool allocations since this worker was started (rolelb has no memory pools: 0)",
            V::N(0),
        ),
        (
            "max_fds",
            "gauge",
            "Hard limit on the number of per-process file descriptors",
            fds.into(),
        ),
        (
            "max_sockets",
            "gauge",
            "Hard limit on the number of per-process sockets",
            fds.into(),
        ),
        (
            "max_connections",
            "gauge",
            "Hard limit on the number of per-process connections (configured or imposed by Ulimit-n)",
            maxconn.into(),
        ),
        (
            "hard_max_connections",
            "gauge",
            "Hard limit on the number of per-process connections (imposed by Ulimit-n)",
            maxconn.into(),
        ),
        (
            "current_connections",
            "gauge",
            "Current number of connections on this worker process",
            conns.into(),
        ),
        (
            "connections_total",
            "counter",
            "Total number of connections on this worker process since started",
            total.into(),
        ),
        (
            "requests_total",
            "counter",
            "Total number of requests (TCP sessions) on this worker process since started",
            total.into(),
        ),
        (
            "max_ssl_connections",
            "gauge",
            "Hard limit on the number of per-process SSL endpoints (rolelb has no TLS: 0)",
            V::N(0),
        ),
        (
            "current_ssl_connections",
            "gauge",
            "Current number of SSL endpoints on this worker process (rolelb has no TLS: 0)",
            V::N(0),
        ),
        (
            "ssl_connections_total",
            "counter",
            "Total number of SSL endpoints since started (rolelb has no TLS: 0)",
            V::N(0),
        ),
        (
            "max_pipes",
            "gauge",
            "Hard limit on the number of pipes for splicing, 0=unlimited",
            V::N(max_pipes),
        ),
        (
            "pipes_used_total",
            "counter",
            "Current number of pipes in use in this worker process",
            V::N(splice::pipes_used() as u64),
        ),
        (
            "pipes_free_total",
            "counter",
            "Current number of allocated and available pipes in this worker process (0)",
            V::N(0),
        ),
        (
            "current_connection_rate",
            "gauge",
            "Number of front connections created on this worker process over the last second",
            rate.current().into(),
        ),
        (
            "limit_connection_rate",
            "gauge",
            "Hard limit for ConnRate",
            V::N(table.config.global.maxconnrate.map_or(0, u64::from)),
        ),
        (
            "max_connection_rate",
            "gauge",
            "Highest ConnRate reached on this worker process since started (in connections per second)",
            rate.max().into(),
        ),
        (
            "current_session_rate",
            "gauge",
            "Number of sessions created on this worker process over the last second",
            rate.current().into(),
        ),
        (
            "limit_session_rate",
            "gauge",
            "Hard limit for SessRate",
            V::N(table.config.global.maxsessrate.map_or(0, u64::from)),
        ),
        (
            "max_session_rate",
            "gauge",
            "Highest SessRate reached on this worker process since started (in sessions per second)",
            rate.max().into(),
        ),
        (
            "current_ssl_rate",
            "gauge",
            "Number of SSL connections created over the last second (no TLS: 0)",
            V::N(0),
        ),
        (
            "limit_ssl_rate",
            "gauge",
            "Hard limit for SslRate (no TLS: 0)",
            V::N(0),
        ),
        (
            "max_ssl_rate",
            "gauge",
            "Highest SslRate reached since started (no TLS: 0)",
            V::N(0),
        ),
        (
            "current_frontend_ssl_key_rate",
            "gauge",
            "Number of SSL keys created on frontends over the last second (no TLS: 0)",
            V::N(0),
        ),
        (
            "max_frontend_ssl_key_rate",
            "gauge",
            "Highest SslFrontendKeyRate reached since started (no TLS: 0)",
            V::N(0),
        ),
        (
            "frontend_ssl_reuse",
            "gauge",
            "Percent of frontend SSL connections which did not require a new key (no TLS: 0)",
            V::N(0),
        ),
        (
            "current_backend_ssl_key_rate",
            "gauge",
            "Number of SSL keys created on backends over the last second (no TLS: 0)",
            V::N(0),
        ),
        (
            "max_backend_ssl_key_rate",
            "gauge",
            "Highest SslBackendKeyRate reached since started (no TLS: 0)",
            V::N(0),
        ),
        (
            "ssl_cache_lookups_total",
            "counter",
            "Total number of SSL session ID lookups in the SSL session cache (no TLS: 0)",
            V::N(0),
        ),
        (
            "ssl_cache_misses_total",
            "counter",
            "Total number of SSL session ID lookups that missed the SSL session cache (no TLS: 0)",
            V::N(0),
        ),
        (
            "http_comp_bytes_in_total",
            "counter",
            "Number of bytes submitted to the HTTP compressor (TCP only: 0)",
            V::N(0),
        ),
        (
            "http_comp_bytes_out_total",
            "counter",
            "Number of bytes emitted by the HTTP compressor (TCP only: 0)",
            V::N(0),
        ),
        (
            "limit_http_comp",
            "gauge",
            "Limit of CompressBpsOut beyond which HTTP compression is automatically disabled (0)",
            V::N(0),
        ),
        (
            "current_zlib_memory",
            "gauge",
            "Amount of memory currently used by HTTP compression (no compression: NaN)",
            V::NaN,
        ),
        (
            "max_zlib_memory",
            "gauge",
            "Limit on the amount of memory used by HTTP compression (no compression: NaN)",
            V::NaN,
        ),
        (
            "current_tasks",
            "gauge",
            "Total number of tasks in the current worker process (active + sleeping)",
            tasks.into(),
        ),
        (
            "current_run_queue",
            "gauge",
            "Total number of tasks waiting in the runtime's global queue",
            run_queue.into(),
        ),
        (
            "stopping",
            "gauge",
            "1 if the worker process is currently stopping, otherwise zero",
            V::N(0),
        ),
        (
            "jobs",
            "gauge",
            "Current number of active jobs on the current worker process (frontend connections, listeners)",
            (u64::from(conns) + u64::try_from(listeners).unwrap_or(0)).into(),
        ),
        (
            "unstoppable_jobs",
            "gauge",
            "Current number of unstoppable jobs on the current worker process (0)",
            V::N(0),
        ),
        (
            "listeners",
            "gauge",
            "Current number of active listeners on the current worker process",
            listeners.into(),
        ),
        (
            "active_peers",
            "gauge",
            "Current number of verified active peers connections (rolelb has no peers: 0)",
            V::N(0),
        ),
        (
            "connected_peers",
            "gauge",
            "Current number of peers having passed the connection step (rolelb has no peers: 0)",
            V::N(0),
        ),
        (
            "dropped_logs_total",
            "counter",
            "Total number of dropped logs for current worker process since started",
            V::N(0),
        ),
        (
            "busy_polling_enabled",
            "gauge",
            "1 if busy-polling is currently in use on the worker process, otherwise zero",
            V::N(0),
        ),
        (
            "bytes_out_total",
            "counter",
            "Total number of bytes emitted by current worker process since started",
            bytes_out.into(),
        ),
        (
            "spliced_bytes_out_total",
            "counter",
            "Total number of bytes emitted through a kernel pipe since started",
            V::N(splice::spliced_bytes()),
        ),
        (
            "recv_logs_total",
            "counter",
            "Total number of log messages received by log-forwarding listeners (0)",
            V::N(0),
        ),
        (
            "max_memory_bytes",
            "gauge",
            "Worker process's hard limit on memory usage in bytes (none: 0)",
            V::N(0),
        ),
        (
            "start_time_seconds",
            "gauge",
            "Start time in seconds",
            start.into(),
        ),
    ];
    for (name, kind, help, value) in families {
        let name = format!("haproxy_process_{name}");
        out.family(&name, kind, help);
        out.sample(&name, &[], value);
    }
    out.family("haproxy_process_build_info", "gauge", "Build info");
    out.sample(
        "haproxy_process_build_info",
        &[("version", concat!("rolelb-", env!("CARGO_PKG_VERSION")))],
        V::N(1),
    );
}
