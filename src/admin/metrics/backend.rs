//! `haproxy_backend_*`: one series per backend (and backend half of a `listen`), values from
//! the view's `BackendView`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::shared::{
    CHECK_STATES, Entry, Object, TRAFFIC_ABORTS_AND_AVERAGES, TRAFFIC_MAXIMA,
    families as table_families,
};
use super::{Out, V};
use crate::admin::view::{BackendView, LbState, Proxy, ServerView};
use crate::table::TrafficStats;

/// One backend as the backend families read it.
pub(super) struct Be<'a> {
    name: &'a str,
    view: BackendView<'a>,
    /// `slim`: its `fullconn`.
    fullconn: u32,
    now: Instant,
}

impl Be<'_> {
    fn sum(&self, f: impl Fn(&ServerView<'_>) -> u64) -> V {
        V::N(self.view.sum(f))
    }

    fn rt(&self) -> &crate::table::BackendRt {
        self.view.rt
    }
}

impl Object for Be<'_> {
    fn labels(&self) -> Vec<(&'static str, &str)> {
        vec![("proxy", self.name)]
    }

    fn traffic(&self) -> &TrafficStats {
        &self.view.rt.live.traffic
    }

    fn states(&self) -> Vec<(&'static str, bool)> {
        let up = self.view.up();
        vec![("DOWN", !up), ("UP", up)]
    }
}

pub(super) type BeValue = fn(&Be<'_>) -> V;

pub(super) fn traffic_sum(b: &Be<'_>, f: fn(&TrafficStats) -> &AtomicU64) -> V {
    b.sum(|s| f(s.rt.live.traffic.get()).load(Ordering::Relaxed))
}

pub(super) const BACKEND: &[Entry<BeValue>] = &[
    Entry::Own(
        "current_queue",
        "gauge",
        "Number of current queued connections",
        |b| b.rt().live.queued.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "max_queue",
        "gauge",
        "Highest value of queued connections encountered since process started",
        |b| b.rt().live.max_queued.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "current_sessions",
        "gauge",
        "Number of current sessions on the frontend, backend or server",
        |b| b.view.sessions().into(),
    ),
    Entry::Own(
        "max_sessions",
        "gauge",
        "Highest value of current sessions encountered since process started",
        |b| b.rt().live.max_sessions.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "limit_sessions",
        "gauge",
        "Frontend/listener/server's maxconn, backend's fullconn",
        |b| b.fullconn.into(),
    ),
    Entry::Own(
        "sessions_total",
        "counter",
        "Total number of sessions since process started",
        |b| b.rt().live.total_sessions.load(Ordering::Relaxed).into(),
    ),
    Entry::Own(
        "bytes_in_total",
        "counter",
        "Total number of request bytes since process started",
        |b| b.view.bytes_in().into(),
    ),
    Entry::Own(
        "bytes_out_total",
        "counter",
        "Total number of response bytes since process started",
        |b| b.view.bytes_out().into(),
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
        |b| b.view.connect_errors().into(),
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
        |b| V::N(b.view.weight()),
    ),
    Entry::Own(
        "active_servers",
        "gauge",
        "Total number of active UP servers with a non-zero weight",
        |b| b.view.active().into(),
    ),
    Entry::Own(
        "backup_servers",
        "gauge",
        "Total number of backup UP servers with a non-zero weight",
        |b| b.view.backup().into(),
    ),
    Entry::Own(
        "check_up_down_total",
        "counter",
        "Total number of failed checks causing UP to DOWN server transitions, per server/backend, since the worker process started",
        |b| b.view.down_transitions().into(),
    ),
    Entry::Own(
        "check_last_change_seconds",
        "gauge",
        "How long ago the last server state changed, in seconds",
        |b| V::N(b.view.last_change(b.now).unwrap_or(0)),
    ),
    Entry::Own(
        "downtime_seconds_total",
        "counter",
        "Total time spent in DOWN state, for server or backend",
        |b| V::N(b.rt().live.downtime.total(b.now).as_secs()),
    ),
    Entry::Own(
        "loadbalanced_total",
        "counter",
        "Total number of requests routed by load balancing since the worker process started",
        |b| b.view.lb_total().into(),
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
        |b| V::N(b.view.weight()),
    ),
];

pub(super) fn families(proxies: &[Proxy<'_>], now: Instant, out: &mut Out) {
    let bes: Vec<Be<'_>> = proxies
        .iter()
        .filter_map(|px| {
            let view = px.backend_view()?;
            Some(Be {
                name: px.name,
                fullconn: view.fullconn(),
                view,
                now,
            })
        })
        .collect();
    table_families(out, "haproxy_backend_", BACKEND, &bes);
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
                    .view
                    .servers
                    .iter()
                    .filter(|s| s.lb_state(be.view.rt) == state)
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
            .view
            .servers
            .iter()
            .filter_map(|s| s.check_shown())
            .map(|c| c.status)
            .collect();
        for state in CHECK_STATES {
            let n = states.iter().filter(|s| **s == state).count();
            out.sample(name, &[("proxy", be.name), ("state", state)], n.into());
        }
    }
}
