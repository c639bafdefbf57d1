//! `/metrics`: the Prometheus text format, rendered at scrape time from the current table and
//! the live atomics (nothing here is updated by the data path, so a scrape never slows it).
//!
//! Every `haproxy_*` family carries the name, type and label names (`proxy`, `server`,
//! `state`) of HAProxy 2.6's built-in exporter for what HAProxy also has in TCP mode, so
//! existing dashboards and alerts work. Where HAProxy prints `NaN` (no `maxconn`, no check),
//! so does rolelb. Counters of features rolelb does not have (HTTP rules, TLS, compression,
//! connection reuse) are a true 0. A few process gauges rolelb cannot know (memory pools,
//! idle time, byte rate) are left out; `docs/metrics.md` lists them.
//!
//! The `rolelb_*` families add what role awareness makes visible: role per server,
//! replication lag, role conflicts, check durations, table swaps, and `rolelb_etcd_*` per
//! `discover` backend from the status board `control` publishes.
//!
//! Rendered by hand rather than through the `prometheus` crate: every value already lives in
//! an atomic, and label sets come and go with reloads, so copying into the crate's registry
//! would only add a second copy to keep in sync.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::Env;
use super::view::{self, LbState, Proxy, ServerView};
use crate::check::CheckResult;
use crate::table::{CHECK_BUCKETS, Histogram, NodeRole, Table, TrafficStats};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A sample's value.
#[derive(Debug, Clone, Copy)]
enum V {
    /// An integer.
    N(u64),
    /// A real number.
    F(f64),
    /// Not applicable (HAProxy prints `NaN` for empty fields).
    NaN,
}

impl From<u32> for V {
    fn from(n: u32) -> V {
        V::N(u64::from(n))
    }
}

impl From<u64> for V {
    fn from(n: u64) -> V {
        V::N(n)
    }
}

impl From<usize> for V {
    fn from(n: usize) -> V {
        V::N(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

impl From<bool> for V {
    fn from(b: bool) -> V {
        V::N(u64::from(b))
    }
}

impl From<Option<u32>> for V {
    fn from(n: Option<u32>) -> V {
        n.map_or(V::NaN, V::from)
    }
}

fn secs(d: Duration) -> V {
    V::F(d.as_secs_f64())
}

fn ms(n: u64) -> V {
    #[allow(clippy::cast_precision_loss)]
    V::F(n as f64 / 1000.0)
}

/// The text being written, one family at a time.
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: V) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        match value {
            V::N(n) => {
                let _ = writeln!(self.text, " {n}");
            }
            V::F(f) if f.is_finite() => {
                let _ = writeln!(self.text, " {f}");
            }
            V::F(_) | V::NaN => self.text.push_str(" NaN\n"),
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every family for the current table.
pub fn render(env: &Env) -> String {
    let table = env.table.load();
    let now = Instant::now();
    let proxies = view::proxies(&table);
    let mut out = Out {
        text: String::with_capacity(64 * 1024),
    };
    process_families(env, &table, &mut out);
    frontend_families(env, &table, &proxies, &mut out);
    backend_families(env, &table, &proxies, now, &mut out);
    server_families(&proxies, now, &mut out);
    rolelb_families(&table, &proxies, &mut out);
    etcd_families(env, &mut out);
    out.text
}

/// `rolelb_etcd_*`, one series per `discover` backend (labels `etcd`, `backend`); absent
/// when the configuration watches no etcd.
fn etcd_families(env: &Env, out: &mut Out) {
    let board = env.etcd.load();
    if board.is_empty() {
        return;
    }
    type Read = fn(&crate::discovery::EtcdStatus) -> V;
    let families: [(&str, &str, &str, Read); 5] = [
        (
            "rolelb_etcd_connected",
            "gauge",
            "Whether the etcd watch is connected (1) or not (0).",
            |s| V::from(s.connected.load(Ordering::Relaxed)),
        ),
        (
            "rolelb_etcd_events_total",
            "counter",
            "etcd watch events received.",
            |s| V::N(s.events.load(Ordering::Relaxed)),
        ),
        (
            "rolelb_etcd_parse_errors_total",
            "counter",
            "etcd values that did not parse (each key revision once).",
            |s| V::N(s.parse_errors.load(Ordering::Relaxed)),
        ),
        (
            "rolelb_etcd_last_revision",
            "gauge",
            "The etcd revision the member set reflects.",
            |s| V::N(u64::try_from(s.last_revision.load(Ordering::Relaxed)).unwrap_or(0)),
        ),
        (
            "rolelb_etcd_state_age_seconds",
            "gauge",
            "Seconds since etcd last confirmed the member set (NaN before the first).",
            |s| s.state_age().map_or(V::NaN, secs),
        ),
    ];
    for (name, kind, help, read) in families {
        out.family(name, kind, help);
        for w in board.iter() {
            out.sample(
                name,
                &[("etcd", &w.etcd), ("backend", &w.backend)],
                read(&w.status),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// haproxy_process_*
// ---------------------------------------------------------------------------------------------

fn process_families(env: &Env, table: &Table, out: &mut Out) {
    let maxconn = table.maxconn.unwrap_or(env.default_maxconn);
    let fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    let conns = env.limits.conns.load(Ordering::Relaxed);
    let total = env.limits.total_conns.load(Ordering::Relaxed);
    let rate = &env.limits.conn_rate;
    let bytes_out: u64 = table
        .frontends
        .iter()
        .map(|f| f.live.bytes_out.load(Ordering::Relaxed))
        .sum();
    let (tasks, run_queue) = tokio::runtime::Handle::try_current().map_or((0, 0), |h| {
        let m = h.metrics();
        (m.num_alive_tasks(), m.global_queue_depth())
    });
    let start = env
        .started_wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let listeners = table.listeners.len();
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
            V::N(0),
        ),
        (
            "pipes_used_total",
            "counter",
            "Current number of pipes in use in this worker process (rolelb does not splice: 0)",
            V::N(0),
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
            "Hard limit for ConnRate (rolelb has no maxconnrate: 0)",
            V::N(0),
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
            "Hard limit for SessRate (rolelb has no maxsessrate: 0)",
            V::N(0),
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
            "Total number of bytes emitted through a kernel pipe since started (rolelb does not splice: 0)",
            V::N(0),
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

// ---------------------------------------------------------------------------------------------
// haproxy_frontend_*
// ---------------------------------------------------------------------------------------------

/// One frontend (or the frontend half of a `listen`) as the frontend families read it.
struct Fe<'a> {
    name: &'a str,
    limit: u32,
    open: bool,
    live: Option<&'a crate::table::FrontendLive>,
}

impl Fe<'_> {
    fn load(&self, f: impl Fn(&crate::table::FrontendLive) -> u64) -> V {
        V::N(self.live.map_or(0, f))
    }
}

type FeValue = fn(&Fe<'_>) -> V;

const FRONTEND: &[(&str, &str, &str, FeValue)] = &[
    (
        "current_sessions",
        "gauge",
        "Number of current sessions on the frontend, backend or server",
        |f| f.load(|l| u64::from(l.conns.load(Ordering::Relaxed))),
    ),
    (
        "max_sessions",
        "gauge",
        "Highest value of current sessions encountered since process started",
        |f| f.load(|l| u64::from(l.max_conns.load(Ordering::Relaxed))),
    ),
    (
        "limit_sessions",
        "gauge",
        "Frontend/listener/server's maxconn, backend's fullconn",
        |f| V::from(f.limit),
    ),
    (
        "sessions_total",
        "counter",
        "Total number of sessions since process started",
        |f| f.load(|l| l.total_conns.load(Ordering::Relaxed)),
    ),
    (
        "bytes_in_total",
        "counter",
        "Total number of request bytes since process started",
        |f| f.load(|l| l.bytes_in.load(Ordering::Relaxed)),
    ),
    (
        "bytes_out_total",
        "counter",
        "Total number of response bytes since process started",
        |f| f.load(|l| l.bytes_out.load(Ordering::Relaxed)),
    ),
    (
        "requests_denied_total",
        "counter",
        "Total number of denied requests since process started (rolelb has no deny rules: 0)",
        |_| V::N(0),
    ),
    (
        "responses_denied_total",
        "counter",
        "Total number of denied responses since process started (0)",
        |_| V::N(0),
    ),
    (
        "request_errors_total",
        "counter",
        "Total number of invalid requests since process started (TCP: 0)",
        |_| V::N(0),
    ),
    (
        "limit_session_rate",
        "gauge",
        "Limit on the number of sessions accepted in a second (rolelb has no rate-limit: 0)",
        |_| V::N(0),
    ),
    (
        "max_session_rate",
        "gauge",
        "Highest value of sessions per second observed since the worker process started",
        |f| f.load(|l| l.conn_rate.max()),
    ),
    (
        "connections_rate_max",
        "gauge",
        "Highest value of connections per second observed since the worker process started",
        |f| f.load(|l| l.conn_rate.max()),
    ),
    (
        "connections_total",
        "counter",
        "Total number of new connections accepted on this frontend since the worker process started",
        |f| f.load(|l| l.total_conns.load(Ordering::Relaxed)),
    ),
    (
        "denied_connections_total",
        "counter",
        "Total number of incoming connections blocked by a tcp-request connection rule (rolelb has none: 0)",
        |_| V::N(0),
    ),
    (
        "denied_sessions_total",
        "counter",
        "Total number of incoming sessions blocked by a tcp-request session rule (rolelb has none: 0)",
        |_| V::N(0),
    ),
    (
        "failed_header_rewriting_total",
        "counter",
        "Total number of failed HTTP header rewrites (TCP: 0)",
        |_| V::N(0),
    ),
    (
        "internal_errors_total",
        "counter",
        "Total number of internal errors since process started",
        |_| V::N(0),
    ),
];

fn frontend_families(env: &Env, table: &Table, proxies: &[Proxy<'_>], out: &mut Out) {
    let fes: Vec<Fe<'_>> = proxies
        .iter()
        .filter_map(|px| {
            let (cfg, rt) = px.frontend?;
            Some(Fe {
                name: px.name,
                limit: cfg.maxconn.or(table.maxconn).unwrap_or(env.default_maxconn),
                open: !cfg.disabled,
                live: rt.map(|r| &*r.live),
            })
        })
        .collect();
    for (i, (name, kind, help, value)) in FRONTEND.iter().enumerate() {
        let name = format!("haproxy_frontend_{name}");
        out.family(&name, kind, help);
        for fe in &fes {
            out.sample(&name, &[("proxy", fe.name)], value(fe));
        }
        // HAProxy lists `status` after `request_errors_total`.
        if i == 8 {
            let name = "haproxy_frontend_status";
            out.family(
                name,
                "gauge",
                "Current status of the service, per state label value.",
            );
            for fe in &fes {
                for (state, on) in [("DOWN", !fe.open), ("UP", fe.open)] {
                    out.sample(name, &[("proxy", fe.name), ("state", state)], on.into());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What haproxy_backend_* and haproxy_server_* share
// ---------------------------------------------------------------------------------------------

/// A backend or a server, as its family table reads it.
trait Object {
    /// The labels of its samples: `proxy`, and `server` for a server.
    fn labels(&self) -> Vec<(&'static str, &str)>;

    /// Its traffic counters (a backend's own, not the sum of its servers').
    fn traffic(&self) -> &TrafficStats;

    /// Each `state` label value of its `status` family, and whether it is the current one.
    fn states(&self) -> Vec<(&'static str, bool)>;
}

/// How a shared family reads a backend's or a server's traffic counters.
type TrafficValue = fn(&TrafficStats) -> V;

/// One entry of the backend or server table, in HAProxy's order.
enum Entry<F> {
    /// A family read from the object: name (after the prefix), type, HELP, value.
    Own(&'static str, &'static str, &'static str, F),
    /// `status`: one sample per `state` label value, 1 for the current state.
    Status,
    /// A run of families that read a backend's and a server's traffic counters the same way.
    Traffic(&'static [(&'static str, &'static str, &'static str, TrafficValue)]),
}

/// Writes the families of `table`, each named `prefix` + its name, one sample per object.
fn families<T: Object, F: Fn(&T) -> V>(
    out: &mut Out,
    prefix: &str,
    table: &[Entry<F>],
    objs: &[T],
) {
    let family = |out: &mut Out, name: &str, kind: &str, help: &str, value: &dyn Fn(&T) -> V| {
        let name = format!("{prefix}{name}");
        out.family(&name, kind, help);
        for o in objs {
            out.sample(&name, &o.labels(), value(o));
        }
    };
    for entry in table {
        match entry {
            Entry::Own(name, kind, help, value) => family(out, name, kind, help, value),
            Entry::Traffic(shared) => {
                for (name, kind, help, value) in *shared {
                    family(out, name, kind, help, &|o: &T| value(o.traffic()));
                }
            }
            Entry::Status => {
                let name = format!("{prefix}status");
                out.family(
                    &name,
                    "gauge",
                    "Current status of the service, per state label value.",
                );
                for o in objs {
                    for (state, on) in o.states() {
                        let mut labels = o.labels();
                        labels.push(("state", state));
                        out.sample(&name, &labels, on.into());
                    }
                }
            }
        }
    }
}

fn last_session(t: &TrafficStats) -> V {
    match t.last_session.load(Ordering::Relaxed) {
        0 => V::F(-1.0),
        at => {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            V::N(now.saturating_sub(at))
        }
    }
}

/// Shared families from `client_aborts_total` to `failed_header_rewriting_total`.
const TRAFFIC_ABORTS_AND_AVERAGES: &[(&str, &str, &str, TrafficValue)] = &[
    (
        "client_aborts_total",
        "counter",
        "Total number of requests or connections aborted by the client since the worker process started",
        |t| t.client_aborts.load(Ordering::Relaxed).into(),
    ),
    (
        "server_aborts_total",
        "counter",
        "Total number of requests or connections aborted by the server since the worker process started",
        |t| t.server_aborts.load(Ordering::Relaxed).into(),
    ),
    (
        "last_session_seconds",
        "gauge",
        "How long ago some traffic was seen on this object on this worker process, in seconds",
        last_session,
    ),
    (
        "queue_time_average_seconds",
        "gauge",
        "Avg. queue time for last 1024 successful connections.",
        |t| ms(t.queue_ms.get()),
    ),
    (
        "connect_time_average_seconds",
        "gauge",
        "Avg. connect time for last 1024 successful connections.",
        |t| ms(t.connect_ms.get()),
    ),
    (
        "response_time_average_seconds",
        "gauge",
        "Avg. response time for last 1024 successful connections (TCP: 0).",
        |_| V::F(0.0),
    ),
    (
        "total_time_average_seconds",
        "gauge",
        "Avg. total time for last 1024 successful connections.",
        |t| ms(t.total_ms.get()),
    ),
    (
        "failed_header_rewriting_total",
        "counter",
        "Total number of failed HTTP header rewrites (TCP: 0)",
        |_| V::N(0),
    ),
];

/// Shared families from `max_queue_time_seconds` to `internal_errors_total`.
const TRAFFIC_MAXIMA: &[(&str, &str, &str, TrafficValue)] = &[
    (
        "max_queue_time_seconds",
        "gauge",
        "Maximum observed time spent in the queue",
        |t| ms(t.max_queue_ms.load(Ordering::Relaxed)),
    ),
    (
        "max_connect_time_seconds",
        "gauge",
        "Maximum observed time spent waiting for a connection to complete",
        |t| ms(t.max_connect_ms.load(Ordering::Relaxed)),
    ),
    (
        "max_response_time_seconds",
        "gauge",
        "Maximum observed time spent waiting for a server response (TCP: 0)",
        |_| V::F(0.0),
    ),
    (
        "max_total_time_seconds",
        "gauge",
        "Maximum observed total session time",
        |t| ms(t.max_total_ms.load(Ordering::Relaxed)),
    ),
    (
        "internal_errors_total",
        "counter",
        "Total number of internal errors since process started",
        |_| V::N(0),
    ),
];

// ---------------------------------------------------------------------------------------------
// haproxy_backend_*
// ---------------------------------------------------------------------------------------------

/// One backend as the backend families read it.
struct Be<'a> {
    name: &'a str,
    rt: &'a crate::table::BackendRt,
    servers: Vec<ServerView<'a>>,
    /// HAProxy's default `fullconn`: a tenth of the `maxconn` of the frontends using it.
    fullconn: u64,
    now: Instant,
}

impl Be<'_> {
    fn sum(&self, f: impl Fn(&ServerView<'_>) -> u64) -> V {
        V::N(self.servers.iter().map(f).sum())
    }

    fn usable(&self, backup: bool) -> usize {
        let pool = if backup {
            &self.rt.backup
        } else {
            &self.rt.active
        };
        pool.members.len()
    }

    fn weight(&self) -> u64 {
        let pool = if self.rt.active.members.is_empty() {
            &self.rt.backup
        } else {
            &self.rt.active
        };
        // HAProxy: the effective weights (ramped under `slowstart`) back on the user scale,
        // as `show stat` shows them.
        pool.members
            .iter()
            .filter_map(|&i| self.rt.servers.get(i))
            .map(|s| u64::from(s.eweight))
            .sum::<u64>()
            .div_ceil(u64::from(crate::balance::WEIGHT_SCALE))
    }

    fn last_change(&self) -> V {
        self.servers
            .iter()
            .map(|s| s.rt.live.changed_at())
            .max()
            .map_or(V::N(0), |t| {
                V::N(self.now.saturating_duration_since(t).as_secs())
            })
    }
}

impl Object for Be<'_> {
    fn labels(&self) -> Vec<(&'static str, &str)> {
        vec![("proxy", self.name)]
    }

    fn traffic(&self) -> &TrafficStats {
        &self.rt.live.traffic
    }

    fn states(&self) -> Vec<(&'static str, bool)> {
        let up = self.usable(false) + self.usable(true) > 0;
        vec![("DOWN", !up), ("UP", up)]
    }
}

type BeValue = fn(&Be<'_>) -> V;

fn traffic_sum(b: &Be<'_>, f: fn(&TrafficStats) -> &std::sync::atomic::AtomicU64) -> V {
    b.sum(|s| f(&s.rt.live.traffic).load(Ordering::Relaxed))
}

const BACKEND: &[Entry<BeValue>] = &[
    Entry::Own(
        "current_queue",
        "gauge",
        "Number of current queued connections",
        |b| b.rt.live.queued.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "max_queue",
        "gauge",
        "Highest value of queued connections encountered since process started",
        |b| b.rt.live.max_queued.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "current_sessions",
        "gauge",
        "Number of current sessions on the frontend, backend or server",
        |b| b.rt.live.sessions.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "max_sessions",
        "gauge",
        "Highest value of current sessions encountered since process started",
        |b| b.rt.live.max_sessions.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "limit_sessions",
        "gauge",
        "Frontend/listener/server's maxconn, backend's fullconn",
        |b| V::N(b.fullconn),
    ),
    Entry::Own(
        "sessions_total",
        "counter",
        "Total number of sessions since process started",
        |b| b.rt.live.total_sessions.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "bytes_in_total",
        "counter",
        "Total number of request bytes since process started",
        |b| b.sum(|s| s.rt.live.bytes_in.load(Ordering::Relaxed)),
    ),
    Entry::Own(
        "bytes_out_total",
        "counter",
        "Total number of response bytes since process started",
        |b| b.sum(|s| s.rt.live.bytes_out.load(Ordering::Relaxed)),
    ),
    Entry::Own(
        "requests_denied_total",
        "counter",
        "Total number of denied requests since process started (0)",
        |_| V::N(0),
    ),
    Entry::Own(
        "responses_denied_total",
        "counter",
        "Total number of denied responses since process started (0)",
        |_| V::N(0),
    ),
    Entry::Own(
        "connection_errors_total",
        "counter",
        "Total number of failed connections to server since the worker process started",
        |b| b.sum(|s| s.rt.live.connect_errors.load(Ordering::Relaxed)),
    ),
    Entry::Own(
        "response_errors_total",
        "counter",
        "Total number of invalid responses since the worker process started (TCP: 0)",
        |_| V::N(0),
    ),
    Entry::Own(
        "retry_warnings_total",
        "counter",
        "Total number of server connection retries since the worker process started",
        |b| traffic_sum(b, |t| &t.retries),
    ),
    Entry::Own(
        "redispatch_warnings_total",
        "counter",
        "Total number of server redispatches due to connection failures since the worker process started",
        |b| traffic_sum(b, |t| &t.redispatches),
    ),
    // HAProxy lists `status` after `redispatch_warnings_total`.
    Entry::Status,
    Entry::Own(
        "weight",
        "gauge",
        "Server's effective weight, or sum of active servers' effective weights for a backend",
        |b| V::N(b.weight()),
    ),
    Entry::Own(
        "active_servers",
        "gauge",
        "Total number of active UP servers with a non-zero weight",
        |b| b.usable(false).into(),
    ),
    Entry::Own(
        "backup_servers",
        "gauge",
        "Total number of backup UP servers with a non-zero weight",
        |b| b.usable(true).into(),
    ),
    Entry::Own(
        "check_up_down_total",
        "counter",
        "Total number of failed checks causing UP to DOWN server transitions, per server/backend, since the worker process started",
        |b| b.rt.live.downtime.transitions().into(),
    ),
    Entry::Own(
        "check_last_change_seconds",
        "gauge",
        "How long ago the last server state changed, in seconds",
        |b| b.last_change(),
    ),
    Entry::Own(
        "downtime_seconds_total",
        "counter",
        "Total time spent in DOWN state, for server or backend",
        |b| V::N(b.rt.live.downtime.total(b.now).as_secs()),
    ),
    Entry::Own(
        "loadbalanced_total",
        "counter",
        "Total number of requests routed by load balancing since the worker process started",
        |b| b.sum(|s| s.rt.live.total_sessions.load(Ordering::Relaxed)),
    ),
    Entry::Own(
        "max_session_rate",
        "gauge",
        "Highest value of sessions per second observed since the worker process started",
        |b| b.traffic().session_rate.max().into(),
    ),
    Entry::Traffic(TRAFFIC_ABORTS_AND_AVERAGES),
    Entry::Own(
        "connection_attempts_total",
        "counter",
        "Total number of outgoing connection attempts on this backend/server since the worker process started",
        |b| traffic_sum(b, |t| &t.connect_attempts),
    ),
    Entry::Own(
        "connection_reuses_total",
        "counter",
        "Total number of reused connection on this backend/server (rolelb never reuses: 0)",
        |_| V::N(0),
    ),
    Entry::Traffic(TRAFFIC_MAXIMA),
    Entry::Own(
        "uweight",
        "gauge",
        "Server's user weight, or sum of active servers' user weights for a backend",
        |b| V::N(b.weight()),
    ),
];

/// HAProxy's check status names, in its exporter's order.
const CHECK_STATES: [&str; 16] = [
    "HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP",
    "L7OK", "L7OKC", "L7STS", "PROCERR", "PROCTOUT", "PROCOK",
];

fn backend_families(env: &Env, table: &Table, proxies: &[Proxy<'_>], now: Instant, out: &mut Out) {
    let bes: Vec<Be<'_>> = proxies
        .iter()
        .filter_map(|px| {
            let (cfg, rt) = px.backend?;
            let fullconn: u64 = table
                .config
                .frontends
                .iter()
                .filter(|f| f.backend == cfg.name)
                .map(|f| u64::from(f.maxconn.or(table.maxconn).unwrap_or(env.default_maxconn)))
                .sum();
            Some(Be {
                name: px.name,
                rt,
                servers: view::servers(cfg, rt),
                fullconn: (fullconn / 10).max(1),
                now,
            })
        })
        .collect();
    families(out, "haproxy_backend_", BACKEND, &bes);
    for (name, help) in [
        (
            "haproxy_backend_agg_server_status",
            "Backend's aggregated gauge of servers' status",
        ),
        (
            "haproxy_backend_agg_server_check_status",
            "Backend's aggregated gauge of servers' state check status",
        ),
    ] {
        out.family(name, "gauge", help);
        for be in &bes {
            for state in LbState::ALL {
                let n = be
                    .servers
                    .iter()
                    .filter(|s| s.lb_state(be.rt) == state)
                    .count();
                out.sample(
                    name,
                    &[("proxy", be.name), ("state", state.word())],
                    n.into(),
                );
            }
        }
    }
    let name = "haproxy_backend_agg_check_status";
    out.family(
        name,
        "gauge",
        "Backend's aggregated gauge of servers' state check status",
    );
    for be in &bes {
        let states: Vec<&str> = be
            .servers
            .iter()
            .filter_map(|s| s.last_check())
            .map(|r| r.status.code())
            .collect();
        for state in CHECK_STATES {
            let n = states.iter().filter(|s| **s == state).count();
            out.sample(name, &[("proxy", be.name), ("state", state)], n.into());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// haproxy_server_*
// ---------------------------------------------------------------------------------------------

/// One server as the server families read it.
struct Srv<'a> {
    proxy: &'a str,
    backend: &'a crate::table::BackendRt,
    view: ServerView<'a>,
    now: Instant,
}

impl Srv<'_> {
    fn live(&self) -> &crate::table::ServerLive {
        &self.view.rt.live
    }

    fn checked(&self, v: u64) -> V {
        if self.view.cfg.check { V::N(v) } else { V::NaN }
    }

    fn throttle(&self) -> V {
        self.view
            .rt
            .throttle()
            .map_or(V::NaN, |t| V::N(u64::from(t)))
    }
}

impl Object for Srv<'_> {
    fn labels(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("proxy", self.proxy),
            ("server", self.view.cfg.name.as_str()),
        ]
    }

    fn traffic(&self) -> &TrafficStats {
        &self.view.rt.live.traffic
    }

    fn states(&self) -> Vec<(&'static str, bool)> {
        let current = self.view.lb_state(self.backend);
        LbState::ALL
            .into_iter()
            .map(|state| (state.word(), state == current))
            .collect()
    }
}

type SrvValue = fn(&Srv<'_>) -> V;

const SERVER: &[Entry<SrvValue>] = &[
    Entry::Own(
        "current_queue",
        "gauge",
        "Number of current queued connections (rolelb queues per backend: 0)",
        |_| V::N(0),
    ),
    Entry::Own(
        "max_queue",
        "gauge",
        "Highest value of queued connections encountered since process started (rolelb queues per backend: 0)",
        |_| V::N(0),
    ),
    Entry::Own(
        "current_sessions",
        "gauge",
        "Number of current sessions on the frontend, backend or server",
        |s| s.live().sessions.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "max_sessions",
        "gauge",
        "Highest value of current sessions encountered since process started",
        |s| s.live().max_sessions.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "limit_sessions",
        "gauge",
        "Frontend/listener/server's maxconn, backend's fullconn",
        |s| s.view.rt.maxconn.filter(|m| *m > 0).into(),
    ),
    Entry::Own(
        "sessions_total",
        "counter",
        "Total number of sessions since process started",
        |s| s.live().total_sessions.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "bytes_in_total",
        "counter",
        "Total number of request bytes since process started",
        |s| s.live().bytes_in.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "bytes_out_total",
        "counter",
        "Total number of response bytes since process started",
        |s| s.live().bytes_out.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "responses_denied_total",
        "counter",
        "Total number of denied responses since process started (0)",
        |_| V::N(0),
    ),
    Entry::Own(
        "connection_errors_total",
        "counter",
        "Total number of failed connections to server since the worker process started",
        |s| s.live().connect_errors.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "response_errors_total",
        "counter",
        "Total number of invalid responses since the worker process started (TCP: 0)",
        |_| V::N(0),
    ),
    Entry::Own(
        "retry_warnings_total",
        "counter",
        "Total number of server connection retries since the worker process started",
        |s| s.traffic().retries.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "redispatch_warnings_total",
        "counter",
        "Total number of server redispatches due to connection failures since the worker process started",
        |s| s.traffic().redispatches.load(Ordering::Relaxed).into(),
    ),
    // HAProxy lists `status` after `redispatch_warnings_total`.
    Entry::Status,
    Entry::Own(
        "weight",
        "gauge",
        "Server's effective weight, or sum of active servers' effective weights for a backend",
        |s| s.view.rt.shown_weight().into(),
    ),
    Entry::Own(
        "check_failures_total",
        "counter",
        "Total number of failed individual health checks per server/backend, since the worker process started",
        |s| s.checked(s.live().check_failures.load(Ordering::Relaxed)),
    ),
    Entry::Own(
        "check_up_down_total",
        "counter",
        "Total number of failed checks causing UP to DOWN server transitions, per server/backend, since the worker process started",
        |s| s.checked(s.live().down_transitions.load(Ordering::Relaxed)),
    ),
    Entry::Own(
        "check_last_change_seconds",
        "gauge",
        "How long ago the last server state changed, in seconds",
        |s| {
            V::N(
                s.now
                    .saturating_duration_since(s.live().changed_at())
                    .as_secs(),
            )
        },
    ),
    Entry::Own(
        "downtime_seconds_total",
        "counter",
        "Total time spent in DOWN state, for server or backend",
        |s| s.checked(s.live().downtime(s.now).as_secs()),
    ),
    Entry::Own(
        "queue_limit",
        "gauge",
        "Limit on the number of connections in queue, for servers only (maxqueue argument)",
        |s| s.view.cfg.maxqueue.filter(|q| *q > 0).into(),
    ),
    Entry::Own(
        "current_throttle",
        "gauge",
        "Throttling ratio applied to a server's maxconn and weight during the slowstart period (0 to 100%)",
        |s| s.throttle(),
    ),
    Entry::Own(
        "loadbalanced_total",
        "counter",
        "Total number of requests routed by load balancing since the worker process started",
        |s| s.live().total_sessions.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "max_session_rate",
        "gauge",
        "Highest value of sessions per second observed since the worker process started",
        |s| s.traffic().session_rate.max().into(),
    ),
];

const SERVER_AFTER_CHECK: &[Entry<SrvValue>] = &[
    Entry::Traffic(TRAFFIC_ABORTS_AND_AVERAGES),
    Entry::Own(
        "connection_attempts_total",
        "counter",
        "Total number of outgoing connection attempts on this backend/server since the worker process started",
        |s| s.traffic().connect_attempts.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "connection_reuses_total",
        "counter",
        "Total number of reused connection on this backend/server (rolelb never reuses: 0)",
        |_| V::N(0),
    ),
    Entry::Own(
        "idle_connections_current",
        "gauge",
        "Current number of idle connections available for reuse on this server (rolelb keeps none: 0)",
        |_| V::N(0),
    ),
    Entry::Own(
        "idle_connections_limit",
        "gauge",
        "Limit on the number of available idle connections on this server (none: NaN)",
        |_| V::NaN,
    ),
    Entry::Traffic(TRAFFIC_MAXIMA),
    Entry::Own(
        "unsafe_idle_connections_current",
        "gauge",
        "Current number of unsafe idle connections (0)",
        |_| V::N(0),
    ),
    Entry::Own(
        "safe_idle_connections_current",
        "gauge",
        "Current number of safe idle connections (0)",
        |_| V::N(0),
    ),
    Entry::Own(
        "used_connections_current",
        "gauge",
        "Current number of connections in use",
        |s| s.live().sessions.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "need_connections_current",
        "gauge",
        "Estimated needed number of connections",
        |s| s.live().sessions.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "uweight",
        "gauge",
        "Server's user weight, or sum of active servers' user weights for a backend",
        |s| s.view.rt.weight.into(),
    ),
];

fn server_families(proxies: &[Proxy<'_>], now: Instant, out: &mut Out) {
    let srvs: Vec<Srv<'_>> = proxies
        .iter()
        .filter_map(|px| px.backend.map(|b| (px.name, b)))
        .flat_map(|(proxy, (cfg, rt))| {
            view::servers(cfg, rt).into_iter().map(move |view| Srv {
                proxy,
                backend: rt,
                view,
                now,
            })
        })
        .collect();
    families(out, "haproxy_server_", SERVER, &srvs);
    let checked: Vec<(&Srv<'_>, Option<std::sync::Arc<CheckResult>>)> = srvs
        .iter()
        .filter(|s| s.view.cfg.check)
        .map(|s| (s, s.view.last_check()))
        .collect();
    let name = "haproxy_server_check_status";
    out.family(
        name,
        "gauge",
        "Status of last health check, per state label value.",
    );
    for (s, r) in &checked {
        let current = r.as_deref().map(|r| r.status.code());
        for state in CHECK_STATES {
            let mut labels = s.labels();
            labels.push(("state", state));
            out.sample(name, &labels, (current == Some(state)).into());
        }
    }
    let name = "haproxy_server_check_code";
    out.family(
        name,
        "gauge",
        "layer5-7 code, if available of the last health check.",
    );
    for (s, r) in &checked {
        let code = r
            .as_deref()
            .and_then(|r| r.code.as_deref())
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        out.sample(name, &s.labels(), V::N(code));
    }
    let name = "haproxy_server_check_duration_seconds";
    out.family(
        name,
        "gauge",
        "Total duration of the latest server health check, in seconds.",
    );
    for (s, r) in &checked {
        let d = r.as_deref().map_or(Duration::ZERO, |r| r.duration);
        out.sample(name, &s.labels(), secs(d));
    }
    families(out, "haproxy_server_", SERVER_AFTER_CHECK, &srvs);
}

// ---------------------------------------------------------------------------------------------
// rolelb_*
// ---------------------------------------------------------------------------------------------

fn histogram(out: &mut Out, name: &str, labels: &[(&str, &str)], h: &Histogram) {
    let (buckets, count, sum) = h.snapshot();
    let bucket = format!("{name}_bucket");
    for (le, n) in CHECK_BUCKETS.iter().zip(buckets) {
        let le = le.to_string();
        let mut l = labels.to_vec();
        l.push(("le", &le));
        out.sample(&bucket, &l, V::N(n));
    }
    let mut l = labels.to_vec();
    l.push(("le", "+Inf"));
    out.sample(&bucket, &l, V::N(count));
    out.sample(&format!("{name}_sum"), labels, V::F(sum));
    out.sample(&format!("{name}_count"), labels, V::N(count));
}

fn rolelb_families(table: &Table, proxies: &[Proxy<'_>], out: &mut Out) {
    let servers: Vec<(&str, ServerView<'_>)> = proxies
        .iter()
        .filter_map(|px| px.backend.map(|b| (px.name, b)))
        .flat_map(|(proxy, (cfg, rt))| {
            view::servers(cfg, rt)
                .into_iter()
                .map(move |view| (proxy, view))
        })
        .collect();
    let name = "rolelb_server_role";
    out.family(
        name,
        "gauge",
        "The role each server last reported (1 for its current role), per role label value.",
    );
    for (proxy, s) in &servers {
        let role = s.rt.live.role();
        for r in [NodeRole::Primary, NodeRole::Replica, NodeRole::Unknown] {
            out.sample(
                name,
                &[
                    ("proxy", proxy),
                    ("server", &s.cfg.name),
                    ("role", r.name()),
                ],
                (role == r).into(),
            );
        }
    }
    let lag = |v: u64| if v == u64::MAX { V::NaN } else { V::N(v) };
    let name = "rolelb_server_replication_lag_bytes";
    out.family(
        name,
        "gauge",
        "Replication lag the last role check measured, in bytes (NaN when unknown).",
    );
    for (proxy, s) in &servers {
        let v = lag(s.rt.live.lag_bytes.load(Ordering::Relaxed));
        out.sample(name, &[("proxy", proxy), ("server", &s.cfg.name)], v);
    }
    let name = "rolelb_server_replication_lag_seconds";
    out.family(
        name,
        "gauge",
        "Replication lag the last role check measured, in seconds (NaN when unknown).",
    );
    for (proxy, s) in &servers {
        let v = match s.rt.live.lag_ms.load(Ordering::Relaxed) {
            u64::MAX => V::NaN,
            n => ms(n),
        };
        out.sample(name, &[("proxy", proxy), ("server", &s.cfg.name)], v);
    }
    let name = "rolelb_check_duration_seconds";
    out.family(
        name,
        "histogram",
        "How long checks take, per server and kind of check (health, agent, role).",
    );
    for (proxy, s) in &servers {
        let d = &s.rt.live.check_durations;
        let kinds = [
            ("health", s.cfg.check, &d.health),
            ("agent", s.cfg.agent.is_some(), &d.agent),
            ("role", s.rt.live.last_role_check.load().is_some(), &d.role),
        ];
        for (kind, on, h) in kinds {
            if on {
                let labels = [("proxy", *proxy), ("server", &s.cfg.name), ("check", kind)];
                histogram(out, name, &labels, h);
            }
        }
    }
    let backends: Vec<(&str, &crate::table::BackendRt)> = proxies
        .iter()
        .filter_map(|px| px.backend.map(|(_, rt)| (px.name, rt)))
        .collect();
    let name = "rolelb_backend_role";
    out.family(
        name,
        "gauge",
        "The role a backend requires of its servers ('role' keyword: primary, replica or any).",
    );
    for (proxy, rt) in &backends {
        let role = match rt.role {
            crate::config::Role::Primary => "primary",
            crate::config::Role::Replica => "replica",
            crate::config::Role::Any => "any",
        };
        out.sample(name, &[("proxy", proxy), ("role", role)], V::N(1));
    }
    let name = "rolelb_backend_role_conflict";
    out.family(
        name,
        "gauge",
        "1 while several servers of a 'role primary' backend report primary (no new connections).",
    );
    for (proxy, rt) in &backends {
        let v = rt.live.role_conflict.load(Ordering::Relaxed);
        out.sample(name, &[("proxy", proxy)], v.into());
    }
    let name = "rolelb_backend_role_conflict_refusals_total";
    out.family(
        name,
        "counter",
        "Connections refused because of a role conflict.",
    );
    for (proxy, rt) in &backends {
        let v = rt.live.conflict_refusals.load(Ordering::Relaxed);
        out.sample(name, &[("proxy", proxy)], v.into());
    }
    let name = "rolelb_backend_no_server_total";
    out.family(
        name,
        "counter",
        "Connections refused because no server was available.",
    );
    for (proxy, rt) in &backends {
        let v = rt.live.no_server.load(Ordering::Relaxed);
        out.sample(name, &[("proxy", proxy)], v.into());
    }
    out.family(
        "rolelb_table_generation",
        "gauge",
        "Generation of the table the data path reads now.",
    );
    out.sample("rolelb_table_generation", &[], table.generation.into());
    out.family(
        "rolelb_table_swaps_total",
        "counter",
        "Tables published since start (reloads, check verdicts, admin changes; the first included).",
    );
    out.sample("rolelb_table_swaps_total", &[], table.generation.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_escape_labels_and_print_nan() {
        let mut out = Out {
            text: String::new(),
        };
        out.family("x_total", "counter", "X.");
        out.sample("x_total", &[("proxy", "a\"b\\c\nd")], V::N(3));
        out.sample("x_total", &[], V::NaN);
        out.sample("x_total", &[], V::F(0.25));
        assert_eq!(
            out.text,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{proxy=\"a\\\"b\\\\c\\nd\"} 3\nx_total NaN\nx_total 0.25\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let mut out = Out {
            text: String::new(),
        };
        histogram(&mut out, "h", &[("server", "s")], &h);
        assert!(out.text.contains("h_bucket{server=\"s\",le=\"0.005\"} 1\n"));
        assert!(out.text.contains("h_bucket{server=\"s\",le=\"0.05\"} 2\n"));
        assert!(out.text.contains("h_bucket{server=\"s\",le=\"5\"} 2\n"));
        assert!(out.text.contains("h_bucket{server=\"s\",le=\"+Inf\"} 3\n"));
        assert!(out.text.contains("h_count{server=\"s\"} 3\n"));
    }
}
