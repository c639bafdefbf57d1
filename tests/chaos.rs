//! The single-writer promise under chaos (a Jepsen-style audit): a write never reaches a node
//! that is not the one primary.
//!
//! Each schedule builds a real cluster (PostgreSQL 15 primary and two streaming replicas, each
//! behind PgBouncer, members in a real etcd, rolelb with a `role primary` / `role-source both`
//! write listener and a read listener), runs writers through the write listener — a new
//! connection per write, each write recording the node that committed it as that node reports
//! it — and applies one fault drawn from a seed (`tests/chaos/faults.rs`). The auditor
//! (`tests/chaos/audit.rs`) then checks every acknowledged write against the ground truth the
//! test controlled, and counts acknowledged writes the surviving primary lacks.
//!
//! Readers on the read listener (`role replica`, `max-lag`) run beside the writers; their
//! audit (`tests/chaos/readers.rs`) allows read errors only inside a fault's window and no
//! read from a replica paused past `max-lag` (beyond a slack).
//!
//! `CHAOS_SEED=N` replays a run (the seed is printed first), `CHAOS_SCHEDULES=N` sets how many
//! schedules run (default [`DEFAULT_SCHEDULES`], three to eight minutes on a loaded 2-core machine).
//! The summary table is printed with `-- --nocapture`. A second test runs a split brain
//! through a plain `listen` (no role) and requires the auditor to report the writes that
//! reached the unnamed primary: the audit can fail.
//! `tests/chaos_haproxy.rs` runs the same schedules with HAProxy in rolelb's place (the
//! comparison row); the schedule runner and the tables live in `tests/chaos/run.rs`.

mod common;

#[path = "chaos/audit.rs"]
mod audit;
// Each test binary uses its part of the shared modules (this one not the HAProxy front).
#[allow(dead_code)]
#[path = "chaos/cluster.rs"]
mod cluster;
#[path = "chaos/faults.rs"]
mod faults;
#[allow(dead_code)]
#[path = "chaos/haproxy.rs"]
mod haproxy;
#[path = "chaos/outages.rs"]
mod outages;
#[path = "chaos/readers.rs"]
mod readers;
#[path = "chaos/run.rs"]
mod run;
#[path = "chaos/writers.rs"]
mod writers;

use std::time::Duration;

use audit::Report;
use cluster::Guard;
use common::Etcd;
use faults::{Kind, Schedule};
use readers::{ReadReport, read_summary};
use run::{ROW_HEADER, counts_consistent, env_number, row, run_audited, run_schedule, summary};

/// Schedules run without `CHAOS_SCHEDULES`: one round of kinds ([`faults::ROUND`]: every kind,
/// 10 switchovers as one etcd transaction, 5 split brains).
const DEFAULT_SCHEDULES: usize = 30;
/// How long the named primary may keep taking writes after a second node became writable:
/// rolelb's role check (`inter` 300 ms) must see the second primary and refuse (measured:
/// under 200 ms). Generous for a loaded 2-core machine; a guard that ignored the split
/// (`role-source etcd`) takes writes for the whole split, up to 5 s.
const SPLIT_EXPOSURE_BOUND: Duration = Duration::from_secs(1);

#[test]
fn no_acknowledged_write_reaches_a_node_that_is_not_the_one_primary() {
    let seed = run::seed();
    let count = env_number("CHAOS_SCHEDULES").map_or(DEFAULT_SCHEDULES, |n| n as usize);
    let replay =
        format!("CHAOS_SEED={seed} CHAOS_SCHEDULES={count} cargo test --test chaos -- --nocapture");
    eprintln!("chaos seed {seed} (replay: {replay})");
    let started = std::time::Instant::now();
    let etcd = Etcd::start();
    let mut outcomes = Vec::new();
    let mut reads = Vec::new();
    // CHAOS_KINDS=rejoin,etcd-stop runs only those kinds of the seed's schedules.
    let kinds = std::env::var("CHAOS_KINDS").ok();
    let chosen = |s: &Schedule| {
        kinds
            .as_deref()
            .is_none_or(|k| k.split(',').any(|k| k.trim() == s.kind.name()))
    };
    for (i, s) in faults::schedules(seed, count).iter().enumerate() {
        if !chosen(s) {
            continue;
        }
        eprintln!("schedule {}/{count}: {s}", i + 1);
        let at = std::time::Instant::now();
        let (outcome, read) = run_audited(&etcd, i, s, Guard::RolePrimary);
        eprintln!("  done in {:.1} s (stopped)", at.elapsed().as_secs_f64());
        outcomes.push(outcome);
        reads.push(read);
    }
    let names: Vec<String> = outcomes.iter().map(|o| o.schedule.to_string()).collect();
    let table = format!(
        "{}{}  took {:.0} s\n",
        summary(&format!("chaos audit, seed {seed}"), &outcomes),
        read_summary(&names, &reads),
        started.elapsed().as_secs_f64()
    );
    eprintln!("{table}");
    eprintln!("{ROW_HEADER}\n{}", row("rolelb", seed, &outcomes));
    for o in &outcomes {
        if let Err(why) = counts_consistent(o) {
            panic!("the auditor's counts do not add up: {why}\n{table}\nreplay: {replay}");
        }
    }
    let mut total = Report::default();
    outcomes.iter().for_each(|o| total.add(&o.report));
    // A partitioned old primary stays writable while no one can reach it: the writes the new,
    // named primary takes meanwhile are the failover working, not a split rolelb could see.
    let split_exposure = outcomes
        .iter()
        .filter(|o| o.schedule.kind != Kind::Partition)
        .map(|o| o.report.max_split_exposure)
        .max()
        .unwrap_or_default();
    assert_eq!(
        total.violations(),
        0,
        "the single-writer promise broke\n{table}\nreplay: {replay}"
    );
    assert!(
        split_exposure <= SPLIT_EXPOSURE_BOUND,
        "the named primary took writes {split_exposure:?} after a second node became writable \
         (bound {SPLIT_EXPOSURE_BOUND:?}): rolelb did not refuse during the split brain\n{table}\nreplay: {replay}",
    );
    let mut read_total = ReadReport::default();
    reads.iter().for_each(|r| read_total.add(r));
    assert_eq!(
        read_total.errors_outside, 0,
        "reads failed outside the documented windows (a fault's start until 2 s after its \
         last action)\n{table}\nreplay: {replay}"
    );
    assert_eq!(
        read_total.lagging_beyond_slack, 0,
        "reads reached a replica more than max-lag + slack behind\n{table}\nreplay: {replay}"
    );
    for (o, r) in outcomes.iter().zip(&reads) {
        assert!(
            r.served > 0,
            "{}: no read was served at all\n{table}\nreplay: {replay}",
            o.schedule
        );
        // While etcd is gone rolelb keeps its last good table, so reads keep being served
        // (`tests/etcd_discovery.rs` shows the table kept through an outage under load).
        // Read errors around the outage are counted like any fault's: a replica promoted
        // while etcd is down has its reads in flight closed, as it would with etcd up.
        if matches!(o.schedule.kind, Kind::EtcdStop | Kind::EtcdPause) {
            assert!(
                r.served > r.errors_in_window + r.errors_outside,
                "{}: more reads failed than were served while etcd was away\n{table}\nreplay: {replay}",
                o.schedule
            );
        }
        if o.schedule.kind == Kind::Rejoin {
            assert!(
                r.on_rejoined > 0,
                "{}: the old primary came back as a replica, yet no read reached it\n{table}\nreplay: {replay}",
                o.schedule
            );
        }
    }
    assert!(
        Kind::ALL.iter().all(|k| count < Kind::ALL.len()
            || kinds.is_some()
            || outcomes.iter().any(|o| o.schedule.kind == *k)),
        "every kind of fault must run"
    );
}

/// The auditor's self-test: the same split brain through a plain round-robin `listen` (no
/// role) must be reported as writes on a node that was not the one primary.
#[test]
fn the_audit_reports_writes_on_non_primaries_through_a_plain_listener() {
    let etcd = Etcd::start();
    let split = Schedule {
        kind: Kind::SplitBrain,
        new: 1,
        fence_first: false,
        split: Duration::from_secs(2),
        pause: Duration::ZERO,
        sighup_after: 0,
        warmup: Duration::from_millis(500),
        check_via_bouncer: false,
        outage: Duration::ZERO,
        step: 0,
        which_lb: 0,
    };
    let outcome = run_schedule(&etcd, 0, &split, Guard::Plain);
    let table = summary(
        "auditor self-test (plain listen, no role)",
        std::slice::from_ref(&outcome),
    );
    eprintln!("{table}");
    assert!(
        outcome.report.not_primary > 0 && outcome.report.split_brain > 0,
        "writes reached the promoted, unnamed n2 through a role-less listener, yet the audit \
         found none\n{table}"
    );
}
