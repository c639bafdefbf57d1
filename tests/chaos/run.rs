//! Running one chaos schedule against the proxy under test and summing what it produced: the
//! per-schedule table, the summary, and the one-line row that compares proxies.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::audit::{self, Report, Write};
use crate::cluster::{Cluster, Guard};
use crate::common::Etcd;
use crate::faults::{self, Kind, Schedule};
use crate::readers::{ReadReport, Readers, Window, audit_reads, wait_steady};
use crate::writers::{self, Failure, Writers};

/// Writer threads (a second rolelb gets one fewer).
const WRITERS: usize = 3;
/// Reader threads on the read listener.
const READERS: usize = 2;
/// Reads in a row the read listener must answer, with the writers running, before the
/// readers start ([`wait_steady`]).
const STEADY_READS: usize = 10;
/// How long the writers keep going once the new primary took a write.
const AFTER: Duration = Duration::from_secs(1);
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
    /// From the fault's last action to the first acknowledged write on the new primary.
    pub recovery: Duration,
    /// From the fault's first action to the same write.
    pub from_fault: Duration,
    /// When the writes lost on a demoted primary were committed, relative to the fault's
    /// first action (earliest, latest), in seconds.
    pub lost_at: Option<(f64, f64)>,
    /// Acknowledged writes per (node, timeline).
    pub timelines: BTreeMap<(String, u32), usize>,
}

/// Runs schedule `s` as the `generation`th cluster against `etcd`, with `guard`.
pub fn run_schedule(etcd: &Etcd, generation: usize, s: &Schedule, guard: Guard) -> Outcome {
    run_audited(etcd, generation, s, guard).0
}

/// Like [`run_schedule`], with readers on the read listener (rolelb only) and their audit.
pub fn run_audited(
    etcd: &Etcd,
    generation: usize,
    s: &Schedule,
    guard: Guard,
) -> (Outcome, ReadReport) {
    let at = std::time::Instant::now();
    let own = s.kind.own_etcd().then(Etcd::start);
    let mut cluster = Cluster::build_with(
        own.as_ref().unwrap_or(etcd),
        generation,
        guard,
        s.check_via_bouncer,
        s.kind == Kind::Rejoin,
        s.kind == Kind::Partition,
    );
    if let Some(own) = own {
        cluster.own_etcd(own);
    }
    let first_id = generation as i64 * 1_000_000_000;
    let writers = Writers::start(cluster.write_port, WRITERS, first_id);
    // A second rolelb, with writers of its own, when one of the two is to be killed.
    let second = (s.kind == Kind::RolelbKill && guard == Guard::RolePrimary).then(|| {
        let port = cluster.start_second_lb();
        Writers::start(port, WRITERS - 1, first_id + 500_000_000)
    });
    let readers = cluster.read_port.map(|port| {
        let steady = wait_steady(port, STEADY_READS, Duration::from_secs(20));
        assert!(
            steady,
            "the read listener never answered {STEADY_READS} reads in a row\n{}",
            cluster.log()
        );
        Readers::start(port, READERS)
    });
    let built = at.elapsed();
    std::thread::sleep(s.warmup);
    let fault = faults::run(&mut cluster, s);
    cluster.wait_writes_on(s.new);
    std::thread::sleep(AFTER);
    let mut attempts = writers.finish();
    if let Some(second) = second {
        attempts.extend(second.finish());
    }
    let reads = readers.map(Readers::finish).unwrap_or_default();
    eprintln!(
        "  cluster built in {:.1} s, fault and writes {:.1} s",
        built.as_secs_f64(),
        (at.elapsed() - built).as_secs_f64()
    );
    let read_report = audit_reads(
        &reads,
        &[match s.kind {
            // A partition cuts the other replica's stream just as a crash does.
            Kind::CrashFailover | Kind::Rejoin | Kind::Partition => {
                Window::of_crash(fault.began, fault.resolved)
            }
            _ => Window::of_fault(fault.began, fault.resolved),
        }],
        fault.paused,
        fault.rejoined,
        |port| cluster.node_of_port(port),
    );

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
    if read_report.violations() > 0 && guard == Guard::RolePrimary {
        eprintln!(
            "read audit: {read_report:?}\nrolelb's log for this schedule:\n{}",
            cluster.log()
        );
    }
    let outcome = Outcome {
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
    };
    (outcome, read_report)
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
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

pub fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// The per-schedule lines and the summary table.
pub fn summary(title: &str, outcomes: &[Outcome]) -> String {
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

/// The header of [`row`]'s Markdown table.
pub const ROW_HEADER: &str = "| proxy | seed | schedules | writes tried | acknowledged | on a non-primary | of which split brain | lost (on the survivor) | fault's start → first write on the new primary p50 / p99 | refused |\n|---|---|---|---|---|---|---|---|---|---|";

/// One Markdown table row of totals over `outcomes`, for comparing proxies on the same seed.
pub fn row(proxy: &str, seed: u64, outcomes: &[Outcome]) -> String {
    let mut total = Report::default();
    outcomes.iter().for_each(|o| total.add(&o.report));
    let from_fault: Vec<Duration> = outcomes.iter().map(|o| o.from_fault).collect();
    format!(
        "| {proxy} | {seed} | {} | {} | {} | {} | {} | {} ({}) | {} / {} | {} |",
        outcomes.len(),
        outcomes.iter().map(|o| o.attempts).sum::<usize>(),
        total.writes,
        total.not_primary,
        total.split_brain,
        total.lost_on_demoted + total.lost_on_survivor,
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
            r.named_during_split <= r.on_primary,
            "more writes during a split than on the primary",
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
