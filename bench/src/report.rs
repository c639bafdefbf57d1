//! Accumulated results per target and the printed table.
//!
//! Each measurement is added to its target's [`Totals`] (rounds are summed, latency samples
//! merged), and [`table`] turns the three targets' totals into rows of
//! metric / direct / haproxy / rolelb / rolelb÷haproxy.

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
        ] {
            mine.add(theirs.amount, theirs.elapsed, theirs.errors, theirs.cpu);
        }
        self.rtt.merge(&other.rtt);
    }

    /// Adds one echo measurement.
    pub fn add_echo(&mut self, r: &Latency, cpu: Option<Duration>) {
        self.echo.add(r.hist.count(), r.elapsed, r.errors, cpu);
        self.rtt.merge(&r.hist);
    }
}

/// Whether a larger value of a metric is good or bad; decides the hint in the last column.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

/// The workload sizes, for the row labels.
pub struct Shape {
    /// Bulk streams.
    pub streams: usize,
    /// Short-connection workers.
    pub workers: usize,
    /// Echo connections.
    pub echo_conns: usize,
}

/// One row of the table: how to compute its value from a target's totals.
struct Row {
    label: String,
    value: fn(&mut Totals) -> Option<f64>,
    better: Better,
}

fn row(label: impl Into<String>, value: fn(&mut Totals) -> Option<f64>, better: Better) -> Row {
    Row {
        label: label.into(),
        value,
        better,
    }
}

fn mb_per_s(s: &Sum) -> Option<f64> {
    s.rate().map(|r| r / 1e6)
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

/// Renders the comparison table from per-round `[direct, haproxy, rolelb]` totals: values
/// over all rounds, the rolelb/haproxy ratio, and that ratio's spread across rounds.
pub fn table(rounds: &mut [[Totals; 3]], shape: &Shape) -> String {
    let mut all: [Totals; 3] = Default::default();
    for round in rounds.iter() {
        for (total, t) in all.iter_mut().zip(round.iter()) {
            total.merge(t);
        }
    }
    let k = shape.streams;
    let rows = [
        row(
            format!("bulk upload MB/s ({k} streams)"),
            |t| mb_per_s(&t.upload),
            Better::Higher,
        ),
        row(
            "  proxy CPU ms per GB",
            |t| ms_per_gb(&t.upload),
            Better::Lower,
        ),
        row(
            format!("bulk download MB/s ({k} streams)"),
            |t| mb_per_s(&t.download),
            Better::Higher,
        ),
        row(
            "  proxy CPU ms per GB",
            |t| ms_per_gb(&t.download),
            Better::Lower,
        ),
        row(
            format!("short conns/s ({} workers)", shape.workers),
            |t| t.conns.rate(),
            Better::Higher,
        ),
        row(
            "  proxy CPU µs per conn",
            |t| us_per(&t.conns),
            Better::Lower,
        ),
        row(
            format!("echo msgs/s ({} conns, 64 B)", shape.echo_conns),
            |t| t.echo.rate(),
            Better::Higher,
        ),
        row(
            "  echo RTT p50 µs",
            |t| t.rtt.quantile_us(0.50),
            Better::Lower,
        ),
        row(
            "  echo RTT p99 µs",
            |t| t.rtt.quantile_us(0.99),
            Better::Lower,
        ),
        row(
            "  echo RTT p99.9 µs",
            |t| t.rtt.quantile_us(0.999),
            Better::Lower,
        ),
        row("  proxy CPU µs per msg", |t| us_per(&t.echo), Better::Lower),
    ];

    let mut out = String::new();
    let line = |out: &mut String, cols: [&str; 6]| {
        let _ = writeln!(
            out,
            "{:<34} {:>10} {:>10} {:>10} {:>16} {:>19}",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5]
        );
    };
    line(
        &mut out,
        [
            "metric",
            "direct",
            "haproxy",
            "rolelb",
            "rolelb/haproxy",
            "per round min/med/max",
        ],
    );
    let _ = writeln!(out, "{}", "-".repeat(34 + 11 * 3 + 17 + 20));
    for r in rows {
        let vals = [
            (r.value)(&mut all[0]),
            (r.value)(&mut all[1]),
            (r.value)(&mut all[2]),
        ];
        let hint = match r.better {
            Better::Higher => "↑",
            Better::Lower => "↓",
        };
        let overall = ratio(vals[2], vals[1])
            .map(|q| format!("{q:.2} {hint}"))
            .unwrap_or_else(|| "n/a".into());
        let mut per_round: Vec<f64> = rounds
            .iter_mut()
            .filter_map(|[_, h, l]| ratio((r.value)(l), (r.value)(h)))
            .collect();
        per_round.sort_by(f64::total_cmp);
        let spread = match per_round.as_slice() {
            [] | [_] => String::new(),
            all => format!(
                "{:.2}/{:.2}/{:.2}",
                all[0],
                all[all.len() / 2],
                all[all.len() - 1]
            ),
        };
        line(
            &mut out,
            [
                &r.label,
                &fmt_num(vals[0]),
                &fmt_num(vals[1]),
                &fmt_num(vals[2]),
                &overall,
                &spread,
            ],
        );
    }
    let errs = |t: &Totals| {
        format!(
            "{}/{}/{}/{}",
            t.upload.errors, t.download.errors, t.conns.errors, t.echo.errors
        )
    };
    line(
        &mut out,
        [
            "errors up/down/conn/echo",
            &errs(&all[0]),
            &errs(&all[1]),
            &errs(&all[2]),
            "",
            "",
        ],
    );
    out.push_str("\n↑ = higher is better (ratio > 1: rolelb better); ↓ = lower is better (ratio > 1: rolelb worse).\n");
    out.push_str(
        "Values are over all rounds; the last column is the per-round rolelb/haproxy ratio: lowest, median, highest.\n",
    );
    out.push_str("MB = 10^6 bytes. Proxy CPU = user+system time of the proxy process during the test (/proc/PID/stat).\n");
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

    #[test]
    fn table_shows_ratio_and_dashes() {
        let mut t: [Totals; 3] = Default::default();
        let d = Duration::from_secs(1);
        t[0].conns.add(300, d, 0, None);
        t[1].conns.add(200, d, 0, Some(d));
        t[2].conns.add(100, d, 2, Some(d));
        let shape = Shape {
            streams: 1,
            workers: 1,
            echo_conns: 1,
        };
        let mut second = t.clone();
        second[2].conns = Sum::default();
        second[2].conns.add(200, d, 0, Some(d));
        let text = table(&mut [t, second], &shape);
        let line = text
            .lines()
            .find(|l| l.starts_with("short conns/s"))
            .unwrap_or_default();
        // Over both rounds: haproxy 400 and rolelb 300 in 2 s; per round 0.50 and 1.00.
        assert!(line.contains("300") && line.contains("0.75 ↑"), "{line}");
        assert!(line.contains("0.50/1.00/1.00"), "{line}");
        assert!(text.contains("0/0/2/0"), "{text}");
    }
}
