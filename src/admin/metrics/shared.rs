//! What the `haproxy_backend_*` and `haproxy_server_*` tables share: the family-table
//! walker, the `status` family, and the traffic families both read the same way.

use std::sync::atomic::Ordering;

use super::{Out, V, ms};
use crate::table::TrafficStats;

/// A backend or a server, as its family table reads it.
pub(super) trait Object {
    /// The labels of its samples: `proxy`, and `server` for a server.
    fn labels(&self) -> Vec<(&'static str, &str)>;

    /// Its traffic counters (a backend's own, not the sum of its servers').
    fn traffic(&self) -> &TrafficStats;

    /// Each `state` label value of its `status` family, and whether it is the current one.
    fn states(&self) -> Vec<(&'static str, bool)>;
}

/// How a shared family reads a backend's or a server's traffic counters.
pub(super) type TrafficValue = fn(&TrafficStats) -> V;

/// One entry of the backend or server table, in HAProxy's order.
pub(super) enum Entry<F> {
    /// A family read from the object: name (after the prefix), type, HELP, value.
    Own(&'static str, &'static str, &'static str, F),
    /// `status`: one sample per `state` label value, 1 for the current state.
    Status,
    /// A run of families that read a backend's and a server's traffic counters the same way.
    Traffic(&'static [(&'static str, &'static str, &'static str, TrafficValue)]),
}

/// Writes the families of `table`, each named `prefix` + its name, one sample per object.
pub(super) fn families<T: Object, F: Fn(&T) -> V>(
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

pub(super) fn last_session(t: &TrafficStats) -> V {
    match t.last_session.load(Ordering::Relaxed) {
        0 => V::F(-1.0),
        // Read from the same clock the data path stamps it with.
        at => V::N(crate::live::unix_secs().saturating_sub(at)),
    }
}

/// Shared families from `client_aborts_total` to `failed_header_rewriting_total`.
pub(super) const TRAFFIC_ABORTS_AND_AVERAGES: &[(&str, &str, &str, TrafficValue)] = &[
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
pub(super) const TRAFFIC_MAXIMA: &[(&str, &str, &str, TrafficValue)] = &[
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

/// HAProxy's check status names, in its exporter's order.
pub(super) const CHECK_STATES: [&str; 16] = [
    "HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP",
    "L7OK", "L7OKC", "L7STS", "PROCERR", "PROCTOUT", "PROCOK",
];
