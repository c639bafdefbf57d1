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

/// Renders the comparison table for `[direct, haproxy, rolelb]`.
pub fn table(totals: &mut [Totals; 3], shape: &Shape) -> String {
    let mb = |s: &Sum| s.rate().map(|r| r / 1e6);
    let ms_per_gb = |s: &Sum| s.cpu_per(1e3 * 1e9);
    let us_per = |s: &Sum| s.cpu_per(1e6);
    let mut rows: Vec<(String, [Option<f64>; 3], Better)> = Vec::new();
    let mut row = |label: String, f: &dyn Fn(&mut Totals) -> Option<f64>, better| {
        let vals = [f(&mut totals[0]), f(&mut totals[1]), f(&mut totals[2])];
        rows.push((label, vals, better));
    };
    let k = shape.streams;
    row(
        format!("bulk upload MB/s ({k} streams)"),
        &|t| mb(&t.upload),
        Better::Higher,
    );
    row(
        "  proxy CPU ms per GB".into(),
        &|t| ms_per_gb(&t.upload),
        Better::Lower,
    );
    row(
        format!("bulk download MB/s ({k} streams)"),
        &|t| mb(&t.download),
        Better::Higher,
    );
    row(
        "  proxy CPU ms per GB".into(),
        &|t| ms_per_gb(&t.download),
        Better::Lower,
    );
    row(
        format!("short conns/s ({} workers)", shape.workers),
        &|t| t.conns.rate(),
        Better::Higher,
    );
    row(
        "  proxy CPU µs per conn".into(),
        &|t| us_per(&t.conns),
        Better::Lower,
    );
    row(
        format!("echo msgs/s ({} conns, 64 B)", shape.echo_conns),
        &|t| t.echo.rate(),
        Better::Higher,
    );
    row(
        "  echo RTT p50 µs".into(),
        &|t| t.rtt.quantile_us(0.50),
        Better::Lower,
    );
    row(
        "  echo RTT p99 µs".into(),
        &|t| t.rtt.quantile_us(0.99),
        Better::Lower,
    );
    row(
        "  echo RTT p99.9 µs".into(),
        &|t| t.rtt.quantile_us(0.999),
        Better::Lower,
    );
    row(
        "  proxy CPU µs per msg".into(),
        &|t| us_per(&t.echo),
        Better::Lower,
    );

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:>10} {:>10} {:>10} {:>15}",
        "metric", "direct", "haproxy", "rolelb", "rolelb/haproxy"
    );
    let _ = writeln!(out, "{}", "-".repeat(34 + 11 * 3 + 16));
    for (label, vals, better) in rows {
        let ratio = match (vals[2], vals[1]) {
            (Some(r), Some(h)) if h > 0.0 => {
                let hint = match better {
                    Better::Higher => "↑",
                    Better::Lower => "↓",
                };
                format!("{r_h:.2} {hint}", r_h = r / h)
            }
            _ => "n/a".into(),
        };
        let _ = writeln!(
            out,
            "{:<34} {:>10} {:>10} {:>10} {:>15}",
            label,
            fmt_num(vals[0]),
            fmt_num(vals[1]),
            fmt_num(vals[2]),
            ratio
        );
    }
    let errs = |t: &Totals| {
        format!(
            "{}/{}/{}/{}",
            t.upload.errors, t.download.errors, t.conns.errors, t.echo.errors
        )
    };
    let _ = writeln!(
        out,
        "{:<34} {:>10} {:>10} {:>10} {:>15}",
        "errors up/down/conn/echo",
        errs(&totals[0]),
        errs(&totals[1]),
        errs(&totals[2]),
        ""
    );
    out.push_str("\n↑ = higher is better (ratio > 1 means rolelb is better); ↓ = lower is better (ratio > 1 means rolelb is worse).\n");
    out.push_str("MB = 10^6 bytes. Proxy CPU = user+system time of the proxy process during the test, from /proc/PID/stat.\n");
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
        let text = table(&mut t, &shape);
        let line = text
            .lines()
            .find(|l| l.starts_with("short conns/s"))
            .unwrap_or_default();
        assert!(line.contains("300") && line.contains("0.50 ↑"), "{line}");
        assert!(text.contains("0/0/2/0"));
    }
}
