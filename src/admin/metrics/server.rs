//! `haproxy_server_*`: one series per server, values from the view's `ServerView`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::shared::{
    CHECK_STATES, Entry, Object, TRAFFIC_ABORTS_AND_AVERAGES, TRAFFIC_MAXIMA,
    families as table_families,
};
use super::{Out, V, secs};
use crate::admin::view::{CheckShown, LbState, Proxy, ServerView};
use crate::table::TrafficStats;

/// One server as the server families read it.
pub(super) struct Srv<'a> {
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
}

impl Object for Srv<'_> {
    fn labels(&self) -> Vec<(&'static str, &str)> {
        vec![("proxy", self.proxy), ("server", &self.view.cfg.name)]
    }

    fn traffic(&self) -> &TrafficStats {
        self.view.rt.live.traffic.get()
    }

    fn states(&self) -> Vec<(&'static str, bool)> {
        let current = self.view.lb_state(self.backend);
        LbState::ALL
            .into_iter()
            .map(|state| (state.word(), state == current))
            .collect()
    }
}

pub(super) type SrvValue = fn(&Srv<'_>) -> V;

pub(super) const SERVER: &[Entry<SrvValue>] = &[
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
        |s| s.view.limit().into(),
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
        |s| s.view.shown_weight().into(),
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
        |s| V::N(s.view.last_change(s.now)),
    ),
    Entry::Own(
        "downtime_seconds_total",
        "counter",
        "Total time spent in DOWN state, for server or backend",
        |s| s.view.downtime(s.now).map_or(V::NaN, V::N),
    ),
    Entry::Own(
        "queue_limit",
        "gauge",
        "Limit on the number of connections in queue, for servers only (maxqueue argument)",
        |s| s.view.queue_limit().into(),
    ),
    Entry::Own(
        "current_throttle",
        "gauge",
        "Throttling ratio applied to a server's maxconn and weight during the slowstart period (0 to 100%)",
        |s| s.view.throttle().into(),
    ),
    Entry::Own(
        "loadbalanced_total",
        "counter",
        "Total number of requests routed by load balancing since the worker process started",
        |s| s.live().lb_total.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "max_session_rate",
        "gauge",
        "Highest value of sessions per second observed since the worker process started",
        |s| s.traffic().session_rate.max().into(),
    ),
];

pub(super) const SERVER_AFTER_CHECK: &[Entry<SrvValue>] = &[
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
        |s| s.view.user_weight().into(),
    ),
];

/// Every `haproxy_server_*` family, without the servers in maintenance when `no_maint` (as
/// HAProxy's `no-maint`).
pub(super) fn families(proxies: &[Proxy<'_>], now: Instant, no_maint: bool, out: &mut Out) {
    let srvs: Vec<Srv<'_>> = proxies
        .iter()
        .filter_map(|px| px.backend_view().map(|b| (px.name, b)))
        .flat_map(|(proxy, be)| {
            let backend = be.rt;
            be.servers.into_iter().map(move |view| Srv {
                proxy,
                backend,
                view,
                now,
            })
        })
        .filter(|s| !(no_maint && s.view.maint()))
        .collect();
    table_families(out, "haproxy_server_", SERVER, &srvs);
    let checked: Vec<(&Srv<'_>, CheckShown)> = srvs
        .iter()
        .filter_map(|s| s.view.check_shown().map(|c| (s, c)))
        .collect();
    let name = "haproxy_server_check_status";
    out.family(
        name,
        "gauge",
        "Status of last health check, per state label value.",
    );
    for (s, c) in &checked {
        for state in CHECK_STATES {
            let mut labels = s.labels();
            labels.push(("state", state));
            out.sample(name, &labels, (c.status == state).into());
        }
    }
    let name = "haproxy_server_check_code";
    out.family(
        name,
        "gauge",
        "layer5-7 code, if available of the last health check.",
    );
    for (s, c) in &checked {
        out.sample(name, &s.labels(), V::N(c.code_number()));
    }
    let name = "haproxy_server_check_duration_seconds";
    out.family(
        name,
        "gauge",
        "Total duration of the latest server health check, in seconds.",
    );
    for (s, c) in &checked {
        out.sample(name, &s.labels(), secs(c.duration()));
    }
    table_families(out, "haproxy_server_", SERVER_AFTER_CHECK, &srvs);
}
