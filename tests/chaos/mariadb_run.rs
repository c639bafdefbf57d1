//! Running one MariaDB chaos schedule and summing what it produced: the per-schedule lines,
//! the summary and a one-line Markdown row of totals. The shape follows `tests/chaos/run.rs`
//! (which is bound to the PostgreSQL cluster's types); the audit itself is the shared
//! `tests/chaos/audit.rs`.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::audit::{self, Report, Write};
use crate::cluster::{Cluster, Guard, Template};
use crate::common::Etcd;
use crate::faults::{self, Schedule};
use crate::writers::{Failure, Writers};

/// Writer threads, spread over the rolelb instances.
const WRITERS: usize = 4;
/// How long the writers keep going once the new primary took a write.
const AFTER: Duration = Duration::from_millis(700);

/// What one schedule produced.
pub struct Outcome {
    pub schedule: Schedule,
    pub report: Report,
    pub attempts: usize,
    pub acked: usize,
    /// Connections refused or closed before login between the fault and the first write on the
    /// new primary.
    pub refused: usize,
    pub other_failures: usize,
    /// Up to three distinct reasons among those failures.
    pub other_kinds: Vec<String>,
    /// From the fault's resolving action to the first acknowledged write on the new primary.
    pub recovery: Duration,
    /// From the fault's first action to the same write.
    pub from_fault: Duration,
    /// Acknowledged writes per node and the `server_id` it reported.
    pub by_node: BTreeMap<String, usize>,
    /// How long the schedule took, cluster included.
    pub took: Duration,
}

/// Runs schedule `s` as the `generation`th cluster against `etcd`, with `guard`.
pub fn run_schedule(
    etcd: &Etcd,
    template: &Template,
    generation: usize,
    s: &Schedule,
    guard: Guard,
) -> Outcome {
    let began = std::time::Instant::now();
    let mut cluster = Cluster::build(etcd, template, generation, guard);
    let writers = Writers::start(
        &cluster.write_ports,
        WRITERS,
        generation as i64 * 1_000_000_000,
    );
    std::thread::sleep(s.warmup);
    let fault = faults::run(&mut cluster, s);
    cluster.wait_writes_on(s.new);
    std::thread::sleep(AFTER);
    let attempts = writers.finish();

    let present: HashSet<i64> = cluster.ids_on(s.new);
    let writes: Vec<Write> = attempts
        .iter()
        .filter_map(|a| a.result.as_ref().ok())
        .map(|ack| Write {
            id: ack.id,
            node: cluster.node_of(ack.port, ack.server_id),
            in_recovery: ack.read_only,
            // MariaDB has no timelines: the committing server's id stands in.
            timeline: ack.server_id,
            committed: ack.committed,
        })
        .collect();
    let report = audit::audit(
        cluster.nodes.len(),
        &cluster.events,
        &writes,
        s.new,
        &present,
    );
    let new = &cluster.nodes[s.new];
    let first_on_new = attempts
        .iter()
        .filter(|a| a.started >= fault.began)
        .filter(|a| {
            a.result
                .as_ref()
                .is_ok_and(|ack| ack.port == new.port && ack.server_id == new.server_id)
        })
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
    let mut by_node = BTreeMap::new();
    for w in &writes {
        let node = w.node.map_or_else(|| "?".to_owned(), Cluster::name);
        *by_node
            .entry(format!("{node}(id {})", w.timeline))
            .or_default() += 1;
    }
    if report.violations() > 0 && guard == Guard::RolePrimary {
        eprintln!("rolelb's logs for this schedule:\n{}", cluster.log());
    }
    drop(cluster);
    Outcome {
        schedule: *s,
        report,
        attempts: attempts.len(),
        acked: writes.len(),
        refused,
        other_failures: others.len(),
        other_kinds,
        recovery: first_on_new
            .duration_since(fault.resolved)
            .unwrap_or_default(),
        from_fault: first_on_new.duration_since(fault.began).unwrap_or_default(),
        by_node,
        took: began.elapsed(),
    }
}

/// `CHAOS_SEED`, else one drawn from the clock.
pub fn seed() -> u64 {
    env_number("CHAOS_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    })
}

/// The number in environment variable `name`, if set.
pub fn env_number(name: &str) -> Option<u64> {
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
pub fn summary(title: &str, outcomes: &[Outcome]) -> String {
    let mut out = format!("{title}, {} schedules\n", outcomes.len());
    out += "  #  fault                                               acked/tried  refused  other  recovery  late  not-primary  lost(demoted)  took   commits by node\n";
    let mut total = Report::default();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, o) in outcomes.iter().enumerate() {
        total.add(&o.report);
        *kinds.entry(o.schedule.kind.name()).or_default() += 1;
        let nodes: Vec<String> = o.by_node.iter().map(|(n, c)| format!("{n}:{c}")).collect();
        out += &format!(
            "{:>3}  {:<50}  {:>5}/{:<5}  {:>7}  {:>5}  {:>8}  {:>4}  {:>11}  {:>13}  {:>4.1}s  {}\n",
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
            o.took.as_secs_f64(),
            nodes.join(" ")
        );
        for why in &o.other_kinds {
            out += &format!("       other failure: {why}\n");
        }
    }
    let recoveries: Vec<Duration> = outcomes.iter().map(|o| o.recovery).collect();
    let from_fault: Vec<Duration> = outcomes.iter().map(|o| o.from_fault).collect();
    let rows = [
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
            "refused connections during faults",
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
            "lost on a fenced or killed primary",
            total.lost_on_demoted.to_string(),
        ),
        ("VIOLATIONS: read_only set", total.in_recovery.to_string()),
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

/// The header of [`row`]'s Markdown table.
pub const ROW_HEADER: &str = "| seed | schedules | writes tried | acknowledged | on a non-primary | lost on a fenced or killed primary (on the survivor) | fault's start → first write on the new primary p50 / p99 | refused |\n|---|---|---|---|---|---|---|---|";

/// One Markdown table row of totals over `outcomes`.
pub fn row(seed: u64, outcomes: &[Outcome]) -> String {
    let mut total = Report::default();
    outcomes.iter().for_each(|o| total.add(&o.report));
    let from_fault: Vec<Duration> = outcomes.iter().map(|o| o.from_fault).collect();
    format!(
        "| {seed} | {} | {} | {} | {} | {} ({}) | {} / {} | {} |",
        outcomes.len(),
        outcomes.iter().map(|o| o.attempts).sum::<usize>(),
        total.writes,
        total.not_primary,
        total.lost_on_demoted,
        total.lost_on_survivor,
        ms(quantile(&from_fault, 0.5)),
        ms(quantile(&from_fault, 0.99)),
        outcomes.iter().map(|o| o.refused).sum::<usize>(),
    )
}

/// Whether the auditor's counts for `o` add up: every acknowledged write audited once and put
/// in exactly one class, subsets no larger than their sets.
pub fn counts_consistent(o: &Outcome) -> Result<(), String> {
    let r = &o.report;
    let classed = r.on_primary + r.late + r.in_recovery + r.not_primary + r.unknown_node;
    let checks = [
        (o.acked <= o.attempts, "more acknowledged than tried"),
        (
            r.writes == o.acked,
            "audited writes differ from acknowledged ones",
        ),
        (
            classed == r.writes,
            "classes do not sum to the writes audited",
        ),
        (
            r.split_brain <= r.not_primary,
            "more split-brain writes than non-primary ones",
        ),
        (
            r.lost_on_demoted + r.lost_on_survivor <= r.writes,
            "more lost than written",
        ),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, why)) => Err(format!("{}: {why}: {r:?}", o.schedule)),
        None => Ok(()),
    }
}
