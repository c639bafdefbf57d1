//! The single-writer promise under chaos on MariaDB (the smaller variant of `tests/chaos.rs`):
//! a write never reaches a node that is not the one primary.
//!
//! Each schedule builds a real cluster (a MariaDB 10.11 primary and two replicas replicating
//! with GTIDs, members in a real etcd, two rolelb instances sharing it, each with a
//! `role primary` / `role-source both` write listener and a `role replica` read listener
//! checking `@@read_only`), runs writers through the write listeners — a new connection per
//! write, each write recording in its transaction the node that committed it as that node
//! reports it (`@@server_id`, `@@port`, `@@read_only`, `NOW(6)`) — and applies one fault drawn
//! from a seed (`tests/chaos/mariadb_faults.rs`: switchovers with `read_only` flips written to
//! etcd as single puts or one transaction, a split brain, a killed primary). The shared auditor
//! (`tests/chaos/audit.rs`) then checks every acknowledged write against the ground truth the
//! test controlled, and counts acknowledged writes the surviving primary lacks.
//!
//! `CHAOS_SEED=N` replays a run (the seed is printed first), `CHAOS_SCHEDULES=N` sets how many
//! schedules run (default [`DEFAULT_SCHEDULES`], under three minutes on a loaded 2-core
//! machine). The summary table is printed with `-- --nocapture`. A second test runs a split
//! brain through a plain `listen` (no role) and requires the auditor to report the writes that
//! reached the unnamed primary: the audit can fail.

mod common;

#[path = "chaos/audit.rs"]
mod audit;
#[path = "chaos/mariadb_cluster.rs"]
mod cluster;
#[path = "chaos/mariadb_faults.rs"]
mod faults;
#[path = "chaos/mariadb_run.rs"]
mod run;
#[path = "chaos/mariadb_writers.rs"]
mod writers;

use std::time::{Duration, Instant};

use audit::Report;
use cluster::{Guard, Template};
use common::Etcd;
use faults::{First, Kind, Schedule};
use run::{ROW_HEADER, counts_consistent, env_number, row, run_schedule, summary};

/// Schedules run without `CHAOS_SCHEDULES`: two rounds, so 4 switchovers written as one etcd
/// transaction, 2 as single puts, 2 split brains, 2 killed primaries.
const DEFAULT_SCHEDULES: usize = 10;
/// How long the named primary may keep taking writes after a second node became writable:
/// rolelb's role check (`inter` 300 ms) must see the second primary and refuse. Generous for a
/// loaded 2-core machine; a guard that ignored the split (`role-source etcd`) takes writes for
/// the whole split, up to 5 s.
const SPLIT_EXPOSURE_BOUND: Duration = Duration::from_secs(1);

#[test]
fn no_acknowledged_write_reaches_a_mariadb_node_that_is_not_the_one_primary() {
    let seed = run::seed();
    let count = env_number("CHAOS_SCHEDULES").map_or(DEFAULT_SCHEDULES, |n| n as usize);
    let replay = format!(
        "CHAOS_SEED={seed} CHAOS_SCHEDULES={count} cargo test --test chaos_mariadb -- --nocapture"
    );
    eprintln!("chaos seed {seed} (replay: {replay})");
    let started = Instant::now();
    let etcd = Etcd::start();
    let template = Template::new();
    let mut outcomes = Vec::new();
    for (i, s) in faults::schedules(seed, count).iter().enumerate() {
        eprintln!("schedule {}/{count}: {s}", i + 1);
        outcomes.push(run_schedule(&etcd, &template, i, s, Guard::RolePrimary));
    }
    let table = summary(
        &format!(
            "MariaDB chaos audit, seed {seed}, {:.0} s",
            started.elapsed().as_secs_f64()
        ),
        &outcomes,
    );
    eprintln!("{table}");
    eprintln!("{ROW_HEADER}\n{}", row(seed, &outcomes));
    for o in &outcomes {
        if let Err(why) = counts_consistent(o) {
            panic!("the auditor's counts do not add up: {why}\n{table}\nreplay: {replay}");
        }
    }
    let mut total = Report::default();
    outcomes.iter().for_each(|o| total.add(&o.report));
    assert!(total.writes > 0, "no write was acknowledged\n{table}");
    assert_eq!(
        total.violations(),
        0,
        "the single-writer promise broke\n{table}\nreplay: {replay}"
    );
    assert!(
        total.max_split_exposure <= SPLIT_EXPOSURE_BOUND,
        "the named primary took writes {:?} after a second node became writable (bound \
         {SPLIT_EXPOSURE_BOUND:?}): rolelb did not refuse during the split brain\n{table}\nreplay: {replay}",
        total.max_split_exposure
    );
    assert!(
        Kind::ALL
            .iter()
            .all(|k| count < Kind::ALL.len() || outcomes.iter().any(|o| o.schedule.kind == *k)),
        "every kind of fault must run"
    );
}

/// The auditor's self-test: the same split brain through a plain round-robin `listen` (no
/// role) must be reported as writes on a node that was not the one primary.
#[test]
fn the_mariadb_audit_reports_writes_on_non_primaries_through_a_plain_listener() {
    let etcd = Etcd::start();
    let template = Template::new();
    let split = Schedule {
        kind: Kind::SplitBrain,
        new: 1,
        first: First::Fence,
        pause: Duration::ZERO,
        split: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
    };
    let outcome = run_schedule(&etcd, &template, 0, &split, Guard::Plain);
    let table = summary(
        "MariaDB auditor self-test (plain listen, no role)",
        std::slice::from_ref(&outcome),
    );
    eprintln!("{table}");
    assert!(
        outcome.report.not_primary > 0 && outcome.report.split_brain > 0,
        "writes reached the writable, unnamed n2 through a role-less listener, yet the audit \
         found none\n{table}"
    );
}
