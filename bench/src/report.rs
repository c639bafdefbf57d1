//! Accumulated results per target and the printed table.
//!
//! Each measurement is added to its target's [`Totals`] (rounds are summed, latency samples
//! merged), and [`table`] turns the totals into one block of rows per `nbthread`: the
//! values of direct / haproxy / haproxy + splice-auto / rolelb / rolelb + splice-auto /
//! haproxy#2, then the ratios rolelb/haproxy, rolelb/(the better of haproxy and haproxy +
//! splice-auto), the better rolelb/the better HAProxy (each with and without splice-auto), and
//! the A/A ratio haproxy#2/haproxy, which two identical proxies would have at 1.00 without
//! noise.

use std::fmt::Write as _;
use std::time::Duration;

use crate::histogram::Histogram;
use crate::workload::{Bulk, ConnRate, Latency};

/// Sums of one quantity over all rounds of one test against one target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sum {
    /// Bytes, connections or messages.
    pub amount: u64,
    /// Wall time over which `amount` was moved.
    pub elapsed: Duration,
    /// Failed operations.
    pub errors: u64,
    /// Proxy CPU time spent meanwhile (`None` for the direct target).
    pub cpu: Option<Duration>,
}

impl Sum {
    fn add(&mut self, amount: u64, elapsed: Duration, errors: u64, cpu: Option<Duration>) {
        self.amount += amount;
        self.elapsed += elapsed;
        self.errors += errors;
        self.cpu = match (self.cpu, cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (None, b) => b,
            (a, None) => a,
        };
    }

    /// Amount per second.
    pub fn rate(&self) -> Option<f64> {
        let secs = self.elapsed.as_secs_f64();
        (secs > 0.0).then(|| self.amount as f64 / secs)
    }

    /// Proxy CPU time per unit of amount, scaled by `scale` (e.g. 1e6 for µs per unit).
    pub fn cpu_per(&self, scale: f64) -> Option<f64> {
        let cpu = self.cpu?;
        (self.amount > 0).then(|| cpu.as_secs_f64() * scale / self.amount as f64)
    }
}

/// Everything measured against one target.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Bulk client → server, in bytes.
    pub upload: Sum,
    /// Bulk server → client, in bytes.
    pub download: Sum,
    /// Short connections.
    pub conns: Sum,
    /// Echo messages.
    pub echo: Sum,
    /// Echo round-trip samples.
    pub rtt: Histogram,
    /// Paced echo messages during the etcd churn passes.
    pub churn: Sum,
    /// Their round-trip samples.
    pub churn_rtt: Histogram,
    /// The idle-session memory test (run once, not per round).
    pub idle: Option<Idle>,
}

/// What the idle-session memory test measured on one proxy.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// Sessions open at the second reading.
    pub sessions: u64,
    /// `VmRSS` before opening them, bytes.
    pub rss_before: u64,
    /// `VmRSS` with them open, bytes.
    pub rss_after: u64,
}

impl Idle {
    /// RSS growth per session in KiB (negative growth counts as 0).
    pub fn kib_per_session(&self) -> Option<f64> {
        (self.sessions > 0).then(|| {
            self.rss_after.saturating_sub(self.rss_before) as f64 / 1024.0 / self.sessions as f64
        })
    }
}

impl Totals {
    /// Adds one upload measurement.
    pub fn add_upload(&mut self, r: &Bulk, cpu: Option<Duration>) {
        self.upload.add(r.bytes, r.elapsed, r.errors, cpu);
    }

    /// Adds one download measurement.
    pub fn add_download(&mut self, r: &Bulk, cpu: Option<Duration>) {
        self.download.add(r.bytes, r.elapsed, r.errors, cpu);
    }

    /// Adds one short-connection measurement.
    pub fn add_conns(&mut self, r: &ConnRate, cpu: Option<Duration>) {
        self.conns.add(r.ok, r.elapsed, r.errors, cpu);
    }

    /// Adds everything in `other` (another round) to this.
    pub fn merge(&mut self, other: &Totals) {
        for (mine, theirs) in [
            (&mut self.upload, &other.upload),
            (&mut self.download, &other.download),
            (&mut self.conns, &other.conns),
            (&mut self.echo, &other.echo),
            (&mut self.churn, &other.churn),
        ] {
            mine.add(theirs.amount, theirs.elapsed, theirs.errors, theirs.cpu);
        }
        self.rtt.merge(&other.rtt);
        self.churn_rtt.merge(&other.churn_rtt);
        if other.idle.is_some() {
            self.idle = other.idle;
        }
    }

    /// Adds one echo measurement.
    pub fn add_echo(&mut self, r: &Latency, cpu: Option<Duration>) {
        self.echo.add(r.hist.count(), r.elapsed, r.errors, cpu);
        self.rtt.merge(&r.hist);
    }

    /// Adds one etcd churn pass's echo.
    pub fn add_churn(&mut self, r: &Latency, cpu: Option<Duration>) {
        self.churn.add(r.hist.count(), r.elapsed, r.errors, cpu);
        self.churn_rtt.merge(&r.hist);
    }
}

/// Whether a larger value of a metric is good or bad; decides the hint and "better of".
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

/// The workload sizes, for the row labels.
pub struct Shape {
    /// Bulk streams.
    pub streams: usize,
    /// Short-connection connectors.
    pub workers: usize,
    /// Echo connections.
    pub echo_conns: usize,
    /// Idle sessions asked for.
    pub idle_sessions: usize,
    /// etcd members changed per churn pass (0: not run).
    pub churn_members: usize,
}

/// Which targets (indexes into the per-round totals) make one block of the table.
pub struct Group {
    /// The block's heading, e.g. `nbthread 1`.
    pub title: String,
    /// The backend, no proxy (shared by all blocks).
    pub direct: usize,
    /// HAProxy, plain.
    pub haproxy: usize,
    /// HAProxy with `option splice-auto`.
    pub splice: usize,
    /// rolelb.
    pub rolelb: usize,
    /// rolelb with `option splice-auto`.
    pub rolelb_splice: usize,
    /// A second plain HAProxy: the A/A pair with `haproxy`.
    pub haproxy2: usize,
}

/// One row of the table: how to compute its value from a target's totals.
struct Row {
    label: String,
    value: fn(&mut Totals) -> Option<f64>,
    better: Better,
    /// Tail latencies: left out of the A/A summary's "without tails" span.
    tail: bool,
}

fn row(label: impl Into<String>, value: fn(&mut Totals) -> Option<f64>, better: Better) -> Row {
    Row {
        label: label.into(),
        value,
        better,
        tail: false,
    }
}

fn tail(label: impl Into<String>, value: fn(&mut Totals) -> Option<f64>) -> Row {
    Row {
        label: label.into(),
        value,
        better: Better::Lower,
        tail: true,
    }
}

fn gbit_per_s(s: &Sum) -> Option<f64> {
    s.rate().map(|r| r * 8.0 / 1e9)
}

fn ms_per_gb(s: &Sum) -> Option<f64> {
    s.cpu_per(1e3 * 1e9)
}

fn us_per(s: &Sum) -> Option<f64> {
    s.cpu_per(1e6)
}

/// `a / b` when both exist and `b` is not zero.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The better of two values for a row (either one if the other is missing).
fn better_of(a: Option<f64>, b: Option<f64>, better: Better) -> Option<f64> {
    match (a, b, better) {
        (Some(a), Some(b), Better::Higher) => Some(a.max(b)),
        (Some(a), Some(b), Better::Lower) => Some(a.min(b)),
        (a, None, _) => a,
        (None, b, _) => b,
    }
}

fn rows(shape: &Shape) -> Vec<Row> {
    let k = shape.streams;
    vec![
        row(
            format!("conns/s ({} connectors, short)", shape.workers),
            |t| t.conns.rate(),
            Better::Higher,
        ),
        row(
            "  proxy CPU µs per conn",
            |t| us_per(&t.conns),
            Better::Lower,
        ),
        row(
            format!("ping-pong msg/s ({} conns, 64 B)", shape.echo_conns),
            |t| t.echo.rate(),
            Better::Higher,
        ),
        row("  RTT p50 µs", |t| t.rtt.quantile_us(0.50), Better::Lower),
        tail("  RTT p99 µs", |t| t.rtt.quantile_us(0.99)),
        tail("  RTT p99.9 µs", |t| t.rtt.quantile_us(0.999)),
        row("  proxy CPU µs per msg", |t| us_per(&t.echo), Better::Lower),
        row(
            format!("bulk upload Gbit/s ({k} streams)"),
            |t| gbit_per_s(&t.upload),
            Better::Higher,
        ),
        row(
            "  proxy CPU ms per GB",
            |t| ms_per_gb(&t.upload),
            Better::Lower,
        ),
        row(
            format!("bulk download Gbit/s ({k} streams)"),
            |t| gbit_per_s(&t.download),
            Better::Higher,
        ),
        row(
            "  proxy CPU ms per GB",
            |t| ms_per_gb(&t.download),
            Better::Lower,
        ),
        row(
            format!("idle RSS KiB per session ({})", shape.idle_sessions),
            |t| t.idle.and_then(|i| i.kib_per_session()),
            Better::Lower,
        ),
        row(
            format!("etcd churn echo p50 µs ({} members)", shape.churn_members),
            |t| t.churn_rtt.quantile_us(0.50),
            Better::Lower,
        ),
        tail(
            format!("etcd churn echo p99 µs ({} members)", shape.churn_members),
            |t| t.churn_rtt.quantile_us(0.99),
        ),
    ]
}

const WIDTH: [usize; 13] = [38, 9, 9, 9, 9, 9, 9, 9, 9, 9, 6, 16, 11];

fn line(out: &mut String, cols: [&str; 13]) {
    let mut l = format!("{:<w$}", cols[0], w = WIDTH[0]);
    for (c, w) in cols.iter().zip(WIDTH).skip(1) {
        let _ = write!(l, " {c:>w$}");
    }
    let _ = writeln!(out, "{}", l.trim_end());
}

/// "lowest/median/highest" of the values, or "" for fewer than two.
fn spread(mut v: Vec<f64>, median: bool) -> String {
    v.sort_by(f64::total_cmp);
    match v.as_slice() {
        [] | [_] => String::new(),
        all if median => format!(
            "{:.2}/{:.2}/{:.2}",
            all[0],
            all[all.len() / 2],
            all[all.len() - 1]
        ),
        all => format!("{:.2}/{:.2}", all[0], all[all.len() - 1]),
    }
}

/// Renders the comparison table from per-round totals (`rounds[round][target]`), one block
/// per group, each followed by the span of its A/A ratios.
pub fn table(rounds: &mut [Vec<Totals>], groups: &[Group], shape: &Shape) -> String {
    let n = rounds.first().map_or(0, Vec::len);
    let mut all: Vec<Totals> = vec![Totals::default(); n];
    for round in rounds.iter() {
        for (total, t) in all.iter_mut().zip(round.iter()) {
            total.merge(t);
        }
    }
    let mut out = String::new();
    for g in groups {
        let _ = writeln!(out, "== {} ==", g.title);
        line(
            &mut out,
            [
                "metric",
                "direct",
                "haproxy",
                "+splice",
                "rolelb",
                "r+splice",
                "haproxy#2",
                "r/hap",
                "r/best",
                "rb/best",
                "A/A",
                "r/hap per round",
                "A/A p.round",
            ],
        );
        let _ = writeln!(out, "{}", "-".repeat(WIDTH.iter().sum::<usize>() + 12));
        let (mut aa_all, mut aa_no_tail, mut aa_rounds) = (Vec::new(), Vec::new(), Vec::new());
        for r in rows(shape) {
            let mut v = |i: usize| (r.value)(&mut all[i]);
            let (d, h, s, l, ls, h2) = (
                v(g.direct),
                v(g.haproxy),
                v(g.splice),
                v(g.rolelb),
                v(g.rolelb_splice),
                v(g.haproxy2),
            );
            let hint = match r.better {
                Better::Higher => "↑",
                Better::Lower => "↓",
            };
            let fmt_ratio = |q: Option<f64>, hint: &str| {
                q.map(|q| format!("{q:.2}{hint}"))
                    .unwrap_or_else(|| "-".into())
            };
            let aa = ratio(h2, h);
            if let Some(q) = aa {
                aa_all.push(q);
                if !r.tail {
                    aa_no_tail.push(q);
                }
            }
            let per_round: Vec<f64> = rounds
                .iter_mut()
                .filter_map(|t| {
                    let hv = (r.value)(&mut t[g.haproxy]);
                    ratio((r.value)(&mut t[g.rolelb]), hv)
                })
                .collect();
            let aa_round: Vec<f64> = rounds
                .iter_mut()
                .filter_map(|t| {
                    let hv = (r.value)(&mut t[g.haproxy]);
                    ratio((r.value)(&mut t[g.haproxy2]), hv)
                })
                .collect();
            aa_rounds.extend(aa_round.iter().copied());
            line(
                &mut out,
                [
                    &r.label,
                    &fmt_num(d),
                    &fmt_num(h),
                    &fmt_num(s),
                    &fmt_num(l),
                    &fmt_num(ls),
                    &fmt_num(h2),
                    &fmt_ratio(ratio(l, h), hint),
                    &fmt_ratio(ratio(l, better_of(h, s, r.better)), hint),
                    &fmt_ratio(
                        ratio(better_of(l, ls, r.better), better_of(h, s, r.better)),
                        hint,
                    ),
                    &fmt_ratio(aa, ""),
                    &spread(per_round, true),
                    &spread(aa_round, false),
                ],
            );
        }
        let errs = |t: &Totals| {
            format!(
                "{}/{}/{}/{}/{}",
                t.conns.errors, t.echo.errors, t.upload.errors, t.download.errors, t.churn.errors
            )
        };
        let _ = writeln!(
            out,
            "errors conn/echo/up/down/churn: direct {}, haproxy {}, +splice {}, rolelb {}, r+splice {}, haproxy#2 {}",
            errs(&all[g.direct]),
            errs(&all[g.haproxy]),
            errs(&all[g.splice]),
            errs(&all[g.rolelb]),
            errs(&all[g.rolelb_splice]),
            errs(&all[g.haproxy2])
        );
        let _ = writeln!(
            out,
            "A/A spread ({}): aggregate ratios {} (without p99/p99.9 rows {}); per round {}\n",
            g.title,
            spread(aa_all, false).replace('/', " to "),
            spread(aa_no_tail, false).replace('/', " to "),
            spread(aa_rounds, false).replace('/', " to "),
        );
    }
    out.push_str(
        "↑ higher is better (ratio > 1: rolelb ahead); ↓ lower is better (ratio > 1: rolelb behind).\n\
         r/hap = rolelb / haproxy; r/best = rolelb / the better of haproxy and haproxy + option splice-auto;\n\
         rb/best = the better of rolelb and rolelb + option splice-auto / the better of the two HAProxys (same two configs);\n\
         A/A = haproxy#2 / haproxy, two identical HAProxy processes: its distance from 1.00 is this run's noise.\n\
         Values are over all rounds; \"per round\" columns are the per-round ratios (lowest/median/highest, A/A lowest/highest).\n\
         Gbit = 10^9 bits, GB = 10^9 bytes. Proxy CPU = user+system time of the proxy process during the test (/proc/PID/stat).\n\
         Idle RSS = (VmRSS with the sessions open - VmRSS before) / sessions, measured once per proxy.\n\
         etcd churn: rolelb watches the members change (its own etcd-watching instance); HAProxy has no etcd watch,\n\
         so for it (and direct) the same puts go to a prefix nobody watches: the same echo with no watcher.\n",
    );
    out
}

/// Three significant-ish digits without scientific notation; "-" when absent.
fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_rates_and_cpu_cost() {
        let mut s = Sum::default();
        s.add(
            1000,
            Duration::from_secs(1),
            0,
            Some(Duration::from_millis(10)),
        );
        s.add(
            1000,
            Duration::from_secs(1),
            1,
            Some(Duration::from_millis(10)),
        );
        assert_eq!(s.rate(), Some(1000.0));
        assert_eq!(s.errors, 1);
        // 20 ms for 2000 units = 10 µs per unit.
        let per = s.cpu_per(1e6).map(|v| (v * 1000.0).round() / 1000.0);
        assert_eq!(per, Some(10.0));
    }

    #[test]
    fn direct_has_no_cpu_cost() {
        let mut s = Sum::default();
        s.add(10, Duration::from_secs(1), 0, None);
        assert_eq!(s.cpu_per(1e6), None);
    }

    fn one_group() -> (Vec<Group>, Shape) {
        let g = Group {
            title: "nbthread 1".into(),
            direct: 0,
            haproxy: 1,
            splice: 2,
            rolelb: 3,
            rolelb_splice: 4,
            haproxy2: 5,
        };
        let shape = Shape {
            streams: 1,
            workers: 1,
            echo_conns: 1,
            idle_sessions: 10,
            churn_members: 5,
        };
        (vec![g], shape)
    }

    #[test]
    fn table_shows_ratios_best_of_and_aa() {
        let d = Duration::from_secs(1);
        let mut first: Vec<Totals> = vec![Totals::default(); 6];
        // conns/s: direct 300, haproxy 200, splice 250, rolelb 100 (2 errors), rolelb+splice
        // 350, haproxy#2 220.
        for (i, n) in [300, 200, 250, 100, 350, 220].into_iter().enumerate() {
            first[i].conns.add(n, d, u64::from(i == 3) * 2, Some(d));
        }
        let mut second = first.clone();
        second[3].conns = Sum::default();
        second[3].conns.add(200, d, 0, Some(d));
        let (groups, shape) = one_group();
        let text = table(&mut [first, second], &groups, &shape);
        let line = text
            .lines()
            .find(|l| l.starts_with("conns/s"))
            .unwrap_or_default();
        // Over both rounds: haproxy 400, splice 500, rolelb 300, rolelb+splice 700,
        // haproxy#2 440 in 2 s.
        assert!(line.contains(" 0.75↑"), "{line}");
        assert!(line.contains(" 0.60↑"), "{line}");
        assert!(line.contains(" 1.40↑"), "{line}");
        assert!(line.contains(" 1.10 "), "{line}");
        // Per round rolelb/haproxy 0.50 and 1.00; A/A 1.10 both times.
        assert!(line.contains("0.50/1.00/1.00"), "{line}");
        assert!(line.contains("1.10/1.10"), "{line}");
        assert!(
            text.contains("rolelb 2/0/0/0/0, r+splice 0/0/0/0/0"),
            "{text}"
        );
        assert!(
            // conns/s 440/400 and CPU per conn (2 s / 440) / (2 s / 400).
            text.contains("A/A spread (nbthread 1): aggregate ratios 0.91 to 1.10"),
            "{text}"
        );
    }

    #[test]
    fn lower_is_better_rows_take_the_smaller_as_best() {
        assert_eq!(better_of(Some(2.0), Some(3.0), Better::Lower), Some(2.0));
        assert_eq!(better_of(Some(2.0), Some(3.0), Better::Higher), Some(3.0));
        assert_eq!(better_of(None, Some(3.0), Better::Higher), Some(3.0));
    }

    #[test]
    fn idle_rss_is_growth_per_session() {
        let i = Idle {
            sessions: 4,
            rss_before: 1 << 20,
            rss_after: (1 << 20) + 4 * 8192,
        };
        assert_eq!(i.kib_per_session(), Some(8.0));
        let none = Idle { sessions: 0, ..i };
        assert_eq!(none.kib_per_session(), None);
    }
}
