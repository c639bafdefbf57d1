//! `haproxy_frontend_*`: one series per frontend (and frontend half of a `listen`).

use std::sync::atomic::Ordering;

use super::{Env, Out, V};
use crate::admin::view::{self, Proxy};
use crate::table::Table;

/// One frontend (or the frontend half of a `listen`) as the frontend families read it.
pub(super) struct Fe<'a> {
    name: &'a str,
    limit: u32,
    /// `rate-limit sessions` (0: none).
    rate_limit: u32,
    open: bool,
    live: Option<&'a crate::table::FrontendLive>,
}

impl Fe<'_> {
    fn load(&self, f: impl Fn(&crate::table::FrontendLive) -> u64) -> V {
        V::N(self.live.map_or(0, f))
    }
}

pub(super) type FeValue = fn(&Fe<'_>) -> V;

pub(super) const FRONTEND: &[(&str, &str, &str, FeValue)] = &[
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
        |f| f.load(|l| l.total_sessions.load(Ordering::Relaxed)),
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
        "Total number of denied requests since process started",
        |f| f.load(|l| l.denied_reqs.load(Ordering::Relaxed)),
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
        "Limit on the number of sessions accepted in a second",
        |f| V::N(f.rate_limit.into()),
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
        "Total number of incoming connections blocked on a listener/frontend by a tcp-request connection rule since the worker process started",
        |f| f.load(|l| l.denied_conns.load(Ordering::Relaxed)),
    ),
    (
        "denied_sessions_total",
        "counter",
        "Total number of incoming sessions blocked by a tcp-request session rule (rolelb has no tcp-request session rules: 0)",
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

pub(super) fn families(env: &Env, table: &Table, proxies: &[Proxy<'_>], out: &mut Out) {
    let fes: Vec<Fe<'_>> = proxies
        .iter()
        .filter_map(|px| {
            let (cfg, rt) = px.frontend?;
            Some(Fe {
                name: px.name,
                limit: view::frontend_limit(table, cfg, env.default_maxconn),
                rate_limit: cfg.rate_limit_sessions.unwrap_or(0),
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
