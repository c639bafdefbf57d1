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
//! `CHAOS_SEED=N` replays a run (the seed is printed first), `CHAOS_SCHEDULES=N` sets how many
//! schedules run (default [`DEFAULT_SCHEDULES`], one to two minutes on a loaded 2-core machine).
//! The summary table is printed with `-- --nocapture`. A second test runs a split brain
//! through a plain `listen` (no role) and requires the auditor to report the writes that
//! reached the unnamed primary: the audit can fail.

mod common;

#[path = "chaos/audit.rs"]
mod audit;
#[path = "chaos/cluster.rs"]
mod cluster;
#[path = "chaos/faults.rs"]
mod faults;
#[path = "chaos/writers.rs"]
mod writers;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use audit::{Report, Write};
use cluster::{Cluster, Guard};
use common::Etcd;
use faults::{Kind, Schedule};
use writers::{Failure, Writers};

/// Schedules run without `CHAOS_SCHEDULES`.
const DEFAULT_SCHEDULES: usize = 30;
/// Writer threads.
const WRITERS: usize = 3;
/// How long the writers keep going once the new primary took a write.
const AFTER: Duration = Duration::from_secs(1);
/// How long the named primary may keep taking writes after a second node became writable:
/// rolelb's role check (`inter` 300 ms) must see the second primary and refuse (measured:
/// under 200 ms). Generous for a loaded 2-core machine; a guard that ignored the split
/// (`role-source etcd`) takes writes for the whole split, up to 5 s.
const SPLIT_EXPOSURE_BOUND: Duration = Duration::from_secs(1);

/// What one schedule produced.
struct Outcome {
    schedule: Schedule,
    report: Report,
    attempts: usize,
    acked: usize,
    /// Connections refused or closed before login between the fault and the first write on the
    /// new primary.
    refused: usize,
    other_failures: usize,
    /// Up to three distinct reasons among those failures.
    other_kinds: Vec<String>,
    /// From the fault's last action to the first acknowledged write on the new primary.
    recovery: Duration,
    /// From the fault's first action to the same write.
    from_fault: Duration,
    /// When the writes lost on a demoted primary were committed, relative to the fault's
    /// first action (earliest, latest), in seconds.
    lost_at: Option<(f64, f64)>,
    /// Acknowledged writes per (node, timeline).
    timelines: BTreeMap<(String, u32), usize>,
}

/// Runs schedule `s` as the `generation`th cluster against `etcd`, with `guard`.
fn run_schedule(etcd: &Etcd, generation: usize, s: &Schedule, guard: Guard) -> Outcome {
    let mut cluster = Cluster::build(etcd, generation, guard, s.check_via_bouncer);
    let writers = Writers::start(
        cluster.write_port,
        WRITERS,
        generation as i64 * 1_000_000_000,
    );
    std::thread::sleep(s.warmup);
    let fault = faults::run(&mut cluster, s);
    cluster.wait_writes_on(s.new);
    std::thread::sleep(AFTER);
    let attempts = writers.finish();

    let new_port = cluster.nodes[s.new].pg.port();
    let present = cluster.ids_on(s.new);
    let acks: Vec<&writers::Ack> = attempts
        .iter()
        .filter_map(|a| a.result.as_ref().ok())
        .collect();
    let writes: Vec<Write> = acks
        .iter()
        .map(|a| Write {
            id: a.id,
            node: cluster.node_of_port(a.port),
            in_recovery: a.in_recovery,
            timeline: a.timeline,
            committed: a.committed,
        })
        .collect();
    let report = audit::audit(
        cluster.nodes.len(),
        &cluster.events,
        &writes,
        s.new,
        &present,
    );
    let first_on_new = attempts
        .iter()
        .filter(|a| a.started >= fault.began)
        .filter(|a| a.result.as_ref().is_ok_and(|ack| ack.port == new_port))
        .map(|a| a.ended)
        .min()
        .unwrap_or_else(SystemTime::now);
    let refused = attempts
        .iter()
        .filter(|a| a.started >= fault.began && a.started <= first_on_new)
        .filter(|a| matches!(a.result, Err(Failure::Refused)))
        .count();
    let others: Vec<&str> = attempts
        .iter()
        .filter_map(|a| match &a.result {
            Err(Failure::Other(why)) => Some(why.as_str()),
            _ => None,
        })
        .collect();
    let mut other_kinds: Vec<String> = others.iter().map(|why| why.to_string()).collect();
    other_kinds.sort();
    other_kinds.dedup();
    other_kinds.truncate(3);
    let offset = |t: SystemTime| match t.duration_since(fault.began) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    };
    let lost: Vec<f64> = writes
        .iter()
        .filter(|w| !present.contains(&w.id))
        .map(|w| offset(w.committed))
        .collect();
    let lost_at = (!lost.is_empty()).then(|| {
        let min = lost.iter().copied().fold(f64::INFINITY, f64::min);
        let max = lost.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    });
    let mut timelines = BTreeMap::new();
    for w in &writes {
        let node = w.node.map_or_else(|| "?".to_owned(), Cluster::name);
        *timelines.entry((node, w.timeline)).or_default() += 1;
    }
    if report.violations() > 0 && guard == Guard::RolePrimary {
        eprintln!("rolelb's log for this schedule:\n{}", cluster.log());
    }
    Outcome {
        schedule: *s,
        report,
        attempts: attempts.len(),
        acked: acks.len(),
        refused,
        other_failures: others.len(),
        other_kinds,
        recovery: first_on_new
            .duration_since(fault.resolved)
            .unwrap_or_default(),
        from_fault: first_on_new.duration_since(fault.began).unwrap_or_default(),
        lost_at,
        timelines,
    }
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// The per-schedule lines and the summary table.
fn summary(title: &str, outcomes: &[Outcome]) -> String {
    let mut out = format!("{title}, {} schedules\n", outcomes.len());
    out += "  #  fault                                                                                         acked/tried  refused  other  recovery  late  not-primary  lost(demoted)  commits by node@timeline\n";
    let mut total = Report::default();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, o) in outcomes.iter().enumerate() {
        total.add(&o.report);
        *kinds.entry(o.schedule.kind.name()).or_default() += 1;
        let timelines: Vec<String> = o
            .timelines
            .iter()
            .map(|((node, tl), n)| format!("{node}@tl{tl}:{n}"))
            .collect();
        out += &format!(
            "{:>3}  {:<92}  {:>5}/{:<5}  {:>7}  {:>5}  {:>8}  {:>4}  {:>11}  {:>13}  {}\n",
            i + 1,
            o.schedule.to_string(),
            o.acked,
            o.attempts,
            o.refused,
            o.other_failures,
            ms(o.recovery),
            o.report.late,
            o.report.not_primary,
            o.report.lost_on_demoted,
            timelines.join(" ")
        );
        if let Some((first, last)) = o.lost_at {
            out += &format!(
                "       lost writes committed {first:+.3} s .. {last:+.3} s from the fault's start\n"
            );
        }
        for why in &o.other_kinds {
            out += &format!("       other failure: {why}\n");
        }
    }
    let recoveries: Vec<Duration> = outcomes.iter().map(|o| o.recovery).collect();
    let from_fault: Vec<Duration> = outcomes.iter().map(|o| o.from_fault).collect();
    let rows = [
        ("schedules", outcomes.len().to_string()),
        (
            "faults by kind",
            kinds
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "writes tried / acknowledged",
            format!(
                "{} / {}",
                outcomes.iter().map(|o| o.attempts).sum::<usize>(),
                total.writes
            ),
        ),
        (
            "fault resolved → first write on new primary",
            format!(
                "p50 {}, p99 {}",
                ms(quantile(&recoveries, 0.5)),
                ms(quantile(&recoveries, 0.99))
            ),
        ),
        (
            "fault's start → first write on new primary",
            format!(
                "p50 {}, p99 {}",
                ms(quantile(&from_fault, 0.5)),
                ms(quantile(&from_fault, 0.99))
            ),
        ),
        (
            "refused connections during conflicts",
            outcomes
                .iter()
                .map(|o| o.refused)
                .sum::<usize>()
                .to_string(),
        ),
        (
            "named primary's writes while a 2nd was writable",
            format!(
                "{} (latest {} after)",
                total.named_during_split,
                ms(total.max_split_exposure)
            ),
        ),
        (
            "late writes (< grace after etcd moved)",
            format!("{} (latest {} after)", total.late, ms(total.max_late)),
        ),
        (
            "lost on a demoted or killed primary",
            total.lost_on_demoted.to_string(),
        ),
        ("VIOLATIONS: in recovery", total.in_recovery.to_string()),
        (
            "VIOLATIONS: not the one primary",
            format!("{} (split brain {})", total.not_primary, total.split_brain),
        ),
        ("VIOLATIONS: unknown node", total.unknown_node.to_string()),
        (
            "VIOLATIONS: lost on the surviving primary",
            total.lost_on_survivor.to_string(),
        ),
    ];
    for (what, value) in rows {
        out += &format!("  {what:<48} {value}\n");
    }
    out
}

#[test]
fn no_acknowledged_write_reaches_a_node_that_is_not_the_one_primary() {
    let seed = env_number("CHAOS_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let count = env_number("CHAOS_SCHEDULES").map_or(DEFAULT_SCHEDULES, |n| n as usize);
    let replay =
        format!("CHAOS_SEED={seed} CHAOS_SCHEDULES={count} cargo test --test chaos -- --nocapture");
    eprintln!("chaos seed {seed} (replay: {replay})");
    let etcd = Etcd::start();
    let mut outcomes = Vec::new();
    for (i, s) in faults::schedules(seed, count).iter().enumerate() {
        eprintln!("schedule {}/{count}: {s}", i + 1);
        outcomes.push(run_schedule(&etcd, i, s, Guard::RolePrimary));
    }
    let table = summary(&format!("chaos audit, seed {seed}"), &outcomes);
    eprintln!("{table}");
    let mut total = Report::default();
    outcomes.iter().for_each(|o| total.add(&o.report));
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
