//! `rolelb_*`: what role awareness makes visible (role per server, replication lag, role
//! conflicts, check durations, table swaps) and `rolelb_etcd_*` per `discover` backend.

use std::sync::atomic::Ordering;

use super::{Env, Out, V, ms, secs};
use crate::admin::view::{self, Proxy, ServerView};
use crate::table::{CHECK_BUCKETS, LazyHistogram, NodeRole, Table};

/// `rolelb_etcd_*`, one series per `discover` backend (labels `etcd`, `backend`); absent
/// when the configuration watches no etcd.
pub(super) fn etcd_families(env: &Env, out: &mut Out) {
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
            "etcd values that did not parse or whose host did not resolve (each key revision once).",
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

pub(super) fn histogram(out: &mut Out, name: &str, labels: &[(&str, &str)], h: &LazyHistogram) {
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

/// `rolelb_server_*` and `rolelb_check_duration_seconds` (scope `server`), without the
/// servers in maintenance when `no_maint`.
pub(super) fn server_families(proxies: &[Proxy<'_>], no_maint: bool, out: &mut Out) {
    let servers: Vec<(&str, ServerView<'_>)> = proxies
        .iter()
        .filter_map(|px| px.backend_view().map(|b| (px.name, b)))
        .flat_map(|(proxy, be)| be.servers.into_iter().map(move |view| (proxy, view)))
        .filter(|(_, view)| !(no_maint && view.maint()))
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
    let name = "rolelb_server_replication_lag_bytes";
    out.family(
        name,
        "gauge",
        "Replication lag the last role check measured, in bytes (NaN when unknown).",
    );
    for (proxy, s) in &servers {
        let v = s.lag_bytes().map_or(V::NaN, V::N);
        out.sample(name, &[("proxy", proxy), ("server", &s.cfg.name)], v);
    }
    let name = "rolelb_server_replication_lag_seconds";
    out.family(
        name,
        "gauge",
        "Replication lag the last role check measured, in seconds (NaN when unknown).",
    );
    for (proxy, s) in &servers {
        let v = s.lag_ms().map_or(V::NaN, ms);
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
}

/// `rolelb_backend_*` (scope `backend`).
pub(super) fn backend_families(proxies: &[Proxy<'_>], out: &mut Out) {
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
        let role = view::role_name(rt.role);
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
}

/// `rolelb_table_*` (scope `global`).
pub(super) fn table_families(table: &Table, out: &mut Out) {
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
    use crate::table::LazyHistogram;
    use std::time::Duration;

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let h = LazyHistogram::default();
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
