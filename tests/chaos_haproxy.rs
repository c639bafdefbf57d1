//! The chaos audit's comparison row: the same seeded schedules and the same auditor as
//! `tests/chaos.rs`, with HAProxy 2.6 in rolelb's place, configured the way clusters run it
//! today (Patroni's template: `option httpchk OPTIONS /primary`, `http-check expect status
//! 200`, `on-marked-down shutdown-sessions`, each server checked on its node's health agent,
//! here `rolelb-agent`). HAProxy reads no etcd, so a schedule's etcd changes do not reach it;
//! the PostgreSQL side of every fault (promote, fence by stopping, split brain, crash) is the
//! same.
//!
//! Writes HAProxy lets through to a node that is not the one primary are the finding, not a
//! failure: the test prints the row (`-- --nocapture`) and asserts only that the run happened
//! (writes acknowledged, every kind of fault ran) and that the auditor's counts add up.
//! `CHAOS_SEED` and `CHAOS_SCHEDULES` (default [`DEFAULT_SCHEDULES`]) as in `tests/chaos.rs`:
//! the same seed and count run the same schedules there. Needs `cargo build -p rolelb-agent`.

mod common;

#[path = "chaos/audit.rs"]
mod audit;
// Each test binary uses its part of the shared modules (this one no rolelb guard).
#[allow(dead_code)]
#[path = "chaos/cluster.rs"]
mod cluster;
#[path = "chaos/faults.rs"]
mod faults;
#[path = "chaos/haproxy.rs"]
mod haproxy;
#[allow(dead_code)]
#[path = "chaos/outages.rs"]
mod outages;
#[allow(dead_code)]
#[path = "chaos/readers.rs"]
mod readers;
#[path = "chaos/run.rs"]
mod run;
#[path = "chaos/writers.rs"]
mod writers;

use audit::Report;
use cluster::Guard;
use common::Etcd;
use faults::Kind;
use run::{ROW_HEADER, counts_consistent, env_number, row, run_schedule, summary};

/// Schedules run without `CHAOS_SCHEDULES`: part of a round of kinds (`CHAOS_SCHEDULES=30`
/// runs every kind).
const DEFAULT_SCHEDULES: usize = 8;

#[test]
fn haproxy_comparison_row() {
    let seed = run::seed();
    let count = env_number("CHAOS_SCHEDULES").map_or(DEFAULT_SCHEDULES, |n| n as usize);
    let replay = format!(
        "CHAOS_SEED={seed} CHAOS_SCHEDULES={count} cargo test --test chaos_haproxy -- --nocapture"
    );
    eprintln!("chaos seed {seed}, HAProxy (replay: {replay})");
    let etcd = Etcd::start();
    let mut outcomes = Vec::new();
    for (i, s) in faults::schedules(seed, count).iter().enumerate() {
        eprintln!("schedule {}/{count}: {s}", i + 1);
        outcomes.push(run_schedule(&etcd, i, s, Guard::Haproxy));
    }
    let table = summary(
        &format!("chaos audit through HAProxy, seed {seed}"),
        &outcomes,
    );
    eprintln!("{table}");
    eprintln!(
        "{ROW_HEADER}\n{}",
        row("HAProxy 2.6 + agents", seed, &outcomes)
    );
    for o in &outcomes {
        if let Err(why) = counts_consistent(o) {
            panic!("the auditor's counts do not add up: {why}\n{table}\nreplay: {replay}");
        }
    }
    let mut total = Report::default();
    outcomes.iter().for_each(|o| total.add(&o.report));
    assert!(
        total.writes > 0,
        "no write was acknowledged through HAProxy\n{table}\nreplay: {replay}"
    );
    assert!(
        Kind::ALL
            .iter()
            .all(|k| count < Kind::ALL.len() || outcomes.iter().any(|o| o.schedule.kind == *k)),
        "every kind of fault must run\n{table}"
    );
}
